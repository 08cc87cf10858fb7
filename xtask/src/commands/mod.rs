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

use crate::config::EngineKind;

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

/// Jobs per core when `--jobs` is not given, by engine, from cold builds of
/// 40 small images on 2 cores (`N=40 BENCH_RUNS=1 FLOOR_JOBS_SWEEP="1 2 3 4"
/// tests/bench/floor.sh`, seconds with 1, 2, 3 and 4 jobs). docker's
/// classic builder spends much of a build waiting on the daemon (a container
/// and a commit a step), so more jobs than cores keep it busy: 21.1, 12.9,
/// 13.6, 11.6. podman's builds wait on its store's locks, which more jobs
/// only contend for: 31.1, 21.2, 23.8, 24.7.
fn jobs_per_core(engine: EngineKind) -> usize {
    match engine {
        EngineKind::Docker => 2,
        EngineKind::Podman => 1,
    }
}

/// Registry look-ups at once per core when `--jobs` is not given: they
/// wait on the network, not on the engine.
const LOOK_UPS_PER_CORE: usize = 2;

impl RunArgs {
    /// How many images are worked on at once: `--jobs`, else
    /// [`jobs_per_core`] per core.
    fn jobs(&self, engine: EngineKind) -> usize {
        self.jobs.map(usize::from).unwrap_or_else(|| jobs_per_core(engine) * cores())
    }

    /// How many registry look-ups run at once: `--jobs`, else
    /// [`LOOK_UPS_PER_CORE`] per core.
    fn look_ups(&self) -> usize {
        self.jobs.map(usize::from).unwrap_or_else(|| LOOK_UPS_PER_CORE * cores())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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

#[cfg(test)]
mod tests {
    use super::{cores, EngineKind, RunArgs};

    #[test]
    fn jobs_by_engine_unless_given() {
        let default = RunArgs::default();
        assert_eq!(default.jobs(EngineKind::Docker), 2 * cores());
        assert_eq!(default.jobs(EngineKind::Podman), cores());
        assert_eq!(default.look_ups(), 2 * cores());
        let given = RunArgs { jobs: Some(3), ..RunArgs::default() };
        assert_eq!((given.jobs(EngineKind::Docker), given.jobs(EngineKind::Podman), given.look_ups()), (3, 3, 3));
    }
}
