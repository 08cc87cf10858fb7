//! Executor: runs a plan's jobs against the engine, `--jobs` at a time, each
//! after the jobs it is built on, and records what happened to each image.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::config::Arch;
use crate::engine::{self, Engine};
use crate::planning::{ImageInfo, Job, Step};
use crate::reporting::Progress;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    pub pulled: u64,
    pub built: u64,
    pub pushed: u64,
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

/// Everything a job needs besides the job itself.
pub struct Context<'a> {
    pub engine: &'a Engine,
    pub registry: &'a crate::registry::Registry,
    pub images_root: &'a Path,
    pub paths: &'a [(String, String)],
    pub arch: Arch,
    pub build_args: &'a [String],
    pub log_dir: &'a Path,
    /// What a job with no steps reports: `present` for load, `skipped` when
    /// the registry already has it.
    pub idle: Action,
    /// Set when a pull failed for want of a working registry.
    pub registry_down: AtomicBool,
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
    pub provenance: &'a crate::provenance::Provenance,
}

enum State {
    Waiting,
    Running,
    Done(bool),
}

pub fn execute(ctx: &Context, jobs: &[Job], parallel: usize, keep_going: bool, progress: &Progress) -> Vec<Outcome> {
    let ended = std::sync::atomic::AtomicU64::new(0);
    let end = |mut o: Outcome| -> Outcome {
        o.ended = ended.fetch_add(1, AtomicOrdering::SeqCst);
        progress.finished(&o);
        o
    };
    // What needs nothing is done before any work starts, so that a stop
    // after a failure never leaves it "not started".
    let mut first: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut states: Vec<State> = jobs.iter().map(|_| State::Waiting).collect();
    for (j, job) in jobs.iter().enumerate() {
        if job.steps.is_empty() {
            let reason = (ctx.idle == Action::Skipped).then(|| "registry has it".to_string());
            first[j] = Some(end(Outcome::new(job.info(), ctx.idle, reason)));
            states[j] = State::Done(true);
        }
    }
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(first);
    let state = Mutex::new((states, false));
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(jobs.len().max(1)) {
            scope.spawn(|| loop {
                let next = {
                    let mut guard = state.lock().unwrap();
                    loop {
                        let (states, stop) = &mut *guard;
                        if *stop || engine::interrupted() {
                            break None;
                        }
                        // A job whose base failed is blocked without running.
                        let mut changed = false;
                        for j in 0..jobs.len() {
                            if !matches!(states[j], State::Waiting) {
                                continue;
                            }
                            let Some(&base) = jobs[j].after.iter().find(|&&b| matches!(states[b], State::Done(false)))
                            else {
                                continue;
                            };
                            let reason = format!("its base {} failed", jobs[base].name);
                            let outcome = end(Outcome::new(jobs[j].info(), Action::Blocked, Some(reason)));
                            outcomes.lock().unwrap()[j] = Some(outcome);
                            states[j] = State::Done(false);
                            changed = true;
                        }
                        if changed {
                            wake.notify_all();
                            continue;
                        }
                        let ready = (0..jobs.len()).find(|&j| {
                            matches!(states[j], State::Waiting)
                                && jobs[j].after.iter().all(|&b| matches!(states[b], State::Done(true)))
                        });
                        if let Some(j) = ready {
                            states[j] = State::Running;
                            break Some(j);
                        }
                        if !states.iter().any(|s| matches!(s, State::Waiting)) {
                            break None;
                        }
                        guard = wake.wait(guard).unwrap();
                    }
                };
                let Some(j) = next else {
                    wake.notify_all();
                    return;
                };
                progress.started(&jobs[j].name);
                let outcome = end(run_job(ctx, &jobs[j]));
                let ok = !outcome.action.is_failure();
                outcomes.lock().unwrap()[j] = Some(outcome);
                let mut guard = state.lock().unwrap();
                guard.0[j] = State::Done(ok);
                if !ok && !keep_going {
                    guard.1 = true;
                }
                drop(guard);
                wake.notify_all();
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let outcomes = jobs
        .iter()
        .zip(outcomes)
        .map(|(job, o)| {
            o.unwrap_or_else(|| {
                let action = if engine::interrupted() { Action::Interrupted } else { Action::NotStarted };
                Outcome::new(job.info(), action, None)
            })
        })
        .collect::<Vec<_>>();
    // What waited on an image that failed was blocked by it, even when the
    // run stopped before saying so.
    let failed: Vec<bool> = outcomes.iter().map(|o| o.action.is_failure()).collect();
    let mut outcomes = outcomes;
    for (j, job) in jobs.iter().enumerate() {
        if outcomes[j].action == Action::NotStarted {
            if let Some(&base) = job.after.iter().find(|&&b| failed[b] && outcomes[b].action != Action::NotStarted) {
                let reason = format!("its base {} failed", jobs[base].name);
                outcomes[j] = Outcome {
                    ended: ended.fetch_add(1, AtomicOrdering::SeqCst),
                    ..Outcome::new(job.info(), Action::Blocked, Some(reason))
                };
            }
        }
    }
    outcomes
}

fn run_job(ctx: &Context, job: &Job) -> Outcome {
    let start = Instant::now();
    let log = ctx.log_dir.join(format!("{}.log", job.name));
    let _ = std::fs::remove_file(&log);
    let mut action = ctx.idle;
    let mut cache = None;
    let mut bytes = Bytes::default();
    engine::working_on(Some(&job.name));
    let result = run_steps(ctx, job, &log, &mut action, &mut cache, &mut bytes);
    engine::working_on(None);
    let seconds = start.elapsed().as_secs_f64();
    let log = log.exists().then_some(log);
    let mut outcome = Outcome::new(job.info(), action, Some(job.why.clone()));
    outcome.seconds = seconds;
    outcome.log = log;
    outcome.bytes = bytes;
    match result {
        Ok(()) => {
            outcome.builder = (action == Action::Built).then(|| ctx.engine.builder().kind());
            outcome.cache = cache;
        }
        Err(_) if engine::interrupted() => outcome.action = Action::Interrupted,
        Err(e) => {
            outcome.action = Action::Failed;
            outcome.error = Some(format!("{e:#}"));
        }
    }
    outcome
}

fn run_steps(
    ctx: &Context,
    job: &Job,
    log: &Path,
    action: &mut Action,
    cache: &mut Option<CacheUse>,
    bytes: &mut Bytes,
) -> Result<()> {
    let engine = ctx.engine;
    let (local, latest, remote) = (job.local_ref(), job.local_latest(), job.remote_ref());
    let name_locally = |from: &str| -> Result<()> {
        for target in [&local, &latest] {
            if from != target.as_str() {
                engine.tag(from, target)?;
            }
        }
        if let Some(was) = &job.latest_was {
            crate::reporting::note(&format!(
                "{}: {latest} now points at the {} image (it was {was})",
                job.name,
                ctx.arch.platform()
            ));
        }
        Ok(())
    };
    // Returns the cache source the build had.
    // The size of the image this job has under its remote name, once known.
    let mut size: Option<u64> = None;
    let build = |action: &mut Action, size: &mut Option<u64>, bytes: &mut Bytes| -> Result<Option<CacheUse>> {
        let (built, used) = build_checked(ctx, job, log)?;
        *size = Some(built.size);
        bytes.built += built.size;
        let id = built.id;
        engine.tag(&id, &remote)?;
        name_locally(&remote)?;
        *action = (*action).max(Action::Built);
        Ok(used)
    };
    // A pulled image is for ARCH, or loses the name the pull gave it.
    let pull_checked = |quick: bool| -> Result<u64> {
        engine.pull(&remote, ctx.arch, quick, log)?;
        let pulled = engine.image(&remote)?;
        let platform = pulled.platform;
        if !platform.is(ctx.arch) {
            engine.untag(&remote)?;
            bail!(
                "the registry's {remote} is for {platform}, not {}: it was pushed for the wrong architecture; \
                 nothing was tagged",
                ctx.arch.platform()
            );
        }
        Ok(pulled.size)
    };
    // Built and pushed in one go, never through the local store.
    let direct = ctx.direct_push && job.steps.contains(&Step::Build) && job.steps.contains(&Step::Push { from: None });
    for step in &job.steps {
        match step {
            Step::TagLocal { from } => {
                name_locally(from)?;
                *action = (*action).max(Action::Tagged);
            }
            Step::Pull { or_build: true } if ctx.registry_down.load(AtomicOrdering::SeqCst) => {
                crate::reporting::note(&format!("{}: registry unreachable; building", job.name));
                *cache = build(action, &mut size, bytes)?;
            }
            Step::Pull { or_build } => match pull_checked(*or_build) {
                Ok(pulled) => {
                    size = Some(pulled);
                    bytes.pulled += pulled;
                    name_locally(&remote)?;
                    *action = (*action).max(Action::Pulled);
                }
                Err(e) if *or_build && !engine::interrupted() => {
                    // Once the registry failed, later images build without waiting on it.
                    if crate::registry::is_transient(&e) {
                        ctx.registry_down.store(true, AtomicOrdering::SeqCst);
                    }
                    crate::reporting::note(&format!("{}: pull failed ({e:#}); building", job.name));
                    *cache = build(action, &mut size, bytes)?;
                }
                Err(e) => return Err(e),
            },
            Step::Build if direct => {
                let (digest, used) = build_pushed(ctx, job, log)?;
                *cache = used;
                ctx.registry.retag(&format!("{}@{digest}", job.remote), &remote)?;
                *action = (*action).max(Action::Pushed);
            }
            Step::Build => {
                *cache = build(action, &mut size, bytes)?;
            }
            Step::Push { from: None } if direct => {}
            Step::Push { from } => {
                if let Some(from) = from {
                    engine.tag(from, &remote)?;
                }
                engine.push(&remote, log)?;
                bytes.pushed += match size {
                    Some(size) => size,
                    None => engine.image(&remote).map_or(0, |image| image.size),
                };
                *action = (*action).max(Action::Pushed);
            }
            Step::PushLatest => {
                // The tag's manifest, byte for byte, under `:latest`; only
                // when it points elsewhere.
                if ctx.registry.retag(&remote, &job.remote_latest())? {
                    *action = (*action).max(Action::Latest);
                }
            }
            Step::Missing => bail!("{}", job.why),
        }
    }
    Ok(())
}

/// Builds the job's image and returns its ID once it is known to be for
/// ARCH, with the cache source it was given. A builder that shares its layer
/// cache across platforms may hand back layers built for another: then it
/// builds again without the cache.
fn build_checked(ctx: &Context, job: &Job, log: &Path) -> Result<(engine::ImageDetails, Option<CacheUse>)> {
    let (path, dockerfile) = &ctx.paths[job.image];
    let dir = ctx.images_root.join(path);
    let labels = ctx.provenance.labels(path, &job.tag);
    let spec = engine::BuildSpec { dir: &dir, dockerfile, arch: ctx.arch, args: ctx.build_args, labels: &labels };
    let engine = ctx.engine;
    let expected = ctx.arch.platform();
    let (mut cache, mut used) = build_cache(ctx, job, log);
    loop {
        let built = engine.build(&spec, &cache, log)?;
        let image = engine.image(&built.id)?;
        let platform = image.platform.clone();
        if platform.is(ctx.arch) {
            let used = used.map(|u| CacheUse { steps_reused: built.steps_reused, ..u });
            return Ok((image, used));
        }
        if !cache.none && engine.builder().shares_cache_across_platforms() {
            crate::reporting::note(&format!(
                "{}: the build gave a {platform} image, from layers cached for another architecture; \
                 building again without the cache",
                job.name
            ));
            cache = engine::BuildCache { none: true, ..engine::BuildCache::default() };
            used = None;
            continue;
        }
        let cause = if cache.none {
            "its base image is for another architecture"
        } else {
            "a cached layer or its base image is for another architecture"
        };
        bail!("built a {platform} image, not {expected}: {cause}; nothing was tagged; log: {}", log.display());
    }
}

/// Builds the job's image straight into the registry and returns its
/// digest once the registry's copy is known to be for ARCH (it has no tag
/// until then).
fn build_pushed(ctx: &Context, job: &Job, log: &Path) -> Result<(String, Option<CacheUse>)> {
    let (path, dockerfile) = &ctx.paths[job.image];
    let dir = ctx.images_root.join(path);
    let labels = ctx.provenance.labels(path, &job.tag);
    let spec = engine::BuildSpec { dir: &dir, dockerfile, arch: ctx.arch, args: ctx.build_args, labels: &labels };
    let (build_cache, used) = build_cache(ctx, job, log);
    let digest = ctx.engine.build_push(&spec, &build_cache, &job.remote, log)?;
    let pushed = format!("{}@{digest}", job.remote);
    let platform =
        ctx.registry.platform(&pushed)?.ok_or_else(|| anyhow::anyhow!("the registry lacks {pushed}, just pushed"))?;
    if !platform.is(ctx.arch) {
        bail!(
            "built a {platform} image, not {}: its base image is for another architecture; it was pushed as {pushed} \
             but given no tag; log: {}",
            ctx.arch.platform(),
            log.display()
        );
    }
    Ok((digest, used))
}

/// What the build may take from a cache: the plan's source as each builder
/// takes it. The classic builder needs the image present (a remote
/// `:latest` is pulled for it, and checked to be for ARCH); BuildKit reads
/// it where it is, local or in the registry, from the inline cache its
/// builds carry; podman reads the layers its builds pushed to the image's
/// cache repository.
fn build_cache(ctx: &Context, job: &Job, log: &Path) -> (engine::BuildCache, Option<CacheUse>) {
    use crate::engine::Builder;
    use crate::planning::CacheSource;
    let engine = ctx.engine;
    let builder = engine.builder();
    let mut cache = engine::BuildCache { none: ctx.no_cache, ..engine::BuildCache::default() };
    let podman_repo = format!("{}-buildcache", job.remote);
    if *builder == Builder::Podman && ctx.cache_to && !ctx.no_cache {
        cache.to = Some(podman_repo.clone());
    }
    let mut used = None;
    if let (false, Some(source)) = (ctx.no_cache, &job.cache) {
        let reference = source.reference().to_string();
        let kind = if matches!(source, CacheSource::Local(_)) { "local" } else { "remote" };
        match builder {
            Builder::Podman => {
                used = Some(CacheUse { kind: "repository", reference: podman_repo.clone(), steps_reused: None });
                cache.from = Some(podman_repo);
            }
            Builder::Classic if kind == "remote" => {
                // Pulled for the cache only; an image for another platform is not used.
                let pulled = engine.pull(&reference, ctx.arch, true, log).and_then(|()| engine.platform(&reference));
                match pulled {
                    Ok(platform) if platform.is(ctx.arch) => {
                        used = Some(CacheUse { kind, reference: reference.clone(), steps_reused: None });
                        cache.from = Some(reference);
                    }
                    Ok(platform) => crate::reporting::note(&format!(
                        "{}: {reference} is for {platform}: building without it",
                        job.name
                    )),
                    Err(e) => crate::reporting::note(&format!("{}: no cache from {reference} ({e:#})", job.name)),
                }
            }
            _ => {
                used = Some(CacheUse { kind, reference: reference.clone(), steps_reused: None });
                cache.from = Some(reference);
            }
        }
    }
    // A foreign build on a builder that matches layers across platforms gets
    // none of its own cache; the classic builder with `--cache-from` looks at
    // that image alone, which is for ARCH.
    let classic_with_source = *builder == Builder::Classic && cache.from.is_some();
    if ctx.fresh_builds && !classic_with_source {
        cache = engine::BuildCache { none: true, ..engine::BuildCache::default() };
        used = None;
    }
    (cache, used)
}
