//! Shared by the engine tests: a per-test sandbox (images tree, log
//! directory, local and remote name prefixes of its own, cleaned up on drop),
//! a runner for the `xtask` binary, `docker` helpers, a registry a test can
//! stop, and a `docker` wrapper that records every engine invocation.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

/// The registry started by the test environment, as `host:port`.
pub fn registry() -> String {
    match std::env::var("XTASK_TEST_REGISTRY") {
        Ok(r) if !r.is_empty() => r,
        _ => panic!(
            "XTASK_TEST_REGISTRY is not set: the engine tests need docker and a registry on loopback; \
             run them with `tests/run`, which starts both"
        ),
    }
}

/// A local image with a shell, usable in `FROM` for images with `RUN` steps.
pub fn base_image() -> String {
    match std::env::var("XTASK_TEST_BASE_IMAGE") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!("XTASK_TEST_BASE_IMAGE is not set: run the engine tests with `tests/run`"),
    }
}

pub fn arch() -> &'static str {
    xtask::config::Arch::host().unwrap().as_str()
}

/// A short random hex string, so that names never collide between tests or runs.
fn random() -> String {
    let seed = (std::process::id(), SystemTime::now(), std::thread::current().id());
    format!("{:08x}", RandomState::new().hash_one(seed) as u32)
}

// ---- the sandbox -------------------------------------------------------------------

/// One test's world: an images root, a target directory for build logs, an
/// empty settings file, and name prefixes nobody else uses. Dropping it
/// removes every local image name under its prefixes.
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub images: PathBuf,
    pub target: PathBuf,
    config: PathBuf,
    /// Written into every image, so no two tests ever build the same image ID.
    pub id: String,
    pub local_prefix: String,
    pub remote_prefix: String,
}

impl Sandbox {
    pub fn new(test: &str) -> Sandbox {
        let registry = registry();
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let target = dir.path().join("target");
        let config = dir.path().join("images.toml");
        fs::create_dir(&images).unwrap();
        fs::write(&config, "").unwrap();
        let id = format!("{}-{}", test.replace('_', "-"), random());
        Sandbox {
            local_prefix: format!("xtask-test.local/{id}"),
            remote_prefix: format!("{registry}/{id}"),
            id,
            dir,
            images,
            target,
            config,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Points the remote names at another registry (`host:port`).
    pub fn use_registry(&mut self, registry: &str) {
        self.remote_prefix = format!("{registry}/{}", self.id);
    }

    /// Writes a file under the images root, creating its parents.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.images.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// An image at `path` built `FROM scratch` holding one file, `/id`, whose
    /// content is unique to this sandbox and path.
    pub fn scratch_image(&self, path: &str) {
        self.write(&format!("{path}/Dockerfile"), "FROM scratch\nCOPY id /id\n");
        self.write(&format!("{path}/id"), &format!("{} {path}\n", self.id));
    }

    /// The binary with this sandbox's settings and nothing inherited that
    /// would change them.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        for name in xtask::cli::ENV_SETTINGS {
            cmd.env_remove(name);
        }
        cmd.env_remove("DOCKER_CONTEXT")
            .env("IMAGES_CONFIG", &self.config)
            .env("IMAGES_DIR", &self.images)
            .env("LOCAL_IMAGE_PREFIX", &self.local_prefix)
            .env("REMOTE_IMAGE_PREFIX", &self.remote_prefix)
            // Build logs go under the target directory: one of our own keeps
            // tests that run at once from writing the same log files.
            .env("CARGO_TARGET_DIR", &self.target)
            .args(args);
        cmd
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    /// An image's tag, as `local-image` prints it.
    pub fn tag(&self, name: &str) -> String {
        let run = self.xtask(&["local-image", name]);
        let out = run.success().stdout.trim().to_string();
        let (local, tag) = out.rsplit_once(':').unwrap_or_else(|| panic!("local-image printed {out:?}"));
        assert_eq!(local, self.local(&name.replace('_', "/")), "{out}");
        tag.to_string()
    }

    /// `<LOCAL_IMAGE_PREFIX>/<path>`
    pub fn local(&self, path: &str) -> String {
        format!("{}/{path}", self.local_prefix)
    }

    /// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>`
    pub fn remote(&self, path: &str) -> String {
        format!("{}/{path}_{}", self.remote_prefix, arch())
    }

    /// Where the build log of an image is written.
    pub fn log(&self, name: &str) -> String {
        self.target.join("xtask-logs").join(arch()).join(format!("{name}.log")).display().to_string()
    }

    /// Every local `repository:tag` under this sandbox's prefixes, sorted.
    pub fn local_names(&self) -> Vec<String> {
        let out = docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        let mine = [format!("{}/", self.local_prefix), format!("{}/", self.remote_prefix)];
        let mut names: Vec<String> =
            out.lines().filter(|l| mine.iter().any(|p| l.starts_with(p.as_str()))).map(String::from).collect();
        names.sort();
        names
    }

    /// A `docker` first on PATH that appends each invocation to a file, then
    /// runs the real one.
    pub fn recording_docker(&self) -> Recorder {
        let real = Command::new("which").arg("docker").output().unwrap();
        assert!(real.status.success(), "no docker on PATH");
        let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
        let bin = self.path().join("bin");
        let log = self.path().join("docker-calls.log");
        fs::create_dir_all(&bin).unwrap();
        let script = format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{real}' \"$@\"\n", log.display());
        fs::write(bin.join("docker"), script).unwrap();
        fs::set_permissions(bin.join("docker"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(
            std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        Recorder { path: path.into_string().unwrap(), log }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Best effort: untag by name, so an image ID another test shares stays.
        let names = self.local_names();
        if !names.is_empty() {
            let _ = Command::new("docker").arg("rmi").args(&names).output();
        }
    }
}

pub struct Recorder {
    /// The PATH to give the binary.
    pub path: String,
    log: PathBuf,
}

impl Recorder {
    /// The invocations so far, one per line (arguments joined by spaces),
    /// and forgets them.
    pub fn take(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(String::from).collect()
    }
}

// ---- running the binary ------------------------------------------------------------

pub struct Run {
    pub shown: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let shown = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    Run {
        shown,
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

impl Run {
    pub fn success(&self) -> &Run {
        self.status(0)
    }

    pub fn status(&self, code: i32) -> &Run {
        assert!(!self.stderr.contains("panicked"), "{self}");
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    /// The `--json` outcomes, without `seconds` (which varies); each must
    /// have had one.
    pub fn outcomes(&self) -> Vec<Value> {
        let value: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"));
        let Value::Array(items) = value else { panic!("not an array: {self}") };
        items
            .into_iter()
            .map(|mut o| {
                let seconds = o.as_object_mut().and_then(|m| m.remove("seconds"));
                assert!(seconds.as_ref().is_some_and(Value::is_f64), "no seconds in {o}: {self}");
                o
            })
            .collect()
    }

    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "xtask {} exited {:?}\n--- stdout\n{}--- stderr\n{}", self.shown, self.code, self.stdout, self.stderr)
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

// ---- docker ------------------------------------------------------------------------

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().unwrap()
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The ID of a local image, if there is one by that name.
pub fn image_id(reference: &str) -> Option<String> {
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", reference]);
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// Untags local images.
pub fn untag(references: &[String]) {
    let mut args = vec!["rmi"];
    args.extend(references.iter().map(String::as_str));
    docker_ok(&args);
}

/// What a command prints when run in a container of `image`.
pub fn run_in(image: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", image];
    args.extend(command);
    docker_ok(&args)
}

/// Whether the registry has `reference` (asked of the registry, not of the
/// local engine).
pub fn registry_has(reference: &str) -> bool {
    let out = docker(&["manifest", "inspect", "--insecure", reference]);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such manifest"), "docker manifest inspect {reference}: {err}");
    false
}

/// The digests of the image manifests `reference` resolves to: its own, or
/// those a manifest list points at.
pub fn manifest_digests(reference: &str) -> Vec<String> {
    let out = docker_ok(&["manifest", "inspect", "--insecure", "-v", reference]);
    let value: Value = serde_json::from_str(&out).unwrap();
    let entries = match value {
        Value::Array(entries) => entries,
        one => vec![one],
    };
    entries
        .iter()
        .map(|e| e["Descriptor"]["digest"].as_str().unwrap_or_else(|| panic!("no digest in {e}")).to_string())
        .collect()
}

// ---- a registry of a test's own -------------------------------------------------------

/// A `docker-registry` on a free loopback port with its own storage, for a
/// test that stops it. Killed on drop.
pub struct Registry {
    pub addr: String,
    child: Option<Child>,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        let storage = dir.join("registry-data");
        fs::create_dir_all(&storage).unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.join("registry.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                    storage.display()
                ),
            )
            .unwrap();
            let log = fs::File::create(dir.join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot run docker-registry (tests/env/up.sh installs it)");
            let mut registry = Registry { addr, child: Some(child) };
            if registry.wait_ready() {
                return registry;
            }
            registry.stop();
        }
        panic!("docker-registry did not start: {}", fs::read_to_string(dir.join("registry.log")).unwrap_or_default());
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return false;
            }
            if answers(&self.addr) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(!answers(&self.addr), "registry {} still answers after it was stopped", self.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a registry answers `GET /v2/` with 200 at `addr`.
fn answers(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}
