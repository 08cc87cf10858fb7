//! Executor: runs a plan's jobs against the engine, `--jobs` at a time, each
//! after the jobs it is built on, and records what happened to each image.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::engine::{self, Engine};
use crate::model::Arch;
use crate::model::{Action, Bytes, CacheUse, Event, ImageIndex, JobIndex, Observer, Outcome, PerJob};
use crate::planning::{Job, Step};

/// Everything a job needs besides the job itself.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub engine: &'a dyn Engine,
    pub registry: &'a crate::registry::Registry,
    pub images_root: &'a Path,
    pub arch: Arch,
    pub build_args: &'a [String],
    pub log_dir: &'a Path,
    /// What a job with no steps reports: `present` for load, `skipped` when
    /// the registry already has it.
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
    /// Images built ahead of their job, several in one engine call.
    pub prebuilt: &'a Prebuilt,
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

/// What a worker takes on next.
enum Work {
    Job(JobIndex),
    /// Builds, ahead of their jobs, in one engine call.
    Batch(Vec<JobIndex>),
}

enum State {
    Waiting,
    Running,
    Done(bool),
}

pub fn execute(ctx: &Context, jobs: &[Job], parallel: usize, keep_going: bool) -> Vec<Outcome> {
    let ended = std::sync::atomic::AtomicU64::new(0);
    let end = |mut o: Outcome| -> Outcome {
        o.ended = ended.fetch_add(1, AtomicOrdering::SeqCst);
        ctx.events.event(Event::Finished(&o));
        o
    };
    // Job `j`, not run because its base `base` failed.
    let blocked = |j: JobIndex, base: JobIndex| {
        let reason = format!("its base {} failed", jobs[base].name);
        end(Outcome::new(jobs[j].info(), Action::Blocked, Some(reason)))
    };
    // What needs nothing is done before any work starts, so that a stop
    // after a failure never leaves it "not started".
    let mut first: PerJob<Option<Outcome>> = PerJob::new(jobs.len(), || None);
    let mut states: PerJob<State> = PerJob::new(jobs.len(), || State::Waiting);
    for j in JobIndex::all(jobs.len()) {
        if jobs[j].steps.is_empty() {
            let reason = (ctx.idle == Action::Skipped).then(|| "registry has it".to_string());
            first[j] = Some(end(Outcome::new(jobs[j].info(), ctx.idle, reason)));
            states[j] = State::Done(true);
        }
    }
    let outcomes: Mutex<PerJob<Option<Outcome>>> = Mutex::new(first);
    // Only a run that builds asks what the builder can do.
    let batches = ctx.build_args.is_empty()
        && !ctx.direct_push
        && jobs.iter().filter(|j| j.steps.contains(&Step::Build)).nth(1).is_some()
        && ctx.engine.batches_builds();
    // The jobs' states, whether the run stops, and which jobs went to a
    // batch already (each goes to one at most: after a failed batch, each
    // builds on its own).
    let state = Mutex::new((states, false, PerJob::new(jobs.len(), || false)));
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(jobs.len().max(1)) {
            scope.spawn(|| loop {
                let next = {
                    let mut guard = state.lock().unwrap();
                    loop {
                        let (states, stop, tried) = &mut *guard;
                        if *stop || ctx.engine.interrupted() {
                            break None;
                        }
                        // A job whose base failed is blocked without running.
                        let mut changed = false;
                        for j in JobIndex::all(jobs.len()) {
                            if !matches!(states[j], State::Waiting) {
                                continue;
                            }
                            let Some(&base) = jobs[j].after.iter().find(|&&b| matches!(states[b], State::Done(false)))
                            else {
                                continue;
                            };
                            outcomes.lock().unwrap()[j] = Some(blocked(j, base));
                            states[j] = State::Done(false);
                            changed = true;
                        }
                        if changed {
                            wake.notify_all();
                            continue;
                        }
                        let is_ready = |j: JobIndex| {
                            matches!(states[j], State::Waiting)
                                && jobs[j].after.iter().all(|&b| matches!(states[b], State::Done(true)))
                        };
                        // Builds ready at once go to the engine together, when it can.
                        let batch: Vec<JobIndex> = JobIndex::all(jobs.len())
                            .filter(|&j| batches && is_ready(j) && !tried[j] && jobs[j].steps.contains(&Step::Build))
                            .take(engine::BATCH_LIMIT)
                            .collect();
                        if batch.len() > 1 {
                            for &j in &batch {
                                states[j] = State::Running;
                                tried[j] = true;
                            }
                            break Some(Work::Batch(batch));
                        }
                        if let Some(j) = JobIndex::all(jobs.len()).find(|&j| is_ready(j)) {
                            states[j] = State::Running;
                            break Some(Work::Job(j));
                        }
                        if !states.0.iter().any(|s| matches!(s, State::Waiting)) {
                            break None;
                        }
                        guard = wake.wait(guard).unwrap();
                    }
                };
                let j = match next {
                    None => {
                        wake.notify_all();
                        return;
                    }
                    Some(Work::Batch(batch)) => {
                        build_batch(ctx, jobs, &batch);
                        let mut guard = state.lock().unwrap();
                        for j in batch {
                            guard.0[j] = State::Waiting;
                        }
                        drop(guard);
                        wake.notify_all();
                        continue;
                    }
                    Some(Work::Job(j)) => j,
                };
                ctx.events.event(Event::Started(&jobs[j].name));
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
        .zip(outcomes.0)
        .map(|(job, o)| {
            o.unwrap_or_else(|| {
                let action = if ctx.engine.interrupted() { Action::Interrupted } else { Action::NotStarted };
                Outcome::new(job.info(), action, None)
            })
        })
        .collect::<Vec<_>>();
    // What waited on an image that failed was blocked by it, even when the
    // run stopped before saying so.
    let failed = PerJob(outcomes.iter().map(|o| o.action.is_failure()).collect());
    let mut outcomes = PerJob(outcomes);
    for j in JobIndex::all(jobs.len()) {
        if outcomes[j].action == Action::NotStarted {
            if let Some(&base) = jobs[j].after.iter().find(|&&b| failed[b] && outcomes[b].action != Action::NotStarted)
            {
                outcomes[j] = blocked(j, base);
            }
        }
    }
    outcomes.0
}

fn run_job(ctx: &Context, job: &Job) -> Outcome {
    let start = Instant::now();
    let log = log_of(ctx, job);
    if !ctx.prebuilt.built.lock().unwrap().contains_key(&job.image) {
        let _ = std::fs::remove_file(&log);
    }
    let mut action = ctx.idle;
    let mut cache = None;
    let mut bytes = Bytes::default();
    let labelled = ctx.engine.for_image(&job.name);
    let ctx = &Context { engine: labelled.as_deref().unwrap_or(ctx.engine), ..*ctx };
    let result = run_steps(ctx, job, &log, &mut action, &mut cache, &mut bytes);
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
        Err(_) if ctx.engine.interrupted() => outcome.action = Action::Interrupted,
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
    let [local, latest, remote] = job.names.plan_names();
    let name_locally = |from: &str| -> Result<()> {
        for target in [&local, &latest] {
            if from != target.as_str() {
                engine.tag(from, target)?;
            }
        }
        if let Some(was) = &job.latest_was {
            note(ctx, format!("{}: {latest} now points at the {} image (it was {was})", job.name, ctx.arch.platform()));
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
                note(ctx, format!("{}: registry unreachable; building", job.name));
                *cache = build(action, &mut size, bytes)?;
            }
            Step::Pull { or_build } => match pull_checked(*or_build) {
                Ok(pulled) => {
                    size = Some(pulled);
                    bytes.pulled += pulled;
                    name_locally(&remote)?;
                    *action = (*action).max(Action::Pulled);
                }
                Err(e) if *or_build && !engine.interrupted() => {
                    // Once the registry failed, later images build without waiting on it.
                    if crate::registry::is_transient(&e) {
                        ctx.registry_down.store(true, AtomicOrdering::SeqCst);
                    }
                    note(ctx, format!("{}: pull failed ({e:#}); building", job.name));
                    *cache = build(action, &mut size, bytes)?;
                }
                Err(e) => return Err(e),
            },
            Step::Build if direct => {
                let (pushed, used) = build_pushed(ctx, job, log)?;
                *cache = used;
                ctx.registry.retag(&pushed, &remote)?;
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
                if ctx.registry.retag(&remote, &job.names.remote_latest())? {
                    *action = (*action).max(Action::Latest);
                }
            }
            Step::Missing => bail!("{}", job.why),
        }
    }
    Ok(())
}

/// What a job's build reads: its context, its Dockerfile, its labels.
struct BuildInputs<'c> {
    dir: std::path::PathBuf,
    dockerfile: &'c str,
    labels: Vec<(String, String)>,
}

impl<'c> BuildInputs<'c> {
    fn of(ctx: &'c Context, job: &'c Job) -> BuildInputs<'c> {
        let labels = ctx.provenance.labels(&job.path, &job.names.tag);
        BuildInputs { dir: ctx.images_root.join(&job.path), dockerfile: &job.dockerfile, labels }
    }

    fn spec<'s>(&'s self, ctx: &'s Context) -> engine::BuildSpec<'s> {
        engine::BuildSpec {
            dir: &self.dir,
            dockerfile: self.dockerfile,
            arch: ctx.arch,
            args: ctx.build_args,
            labels: &self.labels,
        }
    }
}

fn log_of(ctx: &Context, job: &Job) -> std::path::PathBuf {
    ctx.log_dir.join(format!("{}.log", job.name))
}

/// Builds the images of `batch` (job indices) in one engine call; each job
/// then checks and names its image as if it had built it. When the call
/// fails, or the engine cannot, each job builds its own, which tells whose
/// build failed.
fn build_batch(ctx: &Context, jobs: &[Job], batch: &[JobIndex]) {
    let inputs: Vec<_> = batch
        .iter()
        .map(|&j| {
            let job = &jobs[j];
            let log = log_of(ctx, job);
            let _ = std::fs::remove_file(&log);
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

/// The executor against a fake engine: ordering, `--jobs`, `--keep-going`,
/// interruption, the platform check and the summary, without a daemon.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::config::Settings;
    use crate::engine::fake::{Fake, Script};
    use crate::model::Arch;
    use crate::planning::{Job, Step};
    use crate::report::{summary_text, Verbosity};

    /// What the run told, as text.
    #[derive(Default)]
    struct Told(Mutex<Vec<String>>);

    impl Observer for Told {
        fn event(&self, event: Event<'_>) {
            let text = match event {
                Event::Started(name) => format!("started {name}"),
                Event::Finished(o) => format!("finished {} {}", o.name(), o.action.as_str()),
                Event::Note(text) => format!("note {text}"),
                Event::Retrying(what) => format!("retrying {what}"),
                Event::Echo { image, line } => format!("echo {} {line}", image.unwrap_or("-")),
            };
            self.0.lock().unwrap().push(text);
        }
    }

    /// Build jobs for `images`: (name, the names it is built FROM).
    fn jobs(images: &[(&str, &[&str])]) -> Vec<Job> {
        let index = |n: &str| JobIndex(images.iter().position(|(m, _)| *m == n).unwrap());
        images
            .iter()
            .enumerate()
            .map(|(i, (name, after))| Job {
                image: crate::model::ImageIndex(i),
                name: name.to_string(),
                path: name.to_string(),
                dockerfile: "Dockerfile".into(),
                arch: Arch::X86_64,
                test: true,
                names: crate::model::ImageRef {
                    tag: format!("t{i}"),
                    local: format!("l.test/{name}"),
                    remote: format!("r.test/{name}_x86_64"),
                },
                steps: vec![Step::Build],
                why: "not present".into(),
                after: after.iter().map(|a| index(a)).collect(),
                requested: true,
                latest_was: None,
                cache: None,
            })
            .collect()
    }

    fn settings() -> Settings {
        Settings::for_tests("l.test", "r.test")
    }

    /// Runs `jobs` on `fake`, `parallel` at a time; the outcomes by name.
    fn run(fake: &Fake, jobs: &[Job], parallel: usize, keep_going: bool) -> (Vec<Outcome>, HashMap<String, Action>) {
        let (outcomes, actions, _) = run_telling(fake, jobs, parallel, keep_going);
        (outcomes, actions)
    }

    /// Like [`run`], with what the run told.
    fn run_telling(
        fake: &Fake,
        jobs: &[Job],
        parallel: usize,
        keep_going: bool,
    ) -> (Vec<Outcome>, HashMap<String, Action>, Vec<String>) {
        let told = Told::default();
        let logs = tempfile::tempdir().unwrap();
        let registry = crate::registry::Registry::new(
            crate::registry::Credentials::of(crate::config::EngineKind::Docker),
            crate::registry::Transport::system(&[]),
        );
        let provenance = crate::git::provenance::Provenance::new(&settings(), None);
        let ctx = Context {
            engine: fake,
            registry: &registry,
            images_root: Path::new("/nonexistent"),
            arch: Arch::X86_64,
            build_args: &[],
            log_dir: logs.path(),
            idle: Action::Present,
            registry_down: &AtomicBool::new(false),
            fresh_builds: false,
            no_cache: false,
            cache_to: false,
            direct_push: false,
            provenance: &provenance,
            prebuilt: &Prebuilt::default(),
            events: &told,
        };
        let outcomes = execute(&ctx, jobs, parallel, keep_going);
        // Each image the run dealt with is told finished once; one it never
        // reached (not started, interrupted) is only in the outcomes.
        let told = told.0.into_inner().unwrap();
        for o in &outcomes {
            let n = told.iter().filter(|e| e.starts_with(&format!("finished {} ", o.name()))).count();
            let reached = !matches!(o.action, Action::NotStarted | Action::Interrupted);
            assert!(n <= 1 && (n == 1 || !reached), "{}: told finished {n} times: {told:?}", o.name());
        }
        let actions = outcomes.iter().map(|o| (o.name().to_string(), o.action)).collect();
        (outcomes, actions, told)
    }

    fn fails(error: &'static str) -> Script {
        Script { fails: Some(error), ..Script::default() }
    }

    #[test]
    fn bases_first_and_never_more_than_jobs_at_once() {
        let fake = Fake::with(&[]);
        let jobs = jobs(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &[]), ("e", &[]), ("f", &["b", "c"])]);
        let (_, actions) = run(&fake, &jobs, 2, false);
        assert!(actions.values().all(|a| *a == Action::Built), "{actions:?}");
        for (base, image) in [("a", "b"), ("a", "c"), ("b", "f"), ("c", "f")] {
            assert!(
                fake.position(&format!("end {base}")) < fake.position(&format!("start {image}")),
                "{image} started before its base {base} ended: {:?}",
                fake.events()
            );
        }
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 2, "{:?}", fake.events());
        // Each image got its local names and its remote one.
        let names = fake.names.lock().unwrap();
        for name in ["l.test/f:t5", "l.test/f:latest", "r.test/f_x86_64:t5"] {
            assert_eq!(names.get(name).map(String::as_str), Some("sha256:f"), "{name}");
        }
    }

    #[test]
    fn one_job_at_a_time_with_jobs_1() {
        let fake = Fake::with(&[]);
        let (_, actions) = run(&fake, &jobs(&[("a", &[]), ("b", &[]), ("c", &[])]), 1, false);
        assert_eq!(actions.len(), 3);
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failure_stops_new_work_and_blocks_what_is_built_on_it() {
        let fake = Fake::with(&[("a", fails("no such file"))]);
        let jobs = jobs(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        let (outcomes, actions) = run(&fake, &jobs, 1, false);
        assert_eq!(actions["a"], Action::Failed);
        assert_eq!(actions["b"], Action::Blocked);
        assert_eq!(actions["c"], Action::NotStarted, "{:?}", fake.events());
        assert!(!fake.events().contains(&"start c".to_string()));
        let summary = summary_text(&outcomes, Verbosity::Quiet);
        assert!(summary.starts_with("3 images: 1 failed, 1 blocked, 1 not started\n"), "{summary}");
        assert!(summary.contains("error: a: build failed: no such file; log: "), "{summary}");
        assert!(summary.contains("error: b: not built: its base a failed\n"), "{summary}");
    }

    #[test]
    fn keep_going_builds_everything_not_built_on_a_failure() {
        let fake = Fake::with(&[("a", fails("no such file"))]);
        let jobs = jobs(&[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &["c"])]);
        let (outcomes, actions) = run(&fake, &jobs, 1, true);
        let expected: HashMap<String, Action> =
            [("a", Action::Failed), ("b", Action::Blocked), ("c", Action::Built), ("d", Action::Built)]
                .into_iter()
                .map(|(n, a)| (n.to_string(), a))
                .collect();
        assert_eq!(actions, expected);
        assert!(summary_text(&outcomes, Verbosity::Quiet).starts_with("4 images: 2 built, 1 failed, 1 blocked\n"));
    }

    #[test]
    fn an_interrupt_lets_running_work_end_and_starts_nothing() {
        let fake = Fake::with(&[("a", Script { interrupts: true, ..Script::default() })]);
        let (outcomes, actions) = run(&fake, &jobs(&[("a", &[]), ("b", &[]), ("c", &["a"])]), 1, true);
        // The build under way saw the interrupt (the real engine's call fails).
        assert_eq!(actions["a"], Action::Built);
        assert_eq!(actions["b"], Action::Interrupted);
        assert_eq!(actions["c"], Action::Interrupted);
        assert_eq!(fake.events(), ["start a", "end a"]);
        assert!(summary_text(&outcomes, Verbosity::Quiet).contains("2 interrupted"));
    }

    #[test]
    fn an_image_built_for_another_architecture_gets_no_name() {
        let fake = Fake::with(&[("a", Script { architecture: Some("arm64"), ..Script::default() })]);
        let (outcomes, actions) = run(&fake, &jobs(&[("a", &[])]), 1, false);
        assert_eq!(actions["a"], Action::Failed);
        let error = outcomes[0].error.as_deref().unwrap();
        assert!(error.starts_with("built a linux/arm64 image, not linux/amd64:"), "{error}");
        assert!(fake.names.lock().unwrap().is_empty(), "{:?}", fake.names.lock().unwrap());
        // The classic builder shares its cache across platforms: it tried
        // again without the cache before giving up.
        assert_eq!(fake.events(), ["start a", "end a", "start a", "end a"]);
    }

    #[test]
    fn builds_ready_at_once_go_together_and_are_named_after() {
        let fake = Fake::batching(&[]);
        let jobs = jobs(&[("a", &[]), ("b", &[]), ("c", &["a"]), ("d", &["a"]), ("e", &["c"])]);
        let (_, actions) = run(&fake, &jobs, 2, false);
        assert!(actions.values().all(|a| *a == Action::Built), "{actions:?}");
        let batches: Vec<String> = fake.events().into_iter().filter(|e| e.starts_with("batch")).collect();
        // a and b are ready at once; then c and d, built on a; e alone is
        // built on its own, once c is named.
        assert_eq!(batches, ["batch a b", "batch c d"], "{:?}", fake.events());
        assert!(fake.position("end c") < fake.position("start e"), "{:?}", fake.events());
        let starts = fake.events().iter().filter(|e| e.starts_with("start")).count();
        assert_eq!(starts, 5, "each image is built once: {:?}", fake.events());
        assert_eq!(fake.names.lock().unwrap().get("l.test/e:latest").map(String::as_str), Some("sha256:e"));
    }

    #[test]
    fn a_failed_batch_builds_each_on_its_own_and_blames_the_right_one() {
        let fake = Fake::batching(&[("b", fails("no such file"))]);
        let jobs = jobs(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let (outcomes, actions, told) = run_telling(&fake, &jobs, 1, true);
        assert_eq!(fake.events()[0], "batch a b c");
        assert!(
            told.contains(&"note 3 images built together failed (b failed): building each on its own".to_string()),
            "{told:?}"
        );
        assert_eq!((actions["a"], actions["b"], actions["c"]), (Action::Built, Action::Failed, Action::Built));
        let summary = summary_text(&outcomes, Verbosity::Quiet);
        assert!(summary.contains("error: b: build failed: no such file"), "{summary}");
        assert!(!summary.contains("error: a") && !summary.contains("error: c"), "{summary}");
    }

    #[test]
    fn nothing_is_batched_for_an_engine_that_cannot() {
        let fake = Fake::with(&[]);
        run(&fake, &jobs(&[("a", &[]), ("b", &[])]), 2, false);
        assert!(!fake.events().iter().any(|e| e.starts_with("batch")), "{:?}", fake.events());
    }
}
