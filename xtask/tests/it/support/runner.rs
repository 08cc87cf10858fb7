//! Running the `xtask` binary: the one environment every test starts it
//! from, a runner that waits for it, a timed runner that cannot hang (its
//! output to files, killed past a limit), and what either gives back: a
//! [`Run`], with the assertions the tests make of it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{builder, unique};

// ---- the environment ---------------------------------------------------------------

/// Removes from `cmd`'s environment what the test process may have
/// inherited that would change what the tool does: its settings'
/// variables, docker's context, make's (the tool runs under make as a
/// shim) and the locale.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for name in xtask::config::VARIABLES.map(|v| v.name) {
        cmd.env_remove(name);
    }
    for name in ["DOCKER_CONTEXT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "LC_ALL", "LANG"] {
        cmd.env_remove(name);
    }
    cmd
}

/// The binary, with [`clean_env`]'s environment: every test's runs start
/// from it.
pub fn bare_xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    clean_env(&mut cmd);
    cmd
}

// ---- running it ----------------------------------------------------------------------

/// One run of the binary, ended.
pub struct Run {
    /// Its arguments, as shown in messages.
    pub shown: String,
    pub status: ExitStatus,
    /// `status.code()`: none when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

fn shown(cmd: &Command) -> String {
    format!("{:?}", cmd.get_args().collect::<Vec<_>>())
}

/// Runs `cmd` to its end; its output must be UTF-8.
pub fn run(cmd: &mut Command) -> Run {
    let shown = shown(cmd);
    let started = Instant::now();
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    Run {
        shown,
        status,
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
        took: started.elapsed(),
    }
}

/// A run started by [`spawn`], its output going to files.
pub struct Running {
    child: Child,
    shown: String,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
}

/// Starts `cmd` with nothing on stdin, its output going to files in `dir`.
pub fn spawn(mut cmd: Command, dir: &Path) -> Running {
    let k = unique();
    let (out, err) = (dir.join(format!("stdout-{k}")), dir.join(format!("stderr-{k}")));
    let shown = shown(&cmd);
    cmd.stdin(Stdio::null()).stdout(fs::File::create(&out).unwrap()).stderr(fs::File::create(&err).unwrap());
    let child = cmd.spawn().unwrap();
    Running { child, shown, out, err, started: Instant::now() }
}

impl Running {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for its end, killing it (and failing) past `limit`.
    pub fn wait(mut self, limit: Duration) -> Run {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let run = self.finish(status);
                eprintln!("  xtask {} ended {} after {:.1}s", run.shown, run.status, run.took.as_secs_f64());
                return run;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                let run = self.finish(status);
                panic!("still running after {limit:?}, killed: {run}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL; returns whether it was still running.
    pub fn kill(mut self) -> (bool, Run) {
        let was_running = self.running();
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        (was_running, self.finish(status))
    }

    /// The run, its output read (bytes that are not UTF-8 replaced) and its
    /// files removed.
    fn finish(self, status: ExitStatus) -> Run {
        let took = self.started.elapsed();
        let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        let run = Run {
            shown: self.shown,
            status,
            code: status.code(),
            stdout: read(&self.out),
            stderr: read(&self.err),
            took,
        };
        let _ = fs::remove_file(&self.out);
        let _ = fs::remove_file(&self.err);
        run
    }
}

// ---- what a run must have done -----------------------------------------------------

impl Run {
    pub fn success(&self) -> &Run {
        self.status(0)
    }

    /// Exit `code`, and no panic.
    pub fn status(&self, code: i32) -> &Run {
        assert!(!self.stderr.contains("panicked"), "the tool panicked: {self}");
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    /// Exit 0 with nothing on stderr; its stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self}");
        assert_eq!(self.stderr, "", "{self}");
        &self.stdout
    }

    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// The lines of stderr that start with `error:`.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("error:")).collect()
    }

    /// Fails unless the run printed exactly one `error:` line, holding every
    /// one of `needles`.
    pub fn one_line_error(&self, needles: &[&str]) -> String {
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "expected one error line: {self}");
        for n in needles {
            assert!(errors[0].contains(n), "the error does not mention {n:?}: {self}");
        }
        errors[0].to_string()
    }

    /// A failure reported the way every failure must be: exit 1, no panic,
    /// one `error: ` line on stderr, and on stdout nothing, or under `--json`
    /// the same error as a JSON document; returns that line.
    pub fn error_line(&self) -> &str {
        self.status(1);
        let lines = self.stderr_lines();
        assert_eq!(lines.len(), 1, "{self}");
        assert!(lines[0].starts_with("error: "), "{self}");
        if !self.stdout.is_empty() {
            let value: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"));
            assert_eq!(value, json!({ "schema": 1, "error": lines[0].strip_prefix("error: ").unwrap() }), "{self}");
        }
        lines[0]
    }

    /// A failure under `--json`: [`Run::error_line`], with the error as the
    /// JSON document on stdout; returns the line.
    pub fn json_error(&self) -> &str {
        assert!(!self.stdout.is_empty(), "no JSON document of the error: {self}");
        self.error_line()
    }

    /// The document a `--json` run printed (`schema` 1).
    fn document(&self) -> Value {
        let value: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"));
        assert_eq!(value["schema"], json!(1), "{self}");
        value
    }

    /// The images of a listing's `--json` document: [`Run::ok`], and the
    /// document holds `schema`, first, and `images` alone.
    pub fn json(&self) -> Value {
        self.ok();
        let document = self.document();
        let keys: Vec<&String> = document.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["images", "schema"], "{self}");
        assert!(self.stdout.starts_with("{\n  \"schema\": 1,\n"), "the schema comes first: {self}");
        document["images"].clone()
    }

    /// The array under `key` in the `--json` document printed.
    pub fn items(&self, key: &str) -> Vec<Value> {
        match self.document().get(key) {
            Some(Value::Array(items)) => items.clone(),
            _ => panic!("no {key} array: {self}"),
        }
    }

    /// The `images` of a `--json` document of an engine command, whole.
    pub fn images(&self) -> Vec<Value> {
        self.items("images")
    }

    /// The `cache` of each `--json` outcome (null where there is none).
    pub fn caches(&self) -> Vec<Value> {
        self.images().iter().map(|o| o["cache"].clone()).collect()
    }

    /// The `--json` outcomes, without `seconds` (which varies); each must
    /// have had one.
    pub fn outcomes(&self) -> Vec<Value> {
        self.outcomes_built_by(builder().kind())
    }

    /// [`Run::outcomes`], for a run whose builds were made by `kind`.
    pub fn outcomes_built_by(&self, kind: &str) -> Vec<Value> {
        self.images()
            .into_iter()
            .map(|mut o| {
                let seconds = o.as_object_mut().and_then(|m| m.remove("seconds"));
                assert!(seconds.as_ref().is_some_and(Value::is_number), "no seconds in {o}: {self}");
                // A built image names the builder under test, and only a built one.
                let built = o["action"] == "built";
                let named = o.as_object_mut().and_then(|m| m.remove("builder"));
                let expected = built.then(|| json!(kind));
                assert_eq!(named, expected, "the builder of {o}: {self}");
                // The image object is the same in every document: its names
                // carry its tag.
                let tag = o["tag"].clone();
                for key in ["local", "remote"] {
                    let name = o[key].as_str().map(String::from);
                    match (&tag, name) {
                        (Value::String(tag), Some(name)) => assert!(name.ends_with(&format!(":{tag}")), "{o}: {self}"),
                        (Value::Null, None) => {}
                        _ => panic!("{key} does not go with the tag in {o}: {self}"),
                    }
                }
                let m = o.as_object_mut().unwrap();
                for key in ["path", "arch", "local", "remote", "test", "reason", "cache"] {
                    assert!(key == "reason" || key == "cache" || m.contains_key(key), "no {key} in {m:?}: {self}");
                    m.remove(key);
                }
                o
            })
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "xtask {} ended {} after {:.1}s\n--- stdout\n{}--- stderr\n{}",
            self.shown,
            self.status,
            self.took.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// An outcome as `--json` prints it, less `seconds`.
pub fn outcome(name: &str, tag: &str, action: &str, log: Option<&str>) -> Value {
    let mut o = json!({ "name": name, "tag": tag, "action": action });
    if let Some(log) = log {
        o["log"] = json!(log);
    }
    o
}
