//! The steps of one image's job: pull, build (checked for its platform
//! before it gets a name), tag, push, each against the engine or the
//! registry, with the job's log (the run's own, `<name>.log` linking to the
//! newest); and the builds of a batch, done ahead of
//! their jobs. A pull that fails falls back to a build; when the image is
//! built on others of the run, the job hands back what it did so far, to
//! build once they are done.

use std::path::Path;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Instant;

use anyhow::{bail, Result};

use super::{note, Context};
use crate::engine;
use crate::model::{Action, Bytes, CacheUse, Event, JobIndex, Outcome};
use crate::planning::{FromImage, Job, Step};

/// A job's work so far, kept while the build a failed pull fell back to
/// waits for the images it is built on.
pub(super) struct Partial {
    /// The step to run next; when `fell_back`, a pull whose build is still to run.
    next: usize,
    fell_back: bool,
    action: Action,
    cache: Option<CacheUse>,
    bytes: Bytes,
    /// The size of the image this job has under its remote name, once known.
    size: Option<u64>,
    /// Why it did what it did: the plan's reason, and why a pull became a build.
    reason: String,
    seconds: f64,
}

/// How a run of a job's steps ended.
pub(super) enum Ran {
    Finished(Outcome),
    /// Its pull failed, and the build it falls back to needs the jobs of
    /// [`Job::build_after`] done first: run it again with this then.
    WaitsForBases(Partial),
}

impl Partial {
    /// The outcome of a job whose build never ran: the run stopped first.
    pub(super) fn unfinished(&self, job: &Job, action: Action) -> Outcome {
        let mut outcome = Outcome::new(job.info(), action, Some(self.reason.clone()));
        outcome.seconds = self.seconds;
        outcome.bytes = self.bytes;
        outcome
    }
}

/// Runs a job's steps, from the start or (`resume`) from the build its
/// failed pull fell back to.
pub(super) fn run_job(ctx: &Context, job: &Job, resume: Option<Partial>) -> Ran {
    let start = Instant::now();
    let log = log_of(ctx, job);
    let mut work = resume.unwrap_or_else(|| Partial {
        next: 0,
        fell_back: false,
        action: job.idle(ctx.idle),
        cache: None,
        bytes: Bytes::default(),
        size: None,
        reason: job.why.clone(),
        seconds: 0.0,
    });
    let labelled = ctx.engine.for_image(&job.name);
    let ctx = &Context { engine: labelled.as_deref().unwrap_or(ctx.engine), ..*ctx };
    let result = run_steps(ctx, job, &log, &mut work);
    work.seconds += start.elapsed().as_secs_f64();
    if matches!(result, Ok(true)) {
        return Ran::WaitsForBases(work);
    }
    // A job that wrote nothing (a re-tag, a present image) leaves the
    // latest log as it was.
    let log = log.exists().then_some(log);
    if let Some(log) = &log {
        link_latest(ctx, job, log);
    }
    let mut outcome = Outcome::new(job.info(), work.action, Some(work.reason));
    outcome.seconds = work.seconds;
    outcome.log = log;
    outcome.bytes = work.bytes;
    match result {
        Ok(_) => {
            outcome.builder = (work.action == Action::Built).then(|| ctx.engine.builder().kind());
            outcome.cache = work.cache;
        }
        Err(_) if ctx.engine.interrupted() => outcome.action = Action::Interrupted,
        Err(e) => {
            outcome.action = Action::Failed;
            outcome.error = Some(format!("{e:#}"));
        }
    }
    Ran::Finished(outcome)
}

/// Runs the steps from `work.next` on; true when the job must wait for its
/// bases before the build its failed pull fell back to.
fn run_steps(ctx: &Context, job: &Job, log: &Path, work: &mut Partial) -> Result<bool> {
    let engine = ctx.engine;
    let [local, latest, remote] = job.names.plan_names();
    let latest_moved = || {
        if let Some(was) = &job.latest_was {
            note(ctx, format!("{}: {latest} now points at the {} image (it was {was})", job.name, ctx.arch.platform()));
        }
    };
    let name_locally = |from: &str| -> Result<()> {
        let targets: Vec<&str> = [&local, &latest].into_iter().map(String::as_str).filter(|t| *t != from).collect();
        engine.tag_all(from, &targets)?;
        latest_moved();
        Ok(())
    };
    let build = |work: &mut Partial| -> Result<()> {
        let (built, used) = build_checked(ctx, job, log)?;
        work.size = Some(built.size);
        match own_bytes(ctx, job, &built) {
            Some(own) => work.bytes.built += own,
            None => work.bytes.unmeasured_builds += 1,
        }
        // Every name at once (one call where the engine takes several).
        engine.tag_all(&built.id, &[&remote, &local, &latest])?;
        latest_moved();
        work.action = work.action.max(Action::Built);
        work.cache = used;
        Ok(())
    };
    // A build instead of a pull: now, or once the images it is built on
    // are done (true).
    let fall_back = |work: &mut Partial, because: &str| -> Result<bool> {
        work.reason = format!("{}; {because}", job.why);
        if job.build_after.is_empty() {
            build(work)?;
            return Ok(false);
        }
        work.fell_back = true;
        Ok(true)
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
    for (k, step) in job.steps.iter().enumerate().skip(work.next) {
        work.next = k;
        match step {
            Step::TagLocal { from } => {
                name_locally(from)?;
                work.action = work.action.max(Action::Tagged);
            }
            Step::Pull { or_build: true } if work.fell_back => {
                work.fell_back = false;
                build(work)?;
            }
            Step::Pull { or_build: true } if ctx.registry_down.load(AtomicOrdering::SeqCst) => {
                note(ctx, format!("{}: registry unreachable; building", job.name));
                if fall_back(work, "the registry is unreachable")? {
                    return Ok(true);
                }
            }
            Step::Pull { or_build } => match pull_checked(*or_build) {
                Ok(pulled) => {
                    work.size = Some(pulled);
                    work.bytes.pulled += pulled;
                    name_locally(&remote)?;
                    work.action = work.action.max(Action::Pulled);
                }
                Err(e) if *or_build && !engine.interrupted() => {
                    // Once the registry failed, later images build without waiting on it.
                    if crate::registry::is_transient(&e) {
                        ctx.registry_down.store(true, AtomicOrdering::SeqCst);
                    }
                    note(ctx, format!("{}: pull failed ({e:#}); building", job.name));
                    if fall_back(work, "the pull failed")? {
                        return Ok(true);
                    }
                }
                Err(e) => return Err(e),
            },
            Step::Build if direct => {
                let (pushed, used) = build_pushed(ctx, job, log)?;
                work.cache = used;
                ctx.registry.retag(&pushed, &remote)?;
                work.action = work.action.max(Action::Pushed);
            }
            Step::Build => build(work)?,
            Step::Push { from: None } if direct => {}
            Step::Push { from } => {
                if let Some(from) = from {
                    engine.tag(from, &remote)?;
                }
                engine.push(&remote, log)?;
                work.bytes.pushed += match work.size {
                    Some(size) => size,
                    None => engine.image(&remote).map_or(0, |image| image.size),
                };
                work.action = work.action.max(Action::Pushed);
            }
            Step::PushLatest => {
                // The tag's manifest, byte for byte, under `:latest`; only
                // when it points elsewhere.
                if ctx.registry.retag(&remote, &job.names.remote_latest())? {
                    work.action = work.action.max(Action::Latest);
                }
            }
            Step::Missing => bail!("{}", job.why),
        }
    }
    Ok(false)
}

/// The bytes of the layers a build made: the image's size less that of the
/// image its last stage starts from, when that one is here to be measured
/// and its layers are the first of the built image's. `None` when not.
fn own_bytes(ctx: &Context, job: &Job, built: &engine::ImageDetails) -> Option<u64> {
    let base = match &job.from {
        FromImage::Scratch => return Some(built.size),
        FromImage::Unknown => return None,
        FromImage::Image(reference) => reference.as_str(),
    };
    let mut facts = ctx.engine.image_facts(&[&built.id, base]).ok()?;
    let own = facts.remove(&built.id)?;
    let base = facts.into_values().next()?;
    own.layers.starts_with(&base.layers).then(|| own.size.saturating_sub(base.size))
}

/// What a job's build reads: its context, its Dockerfile (as written, or
/// with its bases named by digest), its labels.
struct BuildInputs<'c> {
    dir: std::path::PathBuf,
    dockerfile: &'c str,
    labels: Vec<(String, String)>,
    text: Option<String>,
}

impl<'c> BuildInputs<'c> {
    /// With the bases label, when what the build is built on is known.
    fn of(ctx: &'c Context, job: &'c Job) -> BuildInputs<'c> {
        let mut labels = ctx.provenance.labels(&job.path, &job.names.tag);
        let bases = ctx.built_on.of(ctx, job);
        labels.extend(bases.as_ref().map(|b| ctx.provenance.bases_label(&b.digests)));
        let text = bases.and_then(|b| b.text);
        BuildInputs { dir: ctx.images_root.join(&job.path), dockerfile: &job.dockerfile, labels, text }
    }

    fn spec<'s>(&'s self, ctx: &'s Context) -> engine::BuildSpec<'s> {
        engine::BuildSpec {
            dir: &self.dir,
            dockerfile: self.dockerfile,
            arch: ctx.arch,
            args: ctx.build_args,
            labels: &self.labels,
            text: self.text.as_deref(),
        }
    }
}

/// This run's log of the job: its own file, which another run at the same
/// time never writes nor removes.
fn log_of(ctx: &Context, job: &Job) -> std::path::PathBuf {
    ctx.log_dir.join(format!("{}.{}.log", job.name, ctx.run))
}

/// Points `<name>.log` at `log`. The link is made aside and renamed over
/// the old one, so that a reader never finds it missing; one left behind
/// by a killed run is removed with the build files its process left.
fn link_latest(ctx: &Context, job: &Job, log: &Path) {
    let Some(file) = log.file_name() else { return };
    let latest = ctx.log_dir.join(format!("{}.log", job.name));
    let aside = ctx.log_dir.join(format!("{}.log.{}.link", job.name, std::process::id()));
    let _ = std::fs::remove_file(&aside);
    // Without the link the run's own log is still named in its outcome.
    if std::os::unix::fs::symlink(file, &aside).and_then(|()| std::fs::rename(&aside, &latest)).is_err() {
        let _ = std::fs::remove_file(&aside);
    }
}

/// Builds the images of `batch` (job indices) in one engine call; each job
/// then checks and names its image as if it had built it. When the call
/// fails, or the engine cannot, each job builds its own, which tells whose
/// build failed.
pub(super) fn build_batch(ctx: &Context, jobs: &[Job], batch: &[JobIndex]) {
    ctx.builds.starting(ctx.events);
    let inputs: Vec<_> = batch
        .iter()
        .map(|&j| {
            let job = &jobs[j];
            let log = log_of(ctx, job);
            let (cache, _) = build_cache(ctx, job, &log);
            (BuildInputs::of(ctx, job), cache, log)
        })
        .collect();
    let builds: Vec<engine::BatchBuild> = batch
        .iter()
        .zip(&inputs)
        .map(|(&j, (inputs, cache, log))| engine::BatchBuild {
            name: &jobs[j].name,
            spec: inputs.spec(ctx),
            cache: cache.clone(),
            log,
        })
        .collect();
    for b in &builds {
        ctx.events.event(Event::Started(b.name));
    }
    match ctx.engine.build_batch(&builds, ctx.log_dir) {
        Some(Ok(built)) => {
            // What each is, in one engine call for the batch.
            let ids: Vec<&str> = built.iter().map(|b| b.id.as_str()).collect();
            let mut details = ctx.engine.images(&ids).unwrap_or_default();
            let mut prebuilt = ctx.prebuilt.built.lock().unwrap();
            for (&j, b) in batch.iter().zip(built) {
                let image = details.remove(&b.id);
                prebuilt.insert(jobs[j].image, (b, image));
            }
        }
        Some(Err(e)) if !ctx.engine.interrupted() => {
            note(ctx, format!("{} images built together failed ({e:#}): building each on its own", batch.len()))
        }
        _ => {}
    }
}

/// Builds the job's image and returns its ID once it is known to be for
/// ARCH, with the cache source it was given. A builder that shares its layer
/// cache across platforms may hand back layers built for another: then it
/// builds again without the cache.
fn build_checked(ctx: &Context, job: &Job, log: &Path) -> Result<(engine::ImageDetails, Option<CacheUse>)> {
    ctx.builds.starting(ctx.events);
    let inputs = BuildInputs::of(ctx, job);
    let spec = inputs.spec(ctx);
    let engine = ctx.engine;
    let expected = ctx.arch.platform();
    let (mut cache, mut used) = build_cache(ctx, job, log);
    let mut prebuilt = ctx.prebuilt.built.lock().unwrap().remove(&job.image);
    loop {
        let (built, known) = match prebuilt.take() {
            Some(done) => done,
            None => (engine.build(&spec, &cache, log)?, None),
        };
        let image = match known {
            Some(image) => image,
            None => engine.image(&built.id)?,
        };
        let platform = image.platform.clone();
        if platform.is(ctx.arch) {
            let used = used.map(|u| CacheUse { steps_reused: built.steps_reused, ..u });
            return Ok((image, used));
        }
        if !cache.none && engine.builder().shares_cache_across_platforms() {
            note(
                ctx,
                format!(
                    "{}: the build gave a {platform} image, from layers cached for another architecture; \
                 building again without the cache",
                    job.name
                ),
            );
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

/// Builds the job's image straight into the registry and returns it by
/// digest (`<remote>@<digest>`) once the registry's copy is known to be for
/// ARCH (it has no tag until then).
fn build_pushed(ctx: &Context, job: &Job, log: &Path) -> Result<(String, Option<CacheUse>)> {
    ctx.builds.starting(ctx.events);
    let inputs = BuildInputs::of(ctx, job);
    let (build_cache, used) = build_cache(ctx, job, log);
    let digest = ctx.engine.build_push(&inputs.spec(ctx), &build_cache, &job.names.remote, log)?;
    let pushed = job.names.remote_by_digest(&digest);
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
    Ok((pushed, used))
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
    let podman_repo = job.names.cache_repository();
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
                    Ok(platform) => {
                        note(ctx, format!("{}: {reference} is for {platform}: building without it", job.name))
                    }
                    Err(e) => note(ctx, format!("{}: no cache from {reference} ({e:#})", job.name)),
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
