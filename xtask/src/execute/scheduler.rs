//! The scheduler: jobs in dependency order, `--jobs` at a time, builds that
//! are ready together batched into one engine call where the engine can;
//! a job planned only for a build that may not happen sleeps until a failed
//! pull needs it; after a failure, nothing new starts (unless `--keep-going`)
//! and what waited on it is blocked.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Condvar, Mutex};

use super::job::{build_batch, run_job, Partial, Ran};
use super::Context;
use crate::engine;
use crate::model::{Action, Event, JobIndex, Outcome, PerJob};
use crate::planning::{Job, Step};

/// What a worker takes on next.
enum Work {
    /// A job, from its start or from the build its failed pull fell back to.
    Job(JobIndex, Option<Partial>),
    /// Builds, ahead of their jobs, in one engine call.
    Batch(Vec<JobIndex>),
}

enum JobState {
    /// Planned only for a build that may not happen: it runs once one needs it.
    Dormant,
    Waiting,
    /// Its pull failed: the build it falls back to waits for its bases.
    FellBack(Partial),
    Running,
    Done(bool),
}

impl JobState {
    fn waits(&self) -> bool {
        matches!(self, JobState::Waiting | JobState::FellBack(_))
    }
}

/// Makes job `j` run after all, and the jobs it waits on.
fn wake_up(states: &mut PerJob<JobState>, jobs: &[Job], j: JobIndex) {
    if matches!(states[j], JobState::Dormant) {
        states[j] = JobState::Waiting;
        for &b in &jobs[j].after {
            wake_up(states, jobs, b);
        }
    }
}

/// What job `j` waits on: the jobs it is built on, before it starts, or
/// before the build its failed pull fell back to.
fn waits_on<'j>(state: &JobState, jobs: &'j [Job], j: JobIndex) -> &'j [JobIndex] {
    match state {
        JobState::FellBack(_) => &jobs[j].build_after,
        _ => &jobs[j].after,
    }
}

/// Runs the jobs; the outcome of each that ran or was meant to (one that
/// slept through the run, no build needing it, has none).
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
    let mut states: PerJob<JobState> = PerJob::new(jobs.len(), || JobState::Waiting);
    for j in JobIndex::all(jobs.len()) {
        let job = &jobs[j];
        if !job.runs_anyway() {
            states[j] = JobState::Dormant;
        } else if job.steps.is_empty() {
            first[j] = Some(end(Outcome::new(job.info(), job.idle(ctx.idle), Some(job.why.clone()))));
            states[j] = JobState::Done(true);
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
                            if !states[j].waits() {
                                continue;
                            }
                            let failed = |b: &&JobIndex| matches!(states[**b], JobState::Done(false));
                            let Some(&base) = waits_on(&states[j], jobs, j).iter().find(failed) else {
                                continue;
                            };
                            outcomes.lock().unwrap()[j] = Some(blocked(j, base));
                            states[j] = JobState::Done(false);
                            changed = true;
                        }
                        if changed {
                            wake.notify_all();
                            continue;
                        }
                        let is_ready = |j: JobIndex| {
                            states[j].waits()
                                && waits_on(&states[j], jobs, j)
                                    .iter()
                                    .all(|&b| matches!(states[b], JobState::Done(true)))
                        };
                        // Builds ready at once go to the engine together, when it can.
                        let batch: Vec<JobIndex> = JobIndex::all(jobs.len())
                            .filter(|&j| {
                                batches
                                    && matches!(states[j], JobState::Waiting)
                                    && is_ready(j)
                                    && !tried[j]
                                    && jobs[j].steps.contains(&Step::Build)
                            })
                            .take(engine::BATCH_LIMIT)
                            .collect();
                        if batch.len() > 1 {
                            for &j in &batch {
                                states[j] = JobState::Running;
                                tried[j] = true;
                            }
                            break Some(Work::Batch(batch));
                        }
                        if let Some(j) = JobIndex::all(jobs.len()).find(|&j| is_ready(j)) {
                            let resume = match std::mem::replace(&mut states[j], JobState::Running) {
                                JobState::FellBack(partial) => Some(partial),
                                _ => None,
                            };
                            break Some(Work::Job(j, resume));
                        }
                        // Nothing to start: a job still running may yet
                        // need a base woken up; else the work is done.
                        if !states.0.iter().any(|s| matches!(s, JobState::Running)) {
                            break None;
                        }
                        guard = wake.wait(guard).unwrap();
                    }
                };
                let (j, resume) = match next {
                    None => {
                        wake.notify_all();
                        return;
                    }
                    Some(Work::Batch(batch)) => {
                        build_batch(ctx, jobs, &batch);
                        let mut guard = state.lock().unwrap();
                        for j in batch {
                            guard.0[j] = JobState::Waiting;
                        }
                        drop(guard);
                        wake.notify_all();
                        continue;
                    }
                    Some(Work::Job(j, resume)) => (j, resume),
                };
                ctx.events.event(Event::Started(&jobs[j].name));
                match run_job(ctx, &jobs[j], resume) {
                    Ran::Finished(outcome) => {
                        let outcome = end(outcome);
                        let ok = !outcome.action.is_failure();
                        outcomes.lock().unwrap()[j] = Some(outcome);
                        let mut guard = state.lock().unwrap();
                        guard.0[j] = JobState::Done(ok);
                        if !ok && !keep_going {
                            guard.1 = true;
                        }
                    }
                    Ran::WaitsForBases(partial) => {
                        let mut guard = state.lock().unwrap();
                        for &b in &jobs[j].build_after {
                            wake_up(&mut guard.0, jobs, b);
                        }
                        guard.0[j] = JobState::FellBack(partial);
                    }
                }
                wake.notify_all();
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    let states = state.into_inner().unwrap().0;
    let interrupted = ctx.engine.interrupted();
    let unfinished = if interrupted { Action::Interrupted } else { Action::NotStarted };
    for (j, state) in JobIndex::all(jobs.len()).zip(states.0.iter()) {
        if outcomes[j].is_none() {
            outcomes[j] = match state {
                JobState::Dormant => None,
                JobState::FellBack(partial) => Some(partial.unfinished(&jobs[j], unfinished)),
                _ => Some(Outcome::new(jobs[j].info(), unfinished, None)),
            };
        }
    }
    // What waited on an image that failed was blocked by it, even when the
    // run stopped before saying so.
    let failed =
        |b: JobIndex| outcomes[b].as_ref().is_some_and(|o| o.action.is_failure() && o.action != Action::NotStarted);
    let mut blocked_by: Vec<(JobIndex, JobIndex)> = Vec::new();
    for (j, state) in JobIndex::all(jobs.len()).zip(states.0.iter()) {
        if outcomes[j].as_ref().is_some_and(|o| o.action == Action::NotStarted) {
            if let Some(&base) = waits_on(state, jobs, j).iter().find(|&&b| failed(b)) {
                blocked_by.push((j, base));
            }
        }
    }
    for (j, base) in blocked_by {
        outcomes[j] = Some(blocked(j, base));
    }
    outcomes.0.into_iter().flatten().collect()
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
    use crate::execute::Prebuilt;
    use crate::model::Arch;
    use crate::model::Observer;
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
                Event::Step { image, step } => format!("step {image} {step}"),
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
                build_after: vec![],
                only_if_built: vec![],
                requested: true,
                latest_was: None,
                cache: None,
                from: crate::planning::FromImage::Scratch,
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
            run: "20000101T000000-1",
            idle: Action::Present,
            registry_down: &AtomicBool::new(false),
            fresh_builds: false,
            no_cache: false,
            cache_to: false,
            direct_push: false,
            provenance: &provenance,
            built_on: &crate::execute::BuiltOn::default(),
            prebuilt: &Prebuilt::default(),
            builds: &crate::execute::Builds::announcing(Some("building".into())),
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

    /// `app` pulls, else builds on `base`, which runs only for that build.
    fn pull_else_build_on_a_base() -> Vec<Job> {
        let mut jobs = jobs(&[("app", &[]), ("base", &[])]);
        jobs[0].steps = vec![Step::Pull { or_build: true }];
        jobs[0].build_after = vec![JobIndex(1)];
        jobs[1].only_if_built = vec![JobIndex(0)];
        jobs[1].requested = false;
        jobs
    }

    #[test]
    fn a_base_wanted_only_by_a_failed_pull_runs_then_and_the_builder_is_told_of_then() {
        // The fake's pulls fail.
        let fake = Fake::with(&[]);
        let (outcomes, actions, told) = run_telling(&fake, &pull_else_build_on_a_base(), 2, false);
        assert_eq!((actions["app"], actions["base"]), (Action::Built, Action::Built));
        assert_eq!(fake.events(), ["start base", "end base", "start app", "end app"]);
        assert_eq!(outcomes[0].reason.as_deref(), Some("not present; the pull failed"));
        let notes: Vec<&str> = told.iter().filter_map(|t| t.strip_prefix("note ")).collect();
        assert_eq!(notes, ["app: pull failed (r.test/app_x86_64:t0: not found); building", "building"]);
    }

    #[test]
    fn a_base_no_build_wants_neither_runs_nor_is_reported() {
        let fake = Fake::with(&[]);
        let mut jobs = pull_else_build_on_a_base();
        jobs[0].steps = vec![];
        jobs[0].why = "present".into();
        let (outcomes, _, told) = run_telling(&fake, &jobs, 2, false);
        let shown: Vec<(&str, Action, Option<&str>)> =
            outcomes.iter().map(|o| (o.name(), o.action, o.reason.as_deref())).collect();
        assert_eq!(shown, [("app", Action::Present, Some("present"))]);
        assert!(fake.events().is_empty(), "{:?}", fake.events());
        assert_eq!(told, ["finished app present"]);
    }

    #[test]
    fn a_fallen_back_build_whose_base_fails_is_blocked() {
        let fake = Fake::with(&[("base", fails("no such file"))]);
        let (outcomes, actions) = run(&fake, &pull_else_build_on_a_base(), 1, false);
        assert_eq!((actions["app"], actions["base"]), (Action::Blocked, Action::Failed));
        assert!(!fake.events().contains(&"start app".to_string()), "{:?}", fake.events());
        let summary = summary_text(&outcomes, Verbosity::Quiet);
        assert!(summary.contains("error: app: not built: its base base failed\n"), "{summary}");
    }

    #[test]
    fn nothing_is_batched_for_an_engine_that_cannot() {
        let fake = Fake::with(&[]);
        run(&fake, &jobs(&[("a", &[]), ("b", &[])]), 2, false);
        assert!(!fake.events().iter().any(|e| e.starts_with("batch")), "{:?}", fake.events());
    }
}
