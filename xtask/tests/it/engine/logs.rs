//! Build logs end to end: each run writes its own, which a run at the same
//! time leaves alone, and `<name>.log` links to the newest that a run wrote,
//! so that a run with nothing to log keeps the last build's.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::{arch, base_image, is_run, outcome, spawn, untag, Sandbox};

/// Two failing builds of one image at once, each printing its own mark:
/// each run's `log:` names a log of its own holding its build's output.
#[test]
fn runs_at_once_keep_their_own_logs() {
    let s = Sandbox::new("logs-at-once");
    // Slow enough that the two builds overlap.
    s.write("b/Dockerfile", format!("FROM {}\nARG MARK\nRUN echo \"mark $MARK\" && sleep 2 && false\n", base_image()));
    let start = |mark: &str| {
        let mut cmd = s.cmd(&["rebuild", "b", "--json"]);
        cmd.env("DOCKER_BUILD_ARGS", format!("--build-arg MARK={mark}")).current_dir(s.path());
        spawn(cmd, s.path())
    };
    let (one, two) = (start("one"), start("two"));
    let (one, two) = (one.wait(Duration::from_secs(120)), two.wait(Duration::from_secs(120)));

    let dir = s.target.join("xtask-logs").join(arch());
    let mut logs = Vec::new();
    for (run, mark, other) in [(&one, "mark one", "mark two"), (&two, "mark two", "mark one")] {
        let outcomes = run.status(1).outcomes();
        let log = outcomes[0]["log"].as_str().unwrap_or_else(|| panic!("{run}")).to_string();
        let file = Path::new(&log).strip_prefix(&dir).unwrap_or_else(|_| panic!("{log} is not in {}", dir.display()));
        let name = file.to_str().unwrap();
        let run_of = name.strip_prefix("b.").and_then(|n| n.strip_suffix(".log"));
        assert!(run_of.is_some_and(is_run), "{log} is not b.<run>.log");
        let error = run.errors().into_iter().find(|l| l.starts_with("error: b: ")).unwrap_or_else(|| panic!("{run}"));
        assert!(error.ends_with(&format!("; log: {log}")), "{error}");
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains(mark) && !text.contains(other), "{log} holds another run's output:\n{text}");
        logs.push(log);
    }
    assert_ne!(logs[0], logs[1]);
    assert!(logs.contains(&s.log("b")), "b.log links to neither run's log: {logs:?}");
}

/// After a build, a load of the present image and a tag of it write no log:
/// `<name>.log` still links to the build's, which is still there.
#[test]
fn a_run_with_nothing_to_log_keeps_the_last_builds_log() {
    let s = Sandbox::new("logs-kept");
    s.scratch_image("a");
    let tag = s.tag("a");
    let built = s.xtask(&["load", "a", "--json"]);
    let log = s.log("a");
    assert_eq!(built.success().outcomes(), [outcome("a", &tag, "built", Some(&log))]);
    let latest = Path::new(&log).with_file_name("a.log");
    let text = fs::read_to_string(&latest).unwrap();
    assert!(!text.is_empty());

    let present = s.xtask(&["load", "a", "--json"]);
    assert_eq!(present.success().outcomes(), [outcome("a", &tag, "present", None)]);
    assert_eq!(s.log("a"), log);
    assert_eq!(fs::read_to_string(&latest).unwrap(), text);

    let local = s.local("a");
    untag(&[format!("{local}:{tag}"), format!("{local}:latest")]);
    let tagged = s.xtask(&["tag", "a", "--json"]);
    assert_eq!(tagged.success().outcomes(), [outcome("a", &tag, "tagged", None)]);
    assert_eq!(s.log("a"), log);
    assert_eq!(fs::read_to_string(&latest).unwrap(), text);
}
