//! The engine commands end to end: the real binary against a real engine
//! (`XTASK_TEST_ENGINE`: docker, the default, or podman) and the loopback
//! registry that `tests/run` starts. Each test works in a sandbox of its own
//! (images tree, name prefixes, build logs), so they run in parallel, and
//! removes the local names it made.

mod bases;
mod logs;

use crate::support;

use std::fs;

use serde_json::json;
use support::{
    base_image, docker_ok, engine, image_id, manifest_digests, outcome, pull, registry_has, run, run_in, untag, Engine,
    Registry, Sandbox,
};

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[test]
fn pushed_image_is_pulled_not_rebuilt() {
    let s = Sandbox::new("pulled");
    s.scratch_image("grp/one");
    let tag = s.tag("grp_one");
    let (local, remote) = (s.local("grp/one"), s.remote("grp/one"));
    let all_names = sorted(vec![format!("{remote}:{tag}"), format!("{local}:{tag}"), format!("{local}:latest")]);
    // Each run writes a log of its own.
    let log = || s.log("grp_one");

    let built = s.xtask(&["rebuild", "grp_one", "--json"]);
    assert_eq!(built.success().outcomes(), [outcome("grp_one", &tag, "built", Some(&log()))]);
    assert_eq!(s.local_names(), all_names);
    let id = image_id(&format!("{local}:{tag}")).unwrap();

    let pushed = s.xtask(&["push", "grp_one", "--json"]);
    assert_eq!(pushed.success().outcomes(), [outcome("grp_one", &tag, "pushed", Some(&log()))]);
    assert!(registry_has(&format!("{remote}:{tag}")));

    untag(&s.local_names());
    assert_eq!(image_id(&id), None, "the image is still present locally");

    let loaded = s.xtask(&["load", "grp_one", "--json"]);
    assert_eq!(loaded.success().outcomes(), [outcome("grp_one", &tag, "pulled", Some(&log()))]);
    assert_eq!(s.local_names(), all_names);
    assert_eq!(image_id(&format!("{local}:{tag}")).as_ref(), Some(&id));
    assert_eq!(image_id(&format!("{local}:latest")).as_ref(), Some(&id));
}

#[test]
fn changed_input_is_rebuilt_under_a_new_tag() {
    let s = Sandbox::new("changed");
    s.scratch_image("a");
    let local = s.local("a");
    let old = s.tag("a");
    let first = s.xtask(&["load", "a", "--json"]);
    assert_eq!(first.success().outcomes(), [outcome("a", &old, "built", Some(&s.log("a")))]);
    let old_id = image_id(&format!("{local}:{old}")).unwrap();

    s.write("a/id", format!("{} changed\n", s.id));
    let new = s.tag("a");
    assert_ne!(new, old);
    let second = s.xtask(&["load", "a", "--json"]);
    assert_eq!(second.success().outcomes(), [outcome("a", &new, "built", Some(&s.log("a")))]);
    let new_id = image_id(&format!("{local}:{new}")).expect("the new tag exists locally");
    assert_ne!(new_id, old_id);
    assert_eq!(image_id(&format!("{local}:latest")), Some(new_id));

    let third = s.xtask(&["load", "a", "--json"]);
    assert_eq!(third.success().outcomes(), [outcome("a", &new, "present", None)]);
}

#[test]
fn second_push_all_skips_everything() {
    let s = Sandbox::new("push-twice");
    let names = ["a", "b", "grp_c"];
    for path in ["a", "b", "grp/c"] {
        s.scratch_image(path);
    }
    let tags: Vec<String> = names.iter().map(|n| s.tag(n)).collect();

    let first = s.xtask(&["push-all-images", "--json"]);
    let expected: Vec<_> = names.iter().zip(&tags).map(|(n, t)| outcome(n, t, "pushed", Some(&s.log(n)))).collect();
    assert_eq!(first.success().outcomes(), expected);
    for (path, tag) in ["a", "b", "grp/c"].iter().zip(&tags) {
        assert!(registry_has(&format!("{}:{tag}", s.remote(path))), "the registry lacks {path}");
    }

    let recorder = s.recording_engine();
    let second = run(s.cmd(&["push-all-images", "--json"]).env("PATH", &recorder.path));
    let expected: Vec<_> = names.iter().zip(&tags).map(|(n, t)| outcome(n, t, "skipped", None)).collect();
    assert_eq!(second.success().outcomes(), expected);
    let calls = recorder.take();
    // Registry look-ups are docker's own, or skopeo's for podman.
    let program = engine().program();
    let lookup = |c: &str| c.starts_with("docker --debug manifest inspect ") || c.starts_with("skopeo inspect ");
    let reads = |c: &str| {
        lookup(c)
            || [" version ", " images ", " image inspect "].iter().any(|r| c.starts_with(&format!("{program}{r}")))
    };
    let changing: Vec<&String> = calls.iter().filter(|c| !reads(c)).collect();
    assert!(changing.is_empty(), "engine calls: {calls:#?}");
    // The registry is asked directly, not through the engine's CLI.
    assert_eq!(calls.iter().filter(|c| lookup(c)).count(), 0, "engine calls: {calls:#?}");
    assert!(calls.len() <= 3, "engine calls: {calls:#?}");
}

/// Three images, the middle one failing to build.
fn sandbox_with_a_failing_image(test: &str) -> Sandbox {
    let s = Sandbox::new(test);
    s.scratch_image("a");
    s.write("b/Dockerfile", "FROM scratch\nCOPY missing /\n");
    s.scratch_image("c");
    s
}

#[test]
fn keep_going_builds_the_others_after_a_failure() {
    let s = sandbox_with_a_failing_image("keep-going");
    let (a, b, c) = (s.tag("a"), s.tag("b"), s.tag("c"));

    let run = s.xtask(&["build-all-images", "--keep-going", "--json"]);
    let mut outcomes = run.status(1).outcomes();
    let error = outcomes[1].as_object_mut().unwrap().remove("error").expect("the failure has an error");
    let error = error.as_str().unwrap();
    assert!(error.starts_with("build failed: ") && error.ends_with(&format!("; log: {}", s.log("b"))), "{error}");
    assert!(fs::read_to_string(s.log("b")).unwrap().contains("COPY missing /"));
    assert_eq!(
        outcomes,
        [
            outcome("a", &a, "built", Some(&s.log("a"))),
            outcome("b", &b, "failed", Some(&s.log("b"))),
            outcome("c", &c, "built", Some(&s.log("c"))),
        ]
    );
    assert!(run.stderr_lines().contains(&"3 images: 2 built, 1 failed"), "{run}");
    assert!(run.stderr_lines().contains(&format!("error: b: {error}").as_str()), "{run}");
    assert_eq!(
        s.local_names(),
        sorted([s.names_at("a", &a), s.names_at("c", &c)].concat()),
        "a name was given to the failed image"
    );
}

#[test]
fn failure_without_keep_going_leaves_the_rest_not_started() {
    let s = sandbox_with_a_failing_image("stop");
    let (a, b, c) = (s.tag("a"), s.tag("b"), s.tag("c"));

    let run = s.xtask(&["build-all-images", "--jobs", "1", "--json"]);
    let mut outcomes = run.status(1).outcomes();
    let error = outcomes[1].as_object_mut().unwrap().remove("error").expect("the failure has an error");
    assert!(error.as_str().unwrap().ends_with(&format!("; log: {}", s.log("b"))), "{error}");
    assert_eq!(
        outcomes,
        [
            outcome("a", &a, "built", Some(&s.log("a"))),
            outcome("b", &b, "failed", Some(&s.log("b"))),
            outcome("c", &c, "not-started", None),
        ]
    );
    assert!(run.stderr_lines().contains(&"3 images: 1 built, 1 failed, 1 not started"), "{run}");
    assert_eq!(s.local_names(), sorted(s.names_at("a", &a).to_vec()));
}

#[test]
fn stopped_registry_fails_push_and_load_builds_instead() {
    let mut s = Sandbox::new("registry-down");
    let mut registry = Registry::start(s.path(), None);
    s.use_registry(&registry.addr);
    s.scratch_image("a");
    s.scratch_image("b");
    let (a, b) = (s.tag("a"), s.tag("b"));

    let pushed = s.xtask(&["push", "a", "--json"]);
    assert_eq!(pushed.success().outcomes(), [outcome("a", &a, "pushed", Some(&s.log("a")))]);
    registry.stop();

    // Every image fails, naming the registry; nothing listens on its
    // loopback port any more, which is said once, without retries. The
    // summary says so once.
    let push = s.xtask(&["push", "a", "b", "--json"]);
    push.status(1);
    let images = push.images();
    assert_eq!(
        images.iter().map(|o| o["action"].clone()).collect::<Vec<_>>(),
        [json!("failed"), json!("failed")],
        "{push}"
    );
    let unreachable = format!("no registry at {} (nothing listens there)", registry.addr);
    let lines = push.stderr_lines();
    assert!(!push.stderr.contains("retrying"), "{push}");
    assert!(lines.contains(&"2 images: 2 failed"), "{push}");
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{push}");
    assert_eq!(**errors[0], format!("error: a, b: cannot check the registry: {unreachable}"), "{push}");

    let load = s.xtask(&["load", "a", "b", "--json"]);
    assert_eq!(
        load.success().outcomes(),
        [outcome("a", &a, "present", None), outcome("b", &b, "built", Some(&s.log("b")))]
    );
    assert!(image_id(&format!("{}:{b}", s.local("b"))).is_some());

    // `test` builds what the registry lacks; a registry that cannot be
    // asked lacks everything, as for the legacy target, with one warning.
    let test = s.xtask(&["test", "a", "b", "--json"]);
    assert_eq!(
        test.success().outcomes(),
        [outcome("a", &a, "built", Some(&s.log("a"))), outcome("b", &b, "built", Some(&s.log("b")))]
    );
    let warnings: Vec<&str> = test.stderr_lines().into_iter().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{test}");
    assert_eq!(
        warnings[0],
        format!("warning: cannot check the registry: {unreachable}; building every image as if the registry lacked it"),
        "{test}"
    );
}

/// With no registry where the remote names point (nothing listens on that
/// loopback port, as on a machine with no registry at the default
/// `localhost:5000`), a load says so in one line and builds what is not
/// present, without retrying.
#[test]
fn a_load_with_no_registry_says_so_once_and_builds() {
    let mut s = Sandbox::new("no-registry");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.use_registry(&format!("localhost:{port}"));
    s.scratch_image("a");
    s.scratch_image("b");
    let (a, b) = (s.tag("a"), s.tag("b"));

    let load = s.xtask(&["load", "a", "b", "--json"]);
    assert_eq!(
        load.success().outcomes(),
        [outcome("a", &a, "built", Some(&s.log("a"))), outcome("b", &b, "built", Some(&s.log("b")))]
    );
    assert!(!load.stderr.contains("retrying"), "{load}");
    let warnings: Vec<&str> = load.stderr_lines().into_iter().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(
        warnings,
        [format!(
            "warning: cannot check the registry: no registry at localhost:{port} (nothing listens there); \
             building what is not present"
        )],
        "{load}"
    );
}

/// Off a terminal (CI, a pipe), each finished image gets a line, and a
/// failure is followed by the last lines of its build log; `--verbose`
/// streams every engine call, each line prefixed with its image.
#[test]
fn ci_logs_show_each_image_and_the_tail_of_a_failed_build() {
    let s = sandbox_with_a_failing_image("ci-logs");
    s.xtask(&["load", "a"]).success();
    let (a, b) = (s.tag("a"), s.tag("b"));
    let ci = run(s.cmd(&["load", "a", "b", "--keep-going"]).env("CI", "true"));
    ci.status(1);
    let lines = ci.stderr_lines();
    // What needed nothing gets no line of its own: the count says it.
    assert!(!lines.iter().any(|l| l.contains(&format!(" a {a} "))), "{ci}");
    assert!(lines.contains(&"2 images: 1 present, 1 failed"), "{ci}");
    let failed = lines.iter().position(|l| l.starts_with(&format!("failed      b {b} ("))).expect("a line for b");
    assert_eq!(lines[failed + 1], format!("--- last lines of {}", s.log("b")), "{ci}");
    let log = fs::read_to_string(s.log("b")).unwrap();
    let tail: Vec<String> = log
        .lines()
        .rev()
        .take(100)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|l| format!("b | {}", l.trim_end_matches('\r')))
        .collect();
    assert!(!tail.is_empty());
    assert_eq!(
        lines[failed + 2..failed + 2 + tail.len()],
        tail.iter().map(String::as_str).collect::<Vec<_>>()[..],
        "{ci}"
    );
    assert!(tail.iter().any(|l| l.contains("missing")), "{tail:?}");

    let verbose = run(&mut s.cmd(&["rebuild", "a", "--verbose"]));
    verbose.success();
    let program = engine().program();
    let lines = verbose.stderr_lines();
    let build =
        lines.iter().find(|l| l.starts_with(&format!("a | $ {program} build "))).unwrap_or_else(|| panic!("{verbose}"));
    assert!(build.ends_with(&s.images.join("a").display().to_string()), "{verbose}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("a | $ {program} tag "))), "{verbose}");
    // The build's own output, as the log has it.
    let log = fs::read_to_string(s.log("a")).unwrap();
    let first = log.lines().find(|l| !l.trim().is_empty()).unwrap();
    assert!(lines.contains(&format!("a | {first}").as_str()), "{verbose}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("engine | $ {program} images "))), "{verbose}");
}

/// `--verbose` shows each engine call, not the listings and inspections
/// the tool reads: a load with nothing to do is a few lines, whatever the
/// engine holds.
#[test]
fn verbose_shows_the_calls_not_what_they_answer() {
    let s = Sandbox::new("verbose-calls");
    s.scratch_image("a");
    s.xtask(&["load", "a"]).success();
    let verbose = s.xtask(&["load", "a", "--verbose"]);
    verbose.success();
    let program = engine().program();
    let lines = verbose.stderr_lines();
    let echoed: Vec<&str> =
        lines.iter().copied().filter(|l| l.starts_with("engine | ") || l.starts_with("a | ")).collect();
    assert!(echoed.iter().any(|l| l.starts_with(&format!("engine | $ {program} images "))), "{verbose}");
    assert!(echoed.iter().all(|l| l.contains(" | $ ")), "{verbose}");
    assert!(lines.len() <= 10, "{verbose}");
}

/// An engine that is there but cannot work: for docker, a daemon that does
/// not answer; for podman (no daemon), a configuration it cannot read.
#[test]
fn unreachable_daemon_is_one_clear_error() {
    let s = Sandbox::new("no-daemon");
    s.scratch_image("x");
    let (run, expected) = match engine() {
        Engine::Docker => (
            run(s.cmd(&["load", "x", "--json"]).env("DOCKER_HOST", "unix:///nonexistent.sock")),
            "error: the docker daemon is not reachable at unix:///nonexistent.sock: start it (`sudo dockerd &` \
             or `sudo systemctl start docker`) or set DOCKER_HOST; docker said: ",
        ),
        Engine::Podman => (
            run(s.cmd(&["load", "x", "--json"]).env("CONTAINERS_CONF", "/nonexistent/containers.conf")),
            "error: podman does not work here: ",
        ),
    };
    let line = run.json_error();
    assert!(line.starts_with(expected), "{run}");
    assert!(line.len() > expected.len(), "the engine's own words are missing: {run}");
}

#[test]
fn missing_engine_is_one_clear_error() {
    let s = Sandbox::new("no-engine");
    s.scratch_image("x");
    // An empty PATH holds no engine; nothing else is run before the check.
    let empty = s.path().join("empty-bin");
    fs::create_dir(&empty).unwrap();
    let run = run(s.cmd(&["load", "x", "--json"]).env("PATH", &empty));
    run.json_error();
    let expected = match engine() {
        Engine::Docker => {
            "error: docker is not installed: install it (apt-get install docker.io) or choose podman with --engine podman"
        }
        Engine::Podman => "error: podman is not installed: install it (apt-get install podman)",
    };
    assert_eq!(run.stderr_lines(), [expected], "{run}");
}

#[test]
fn skip_image_load_uses_only_what_is_present() {
    let s = Sandbox::new("skip-load");
    s.scratch_image("absent");
    s.scratch_image("present");
    let (absent, present) = (s.tag("absent"), s.tag("present"));
    s.xtask(&["rebuild", "present"]).success();

    let missing = run(s.cmd(&["load", "absent", "--json"]).env("SKIP_IMAGE_LOAD", "true"));
    let why = "not present locally, and SKIP_IMAGE_LOAD forbids pulling or building";
    let mut failed = outcome("absent", &absent, "failed", None);
    failed["error"] = json!(why);
    assert_eq!(missing.status(1).outcomes(), [failed]);
    assert!(missing.stderr_lines().contains(&format!("error: absent: {why}").as_str()), "{missing}");
    assert!(s.local_names().iter().all(|n| !n.contains("/absent")), "{:?}", s.local_names());

    let found = run(s.cmd(&["load", "present", "--json"]).env("SKIP_IMAGE_LOAD", "true"));
    assert_eq!(found.success().outcomes(), [outcome("present", &present, "present", None)]);
}

#[test]
fn local_base_is_loaded_first_and_feeds_the_dependent_tag() {
    let s = Sandbox::new("bases");
    s.write("base/Dockerfile", format!("FROM {}\nCOPY f /f\n", base_image()));
    s.write("base/f", format!("one {}\n", s.id));
    s.write("top/Dockerfile", format!("FROM {}:latest\nCOPY g /g\n", s.local("base")));
    s.write("top/g", "top\n");
    let (base1, top1) = (s.tag("base"), s.tag("top"));

    // The dependent alone: its base is brought first (it cannot be pulled,
    // so it is built), else the dependent's FROM would not resolve.
    let first = s.xtask(&["load", "top", "--json"]);
    assert_eq!(
        first.success().outcomes(),
        [outcome("base", &base1, "built", Some(&s.log("base"))), outcome("top", &top1, "built", Some(&s.log("top"))),]
    );
    let top_latest = format!("{}:latest", s.local("top"));
    assert_eq!(run_in(&top_latest, &["cat", "/f", "/g"]), format!("one {}\ntop\n", s.id));

    // Nothing to build, so the base is not even looked at.
    let warm = s.xtask(&["load", "top", "--json"]);
    assert_eq!(warm.success().outcomes(), [outcome("top", &top1, "present", None)]);

    s.write("base/f", format!("two {}\n", s.id));
    let (base2, top2) = (s.tag("base"), s.tag("top"));
    assert_ne!(base2, base1);
    assert_ne!(top2, top1, "a changed base must change the tag of the image built on it");
    let second = s.xtask(&["load", "top", "--json"]);
    assert_eq!(
        second.success().outcomes(),
        [outcome("base", &base2, "built", Some(&s.log("base"))), outcome("top", &top2, "built", Some(&s.log("top"))),]
    );
    assert_eq!(run_in(&top_latest, &["cat", "/f", "/g"]), format!("two {}\ntop\n", s.id));
}

/// Under buildx (docker driver), the builds ready at once go to one
/// `docker buildx bake`; each image is named as if built alone, and one
/// built on another of the run is built after it is named.
#[test]
fn builds_ready_at_once_are_baked_together_under_buildx() {
    let s = Sandbox::new("batch");
    s.write("one/Dockerfile", format!("FROM {}\nCOPY f /f\n", base_image()));
    s.write("one/f", format!("one {}\n", s.id));
    s.write("two/Dockerfile", "FROM scratch\nCOPY f /f\n");
    s.write("two/f", format!("two {}\n", s.id));
    s.write("top/Dockerfile", format!("FROM {}:latest\nCOPY g /g\n", s.local("one")));
    s.write("top/g", "top\n");
    let run = s.xtask(&["load-all-images", "--json"]);
    let outcomes = run.success().outcomes();
    assert!(outcomes.iter().all(|o| o["action"] == "built"), "{run}");
    let baked = |name: &str| fs::read_to_string(s.log(name)).unwrap().starts_with("$ docker buildx bake (target ");
    let together = support::builder() == support::Builder::Buildx;
    assert_eq!((baked("one"), baked("two"), baked("top")), (together, together, false), "{run}");
    let top_latest = format!("{}:latest", s.local("top"));
    assert_eq!(run_in(&top_latest, &["cat", "/f", "/g"]), format!("one {}\ntop\n", s.id));
    for name in ["one", "two", "top"] {
        let tag = s.tag(name);
        let local = image_id(&format!("{}:{tag}", s.local(name)));
        let remote = image_id(&format!("{}:{tag}", s.remote(name)));
        assert!(local.is_some() && local == remote, "{name}: {local:?} {remote:?}");
    }
}

#[test]
fn push_as_latest_points_remote_latest_at_the_tag() {
    let s = Sandbox::new("push-latest");
    s.scratch_image("old");
    s.scratch_image("new");
    let (old, new) = (s.tag("old"), s.tag("new"));
    let (old_remote, new_remote) = (s.remote("old"), s.remote("new"));

    s.xtask(&["push", "old"]).success();
    let old_id = image_id(&format!("{old_remote}:{old}")).unwrap();
    untag(&s.local_names());
    assert_eq!(image_id(&old_id), None, "the image is still present locally");

    // `old` is in the registry and not here; `new` is in neither.
    let run = run(s.cmd(&["push", "old", "new", "--json"]).env("DOCKER_PUSH_AS_LATEST", "true"));
    assert_eq!(
        run.success().outcomes(),
        [outcome("new", &new, "pushed", Some(&s.log("new"))), outcome("old", &old, "latest", None)]
    );
    assert!(s.local_names().iter().all(|n| !n.contains("/old")), "a local copy of old was made: {:?}", s.local_names());
    for (remote, tag) in [(&old_remote, &old), (&new_remote, &new)] {
        let tagged = manifest_digests(&format!("{remote}:{tag}"));
        assert_eq!(tagged.len(), 1);
        assert_eq!(manifest_digests(&format!("{remote}:latest")), tagged, "{remote}:latest");
        // The very manifest, not an index over it.
        let raw = |r: &str| docker_ok(&["manifest", "inspect", "--insecure", r]);
        assert_eq!(raw(&format!("{remote}:latest")), raw(&format!("{remote}:{tag}")), "{remote}:latest");
    }

    // Already there: nothing is written, nothing said to be pushed.
    let again = support::run(s.cmd(&["push", "old", "new", "--json"]).env("DOCKER_PUSH_AS_LATEST", "true"));
    assert_eq!(
        again.success().outcomes(),
        [outcome("new", &new, "skipped", None), outcome("old", &old, "skipped", None)]
    );

    let latest = format!("{old_remote}:latest");
    pull(&latest, None);
    assert_eq!(image_id(&latest), Some(old_id));
}

#[test]
fn test_builds_only_what_the_registry_lacks() {
    let s = Sandbox::new("test-cmd");
    s.scratch_image("a");
    let tag = s.tag("a");
    let remote = format!("{}:{tag}", s.remote("a"));

    let first = s.xtask(&["test", "a", "--json"]);
    assert_eq!(first.success().outcomes(), [outcome("a", &tag, "built", Some(&s.log("a")))]);
    assert!(!registry_has(&remote), "test pushed {remote}");

    s.xtask(&["push", "a"]).success();
    untag(&s.local_names());
    let second = s.xtask(&["test", "a", "--json"]);
    assert_eq!(second.success().outcomes(), [outcome("a", &tag, "skipped", None)]);
    assert_eq!(s.local_names(), Vec::<String>::new());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let s = Sandbox::new("dry-run");
    s.scratch_image("a");
    s.scratch_image("grp/b");
    let (a, b) = (s.tag("a"), s.tag("grp_b"));

    let load = s.xtask(&["load-all-images", "--dry-run"]);
    assert_eq!(
        load.success().stdout,
        format!(
            "a      {a}  build  (not in the registry)\n\
             grp_b  {b}  build  (not in the registry)\n"
        )
    );
    let why = "the registry lacks it and it is not present locally";
    let push = s.xtask(&["push-all-images", "--dry-run"]);
    assert_eq!(
        push.success().stdout,
        format!("a      {a}  build, then push  ({why})\ngrp_b  {b}  build, then push  ({why})\n")
    );
    let rebuild = s.xtask(&["rebuild", "a", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&rebuild.success().stdout).unwrap();
    assert_eq!(
        plan,
        json!({
            "schema": 1,
            "command": "rebuild",
            "arch": support::arch(),
            "plan": [{
                "name": "a",
                "path": "a",
                "arch": support::arch(),
                "tag": a,
                "local": format!("{}:{a}", s.local("a")),
                "remote": format!("{}:{a}", s.remote("a")),
                "test": true,
                "steps": [{ "step": "build" }],
                "why": "build requested",
                "after": [],
                "requested": true,
            }],
        })
    );

    assert_eq!(s.local_names(), Vec::<String>::new());
    assert!(!registry_has(&format!("{}:{a}", s.remote("a"))));
    assert!(!registry_has(&format!("{}:{b}", s.remote("grp/b"))));
    assert!(!s.target.exists(), "a dry run wrote build logs");
}

#[test]
fn tag_names_an_image_present_under_its_remote_name() {
    let s = Sandbox::new("tag");
    s.scratch_image("a");
    s.scratch_image("b");
    let (a, b) = (s.tag("a"), s.tag("b"));
    let (local, remote) = (s.local("a"), format!("{}:{a}", s.remote("a")));

    s.xtask(&["rebuild", "a"]).success();
    let id = image_id(&remote).unwrap();
    untag(&[format!("{local}:{a}"), format!("{local}:latest")]);
    assert_eq!(s.local_names(), [remote]);

    let tagged = s.xtask(&["tag", "a", "--json"]);
    assert_eq!(tagged.success().outcomes(), [outcome("a", &a, "tagged", None)]);
    assert_eq!(image_id(&format!("{local}:{a}")).as_ref(), Some(&id));
    assert_eq!(image_id(&format!("{local}:latest")).as_ref(), Some(&id));

    let absent = s.xtask(&["tag", "b", "--json"]);
    let mut failed = outcome("b", &b, "failed", None);
    failed["error"] = json!(format!("{}:{b} is not present locally: pull or build it first", s.remote("b")));
    assert_eq!(absent.status(1).outcomes(), [failed]);
}

#[test]
fn run_steps_and_build_args_reach_the_build() {
    let s = Sandbox::new("build-args");
    s.write("run/Dockerfile", format!("FROM {}\nARG V\nRUN echo hi > /x\nRUN echo $V > /v\n", base_image()));
    s.write("run/id", &s.id);
    let args = "--build-arg V=1";
    let plain = s.tag("run");
    let with_args = run(s.cmd(&["local-image", "run"]).env("DOCKER_BUILD_ARGS", args));
    let tag = with_args.success().stdout.trim().rsplit_once(':').unwrap().1.to_string();
    assert_ne!(tag, plain, "build arguments must change the tag");

    let load = run(s.cmd(&["load", "run", "--json"]).env("DOCKER_BUILD_ARGS", args));
    assert_eq!(load.success().outcomes(), [outcome("run", &tag, "built", Some(&s.log("run")))]);
    assert_eq!(run_in(&format!("{}:latest", s.local("run")), &["cat", "/x", "/v"]), "hi\n1\n");
}

/// `DOCKER_BUILD_ARGS` reaches the build split as the legacy Makefile's
/// shell split it; what the shell would expand is refused, before any work.
#[test]
fn quoted_build_args_reach_the_build_as_one_word() {
    let s = Sandbox::new("quoted-args");
    s.write("q/Dockerfile", format!("FROM {}\nARG MSG\nRUN echo \"$MSG\" > /msg\n", base_image()));
    s.write("q/id", &s.id);
    let args = r#"--build-arg MSG="hello world""#;
    let listed = run(s.cmd(&["local-image", "q"]).env("DOCKER_BUILD_ARGS", args));
    let tag = listed.success().stdout.trim().rsplit_once(':').unwrap().1.to_string();

    let load = run(s.cmd(&["load", "q", "--json"]).env("DOCKER_BUILD_ARGS", args));
    assert_eq!(load.success().outcomes(), [outcome("q", &tag, "built", Some(&s.log("q")))]);
    assert_eq!(run_in(&format!("{}:latest", s.local("q")), &["cat", "/msg"]), "hello world\n");

    let expanded = run(s.cmd(&["load", "q"]).env("DOCKER_BUILD_ARGS", "--build-arg MSG=$HOME"));
    assert_eq!(
        expanded.error_line(),
        "error: DOCKER_BUILD_ARGS `--build-arg MSG=$HOME` holds `$`, which a shell would expand and this tool does \
         not: write out what it stands for, or put it in single quotes to pass it as it is"
    );
}

/// A build the engine refuses outright fails quoting the engine's reason,
/// not the hint to read its help that follows it.
#[test]
fn a_refused_build_quotes_the_engines_reason() {
    let s = Sandbox::new("refused-build");
    s.scratch_image("a");
    let tag =
        run(s.cmd(&["local-image", "--print", "tag", "a"]).env("DOCKER_BUILD_ARGS", "stray")).ok().trim().to_string();

    let build = run(s.cmd(&["rebuild", "a", "--json"]).env("DOCKER_BUILD_ARGS", "stray"));
    let mut outcomes = build.status(1).outcomes();
    let error = outcomes[0].as_object_mut().unwrap().remove("error").expect("the failure has an error");
    assert_eq!(outcomes, [outcome("a", &tag, "failed", Some(&s.log("a")))]);
    // docker: `… requires 1 argument` (or `exactly 1 argument`); podman: `accepts at most 1 arg(s)`.
    let log = fs::read_to_string(s.log("a")).unwrap();
    let reason = log.lines().map(str::trim).find(|l| l.contains(" 1 arg")).unwrap_or_else(|| panic!("{log}"));
    assert_eq!(error, json!(format!("build failed: {reason}; log: {}", s.log("a"))), "{log}");
    assert!(build.stderr_lines().contains(&format!("error: a: {}", error.as_str().unwrap()).as_str()), "{build}");
}

#[test]
fn warm_load_all_asks_the_engine_three_times() {
    let s = Sandbox::new("warm");
    s.scratch_image("a");
    s.scratch_image("grp/b");
    let (a, b) = (s.tag("a"), s.tag("grp_b"));
    s.xtask(&["load-all-images"]).success();

    let recorder = s.recording_engine();
    let warm = run(s.cmd(&["load-all-images", "--json"]).env("PATH", &recorder.path));
    assert_eq!(warm.success().outcomes(), [outcome("a", &a, "present", None), outcome("grp_b", &b, "present", None)]);
    let calls = recorder.take();
    assert_eq!(calls.len(), 3, "engine calls (version, listing, platforms): {calls:#?}");
}

/// After each build, the image is checked and named through the engine's
/// API (docker's daemon socket; a podman service the run starts, one for
/// the whole run), not a CLI process a call; the podman service ends with
/// the run, its socket removed. Under buildx the images of one bake are
/// checked together, in one call.
#[test]
fn a_cold_build_is_checked_and_named_through_the_engines_api() {
    let s = Sandbox::new("api-names");
    s.scratch_image("a");
    s.scratch_image("b");
    let recorder = s.recording_engine();
    let cold = run(s.cmd(&["load-all-images", "--json"]).env("PATH", &recorder.path));
    let outcomes = cold.success().outcomes();
    assert_eq!(outcomes.iter().map(|o| o["action"].as_str().unwrap()).collect::<Vec<_>>(), ["built", "built"]);
    for image in ["a", "b"] {
        let (tagged, latest) = (format!("{}:{}", s.local(image), s.tag(image)), format!("{}:latest", s.local(image)));
        assert!(image_id(&tagged).is_some() && image_id(&tagged) == image_id(&latest), "{image} is not named");
    }
    let calls = recorder.take();
    let program = engine().program();
    let cli = |verb: &str| calls.iter().filter(|c| c.starts_with(&format!("{program} {verb} "))).count();
    let inspected = if support::builder() == support::Builder::Buildx { 1 } else { 0 };
    assert_eq!((cli("tag"), cli("image inspect"), cli("inspect")), (0, inspected, 0), "{calls:#?}");
    let services: Vec<&String> = calls.iter().filter(|c| c.starts_with("podman system service ")).collect();
    if engine() == Engine::Podman {
        assert_eq!(services.len(), 1, "{calls:#?}");
        let socket = services[0].rsplit("unix://").next().unwrap().to_string();
        assert!(!std::path::Path::new(&socket).exists(), "the service's socket {socket} is left behind");
        let left: Vec<String> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|p| fs::read(p.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&socket))
            .collect();
        assert!(left.is_empty(), "the service outlived the run: {left:?}");
    } else {
        assert!(services.is_empty(), "{calls:#?}");
    }
}

/// podman's service ends by itself after 10 s without a request; a build
/// longer than that finds it ended, and the run starts it again rather than
/// falling back to a podman process a call. (podman alone: docker's daemon
/// does not end; tests/run runs this in its podman phase.)
#[test]
fn a_podman_service_that_ended_while_a_build_ran_is_started_again() {
    if engine() != Engine::Podman {
        return;
    }
    let s = Sandbox::new("api-again");
    for image in ["a", "b"] {
        s.write(&format!("{image}/Dockerfile"), format!("FROM {}\nRUN sleep 11 && echo {image} > /x\n", base_image()));
    }
    let recorder = s.recording_engine();
    let run = run(s.cmd(&["load-all-images", "--jobs", "1", "--json"]).env("PATH", &recorder.path));
    let outcomes = run.success().outcomes();
    assert_eq!(outcomes.iter().map(|o| o["action"].as_str().unwrap()).collect::<Vec<_>>(), ["built", "built"]);
    let calls = recorder.take();
    // The base is looked at once, before the first build; the builds after.
    let cli = |verb: &str| calls.iter().filter(|c| c.starts_with(&format!("podman {verb} "))).count();
    assert_eq!((cli("tag"), cli("image inspect sha256:")), (0, 0), "{calls:#?}");
    let services: Vec<&String> = calls.iter().filter(|c| c.starts_with("podman system service ")).collect();
    assert_eq!(services.len(), 2, "started after the first build, again after the second: {calls:#?}");
    let socket = services[0].rsplit("unix://").next().unwrap();
    assert!(!std::path::Path::new(socket).exists(), "the service's socket {socket} is left behind");
}

/// A directory of images without a Dockerfile of its own selects the images
/// under it; a directory whose name cannot make an image name fails what
/// names it, and an `*-all-*` run does the rest before failing, naming it.
#[test]
fn directories_select_their_images_and_an_invalid_one_fails_only_what_needs_it() {
    let s = Sandbox::new("dirs");
    s.scratch_image("good");
    s.scratch_image("compat/gitea/one");
    s.scratch_image("compat/gitea/two");
    s.scratch_image("compat/other");
    s.scratch_image("bad_name");
    let bad = format!(
        "image directory {} has `_` in its name `bad_name`: image names join directories with `_`, so names would \
         be ambiguous; use `-` instead",
        s.images.join("bad_name").display()
    );

    let plan = s.xtask(&["load", "compat_gitea", "--dry-run", "--json"]);
    let names: Vec<String> =
        plan.success().items("plan").iter().map(|j| j["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["compat_gitea_one", "compat_gitea_two"], "{plan}");
    let plan = s.xtask(&["load", "compat/gitea/", "--dry-run", "--json"]);
    assert_eq!(plan.success().items("plan").len(), 2, "{plan}");

    let named = s.xtask(&["load", "bad_name"]);
    named.status(1);
    assert_eq!(named.stderr_lines(), [format!("error: {bad}")], "{named}");

    let all = s.xtask(&["load-all-images", "--json"]);
    all.status(1);
    let tags: Vec<String> =
        ["compat_gitea_one", "compat_gitea_two", "compat_other", "good"].iter().map(|n| s.tag(n)).collect();
    let expected: Vec<serde_json::Value> = ["compat_gitea_one", "compat_gitea_two", "compat_other", "good"]
        .iter()
        .zip(&tags)
        .map(|(n, t)| outcome(n, t, "built", Some(&s.log(n))))
        .collect();
    assert_eq!(all.outcomes(), expected, "{all}");
    let lines = all.stderr_lines();
    assert_eq!(lines.first(), Some(&format!("warning: skipped: {bad}").as_str()), "{all}");
    assert_eq!(lines.last(), Some(&format!("error: {bad}").as_str()), "{all}");
}

/// Whether a build re-ran the expensive step: it writes random bytes.
fn expensive(s: &Sandbox) -> String {
    run_in(&format!("{}:latest", s.local("inc")), &["cat", "/expensive"])
}

/// A changed image is built on its previous version: the local `:latest`
/// (a developer's machine), else the registry's (a CI machine with nothing
/// local); unchanged steps are not run again, a changed step and those after
/// it are; `--no-cache` builds from nothing; and the tag is the same whatever
/// the cache.
#[test]
fn a_changed_image_builds_on_its_previous_version() {
    let s = Sandbox::new("incremental");
    s.write(
        "inc/Dockerfile",
        format!("FROM {}\nRUN head -c 16 /dev/urandom | od -An -tx1 > /expensive\nCOPY small /small\n", base_image()),
    );
    s.write("inc/small", "1\n");
    let remote_latest = format!("{}:latest", s.remote("inc"));
    let latest_pushed = |args: &[&str]| run(s.cmd(args).env("DOCKER_PUSH_AS_LATEST", "true"));

    // The first build of a new image has nothing to start from.
    let first = latest_pushed(&["push", "inc", "--json"]);
    assert_eq!(first.success().caches(), [serde_json::Value::Null], "{first}");
    let v1 = expensive(&s);

    // Developer: the previous version is here.
    s.write("inc/small", "2\n");
    let dev = s.xtask(&["load", "inc", "--json"]);
    let cache = &dev.success().caches()[0];
    let (kind, reference) = match engine() {
        Engine::Docker => ("local", format!("{}:latest", s.local("inc"))),
        Engine::Podman => ("repository", format!("{}-buildcache", s.remote("inc"))),
    };
    assert_eq!((cache["kind"].as_str(), cache["reference"].as_str()), (Some(kind), Some(reference.as_str())), "{dev}");
    assert!(cache["steps_reused"].as_u64().is_some_and(|n| n >= 1), "{dev}");
    assert_eq!(expensive(&s), v1, "the unchanged step ran again: {dev}");
    assert_eq!(run_in(&format!("{}:latest", s.local("inc")), &["cat", "/small"]), "2\n");
    latest_pushed(&["push", "inc"]).success();

    // CI: nothing local, the registry has the previous version's :latest.
    untag(&s.local_names());
    s.write("inc/small", "3\n");
    let ci = s.xtask(&["load", "inc", "--json"]);
    let cache = &ci.success().caches()[0];
    let (kind, reference) = match engine() {
        Engine::Docker => ("remote", remote_latest.clone()),
        Engine::Podman => ("repository", format!("{}-buildcache", s.remote("inc"))),
    };
    assert_eq!((cache["kind"].as_str(), cache["reference"].as_str()), (Some(kind), Some(reference.as_str())), "{ci}");
    assert!(cache["steps_reused"].as_u64().is_some_and(|n| n >= 1), "{ci}");
    assert_eq!(expensive(&s), v1, "the unchanged step ran again: {ci}");
    let tag = s.tag("inc");
    assert_eq!(ci.outcomes(), [outcome("inc", &tag, "built", Some(&s.log("inc")))], "{ci}");

    // A changed step, and every step after it, runs again.
    s.write(
        "inc/Dockerfile",
        format!(
            "FROM {}\nRUN head -c 16 /dev/urandom | od -An -tx1 > /expensive && true\nCOPY small /small\n",
            base_image()
        ),
    );
    s.xtask(&["load", "inc"]).success();
    let v2 = expensive(&s);
    assert_ne!(v2, v1, "a changed step was taken from the cache");

    // --no-cache: from nothing.
    let fresh = s.xtask(&["rebuild", "inc", "--no-cache", "--json"]);
    assert_eq!(fresh.success().caches(), [serde_json::Value::Null], "{fresh}");
    assert_ne!(expensive(&s), v2, "--no-cache took the step from a cache");
}

/// An aarch64 `:latest` is never the cache of an x86_64 build: the plan
/// names none (or the registry's x86_64 one).
#[test]
fn the_cache_source_is_for_the_same_architecture() {
    let s = Sandbox::new("cache-arch");
    s.scratch_image("tools");
    s.write("tools/big", "x".repeat(1000));
    let with_arch = |arch: &str, args: &[&str]| run(s.cmd(args).env("ARCH", arch));
    with_arch("x86_64", &["load", "tools"]).success();
    s.write("tools/big", "y".repeat(1000));
    let plan = with_arch("x86_64", &["load", "tools", "--dry-run", "--json"]);
    let jobs = plan.success().items("plan");
    let local_latest = format!("{}:latest", s.local("tools"));
    assert_eq!(jobs[0]["cache"], serde_json::json!({ "kind": "local", "reference": local_latest }), "{plan}");

    with_arch("aarch64", &["load", "tools"]).success();
    s.write("tools/big", "z".repeat(1000));
    let plan = with_arch("x86_64", &["load", "tools", "--dry-run", "--json"]);
    let jobs = plan.success().items("plan");
    assert_eq!(
        jobs[0]["cache"],
        serde_json::Value::Null,
        "the aarch64 :latest is the cache of an x86_64 build: {plan}"
    );
}

/// Checks a `--json` document against the schema the README gives (its
/// `kind`: list, plan, outcomes, indexes or error): the exact keys of every
/// object and the type of every value.
fn check_schema(kind: &str, doc: &serde_json::Value) {
    use serde_json::Value;
    let object = |v: &Value, what: &str| -> serde_json::Map<String, Value> {
        v.as_object().unwrap_or_else(|| panic!("{what} is not an object: {v}")).clone()
    };
    // Required keys, and optional ones; nothing else.
    let keys = |o: &serde_json::Map<String, Value>, required: &[&str], optional: &[&str], what: &str| {
        for k in required {
            assert!(o.contains_key(*k), "{what} lacks {k}: {o:?}");
        }
        for k in o.keys() {
            assert!(required.contains(&k.as_str()) || optional.contains(&k.as_str()), "{what} has {k}: {o:?}");
        }
    };
    let string = |v: &Value, what: &str| assert!(v.is_string(), "{what} is not a string: {v}");
    let image_keys = ["name", "path", "arch", "tag", "local", "remote", "test"];
    let image = |o: &serde_json::Map<String, Value>| {
        for k in ["name", "path"] {
            string(&o[k], k);
        }
        assert!(["x86_64", "aarch64"].contains(&o["arch"].as_str().unwrap_or_default()), "arch: {o:?}");
        for k in ["tag", "local", "remote"] {
            assert!(o[k].is_string() || o[k].is_null(), "{k}: {o:?}");
        }
        if let Some(tag) = o["tag"].as_str() {
            assert!(tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()), "tag: {o:?}");
            for k in ["local", "remote"] {
                assert!(o[k].as_str().unwrap().ends_with(&format!(":{tag}")), "{k}: {o:?}");
            }
        }
        assert!(o["test"].is_boolean(), "test: {o:?}");
    };
    let cache = |v: &Value, steps: bool| {
        let c = object(v, "cache");
        keys(&c, &["kind", "reference"], if steps { &["steps_reused"] } else { &[] }, "cache");
        string(&c["reference"], "cache reference");
    };
    let top = object(doc, "the document");
    assert_eq!(top["schema"], serde_json::json!(1), "{doc}");
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        image_keys.iter().copied().chain(extra.iter().copied()).collect()
    };
    match kind {
        "list" => {
            keys(&top, &["schema", "images"], &[], "a list");
            for item in top["images"].as_array().unwrap() {
                let o = object(item, "an image");
                keys(&o, &with(&["dockerfile", "group"]), &[], "a listed image");
                image(&o);
            }
        }
        "plan" => {
            keys(&top, &["schema", "command", "arch", "plan"], &[], "a plan");
            for item in top["plan"].as_array().unwrap() {
                let o = object(item, "a plan entry");
                keys(
                    &o,
                    &with(&["steps", "why", "after", "requested"]),
                    &["cache", "latest_was", "build_after", "only_if_built"],
                    "a plan entry",
                );
                image(&o);
                for step in o["steps"].as_array().unwrap() {
                    string(&step["step"], "step");
                }
                for k in ["after", "build_after", "only_if_built"] {
                    if let Some(names) = o.get(k) {
                        assert!(names.as_array().unwrap().iter().all(Value::is_string), "{k}: {o:?}");
                    }
                }
                assert!(o["requested"].is_boolean());
                if let Some(c) = o.get("cache") {
                    cache(c, false);
                }
            }
        }
        "outcomes" => {
            keys(&top, &["schema", "command", "arch", "images"], &["builder"], "outcomes");
            for item in top["images"].as_array().unwrap() {
                let o = object(item, "an outcome");
                keys(&o, &with(&["action", "seconds"]), &["reason", "log", "error", "builder", "cache"], "an outcome");
                image(&o);
                let actions = [
                    "present",
                    "tagged",
                    "pulled",
                    "built",
                    "latest",
                    "pushed",
                    "skipped",
                    "failed",
                    "blocked",
                    "interrupted",
                    "not-started",
                ];
                assert!(actions.contains(&o["action"].as_str().unwrap_or_default()), "action: {o:?}");
                let seconds = o["seconds"].as_f64().unwrap();
                assert_eq!((seconds * 1000.0).round() / 1000.0, seconds, "seconds to the millisecond: {o:?}");
                if let Some(c) = o.get("cache") {
                    cache(c, true);
                }
            }
        }
        "indexes" => {
            keys(&top, &["schema", "indexes"], &[], "indexes");
            for item in top["indexes"].as_array().unwrap() {
                let o = object(item, "an index");
                keys(&o, &["name", "reference", "members"], &[], "an index");
                for m in o["members"].as_array().unwrap() {
                    keys(&object(m, "a member"), &["arch", "reference"], &[], "a member");
                }
            }
        }
        "error" => keys(&top, &["schema", "error"], &[], "an error"),
        other => panic!("no document kind {other}"),
    }
}

/// Every command's `--json` follows the one schema.
#[test]
fn every_json_document_follows_the_schema() {
    let s = Sandbox::new("schema");
    s.scratch_image("grp/a");
    s.write("b/Dockerfile", format!("FROM {}:latest\nCOPY id /id\n", s.local("grp/a")));
    s.write("b/id", &s.id);
    s.write("armonly/Dockerfile.aarch64", "FROM scratch\n");
    let doc = |args: &[&str], code: i32| -> serde_json::Value {
        let run = s.xtask(args);
        run.status(code);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"))
    };
    let docs = [
        ("list", doc(&["list-all-images", "--json"], 0)),
        ("list", doc(&["list-all-test-images", "--json"], 0)),
        ("plan", doc(&["load-all-images", "--dry-run", "--json"], 0)),
        ("plan", doc(&["push", "b", "--dry-run", "--json"], 0)),
        ("outcomes", doc(&["load-all-images", "--json"], 0)),
        ("outcomes", doc(&["load", "b", "--json"], 0)),
        ("outcomes", doc(&["rebuild", "b", "--json"], 0)),
        ("outcomes", doc(&["push-all-images", "--json", "--push-as-latest"], 0)),
        ("outcomes", doc(&["test-all-test-images", "--json"], 0)),
        ("outcomes", doc(&["tag", "b", "--json"], 0)),
        ("outcomes", doc(&["pull", "b", "--json"], 0)),
        ("error", doc(&["load", "nope", "--json"], 1)),
        ("error", doc(&["push-manifest", "b", "--json"], 1)),
    ];
    for (kind, d) in &docs {
        check_schema(kind, d);
    }
    // The checker itself refuses what the schema does not allow.
    let mut bad = docs[4].1.clone();
    bad["images"][0]["extra"] = serde_json::json!(1);
    assert!(std::panic::catch_unwind(|| check_schema("outcomes", &bad)).is_err());
}
