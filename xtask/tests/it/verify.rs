//! `verify` end to end, on the builder under test (`tests/run` runs this
//! suite on docker's classic builder, buildx's BuildKit, the daemon's
//! BuildKit and podman): hermetic images rebuild the same; a RUN that
//! writes the time does not, named with its step; file times alone are
//! told apart, with what rewriting them would do; the source date comes
//! from git; a catalog base must be loaded first; and the verification's
//! own names are gone afterwards, Ctrl-C included.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{self, base_image, engine_ok, Builder, Sandbox};

/// Long enough for two builds of a small image on a loaded machine.
const LIMIT: Duration = Duration::from_secs(300);

/// The local names with `_verify:` in them: the verification's own.
fn verification_names(s: &Sandbox) -> Vec<String> {
    s.tagged_names().into_iter().filter(|n| n.contains("_verify:")).collect()
}

/// The `--json` entry of each image verified, by name.
fn entries(run: &support::Run) -> Vec<Value> {
    run.items("images")
}

fn entry<'a>(entries: &'a [Value], name: &str) -> &'a Value {
    entries.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name} in {entries:#?}"))
}

/// The kinds of difference of each layer: `(step, [kind, …])`.
fn kinds(entry: &Value) -> Vec<(String, Vec<String>)> {
    entry["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let kinds = l["differences"].as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap().to_string());
            (l["step"].as_str().unwrap().to_string(), kinds.collect())
        })
        .collect()
}

#[test]
fn hermetic_images_are_reproducible() {
    let s = Sandbox::new("verify-hermetic");
    s.write("files/Dockerfile", "FROM scratch\nCOPY a /a\nCOPY b /b\n");
    s.write("files/a", format!("{} a\n", s.id));
    s.write("files/b", "b\n");
    // Fixed content, written by a RUN at build time.
    s.write("greeting/Dockerfile", format!("FROM {}\nRUN echo 'hello {}' > /greeting\n", base_image(), s.id));
    // What a killed run left behind is removed; a name of a run still going stays.
    let killed = format!("{}/files_verify:999999999-1", s.local_prefix);
    let going = format!("{}/files_verify:1-1", s.local_prefix);
    for name in [&killed, &going] {
        engine_ok(&["tag", &base_image(), name]);
    }

    let run = s.xtask_within(&["verify", "--json"], LIMIT);
    run.success();
    let found = entries(&run);
    assert_eq!(found.len(), 2, "{run}");
    for image in ["files", "greeting"] {
        let e = entry(&found, image);
        assert_eq!((&e["reproducible"], &e["config"]), (&json!(true), &json!([])), "{image}: {run}");
        assert!(e.get("error").is_none(), "{run}");
    }
    // Copied files keep their own times: nothing differs at all.
    assert_eq!(entry(&found, "files")["layers"], json!([]), "{run}");
    // A RUN's files are as new as the build: their times may differ, nothing else.
    for (_, kinds) in kinds(entry(&found, "greeting")) {
        assert_eq!(kinds, ["mtime"], "{run}");
    }
    let lines = run.stderr_lines();
    assert!(lines.iter().any(|l| l.starts_with("reproducible      files")), "{run}");
    assert!(lines.iter().any(|l| l.starts_with("reproducible      greeting")), "{run}");
    assert!(lines.contains(&"2 images: 2 reproducible, 0 not reproducible"), "{run}");
    // The verification never gave the images their own names, and removed its own.
    assert_eq!(s.tagged_names(), std::slice::from_ref(&going), "{run}");
    support::untag(&[going]);
}

/// A `RUN` that writes when it ran.
const STAMP: &str = "date > /stamp && cat /proc/uptime >> /stamp";

#[test]
fn a_stamp_of_the_build_time_is_not_reproducible() {
    let s = Sandbox::new("verify-stamp");
    // busybox's `date` has no `%N`: two builds in one second write one
    // `date`; the uptime (hundredths of a second) tells them apart.
    s.write("app/Dockerfile", format!("FROM {}\nCOPY id /id\nRUN {STAMP}\n", base_image()));
    s.write("app/id", format!("{}\n", s.id));

    let run = s.xtask_within(&["verify", "app", "--json"], LIMIT);
    run.status(1);
    let found = entries(&run);
    let app = entry(&found, "app");
    assert_eq!(app["reproducible"], json!(false), "{run}");
    let layers = app["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "only the RUN's layer differs: {run}");
    assert_eq!(layers[0]["step"], format!("RUN {STAMP}"), "{run}");
    assert_eq!(layers[0]["layer"], json!(3), "{run}");
    let content = &layers[0]["differences"][0];
    assert_eq!(content, &json!({ "kind": "content", "paths": ["/stamp"], "more": 0 }), "{run}");
    // Text, on stderr beside the JSON: the verdict, the step, the path.
    let text = run.stderr.split("verifying app: ").nth(1).unwrap_or_default();
    let lines: Vec<&str> = text.lines().skip(1).take(3).collect();
    let step = format!("  layer 3: RUN {STAMP}");
    assert_eq!(lines, ["not reproducible  app", step.as_str(), "    content: /stamp"], "{run}");
    assert!(run.stderr_lines().contains(&"1 image: 0 reproducible, 1 not reproducible"), "{run}");
    assert!(verification_names(&s).is_empty(), "{:?}", s.tagged_names());
}

/// Whether BuildKit under buildx rewrites file times (0.13 or later).
fn buildx_rewrites() -> bool {
    let out = Command::new("docker")
        .env("DOCKER_CONFIG", support::buildx_config())
        .args(["buildx", "inspect"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.lines().find_map(|l| l.trim().strip_prefix("BuildKit version:")).unwrap_or_default();
    let digits = version.trim().trim_start_matches('v');
    let mut parts = digits.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (0, 13)
}

#[test]
fn file_times_alone_are_told_apart() {
    let s = Sandbox::new("verify-times");
    // The second build's file is a second newer at least.
    s.write("touched/Dockerfile", format!("FROM {}\nCOPY id /id\nRUN sleep 1 && touch /t\n", base_image()));
    s.write("touched/id", format!("{}\n", s.id));

    // podman's RUN layers hold more than /t: show them all.
    let run = s.xtask_within(&["verify", "touched", "--json", "--max-paths", "50"], LIMIT);
    run.success();
    let found = entries(&run);
    let touched = entry(&found, "touched");
    assert_eq!(touched["reproducible"], json!(true), "{run}");
    assert_eq!(kinds(touched), [("RUN sleep 1 && touch /t".to_string(), vec!["mtime".to_string()])], "{run}");
    let mtimes = &touched["layers"][0]["differences"][0]["paths"];
    assert!(mtimes.as_array().unwrap().contains(&json!("/t")), "{run}");
    let can = match support::builder() {
        Builder::Buildx => buildx_rewrites(),
        Builder::Classic | Builder::BuildKitEnv => false,
        Builder::Podman => true,
    };
    let rewrite = &touched["rewrite_timestamp"];
    assert_eq!((&rewrite["would_fix"], &rewrite["builder_can"]), (&json!(true), &json!(can)), "{run}");
    let note = rewrite["note"].as_str().unwrap();
    assert!(note.contains("which would make the two builds identical"), "{run}");
    let lines = run.stderr_lines();
    assert!(lines.contains(&"reproducible      touched (only file times differ)"), "{run}");
    assert!(lines.iter().any(|l| l.starts_with("    mtime: ") && l.contains("/t")), "{run}");
    assert!(lines.contains(&format!("  rewrite-timestamp: {note}").as_str()), "{run}");
    assert!(verification_names(&s).is_empty(), "{:?}", s.tagged_names());
}

/// Commits everything under the sandbox at `seconds`; the commit's name.
fn commit_at(s: &Sandbox, seconds: u64, message: &str) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(s.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", format!("@{seconds} +0000"))
            .env("GIT_COMMITTER_DATE", format!("@{seconds} +0000"))
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", message]);
    git(&["rev-parse", "HEAD"])
}

#[test]
fn the_source_date_is_the_last_change_of_the_image() {
    let s = Sandbox::new("verify-epoch");
    support::git(s.path(), &["init", "-q"]);
    let dockerfile =
        format!("FROM {}\nARG SOURCE_DATE_EPOCH\nRUN echo \"epoch=$SOURCE_DATE_EPOCH\" | tee /epoch\n", base_image());
    for image in ["dated", "edited", "other"] {
        s.write(&format!("{image}/Dockerfile"), &dockerfile);
        s.write(&format!("{image}/id"), format!("{} {image}\n", s.id));
    }
    let first = commit_at(&s, 1_600_000_000, "images");
    s.write("dated/id", format!("{} dated again\n", s.id));
    let dated = commit_at(&s, 1_650_000_000, "dated changes");
    std::fs::write(s.path().join("README"), "outside the images\n").unwrap();
    let head = commit_at(&s, 1_700_000_000, "elsewhere");
    // Uncommitted: HEAD's time.
    s.write("edited/id", format!("{} edited since\n", s.id));

    let run = s.xtask_within(&["verify", "--changed-since", &first, "--json"], LIMIT);
    run.success();
    let found = entries(&run);
    let names: Vec<&str> = found.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dated", "edited"], "{run}");
    assert!(run.stderr_lines().contains(&format!("changed since {first}: 2 of 3 images").as_str()), "{run}");
    assert_eq!(
        entry(&found, "dated")["source_date"],
        json!({ "seconds": 1_650_000_000, "from": "last-change", "commit": dated }),
        "{run}"
    );
    assert_eq!(
        entry(&found, "edited")["source_date"],
        json!({ "seconds": 1_700_000_000, "from": "head-dirty", "commit": head }),
        "{run}"
    );
    let said = format!(
        "verifying dated: SOURCE_DATE_EPOCH=1650000000 (the time of commit {}, the last to change dated)",
        &dated[..12]
    );
    assert!(run.stderr_lines().contains(&said.as_str()), "{run}");
    // Both builds of each saw it.
    let logs = s.target.join("xtask-logs").join(support::arch());
    for (image, seconds) in [("dated", 1_650_000_000), ("edited", 1_700_000_000)] {
        let log = std::fs::read_to_string(logs.join(format!("{image}.verify.log"))).unwrap();
        let builds: Vec<&str> = log.split("## verify: the ").skip(1).collect();
        assert_eq!(builds.len(), 2, "{log}");
        assert!(builds.iter().all(|b| b.contains(&format!("epoch={seconds}\n"))), "{log}");
    }
}

#[test]
fn a_catalog_base_must_be_loaded_first() {
    let s = Sandbox::new("verify-base");
    s.write("base/Dockerfile", "FROM scratch\nCOPY f /f\n");
    s.write("base/f", format!("{} base\n", s.id));
    s.write("app/Dockerfile", format!("FROM {}:latest\nCOPY g /g\n", s.local("base")));
    s.write("app/g", "app\n");

    let missing = s.xtask_within(&["verify", "app"], LIMIT);
    missing.status(1);
    let base = format!("{}:{}", s.local("base"), s.tag("base"));
    let why = format!(
        "error: app: it is built on base, which is not present at its current tag ({base}): verify builds on the \
         local image, as a build does; run `cargo xtask load base` first"
    );
    assert!(missing.stderr_lines().contains(&why.as_str()), "{missing}");
    assert_eq!(missing.stdout, "failed            app\n", "{missing}");

    s.xtask_within(&["load", "base"], LIMIT).success();
    let loaded = s.xtask_within(&["verify", "app"], LIMIT);
    assert_eq!(loaded.success().stdout, "reproducible      app\n", "{loaded}");
    assert!(verification_names(&s).is_empty(), "{:?}", s.tagged_names());
}

#[test]
fn ctrl_c_removes_the_verification_images() {
    let s = Sandbox::new("verify-interrupt");
    // Big enough that saving the first build takes a while: Ctrl-C lands
    // while it is named and read, and the second build runs.
    s.write(
        "slow/Dockerfile",
        format!(
            "FROM {}\nCOPY id /id\nRUN dd if=/dev/zero of=/big bs=1M count=128 2>/dev/null\nRUN sleep 5\n",
            base_image()
        ),
    );
    s.write("slow/id", format!("{}\n", s.id));
    let mut child = s.cmd(&["verify", "slow"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let first = format!("{}/slow_verify:{}-1", s.local_prefix, child.id());
    let started = Instant::now();
    while support::image_id(&first).is_none() {
        assert!(started.elapsed() < LIMIT, "the first build never got its name");
        assert!(child.try_wait().unwrap().is_none(), "verify ended before its first build was named");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.lines().any(|l| l == "interrupted: the verification images were removed"), "{stderr}");
    assert!(verification_names(&s).is_empty(), "{:?}: {stderr}", s.tagged_names());
}
