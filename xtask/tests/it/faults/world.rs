//! What the fault cases share: a seeded generator, a world of a case's own
//! (images tree, target and temporary directories, name prefixes, cleaned up
//! on drop), runs of the binary that cannot hang, registries of a case's own
//! that it can kill and restart, and the checks of the state the tool leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

// ---- randomness -----------------------------------------------------------------

pub use crate::rng::Rng;

/// A short hex string unique to this process and moment.
pub fn unique() -> String {
    use std::hash::BuildHasher;
    let seed = (std::process::id(), SystemTime::now(), std::thread::current().id());
    format!("{:08x}", std::collections::hash_map::RandomState::new().hash_one(seed) as u32)
}

pub fn registry() -> String {
    std::env::var("XTASK_TEST_REGISTRY").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| {
        panic!(
            "XTASK_TEST_REGISTRY is not set: run the fault suite with `tests/run`, which starts docker and a registry"
        )
    })
}

pub fn arch() -> &'static str {
    xtask::config::Arch::host().unwrap().as_str()
}

// ---- a case's world ---------------------------------------------------------------

pub struct World {
    dir: tempfile::TempDir,
    pub images: PathBuf,
    /// CARGO_TARGET_DIR of the tool: its logs go under `xtask-logs`.
    pub target: PathBuf,
    /// TMPDIR of the tool and the engine CLI it runs: must stay empty.
    pub tmp: PathBuf,
    config: PathBuf,
    /// In every name this world makes, local or remote.
    pub id: String,
    pub local_prefix: String,
    pub remote_prefix: String,
    /// DOCKER_CONFIG for the tool, when the case has credentials of its own.
    pub docker_config: Option<PathBuf>,
}

impl World {
    pub fn new(case: &str) -> World {
        let mut dir = tempfile::tempdir().unwrap();
        // For a post-mortem: keep every world's files (registry storage,
        // logs), and say where.
        if std::env::var_os("XTASK_FAULT_KEEP").is_some_and(|v| !v.is_empty()) {
            dir.disable_cleanup(true);
            eprintln!("  world {case}: {}", dir.path().display());
        }
        let images = dir.path().join("images");
        let target = dir.path().join("target");
        let tmp = dir.path().join("tmp");
        let config = dir.path().join("images.toml");
        for d in [&images, &target, &tmp] {
            fs::create_dir(d).unwrap();
        }
        fs::write(&config, "").unwrap();
        let id = format!("faults-{case}-{}", unique());
        World {
            local_prefix: format!("xtask-test.local/{id}"),
            remote_prefix: format!("{}/{id}", registry()),
            id,
            dir,
            images,
            target,
            tmp,
            config,
            docker_config: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remote names under `registry` (`host:port`), below `sub` when given.
    pub fn use_registry(&mut self, registry: &str, sub: Option<&str>) {
        self.remote_prefix = match sub {
            Some(sub) => format!("{registry}/{}/{sub}", self.id),
            None => format!("{registry}/{}", self.id),
        };
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.images.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// The tool with this world's settings and nothing inherited that would
    /// change them; run from the world's directory.
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
            .env("CARGO_TARGET_DIR", &self.target)
            .env("TMPDIR", &self.tmp)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .args(args);
        match &self.docker_config {
            Some(dir) => cmd.env("DOCKER_CONFIG", dir),
            None => cmd.env_remove("DOCKER_CONFIG"),
        };
        cmd
    }

    /// Runs the tool to its end, killing it (and failing) past `limit`.
    pub fn xtask(&self, args: &[&str], limit: Duration) -> Run {
        self.spawn(args).wait(limit)
    }

    /// Starts the tool, its output going to files of this world.
    pub fn spawn(&self, args: &[&str]) -> Running {
        spawn(self.cmd(args), self.path())
    }

    /// Each image's tag, as `local-image` prints it, by image path.
    pub fn tags(&self, paths: &[&str]) -> BTreeMap<String, String> {
        let names: Vec<String> = paths.iter().map(|p| p.replace('/', "_")).collect();
        let mut args = vec!["local-image"];
        args.extend(names.iter().map(String::as_str));
        let run = self.xtask(&args, Duration::from_secs(30));
        run.expect(0);
        let mut tags = BTreeMap::new();
        for line in run.stdout.lines() {
            let (local, tag) = line.rsplit_once(':').unwrap();
            let path = local.strip_prefix(&format!("{}/", self.local_prefix)).unwrap_or_else(|| panic!("{line}"));
            tags.insert(path.to_string(), tag.to_string());
        }
        assert_eq!(tags.len(), paths.len(), "{run}");
        tags
    }

    pub fn local(&self, path: &str) -> String {
        format!("{}/{path}", self.local_prefix)
    }

    pub fn remote(&self, path: &str) -> String {
        format!("{}/{path}_{}", self.remote_prefix, arch())
    }

    /// Every local `repository:tag` with this world's id in it. `<none>` is
    /// no tag: an image a tag moved away from, kept by its pull digest.
    pub fn local_names(&self) -> Vec<String> {
        let out = docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        let mut names: Vec<String> =
            out.lines().filter(|l| l.contains(&self.id) && !l.ends_with(":<none>")).map(String::from).collect();
        names.sort();
        names
    }

    pub fn untag_all(&self) {
        untag(&self.local_names());
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let names = self.local_names();
        if !names.is_empty() {
            let _ = Command::new("docker").arg("rmi").args(&names).output();
        }
    }
}

// ---- running the tool -------------------------------------------------------------

pub struct Running {
    child: Child,
    shown: String,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
}

pub struct Run {
    pub shown: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

pub fn spawn(mut cmd: Command, dir: &Path) -> Running {
    let k = unique();
    let (out, err) = (dir.join(format!("stdout-{k}")), dir.join(format!("stderr-{k}")));
    let shown = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    cmd.stdout(fs::File::create(&out).unwrap()).stderr(fs::File::create(&err).unwrap());
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

    fn finish(self, status: ExitStatus) -> Run {
        let took = self.started.elapsed();
        let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        let run = Run { shown: self.shown, status, stdout: read(&self.out), stderr: read(&self.err), took };
        let _ = fs::remove_file(&self.out);
        let _ = fs::remove_file(&self.err);
        run
    }
}

impl Run {
    pub fn expect(&self, code: i32) -> &Run {
        assert!(!self.stderr.contains("panicked"), "the tool panicked: {self}");
        assert_eq!(self.status.code(), Some(code), "{self}");
        self
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

// ---- docker -----------------------------------------------------------------------

pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().unwrap()
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn untag(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let mut args = vec!["rmi"];
    args.extend(names.iter().map(String::as_str));
    docker_ok(&args);
}

/// Image ID and uncompressed layer digests of each local reference that exists.
pub fn inspect(references: &[String]) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for chunk in references.chunks(50) {
        let mut args = vec!["image", "inspect"];
        args.extend(chunk.iter().map(String::as_str));
        // Missing references make it fail, but it still prints the others.
        let o = docker(&args);
        let value: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Array(vec![]));
        for image in value.as_array().unwrap() {
            let id = image["Id"].as_str().unwrap().to_string();
            let layers: Vec<String> = image["RootFS"]["Layers"]
                .as_array()
                .map(|l| l.iter().map(|d| d.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            for tag in image["RepoTags"].as_array().unwrap() {
                let tag = tag.as_str().unwrap();
                if chunk.iter().any(|r| r == tag) {
                    out.insert(tag.to_string(), (id.clone(), layers.clone()));
                }
            }
        }
    }
    out
}

/// A file of an image's filesystem, read without running anything in it
/// (so it works for images `FROM scratch`).
pub fn file_in(image: &str, path: &str) -> Option<Vec<u8>> {
    let created = docker(&["create", image, "/nothing-runs"]);
    assert!(created.status.success(), "docker create {image}: {}", String::from_utf8_lossy(&created.stderr));
    let container = String::from_utf8(created.stdout).unwrap().trim().to_string();
    let copied = docker(&["cp", &format!("{container}:{path}"), "-"]);
    docker_ok(&["rm", &container]);
    copied.status.success().then(|| tar_first_file(&copied.stdout))
}

/// The content of the first member of a tar stream.
fn tar_first_file(tar: &[u8]) -> Vec<u8> {
    let size = std::str::from_utf8(&tar[124..136]).unwrap().trim_matches(|c: char| c == '\0' || c == ' ');
    let size = usize::from_str_radix(size, 8).unwrap();
    tar[512..512 + size].to_vec()
}

/// The engine CLI processes still running whose command line mentions `id`.
pub fn engine_processes(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else { return found };
    for entry in dir.flatten() {
        let pid = entry.file_name();
        if !pid.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
        let Some(program) = args.first() else { continue };
        let base = program.rsplit('/').next().unwrap_or(program);
        let zombie = fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true);
        if (base == "docker" || base == "xtask") && !zombie && args.iter().any(|a| a.contains(id)) {
            found.push(format!("{} {}", pid.to_string_lossy(), args.join(" ")));
        }
    }
    found
}

/// Waits up to `limit` for the engine processes mentioning `id` to end;
/// returns those left.
pub fn wait_engine_processes_gone(id: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = engine_processes(id);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the registry, asked over HTTP ------------------------------------------------

/// One HTTP/1.0 request to a plain-HTTP registry: (status, body).
pub fn http(addr: &str, method: &str, path: &str, auth: Option<&str>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n");
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: Basic {}\r\n", base64(auth.as_bytes())));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(response.len());
    let status_line = String::from_utf8_lossy(&response[..end]);
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, response.get(end + 4..).unwrap_or_default().to_vec()))
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the registry at `addr` holds under `repository:tag`.
#[derive(Debug, PartialEq, Eq)]
pub enum Remote {
    Absent,
    /// The manifest and every blob it names are there; the image's
    /// uncompressed layer digests, from its config.
    Complete(Vec<String>),
    /// The manifest is there but a blob it names is not.
    Broken(String),
}

pub fn remote_state(addr: &str, repository: &str, tag: &str, auth: Option<&str>) -> Remote {
    let (status, body) = http(addr, "GET", &format!("/v2/{repository}/manifests/{tag}"), auth)
        .unwrap_or_else(|e| panic!("registry {addr} does not answer: {e}"));
    if status == 404 {
        return Remote::Absent;
    }
    if status != 200 {
        return Remote::Broken(format!("its manifest answers {status}: {}", String::from_utf8_lossy(&body).trim()));
    }
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut blobs = vec![config.clone()];
    blobs.extend(manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for blob in &blobs {
        let (status, _) = http(addr, "HEAD", &format!("/v2/{repository}/blobs/{blob}"), auth).unwrap();
        if status != 200 {
            return Remote::Broken(format!("blob {blob} answers {status}"));
        }
    }
    let (status, body) = http(addr, "GET", &format!("/v2/{repository}/blobs/{config}"), auth).unwrap();
    assert_eq!(status, 200);
    let config: Value = serde_json::from_slice(&body).unwrap();
    let layers = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|l| l.iter().map(|d| d.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    Remote::Complete(layers)
}

// ---- a registry of a case's own ---------------------------------------------------

/// `docker-registry` on a loopback port with storage of its own, which a
/// case can kill and start again on the same port and storage.
pub struct Registry {
    pub addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// `htpasswd`: the path of a bcrypt htpasswd file, for basic auth.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        fs::create_dir_all(dir.join("data")).unwrap();
        let auth = htpasswd
            .map(|p| format!("auth:\n  htpasswd:\n    realm: xtask-faults\n    path: {}\n", p.display()))
            .unwrap_or_default();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            fs::write(
                dir.join("registry.yml"),
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth}http:\n  addr: {addr}\n",
                    dir.join("data").display()
                ),
            )
            .unwrap();
            let mut registry = Registry { addr, dir: dir.to_path_buf(), child: None };
            if registry.run() {
                return registry;
            }
        }
        panic!("docker-registry did not start: {}", fs::read_to_string(dir.join("registry.log")).unwrap_or_default());
    }

    fn run(&mut self) -> bool {
        let log = fs::File::options().create(true).append(true).open(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run docker-registry (tests/env/up.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if http(&self.addr, "GET", "/v2/", None).is_ok_and(|(s, _)| s == 200 || s == 401) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// Files of its storage that are empty: what a write cut short by a
    /// crash leaves (the registry writes files in place, and takes an empty
    /// one for a complete one afterwards).
    pub fn empty_files(&self) -> Vec<String> {
        walkdir::WalkDir::new(self.dir.join("data"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && e.metadata().is_ok_and(|m| m.len() == 0))
            .map(|e| e.path().display().to_string())
            .collect()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.run() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not start again on {}", self.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- what the tool leaves behind --------------------------------------------------

/// Every path under `root` (symlinks not followed), as raw bytes.
pub fn tree(root: &Path) -> BTreeSet<Vec<u8>> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec())
        .collect()
}

/// Temporary files the tool may have left: anything in the world's TMPDIR,
/// anything but `*.log` files in its log directory, and `xtask*` entries of
/// /tmp that were not in `tmp_before`.
pub fn leftovers(world: &World, tmp_before: &BTreeSet<OsString>) -> Vec<String> {
    let mut found: Vec<String> =
        fs::read_dir(&world.tmp).unwrap().flatten().map(|e| format!("in TMPDIR: {}", e.path().display())).collect();
    let logs = world.target.join("xtask-logs");
    if logs.exists() {
        for e in walkdir::WalkDir::new(&logs).into_iter().flatten() {
            if !e.file_type().is_dir() && e.path().extension().is_none_or(|x| x != "log") {
                found.push(format!("in the log directory: {}", e.path().display()));
            }
        }
    }
    for name in new_tmp_entries(tmp_before) {
        found.push(format!("in /tmp: {}", name.to_string_lossy()));
    }
    found
}

/// `xtask*` entries of /tmp, less those of the test environment and the
/// benchmarks, which may run meanwhile.
pub fn tmp_entries() -> BTreeSet<OsString> {
    let others: [&[u8]; 2] = [b"xtask-test", b"xtask-bench"];
    fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.as_bytes().starts_with(b"xtask") && !others.iter().any(|o| n.as_bytes().starts_with(o)))
        .collect()
}

fn new_tmp_entries(before: &BTreeSet<OsString>) -> Vec<OsString> {
    tmp_entries().difference(before).cloned().collect()
}
