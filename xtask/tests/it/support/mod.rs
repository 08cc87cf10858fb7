//! Shared by the engine tests: the engine under test (`XTASK_TEST_ENGINE`:
//! docker, the default, or podman), a per-test sandbox (images tree, log
//! directory, local and remote name prefixes of its own, cleaned up on drop),
//! a runner for the `xtask` binary, helpers that ask the engine and the
//! registry, a registry a test can stop, and a wrapper around the engine's
//! program that records every invocation.

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
            "XTASK_TEST_REGISTRY is not set: the engine tests need a container engine and a registry on loopback; \
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

/// A local linux/arm64 image with a shell, in the engine under test, for
/// images built for aarch64 under qemu.
pub fn base_image_arm64() -> String {
    match std::env::var("XTASK_TEST_BASE_IMAGE_ARM64") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!("XTASK_TEST_BASE_IMAGE_ARM64 is not set: run the engine tests with `tests/run`"),
    }
}

/// A second docker daemon, as a `DOCKER_HOST` value.
pub fn remote_docker_host() -> String {
    match std::env::var("XTASK_TEST_REMOTE_DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => panic!("XTASK_TEST_REMOTE_DOCKER_HOST is not set: run the engine tests with `tests/run`"),
    }
}

pub fn arch() -> &'static str {
    xtask::config::Arch::host().unwrap().as_str()
}

/// The engine under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    /// Its program, which is also its `IMAGES_ENGINE` value.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// `XTASK_TEST_ENGINE`: docker when unset or empty, else docker or podman.
pub fn engine() -> Engine {
    match std::env::var("XTASK_TEST_ENGINE").as_deref() {
        Err(_) | Ok("") | Ok("docker") => Engine::Docker,
        Ok("podman") => Engine::Podman,
        Ok(other) => panic!("XTASK_TEST_ENGINE={other}: use docker or podman"),
    }
}

/// The builder under test, for docker (`XTASK_TEST_BUILDER`):
/// - unset: the `docker` first on PATH (28.x, without buildx), which builds
///   with the classic builder;
/// - `buildx`: the same client with the buildx plugin that tests/env/up.sh
///   put in a docker config directory of its own (`DOCKER_CONFIG`), which
///   builds with BuildKit;
/// - `buildkit-env`: Debian's docker 20.10 client (`/usr/bin/docker`) first
///   on the binary's PATH, which the tool has build with the daemon's own
///   BuildKit (`DOCKER_BUILDKIT=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builder {
    Classic,
    Buildx,
    BuildKitEnv,
    Podman,
}

pub fn builder() -> Builder {
    let asked = match std::env::var("XTASK_TEST_BUILDER").as_deref() {
        Err(_) | Ok("") => None,
        Ok("buildx") => Some(Builder::Buildx),
        Ok("buildkit-env") => Some(Builder::BuildKitEnv),
        Ok(other) => panic!("XTASK_TEST_BUILDER={other}: use buildx or buildkit-env, or leave it unset"),
    };
    match (engine(), asked) {
        (Engine::Podman, None) => Builder::Podman,
        (Engine::Podman, Some(b)) => panic!("XTASK_TEST_BUILDER={b:?} is for docker"),
        (Engine::Docker, None) => Builder::Classic,
        (Engine::Docker, Some(b)) => b,
    }
}

impl Builder {
    /// How a build log of this builder starts, to tell which one ran.
    pub fn log_start(self) -> &'static str {
        match self {
            Builder::Classic => "Step 1/",
            Builder::Buildx | Builder::BuildKitEnv => "#1 [internal] load ",
            Builder::Podman => "STEP 1/",
        }
    }

    /// What `--json` outcomes call it.
    pub fn kind(self) -> &'static str {
        match self {
            Builder::Classic => "classic",
            Builder::Buildx | Builder::BuildKitEnv => "buildkit",
            Builder::Podman => "podman",
        }
    }

    pub fn is_buildkit(self) -> bool {
        matches!(self, Builder::Buildx | Builder::BuildKitEnv)
    }
}

/// The docker config directory holding the buildx plugin.
pub fn buildx_config() -> String {
    match std::env::var("XTASK_TEST_BUILDX_CONFIG") {
        Ok(c) if !c.is_empty() => c,
        _ => panic!("XTASK_TEST_BUILDX_CONFIG is not set: run the engine tests with `tests/run`"),
    }
}

/// A directory holding `docker` -> Debian's 20.10 client, once per process.
fn buildkit_client_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let client = Path::new("/usr/bin/docker");
        assert!(client.exists(), "{} is missing: tests/env/up.sh installs docker.io", client.display());
        let dir = std::env::temp_dir().join(format!("xtask-test-buildkit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let link = dir.join("docker");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(client, &link).unwrap();
        dir
    })
    .clone()
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
            .env("IMAGES_ENGINE", engine().program())
            .env("LOCAL_IMAGE_PREFIX", &self.local_prefix)
            .env("REMOTE_IMAGE_PREFIX", &self.remote_prefix)
            // Build logs go under the target directory: one of our own keeps
            // tests that run at once from writing the same log files.
            .env("CARGO_TARGET_DIR", &self.target)
            .args(args);
        match builder() {
            Builder::BuildKitEnv => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let dirs = std::iter::once(buildkit_client_dir()).chain(std::env::split_paths(&path));
                cmd.env("PATH", std::env::join_paths(dirs).unwrap()).env_remove("DOCKER_BUILDKIT");
            }
            Builder::Buildx => {
                cmd.env("DOCKER_CONFIG", buildx_config()).env_remove("DOCKER_BUILDKIT");
            }
            Builder::Classic | Builder::Podman => {}
        }
        cmd
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    /// An image's tag, as `local-image` prints it.
    pub fn tag(&self, name: &str) -> String {
        self.tag_of(&mut self.cmd(&["local-image", name]), name)
    }

    /// An image's tag for an architecture (`ARCH`, as spelled), as `local-image` prints it.
    pub fn arch_tag(&self, arch: &str, name: &str) -> String {
        self.tag_of(self.cmd(&["local-image", name]).env("ARCH", arch), name)
    }

    fn tag_of(&self, cmd: &mut Command, name: &str) -> String {
        let run = run(cmd);
        let out = run.success().stdout.trim().to_string();
        let (local, tag) = out.rsplit_once(':').unwrap_or_else(|| panic!("local-image printed {out:?}"));
        assert_eq!(local, self.local(&name.replace('_', "/")), "{out}");
        tag.to_string()
    }

    /// `<LOCAL_IMAGE_PREFIX>/<path>`
    pub fn local(&self, path: &str) -> String {
        format!("{}/{path}", self.local_prefix)
    }

    /// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>`, for the host's architecture.
    pub fn remote(&self, path: &str) -> String {
        self.remote_for(arch(), path)
    }

    /// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>`
    pub fn remote_for(&self, arch: &str, path: &str) -> String {
        format!("{}/{path}_{arch}", self.remote_prefix)
    }

    /// Where the build log of an image is written, for the host's architecture.
    pub fn log(&self, name: &str) -> String {
        self.log_for(arch(), name)
    }

    /// Where the build log of an image is written.
    pub fn log_for(&self, arch: &str, name: &str) -> String {
        self.target.join("xtask-logs").join(arch).join(format!("{name}.log")).display().to_string()
    }

    /// Every local `repository:tag` under this sandbox's prefixes, sorted.
    pub fn local_names(&self) -> Vec<String> {
        let listing = local_listing("{{.Repository}}:{{.Tag}}").unwrap_or_else(|e| panic!("{e}"));
        self.mine(&listing)
    }

    /// The lines of a listing that start with one of this sandbox's prefixes, sorted.
    fn mine(&self, listing: &str) -> Vec<String> {
        let prefixes = [format!("{}/", self.local_prefix), format!("{}/", self.remote_prefix)];
        // podman keeps a name without a registry domain under `localhost/`.
        let mut names: Vec<String> = listing
            .lines()
            .filter(|l| prefixes.iter().any(|p| l.strip_prefix("localhost/").unwrap_or(l).starts_with(p.as_str())))
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    /// The engine's program (and, for podman, skopeo, which reads registries
    /// for it) first on PATH, each appending its invocations to one file,
    /// then running the real one.
    pub fn recording_engine(&self) -> Recorder {
        let bin = self.path().join("bin");
        let log = self.path().join("engine-calls.log");
        fs::create_dir_all(&bin).unwrap();
        let programs: &[&str] = match engine() {
            Engine::Docker => &["docker"],
            Engine::Podman => &["podman", "skopeo"],
        };
        for program in programs {
            let real = Command::new("which").arg(program).output().unwrap();
            assert!(real.status.success(), "no {program} on PATH");
            let mut real = String::from_utf8(real.stdout).unwrap().trim().to_string();
            if builder() == Builder::BuildKitEnv && *program == "docker" {
                real = buildkit_client_dir().join("docker").display().to_string();
            }
            let script =
                format!("#!/bin/sh\nprintf '%s\\n' \"{program} $*\" >> '{}'\nexec '{real}' \"$@\"\n", log.display());
            fs::write(bin.join(program), script).unwrap();
            fs::set_permissions(bin.join(program), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths(
            std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        Recorder { path: path.into_string().unwrap(), log }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Best effort, and no panic: untag by name, so an image ID another
        // test shares stays; then remove what a pull by tag left named by
        // digest alone (docker keeps those once the tags are gone).
        for format in ["{{.Repository}}:{{.Tag}}", "{{.Repository}}@{{.Digest}}"] {
            let Ok(listing) = local_listing(format) else { return };
            let names: Vec<String> = self
                .mine(&listing)
                .into_iter()
                .filter(|n| !n.ends_with(":<none>") && !n.ends_with("@<none>"))
                .collect();
            if !names.is_empty() {
                let _ = Command::new(engine().program()).arg("rmi").args(&names).output();
            }
        }
    }
}

pub struct Recorder {
    /// The PATH to give the binary.
    pub path: String,
    log: PathBuf,
}

impl Recorder {
    /// The invocations so far, one per line (the program and its arguments
    /// joined by spaces), and forgets them. A listing of images asked again
    /// right away counts once: podman's fails when another test removes an
    /// image under it, and the tool asks again, which is not more work.
    pub fn take(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        let mut calls: Vec<String> = text.lines().map(String::from).collect();
        calls.dedup_by(|a, b| a == b && a.split_whitespace().nth(1) == Some("images"));
        calls
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

    /// The array under `key` in the `--json` document printed (`schema` 1).
    pub fn items(&self, key: &str) -> Vec<Value> {
        let value: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"));
        assert_eq!(value["schema"], json!(1), "{self}");
        match value.get(key) {
            Some(Value::Array(items)) => items.clone(),
            _ => panic!("no {key} array: {self}"),
        }
    }

    /// A failure under `--json`: exit 1, one `error: ` line on stderr, and
    /// the same error as the JSON document on stdout; returns the line.
    pub fn json_error(&self) -> &str {
        self.status(1);
        let lines = self.stderr_lines();
        assert_eq!(lines.len(), 1, "{self}");
        let value: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"));
        assert_eq!(value, json!({ "schema": 1, "error": lines[0].strip_prefix("error: ").unwrap() }), "{self}");
        lines[0]
    }

    /// The `images` of a `--json` document of an engine command, whole.
    pub fn images(&self) -> Vec<Value> {
        let value: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"));
        assert_eq!(value["schema"], json!(1), "{self}");
        match value.get("images") {
            Some(Value::Array(items)) => items.clone(),
            _ => panic!("no images array: {self}"),
        }
    }

    /// The `cache` of each `--json` outcome (null where there is none).
    pub fn caches(&self) -> Vec<Value> {
        self.images().iter().map(|o| o["cache"].clone()).collect()
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

// ---- the engine under test ----------------------------------------------------------

/// Runs the engine under test's CLI.
pub fn engine_run(args: &[&str]) -> Output {
    Command::new(engine().program()).args(args).stdin(Stdio::null()).output().unwrap()
}

pub fn engine_ok(args: &[&str]) -> String {
    let out = engine_run(args);
    assert!(out.status.success(), "{} {args:?}: {}", engine().program(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every local image, one a line in `format` (with `--digests` when it
/// shows `{{.Digest}}`, which docker leaves empty otherwise). podman's
/// listing fails when an image vanishes under it (another test removed it):
/// list again then.
pub fn local_listing(format: &str) -> Result<String, String> {
    let digests = format.contains("{{.Digest}}").then_some("--digests");
    let args: Vec<&str> = ["images"].into_iter().chain(digests).chain(["--format", format]).collect();
    for _ in 1..5 {
        let out = engine_run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return Ok(String::from_utf8(out.stdout).unwrap());
        }
        if !["image not known", "locating item named", "layer not known"].iter().any(|r| stderr.contains(r)) {
            return Err(format!("{} {args:?}: {stderr}", engine().program()));
        }
    }
    Err(format!("{} {args:?}: images kept vanishing under the listing", engine().program()))
}

/// The ID of a local image, if there is one by that name.
pub fn image_id(reference: &str) -> Option<String> {
    let out = engine_run(&["image", "inspect", "--format", "{{.Id}}", reference]);
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// The architecture a local image's config records (`amd64`, `arm64`).
pub fn image_arch(reference: &str) -> String {
    engine_ok(&["image", "inspect", "--format", "{{.Architecture}}", reference]).trim().to_string()
}

/// Untags local images.
pub fn untag(references: &[String]) {
    let mut args = vec!["rmi"];
    args.extend(references.iter().map(String::as_str));
    engine_ok(&args);
}

/// Pulls `reference` from the loopback registry, for `platform` when given.
pub fn pull(reference: &str, platform: Option<&str>) {
    let mut args = vec!["pull"];
    if engine() == Engine::Podman {
        args.push("--tls-verify=false");
    }
    if let Some(platform) = platform {
        args.extend(["--platform", platform]);
    }
    args.push(reference);
    engine_ok(&args);
}

/// What a command prints when run in a container of `image`.
pub fn run_in(image: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", image];
    args.extend(command);
    engine_ok(&args)
}

/// What a command prints when run in a container of `image` for `platform`
/// (through qemu when it is not the host's).
pub fn run_in_platform(image: &str, platform: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", "--platform", platform, image];
    args.extend(command);
    engine_ok(&args)
}

// ---- the registry, and docker itself ------------------------------------------------

/// Runs the docker CLI, whatever the engine under test: it reads registries
/// for both engines, and is the only one with daemons elsewhere.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().unwrap()
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
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

/// The platform (`os/arch`) of a single image in the registry, from its config.
pub fn registry_platform(reference: &str) -> String {
    let out = docker_ok(&["manifest", "inspect", "--insecure", "-v", reference]);
    let value: Value = serde_json::from_str(&out).unwrap();
    let platform = &value["Descriptor"]["platform"];
    match (platform["os"].as_str(), platform["architecture"].as_str()) {
        (Some(os), Some(arch)) => format!("{os}/{arch}"),
        _ => panic!("no platform for {reference} in {value}"),
    }
}

/// The platforms (`os/arch`) and manifest digests a multi-arch index lists.
pub fn index_members(reference: &str) -> Vec<(String, String)> {
    let out = docker_ok(&["manifest", "inspect", "--insecure", reference]);
    let value: Value = serde_json::from_str(&out).unwrap();
    let Some(manifests) = value["manifests"].as_array() else { panic!("{reference} is not an index: {value}") };
    manifests
        .iter()
        .map(|m| {
            let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k} in {m}")).to_string();
            (format!("{}/{}", field(&m["platform"], "os"), field(&m["platform"], "architecture")), field(m, "digest"))
        })
        .collect()
}

// ---- a registry of a test's own -------------------------------------------------------

/// A `docker-registry` on a free loopback port with its own storage and
/// deletes enabled, for a test that stops it or deletes from it. Killed on drop.
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
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
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

// ---- tools the suites share -------------------------------------------------------

/// Runs git in `dir` with a fixed author; its stdout. Fails the test when
/// git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git is needed: install it");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `docker login`, its credentials kept in `config` (never the user's own).
pub fn docker_login(config: &Path, registry: &str, user: &str, password: &str) -> Result<(), String> {
    fs::create_dir_all(config).unwrap();
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(["login", registry, "-u", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("docker login {registry} failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}
