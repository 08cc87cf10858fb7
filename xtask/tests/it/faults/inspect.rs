//! What the fault cases look at once the tool has run: the images the
//! engine holds and the files in them, the engine processes still running,
//! what a registry holds (asked over HTTP), and the temporary files the tool
//! may have left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{docker, docker_ok, http, Sandbox};

// ---- the engine -------------------------------------------------------------------

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

// ---- what the tool leaves behind --------------------------------------------------

/// Every path under `root` (symlinks not followed), as raw bytes.
pub fn tree(root: &Path) -> BTreeSet<Vec<u8>> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec())
        .collect()
}

/// Temporary files the tool may have left: anything in the sandbox's TMPDIR,
/// anything but `*.log` files in its log directory, and `xtask*` entries of
/// /tmp that were not in `tmp_before`.
pub fn leftovers(sandbox: &Sandbox, tmp_before: &BTreeSet<OsString>) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(sandbox.tmp.as_ref().expect("a sealed sandbox"))
        .unwrap()
        .flatten()
        .map(|e| format!("in TMPDIR: {}", e.path().display()))
        .collect();
    let logs = sandbox.target.join("xtask-logs");
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
