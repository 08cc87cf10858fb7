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

/// Jobs per core when `--jobs` is not given. A build spends much of its time
/// waiting on the engine (its commits, its container for each step, its
/// store's locks), so twice the cores keep them busier: on 2 cores, cold
/// builds of 40 small images on docker's classic builder took 22.4 s with
/// 2 jobs and 18.0 s with 4, and 20 on podman 26.4 s and 24.3 s
/// (`FLOOR_JOBS_SWEEP="1 2 3 4" tests/bench/floor.sh`).
const JOBS_PER_CORE: usize = 2;

impl RunArgs {
    /// How many jobs or look-ups run at once: `--jobs`, else [`JOBS_PER_CORE`]
    /// per core.
    fn parallelism(&self) -> usize {
        self.jobs
            .map(usize::from)
            .unwrap_or_else(|| JOBS_PER_CORE * std::thread::available_parallelism().map_or(1, |n| n.get()))
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
