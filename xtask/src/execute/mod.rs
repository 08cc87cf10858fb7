//! Executor: runs a plan's jobs against the engine, `--jobs` at a time, each
//! after the jobs it is built on, and records what happened to each image.
//! The scheduler decides what runs when (a job planned only for a build that
//! may not happen runs when that build does); a job's steps are run in
//! `job`, and what a build is built on is looked up in `built_on`.

mod built_on;
mod job;
mod scheduler;

pub use built_on::BuiltOn;
pub use scheduler::execute;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::engine::{self, Engine};
use crate::model::Arch;
use crate::model::{Action, Event, ImageIndex, Observer};

/// Everything a job needs besides the job itself.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub engine: &'a dyn Engine,
    pub registry: &'a crate::registry::Registry,
    pub images_root: &'a Path,
    pub arch: Arch,
    pub build_args: &'a [String],
    pub log_dir: &'a Path,
    /// What tells this run's logs from those of other runs: a job's log is
    /// `<name>.<run>.log`, and `<name>.log` links to the newest.
    pub run: &'a str,
    /// What a requested image's job with no steps reports: `present` for
    /// load, `skipped` (the registry has it) for test and push.
    pub idle: Action,
    /// Set when a pull failed for want of a working registry.
    pub registry_down: &'a AtomicBool,
    /// Build without the layer cache: the builder would match layers cached
    /// for another architecture.
    pub fresh_builds: bool,
    /// `--no-cache`: no cache source, and the engine's own cache unused.
    pub no_cache: bool,
    /// podman pushes the layers it builds to the image's cache repository
    /// (when the run pushes), for the next version's build.
    pub cache_to: bool,
    /// A build that is to be pushed goes straight from the builder to the
    /// registry (buildx without a local image store).
    pub direct_push: bool,
    /// The labels of what is built.
    pub provenance: &'a crate::git::provenance::Provenance,
    /// What each build is built on, looked up as builds start.
    pub built_on: &'a BuiltOn,
    /// Images built ahead of their job, several in one engine call.
    pub prebuilt: &'a Prebuilt,
    /// What is said when the first build starts, and whether one did.
    pub builds: &'a Builds,
    /// Told what happens, as it happens.
    pub events: &'a dyn Observer,
}

fn note(ctx: &Context, text: String) {
    ctx.events.event(Event::Note(text));
}

/// Builds done ahead of their jobs by [`Engine::build_batch`], by image.
#[derive(Default)]
pub struct Prebuilt {
    built: Mutex<std::collections::HashMap<ImageIndex, (engine::Built, Option<engine::ImageDetails>)>>,
}

/// The run's builds as a whole: a note said once, when the first one
/// starts (a run that only pulls says nothing of the builder), and whether
/// any did.
#[derive(Default)]
pub struct Builds {
    note: Mutex<Option<String>>,
    started: AtomicBool,
}

impl Builds {
    /// Says `note` when the first build starts.
    pub fn announcing(note: Option<String>) -> Builds {
        Builds { note: Mutex::new(note), started: AtomicBool::new(false) }
    }

    /// A build is about to start: the note, if not said yet. Held while it
    /// is said, so that no build starts before it is.
    fn starting(&self, events: &dyn Observer) {
        let mut note = self.note.lock().unwrap();
        self.started.store(true, Ordering::SeqCst);
        if let Some(text) = note.take() {
            events.event(Event::Note(text));
        }
    }

    /// Whether any build started.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}
