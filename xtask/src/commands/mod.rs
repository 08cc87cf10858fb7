//! The commands, one module each. They take resolved settings and plain
//! arguments; none imports another, nor the command line.

pub mod check;
pub mod gc;
pub mod images;
pub mod init;
pub mod listing;
pub mod manifest;
mod observe;
pub mod pin;
pub mod prune;
pub mod register_cross;
pub mod status;
pub mod verify;

/// Every engine command's options, as the commands read them; those a
/// command does not take are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    pub jobs: Option<u16>,
    pub keep_going: bool,
    pub dry_run: bool,
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub skip_image_load: bool,
    pub no_cache: bool,
    pub push_as_latest: bool,
}

impl RunArgs {
    /// How many jobs or look-ups run at once: `--jobs`, else one per core.
    fn parallelism(&self) -> usize {
        self.jobs.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// The images root as paths are shown: relative to the current directory
/// when under it.
pub(crate) fn shown_root(settings: &crate::config::Settings) -> anyhow::Result<String> {
    let cwd = std::env::current_dir()?;
    Ok(match settings.images_dir.strip_prefix(&cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => settings.images_dir.display().to_string(),
    })
}
