//! A registry that wants a password: with the engine's own login the tool
//! pushes and checks through it; without one, or with a wrong one, it fails
//! with one line saying the registry refused the credentials; and the
//! password shows up nowhere the tool writes.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::state::{check_local, check_registry, hermetic_tree, Fingerprints, Names, PATHS};
use super::Report;
use crate::support::{base64, docker_login, unique, Registry, Run, Sandbox};

const USER: &str = "xtask-faults";
const LIMIT: Duration = Duration::from_secs(120);

pub fn run(report: &mut Report) {
    let mut sandbox = Sandbox::sealed("credentials");
    let password = format!("pw-{}-{}", unique(), unique());
    let wrong = format!("wrong-{}", unique());
    let htpasswd = sandbox.path().join("htpasswd");
    fs::write(&htpasswd, format!("{USER}:{}\n", bcrypt(&password))).unwrap();
    let registry = Registry::start(&sandbox.path().join("registry"), Some(&htpasswd));
    sandbox.use_registry(&registry.addr);
    let tags = hermetic_tree(&sandbox, &PATHS, 0);
    let secrets = [
        password.clone(),
        base64(format!("{USER}:{password}").as_bytes()),
        wrong.clone(),
        base64(format!("{USER}:{wrong}").as_bytes()),
    ];
    // Everything the tool wrote: each run's output, and its logs right after it.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut run = |sandbox: &Sandbox, args: &[&str]| -> Run {
        let run = sandbox.xtask_within(args, LIMIT);
        seen.push((format!("the output of xtask {}", run.shown), format!("{}{}", run.stdout, run.stderr)));
        let logs = sandbox.target.join("xtask-logs");
        for entry in walkdir::WalkDir::new(&logs).into_iter().flatten().filter(|e| e.file_type().is_file()) {
            let text = String::from_utf8_lossy(&fs::read(entry.path()).unwrap()).into_owned();
            seen.push((format!("{} after xtask {}", entry.path().display(), run.shown), text));
        }
        run
    };

    let good = sandbox.path().join("docker-good");
    report.case("credentials: after docker login, push-all twice and a dry run", |r| {
        docker_login(&good, &registry.addr, USER, &password)?;
        r.fault("registry requiring a login", 1);
        sandbox.docker_config = Some(good.clone());
        run(&sandbox, &["push-all-images", "--json"]).success();
        let second = run(&sandbox, &["push-all-images", "--json"]);
        second.success();
        if second.stdout.matches("\"skipped\"").count() != PATHS.len() {
            return Err(format!("the second push did not skip every image: {second}"));
        }
        run(&sandbox, &["push-all-images", "--dry-run"]).success();
        let mut prints = Fingerprints::default();
        check_local(&sandbox, &tags, &mut prints, Names::All)?;
        let auth = format!("{USER}:{password}");
        check_registry(&registry.addr, &sandbox.remote_prefix, &tags, &prints, true, Some(&auth)).map(|_| ())
    });

    let none = sandbox.path().join("docker-none");
    report.case("credentials: none at all, push fails saying to log in", |r| {
        fs::create_dir_all(&none).unwrap();
        sandbox.docker_config = Some(none.clone());
        sandbox.untag_all();
        r.fault("missing credentials", 1);
        let failed = run(&sandbox, &["push-all-images"]);
        failed.status(1);
        failed.one_line_error(&[&format!("docker login {}", registry.addr)]);
        Ok(())
    });

    let bad = sandbox.path().join("docker-bad");
    report.case("credentials: a wrong password, push and a dry run fail saying the registry refused it", |r| {
        fs::create_dir_all(&bad).unwrap();
        let auth = base64(format!("{USER}:{wrong}").as_bytes());
        let config = format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", registry.addr);
        fs::write(bad.join("config.json"), config).unwrap();
        sandbox.docker_config = Some(bad.clone());
        r.fault("wrong credentials", 1);
        for args in [&["push", "a"][..], &["push-all-images"], &["push-all-images", "--dry-run"]] {
            let failed = run(&sandbox, args);
            failed.status(1);
            failed.one_line_error(&["refused the credentials", &registry.addr]);
        }
        Ok(())
    });

    report.case("credentials: no password in output or logs", |_| {
        let logs = seen.iter().filter(|(place, _)| !place.starts_with("the output")).count();
        if logs == 0 {
            return Err(format!("no log to look at among {} outputs", seen.len()));
        }
        let found: Vec<&String> =
            seen.iter().filter(|(_, text)| secrets.iter().any(|s| text.contains(s.as_str()))).map(|(p, _)| p).collect();
        if found.is_empty() {
            Ok(())
        } else {
            Err(format!("a password shows in {found:?}"))
        }
    });
}

/// A bcrypt hash of `password`, as the registry's htpasswd wants it: from
/// apache2-utils' `htpasswd` when installed, else from Python.
fn bcrypt(password: &str) -> String {
    let with_stdin = |program: &str, args: &[&str]| -> Option<String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take().unwrap().write_all(password.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let hash = text.trim().rsplit(':').next()?.to_string();
        (out.status.success() && hash.starts_with("$2")).then_some(hash)
    };
    let python = "import sys\n\
        password = sys.stdin.read()\n\
        try:\n    import bcrypt\n    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode())\n\
        except ImportError:\n    import crypt\n    print(crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)))\n";
    with_stdin("htpasswd", &["-niBC", "5", USER])
        .or_else(|| with_stdin("python3", &["-W", "ignore", "-c", python]))
        .or_else(|| with_stdin("/usr/bin/python3", &["-W", "ignore", "-c", python]))
        .expect("cannot make a bcrypt hash: install apache2-utils (htpasswd) or python3-bcrypt")
}
