//! The plain types the layers share: where an image sits in its catalog and
//! a job in its plan, what happened to each image, and the events a run
//! sends while it works (the executor and the reporter, which do not import
//! each other, meet here), and text from outside made safe to show
//! ([`escape`], [`excerpt`]).

use std::path::PathBuf;

use serde::Serialize;

mod digest;
mod escape;
mod event;
mod platform;
mod reference;
pub use digest::hex;
pub use escape::{escape, excerpt, EXCERPT_CHARS};
pub use event::{Event, Observer};
pub use platform::{Arch, Platform};
pub use reference::{Parts, Reference};

use crate::config::Settings;

/// Exit status for a command that failed; clap uses 2 for bad usage.
pub const EXIT_FAILURE: i32 = 1;

/// Exit status when Ctrl-C or SIGTERM stopped the work (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// An image's place in its catalog: `catalog[i]`. Never a place in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageIndex(pub usize);

/// A job's place in its plan: `jobs[j]`. Never a place in a catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobIndex(pub usize);

impl JobIndex {
    /// Every place in a plan of `len` jobs, in order.
    pub fn all(len: usize) -> impl Iterator<Item = JobIndex> {
        (0..len).map(JobIndex)
    }
}

/// One value for each job of a plan, found by its [`JobIndex`].
#[derive(Clone, Debug)]
pub struct PerJob<T>(pub Vec<T>);

impl<T> PerJob<T> {
    pub fn new(len: usize, value: impl FnMut() -> T) -> PerJob<T> {
        PerJob(std::iter::repeat_with(value).take(len).collect())
    }
}

impl<T> std::ops::Index<JobIndex> for PerJob<T> {
    type Output = T;
    fn index(&self, j: JobIndex) -> &T {
        &self.0[j.0]
    }
}

impl<T> std::ops::IndexMut<JobIndex> for PerJob<T> {
    fn index_mut(&mut self, j: JobIndex) -> &mut T {
        &mut self.0[j.0]
    }
}

/// An image as every JSON document shows it: the same object for lists,
/// plans and outcomes. The tag and names are missing only for an image
/// that is not available for the architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub path: String,
    pub arch: Arch,
    pub tag: Option<String>,
    /// `<LOCAL_IMAGE_PREFIX>/<path>:<tag>`
    pub local: Option<String>,
    /// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>:<tag>`
    pub remote: Option<String>,
    pub test: bool,
}

impl ImageInfo {
    /// An image available for `arch`, with its tag and names.
    pub fn named(name: &str, path: &str, arch: Arch, names: &ImageRef, test: bool) -> ImageInfo {
        ImageInfo {
            name: name.to_string(),
            path: path.to_string(),
            arch,
            tag: Some(names.tag.clone()),
            local: Some(names.local_tagged()),
            remote: Some(names.remote_tagged()),
            test,
        }
    }
}

/// What happened to an image, from least to most work done, then how it
/// ended without being done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The run stopped (a failure without `--keep-going`) before its turn.
    NotStarted,
    /// Nothing to do: the registry has it, or no Dockerfile for the architecture.
    Skipped,
    Present,
    Tagged,
    Pulled,
    Built,
    /// The remote `:latest` was moved to the tag; nothing else was pushed.
    Latest,
    Pushed,
    /// Not built because an image it is built on failed.
    Blocked,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
    Failed,
}

impl Action {
    /// As the summary says it (`--json` spells `not started` as `not-started`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NotStarted => "not started",
            Action::Skipped => "skipped",
            Action::Present => "present",
            Action::Tagged => "tagged",
            Action::Pulled => "pulled",
            Action::Built => "built",
            Action::Latest => "latest",
            Action::Pushed => "pushed",
            Action::Blocked => "blocked",
            Action::Interrupted => "interrupted",
            Action::Failed => "failed",
        }
    }

    /// Whether the image is not done.
    pub fn is_failure(self) -> bool {
        matches!(self, Action::NotStarted | Action::Blocked | Action::Interrupted | Action::Failed)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub image: ImageInfo,
    pub action: Action,
    /// Why: what the plan found (`not in the registry`), what was skipped for
    /// (`registry has it`), or which base blocked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(serialize_with = "milliseconds")]
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// What built the image (`classic`, `buildkit`, `podman`), when it was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<&'static str>,
    /// The previous version the build took unchanged steps from, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheUse>,
    /// When it ended, in the order images ended: causes come before the
    /// failures they brought.
    #[serde(skip)]
    pub ended: u64,
    /// The size of what was pulled, built and pushed, for the summary.
    #[serde(skip)]
    pub bytes: Bytes,
}

/// Bytes of the images pulled, built and pushed, as the engine sizes them.
/// A built image counts its own layers only, not those of the image it
/// starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    pub pulled: u64,
    pub built: u64,
    pub pushed: u64,
    /// Builds left out of `built`: the image they start from is not here
    /// to tell its layers from theirs.
    pub unmeasured_builds: u32,
}

impl Outcome {
    pub fn new(image: ImageInfo, action: Action, reason: Option<String>) -> Outcome {
        Outcome {
            image,
            action,
            reason,
            seconds: 0.0,
            error: None,
            log: None,
            builder: None,
            cache: None,
            ended: 0,
            bytes: Bytes::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.image.name
    }

    pub fn tag(&self) -> &str {
        self.image.tag.as_deref().unwrap_or("-")
    }
}

/// Seconds, to the millisecond.
fn milliseconds<S: serde::Serializer>(seconds: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64((seconds * 1000.0).round() / 1000.0)
}

/// The cache source a build was given, and what it made of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheUse {
    /// `local`, `remote`, or for podman `repository` (its cache repository).
    pub kind: &'static str,
    pub reference: String,
    /// Steps taken from the cache, when the builder says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_reused: Option<u32>,
}

/// One version of an image by its names: the only place they are spelled.
/// Locally `<LOCAL_IMAGE_PREFIX>/<path>`, in the registry
/// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>`, each with `:<tag>` or `:latest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    pub tag: String,
    /// The local repository, without a tag.
    pub local: String,
    /// The remote repository, without a tag.
    pub remote: String,
}

impl ImageRef {
    /// The names of the image at `path` (under the images root) for
    /// `settings.arch`, at `tag`.
    pub fn new(settings: &Settings, path: &str, tag: &str) -> ImageRef {
        ImageRef {
            tag: tag.to_string(),
            local: ImageRef::local_repository(settings, path),
            remote: ImageRef::remote_repository(settings, path),
        }
    }

    pub fn local_repository(settings: &Settings, path: &str) -> String {
        format!("{}/{path}", settings.local_prefix)
    }

    pub fn remote_repository(settings: &Settings, path: &str) -> String {
        format!("{}/{path}_{}", settings.remote_prefix, settings.arch)
    }

    /// `<REMOTE_IMAGE_PREFIX>/<path>:<tag>`: the index over the image's
    /// architectures that `push-manifest` writes.
    pub fn index(settings: &Settings, path: &str, tag: &str) -> String {
        format!("{}/{path}:{tag}", settings.remote_prefix)
    }

    /// The names a plan looks for and gives, in this order: `<local>:<tag>`,
    /// `<local>:latest`, `<remote>:<tag>`.
    pub fn plan_names(&self) -> [String; 3] {
        [self.local_tagged(), self.local_latest(), self.remote_tagged()]
    }

    /// `<local>:<tag>`
    pub fn local_tagged(&self) -> String {
        format!("{}:{}", self.local, self.tag)
    }

    /// `<local>:latest`
    pub fn local_latest(&self) -> String {
        format!("{}:latest", self.local)
    }

    /// `<remote>:<tag>`
    pub fn remote_tagged(&self) -> String {
        format!("{}:{}", self.remote, self.tag)
    }

    /// `<remote>:latest`
    pub fn remote_latest(&self) -> String {
        format!("{}:latest", self.remote)
    }

    /// `<remote>@<digest>`: what a build pushed, before it has a tag.
    pub fn remote_by_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.remote)
    }

    /// `<remote>-buildcache`: where podman keeps the layers its builds of
    /// the image pushed, for the next version's build.
    pub fn cache_repository(&self) -> String {
        format!("{}-buildcache", self.remote)
    }
}
