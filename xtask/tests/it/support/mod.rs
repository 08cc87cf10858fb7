//! What the integration tests share: the engine and builder under test
//! (`XTASK_TEST_ENGINE`: docker, the default, or podman; `XTASK_TEST_BUILDER`)
//! and the test environment's registry; a per-test sandbox (images tree,
//! log directory, local and remote name prefixes of its own, cleaned up on
//! drop; sealed for a fault case); the one environment the `xtask` binary
//! is started from, and runners for it, waiting or timed (`runner`); helpers
//! that ask the engine and the registry; a registry of a test's own that it
//! can stop, kill and restart (`registry`); and a wrapper around the
//! engine's program that records every invocation.

#![allow(dead_code)]

mod registry;
mod runner;

pub use registry::*;
pub use runner::*;

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fs;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

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
    xtask::model::Arch::host().unwrap().as_str()
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
pub fn unique() -> String {
    let seed = (std::process::id(), SystemTime::now(), std::thread::current().id());
    format!("{:08x}", RandomState::new().hash_one(seed) as u32)
}

// ---- the sandbox -------------------------------------------------------------------

/// One test's world: an images root, a target directory for build logs, an
/// empty settings file, and name prefixes nobody else uses. Dropping it
/// removes every local image name with its id in it.
///
/// A fault case's sandbox ([`Sandbox::sealed`]) also gives the binary a
/// TMPDIR of its own, for the checks that the tool leaves nothing there,
/// and no docker config but the one it sets ([`Sandbox::docker_config`]).
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub images: PathBuf,
    /// CARGO_TARGET_DIR of the binary: its logs go under `xtask-logs`.
    pub target: PathBuf,
    config: PathBuf,
    /// In every name this sandbox makes, local or remote, and written into
    /// every image, so no two tests ever build the same image ID.
    pub id: String,
    pub local_prefix: String,
    pub remote_prefix: String,
    /// TMPDIR of the binary and the engine CLI it runs, in a sealed sandbox.
    pub tmp: Option<PathBuf>,
    /// DOCKER_CONFIG of the binary in a sealed sandbox, when the test has
    /// credentials of its own; none at all when unset.
    pub docker_config: Option<PathBuf>,
}

impl Sandbox {
    /// A sandbox whose id starts with `test`.
    pub fn new(test: &str) -> Sandbox {
        let registry = registry();
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let target = dir.path().join("target");
        let config = dir.path().join("images.toml");
        fs::create_dir(&images).unwrap();
        fs::write(&config, "").unwrap();
        let id = format!("{}-{}", test.replace('_', "-"), unique());
        Sandbox {
            local_prefix: format!("xtask-test.local/{id}"),
            remote_prefix: format!("{registry}/{id}"),
            id,
            dir,
            images,
            target,
            config,
            tmp: None,
            docker_config: None,
        }
    }

    /// The sandbox of a fault case (id `faults-<case>-…`): the binary's
    /// TMPDIR is a directory of its own, and it gets no DOCKER_CONFIG but
    /// [`Sandbox::docker_config`]. With `XTASK_FAULT_KEEP` set, its files
    /// (trees, logs, registry storage) are kept for a post-mortem, and where
    /// is said.
    pub fn sealed(case: &str) -> Sandbox {
        let mut sandbox = Sandbox::new(&format!("faults-{case}"));
        if std::env::var_os("XTASK_FAULT_KEEP").is_some_and(|v| !v.is_empty()) {
            sandbox.dir.disable_cleanup(true);
            eprintln!("  sandbox {case}: {}", sandbox.path().display());
        }
        let tmp = sandbox.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        sandbox.tmp = Some(tmp);
        sandbox
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Points the remote names at another registry (`host:port`).
    pub fn use_registry(&mut self, registry: &str) {
        self.remote_prefix = format!("{registry}/{}", self.id);
    }

    /// Points the remote names at another registry (`host:port`), below
    /// `sub`: repositories no earlier remote name of this sandbox has.
    pub fn use_registry_below(&mut self, registry: &str, sub: &str) {
        self.remote_prefix = format!("{registry}/{}/{sub}", self.id);
    }

    /// Writes a file under the images root, creating its parents.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.images.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// An image at `path` built `FROM scratch` holding one file, `/id`, whose
    /// content is unique to this sandbox and path.
    pub fn scratch_image(&self, path: &str) {
        self.write(&format!("{path}/Dockerfile"), "FROM scratch\nCOPY id /id\n");
        self.write(&format!("{path}/id"), format!("{} {path}\n", self.id));
    }

    /// The binary with this sandbox's settings and nothing inherited that
    /// would change them ([`bare_xtask`]).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = bare_xtask();
        cmd.env("IMAGES_CONFIG", &self.config)
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
        if let Some(tmp) = &self.tmp {
            cmd.env("TMPDIR", tmp);
            match &self.docker_config {
                Some(dir) => cmd.env("DOCKER_CONFIG", dir),
                None if builder() == Builder::Buildx => &mut cmd,
                None => cmd.env_remove("DOCKER_CONFIG"),
            };
        }
        cmd
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    /// Starts the binary from the sandbox's directory, its output going to
    /// files there.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut cmd = self.cmd(args);
        cmd.current_dir(self.path());
        spawn(cmd, self.path())
    }

    /// Runs the binary as [`Sandbox::spawn`] does, to its end, killing it
    /// (and failing) past `limit`.
    pub fn xtask_within(&self, args: &[&str], limit: Duration) -> Run {
        self.spawn(args).wait(limit)
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

    /// Each image's tag, as one `local-image` (of 30 seconds at most)
    /// prints them, by image path.
    pub fn tags(&self, paths: &[&str]) -> BTreeMap<String, String> {
        let names: Vec<String> = paths.iter().map(|p| p.replace('/', "_")).collect();
        let mut args = vec!["local-image"];
        args.extend(names.iter().map(String::as_str));
        let run = self.xtask_within(&args, Duration::from_secs(30));
        run.success();
        let mut tags = BTreeMap::new();
        for line in run.stdout.lines() {
            let (local, tag) = line.rsplit_once(':').unwrap();
            let path = local.strip_prefix(&format!("{}/", self.local_prefix)).unwrap_or_else(|| panic!("{line}"));
            tags.insert(path.to_string(), tag.to_string());
        }
        assert_eq!(tags.len(), paths.len(), "{run}");
        tags
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

    /// The names the tool gives an image it built or pulled at `tag`, for
    /// the host's architecture: `<local>:<tag>`, `<local>:latest`,
    /// `<remote>:<tag>`.
    pub fn names_at(&self, path: &str, tag: &str) -> [String; 3] {
        [
            format!("{}:{tag}", self.local(path)),
            format!("{}:latest", self.local(path)),
            format!("{}:{tag}", self.remote(path)),
        ]
    }

    /// The log of the newest run that wrote one for an image, for the host's
    /// architecture; see [`Sandbox::log_for`].
    pub fn log(&self, name: &str) -> String {
        self.log_for(arch(), name)
    }

    /// The log of the newest run that wrote one for an image: the file
    /// `<name>.log` links to, checked to be a run's own
    /// `<name>.<yyyymmddThhmmss>-<pid>.log` beside it.
    pub fn log_for(&self, arch: &str, name: &str) -> String {
        let dir = self.target.join("xtask-logs").join(arch);
        let latest = dir.join(format!("{name}.log"));
        let target = fs::read_link(&latest).unwrap_or_else(|e| panic!("{} is no link: {e}", latest.display()));
        let file = target.to_str().unwrap();
        let run = file.strip_prefix(&format!("{name}.")).and_then(|r| r.strip_suffix(".log"));
        assert!(run.is_some_and(is_run), "{} links to {file}, not to a run's log of {name}", latest.display());
        dir.join(file).display().to_string()
    }

    /// Every local `repository:tag` under this sandbox's prefixes, sorted.
    pub fn local_names(&self) -> Vec<String> {
        let listing = local_listing("{{.Repository}}:{{.Tag}}").unwrap_or_else(|e| panic!("{e}"));
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

    /// Every local `repository:tag` with this sandbox's id in it, under
    /// whichever prefixes it had, sorted. `<none>` is no tag: an image a tag
    /// moved away from, kept by its pull digest.
    pub fn tagged_names(&self) -> Vec<String> {
        self.named("{{.Repository}}:{{.Tag}}").unwrap_or_else(|e| panic!("{e}"))
    }

    /// The local names in `format` (`repository:tag` or `repository@digest`)
    /// with this sandbox's id in them and a tag or digest, sorted.
    fn named(&self, format: &str) -> Result<Vec<String>, String> {
        let listing = local_listing(format)?;
        let mut names: Vec<String> = listing
            .lines()
            .filter(|l| l.contains(&self.id) && !l.ends_with(":<none>") && !l.ends_with("@<none>"))
            .map(String::from)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Untags every name of [`Sandbox::tagged_names`].
    pub fn untag_all(&self) {
        let names = self.tagged_names();
        if !names.is_empty() {
            untag(&names);
        }
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
            let Ok(names) = self.named(format) else { return };
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

/// Untags local images; fails, as the engine does, when there are none.
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

/// A run's name in its logs: `<yyyymmddThhmmss>-<pid>`.
pub fn is_run(run: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match run.split_once('-') {
        Some((time, pid)) => {
            time.split_once('T').is_some_and(|(date, clock)| digits(date, 8) && digits(clock, 6))
                && pid.parse::<u32>().is_ok()
        }
        None => false,
    }
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
