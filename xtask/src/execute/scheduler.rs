//! The scheduler: jobs in dependency order, `--jobs` at a time, builds that
//! are ready together batched into one engine call where the engine can;
//! after a failure, nothing new starts (unless `--keep-going`) and what
//! waited on it is blocked.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Condvar, Mutex};

use super::job::{build_batch, run_job};
use super::Context;
use crate::engine;
use crate::model::{Action, Event, JobIndex, Outcome, PerJob};
use crate::planning::{Job, Step};

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
