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
use crate::planning::{Job, Step};
use crate::reporting::Progress;

/// What happened to an image, from least to most work done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    NotStarted,
    Skipped,
    Present,
    Tagged,
    Pulled,
    Built,
    /// The remote `:latest` was moved to the tag; nothing else was pushed.
    Latest,
    Pushed,
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NotStarted => "not-started",
            Action::Skipped => "skipped",
            Action::Present => "present",
            Action::Tagged => "tagged",
            Action::Pulled => "pulled",
            Action::Built => "built",
            Action::Latest => "latest",
            Action::Pushed => "pushed",
            Action::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub name: String,
    pub tag: String,
    pub action: Action,
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
    /// The labels of what is built.
    pub provenance: &'a crate::provenance::Provenance,
}

enum State {
    Waiting,
    Running,
    Done(bool),
}

pub fn execute(ctx: &Context, jobs: &[Job], parallel: usize, keep_going: bool, progress: &Progress) -> Vec<Outcome> {
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs.len()]);
    let state = Mutex::new((jobs.iter().map(|_| State::Waiting).collect::<Vec<_>>(), false));
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
                        // A job whose base failed fails without running.
                        let mut changed = false;
                        for j in 0..jobs.len() {
                            if matches!(states[j], State::Waiting)
                                && jobs[j].after.iter().any(|&b| matches!(states[b], State::Done(false)))
                            {
                                let base = jobs[j].after.iter().find(|&&b| matches!(states[b], State::Done(false)));
                                let msg = format!("not built: its base {} failed", jobs[*base.unwrap()].name);
                                let outcome = failed(&jobs[j], msg, None, 0.0);
                                progress.finished(&outcome);
                                outcomes.lock().unwrap()[j] = Some(outcome);
                                states[j] = State::Done(false);
                                changed = true;
                                if !keep_going {
                                    *stop = true;
                                }
                            }
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
                let outcome = run_job(ctx, &jobs[j]);
                progress.finished(&outcome);
                let ok = outcome.action != Action::Failed;
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
    jobs.iter()
        .zip(outcomes)
        .map(|(job, o)| {
            o.unwrap_or_else(|| Outcome {
                name: job.name.clone(),
                tag: job.tag.clone(),
                action: Action::NotStarted,
                seconds: 0.0,
                error: None,
                log: None,
                builder: None,
                cache: None,
                bytes: Bytes::default(),
            })
        })
        .collect()
}

fn failed(job: &Job, error: String, log: Option<PathBuf>, seconds: f64) -> Outcome {
    let (name, tag) = (job.name.clone(), job.tag.clone());
    let bytes = Bytes::default();
    Outcome { name, tag, action: Action::Failed, seconds, error: Some(error), log, builder: None, cache: None, bytes }
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
    match result {
        Ok(()) => {
            let builder = (action == Action::Built).then(|| ctx.engine.builder().kind());
            let (name, tag) = (job.name.clone(), job.tag.clone());
            Outcome { name, tag, action, seconds, error: None, log, builder, cache, bytes }
        }
        Err(e) => failed(job, format!("{e:#}"), log, seconds),
    }
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
    // The size of the image this job has under its remote name, once known.
    let mut size: Option<u64> = None;
    let mut build = |action: &mut Action, size: &mut Option<u64>, bytes: &mut Bytes| -> Result<()> {
        let (built, used) = build_checked(ctx, job, log)?;
        let id = built.id;
        *size = Some(built.size);
        bytes.built += built.size;
        *cache = used;
        engine.tag(&id, &remote)?;
        name_locally(&remote)?;
        *action = (*action).max(Action::Built);
        Ok(())
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
    for step in &job.steps {
        match step {
            Step::TagLocal { from } => {
                name_locally(from)?;
                *action = (*action).max(Action::Tagged);
            }
            Step::Pull { or_build: true } if ctx.registry_down.load(AtomicOrdering::SeqCst) => {
                crate::reporting::note(&format!("{}: registry unreachable; building", job.name));
                build(action, &mut size, bytes)?;
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
                    build(action, &mut size, bytes)?;
                }
                Err(e) => return Err(e),
            },
            Step::Build => {
                build(action, &mut size, bytes)?;
            }
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

/// Builds the job's image and returns it once it is known to be for ARCH,
/// with the cache source it was given. A builder that shares its layer
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
