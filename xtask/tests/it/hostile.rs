//! The registry client against registries that lie, stall or try to take
//! its credentials: servers of the test's own on loopback (`hostile::server`),
//! one of them a fake registry for `push-manifest` (`hostile::fake`), and a
//! second loopback address for "another host". Each test is one attack:
//! credentials must go only to the registry itself, and everything read
//! from it is bounded and checked.

mod fake;
mod server;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;

use crate::support::{base64, git, spawn, Run, Sandbox};
use fake::{Fake, Setup};
use server::{digest, pattern_digest, Answer, Body, Request, Server};

/// Longer than any of these runs takes once bounded.
const LIMIT: Duration = Duration::from_secs(90);
const LOGIN: &str = "pusher:s3cret";

/// A docker config directory whose `config.json` holds `config`.
fn docker_config(s: &Sandbox, name: &str, config: serde_json::Value) -> PathBuf {
    let dir = s.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    dir
}

/// A docker config with `LOGIN` for `registry`.
fn logged_in(s: &Sandbox, registry: &str) -> PathBuf {
    docker_config(s, "docker", json!({ "auths": { registry: { "auth": base64(LOGIN.as_bytes()) } } }))
}

/// The binary with docker's credentials from `config`, and `extra` variables.
fn xtask(s: &Sandbox, config: &Path, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut cmd = s.cmd(args);
    cmd.env("DOCKER_CONFIG", config).env("IMAGES_ENGINE", "docker").current_dir(s.path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn run(s: &Sandbox, config: &Path, args: &[&str], extra: &[(&str, &str)]) -> Run {
    spawn(xtask(s, config, args, extra), s.path()).wait(LIMIT)
}

/// A sandbox holding image `a`, its remote names on `registry`.
fn sandbox(test: &str, registry: &str) -> Sandbox {
    let mut s = Sandbox::new(&format!("hostile-{test}"));
    s.use_registry(registry);
    s.scratch_image("a");
    s
}

/// As [`sandbox`], in a git repository of one commit, for `gc`.
fn committed(test: &str, registry: &str) -> Sandbox {
    let s = sandbox(test, registry);
    fs::write(s.path().join(".gitignore"), "/target/\n/docker/\n").unwrap();
    git(s.path(), &["init", "-q"]);
    git(s.path(), &["add", "-A"]);
    git(s.path(), &["commit", "-q", "-m", "one"]);
    s
}

fn with_authorization(requests: &[Request]) -> Vec<String> {
    requests.iter().filter_map(|r| r.header("authorization").map(|a| format!("{} ({a})", r.line()))).collect()
}

// ---- credentials go only where they belong ------------------------------------------------

/// The registry redirects a manifest to another host, which answers with a
/// bearer challenge whose realm is on itself, over plain HTTP: the tool
/// sends that host nothing of the registry's login, and gives the registry
/// no token of its.
#[test]
fn a_redirect_to_another_host_that_asks_for_credentials_gets_none() {
    let elsewhere = Server::start("127.0.0.2", |own, r| {
        if r.path() == "/token" {
            return Answer::json(200, &json!({ "token": "from-elsewhere" }));
        }
        Answer::new(401).header("WWW-Authenticate", format!("Bearer realm=\"http://{own}/token\",service=\"x\""))
    });
    let other = elsewhere.addr.clone();
    let registry = Server::start("127.0.0.1", move |_, r| {
        Answer::new(302).header("Location", format!("http://{other}{}", r.target))
    });
    let s = sandbox("redirect-challenge", &registry.addr);
    let config = logged_in(&s, &registry.addr);
    let out = run(&s, &config, &["push-manifest", "a"], &[]);

    assert_eq!(with_authorization(&elsewhere.requests()), Vec::<String>::new(), "{out}");
    assert_eq!(with_authorization(&registry.requests()), Vec::<String>::new(), "{out}");
    out.status(1);
    out.one_line_error(&[&format!("registry {}", registry.addr), &elsewhere.addr, "redirected"]);
}

/// Blobs are copied through the tool (no mount), downloaded from storage
/// on another host behind a redirect and uploaded to another host named
/// by an absolute `Location`: that host gets no `Authorization`, and the
/// index is published.
#[test]
fn an_upload_location_and_blob_storage_on_another_host_get_no_credentials() {
    let started = Fake::start(Setup {
        login: Some(LOGIN.into()),
        layer: 1000,
        refuse_mounts: true,
        upload_elsewhere: true,
        blobs_elsewhere: true,
        ..Setup::default()
    });
    let s = sandbox("upload-elsewhere", &started.registry.addr);
    let config = logged_in(&s, &started.registry.addr);
    let out = run(&s, &config, &["push-manifest", "a"], &[]);

    let other = started.other.requests();
    assert_eq!(with_authorization(&other), Vec::<String>::new(), "{out}");
    let uploads = other.iter().filter(|r| r.method == "PUT").count();
    assert_eq!(uploads, 4, "a config and a layer per architecture: {out}");
    out.success();
    let index = format!("/v2/{}/a/manifests/", s.id);
    assert!(
        started.registry.requests().iter().any(|r| r.method == "PUT" && r.path().starts_with(&index)),
        "no index published: {out}"
    );
}

/// A credential helper is run once for the registry, however many
/// requests the run makes.
#[test]
fn the_login_is_read_once_per_registry() {
    let started = Fake::start(Setup { login: Some(LOGIN.into()), layer: 1000, ..Setup::default() });
    let s = sandbox("helper-once", &started.registry.addr);
    let bin = s.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let count = s.path().join("helper-runs");
    let (user, secret) = LOGIN.split_once(':').unwrap();
    let helper = bin.join("docker-credential-counting");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\nread -r server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n",
            count.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let config = docker_config(&s, "docker", json!({ "credsStore": "counting" }));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run(&s, &config, &["push-manifest", "a"], &[("PATH", &path)]);
    out.success();

    let requests = started.registry.requests().len();
    assert!(requests > 10, "only {requests} requests: {out}");
    assert_eq!(fs::read_to_string(&count).unwrap_or_default(), "get\n", "{requests} requests: {out}");
}

/// A `config.json` that cannot be read is an error naming it, not a run
/// without credentials that ends in "run docker login".
#[test]
fn an_unreadable_credentials_file_is_an_error_naming_it() {
    let started = Fake::start(Setup { login: Some(LOGIN.into()), layer: 1000, ..Setup::default() });
    let s = sandbox("unreadable-config", &started.registry.addr);
    let config = s.path().join("docker");
    // A directory: unreadable even by root.
    fs::create_dir_all(config.join("config.json")).unwrap();
    let out = run(&s, &config, &["push-manifest", "a"], &[]);
    out.status(1);
    let file = config.join("config.json");
    let line = out.one_line_error(&[&file.display().to_string()]);
    assert!(!line.contains("docker login"), "{out}");
}

// ---- what is read is bounded ---------------------------------------------------------------

/// `tags/list` pages that never end, each with a thousand new tags: `gc`
/// stops at the limit of entries, saying so.
#[test]
fn endless_tag_pages_end_at_the_limit_of_entries() {
    // The sandbox's id names the repository; it is known once the server listens.
    let id = Arc::new(OnceLock::<String>::new());
    let seen = id.clone();
    let registry = Server::start("127.0.0.1", move |_, r| {
        let id = seen.get().unwrap();
        if r.path() == "/v2/_catalog" {
            return Answer::json(200, &json!({ "repositories": [format!("{id}/a_x86_64")] }));
        }
        let page: u64 = r.query("last").and_then(|l| l.strip_prefix('p')).and_then(|n| n.parse().ok()).unwrap_or(0);
        let tags: Vec<String> = (0..1000).map(|i| format!("t{page}-{i}")).collect();
        Answer::json(200, &json!({ "name": format!("{id}/a_x86_64"), "tags": tags }))
            .header("Link", format!("</v2/{id}/a_x86_64/tags/list?n=1000&last=p{}>; rel=\"next\"", page + 1))
    });
    let s = committed("endless-tags", &registry.addr);
    id.set(s.id.clone()).unwrap();
    let config = docker_config(&s, "docker", json!({}));
    let out = run(&s, &config, &["gc"], &[]);
    out.status(1);
    out.one_line_error(&[&format!("registry {}", registry.addr), "1000000 tags"]);
}

/// `_catalog` pages that never end: `gc` stops at the limit of pages.
#[test]
fn endless_catalog_pages_end_at_the_limit_of_pages() {
    let registry = Server::start("127.0.0.1", |_, r| {
        let page: u64 = r.query("last").and_then(|l| l.strip_prefix('r')).and_then(|n| n.parse().ok()).unwrap_or(0);
        Answer::json(200, &json!({ "repositories": [format!("r{page}")] }))
            .header("Link", format!("</v2/_catalog?n=1000&last=r{}>; rel=\"next\"", page + 1))
    });
    let s = committed("endless-catalog", &registry.addr);
    let config = docker_config(&s, "docker", json!({}));
    let out = run(&s, &config, &["gc"], &[]);
    out.status(1);
    out.one_line_error(&[&format!("registry {}", registry.addr), "10000 pages"]);
}

/// A registry that sends its answer a byte at a time, never stalling long
/// enough for a read to time out: the request's deadline ends it, and the
/// call is tried once more, not for the whole retry budget. The deadline
/// is a second here (`XTASK_TEST_REGISTRY_DEADLINE_MS`).
#[test]
fn a_trickling_registry_is_cut_at_the_deadline() {
    let registry = Server::start("127.0.0.1", |_, _| {
        let mut body = b"{\"repositories\":[]}".to_vec();
        body.resize(200, b' ');
        Answer::new(200)
            .header("Content-Type", "application/json")
            .body(Body::Trickle(body, Duration::from_millis(200)))
    });
    let s = committed("trickle", &registry.addr);
    let config = docker_config(&s, "docker", json!({}));
    let cmd = xtask(&s, &config, &["gc"], &[("XTASK_TEST_REGISTRY_DEADLINE_MS", "1000")]);
    let out = spawn(cmd, s.path()).wait(Duration::from_secs(20));
    out.status(1);
    out.one_line_error(&[&format!("registry {}", registry.addr), "within 1s"]);
    assert!(out.took < Duration::from_secs(10), "took {:?}: {out}", out.took);
    assert_eq!(registry.requests().len(), 2, "{out}");
}

/// A manifest over the limit is refused, saying so, before it is used.
#[test]
fn a_manifest_over_the_limit_is_refused() {
    let started = Fake::start(Setup { layer: 1000, manifest_padding: 5 << 20, ..Setup::default() });
    let s = sandbox("huge-manifest", &started.registry.addr);
    let config = docker_config(&s, "docker", json!({}));
    let out = run(&s, &config, &["push-manifest", "a"], &[]);
    out.status(1);
    out.one_line_error(&[&format!("registry {}", started.registry.addr), "4 MiB"]);
    assert!(!started.registry.requests().iter().any(|r| r.method == "PUT"), "{out}");
}

/// A 70 MiB layer copied through the tool (the mount refused) arrives
/// whole, byte for byte, and is never held in memory whole.
#[test]
fn a_blob_over_64_mib_is_streamed_whole() {
    const SIZE: u64 = 70 << 20;
    let started = Fake::start(Setup { layer: SIZE, refuse_mounts: true, ..Setup::default() });
    let s = sandbox("big-blob", &started.registry.addr);
    let config = docker_config(&s, "docker", json!({}));
    let mut child = xtask(&s, &config, &["push-manifest", "a"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The most memory it ever held, sampled until it ends.
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let started_at = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started_at.elapsed() < LIMIT, "push-manifest still runs after {LIMIT:?}");
        let text = fs::read_to_string(&status).unwrap_or_default();
        let hwm = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok());
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let uploads: Vec<(u64, String)> = started
        .registry
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path().contains("/blobs/uploads/"))
        .map(|r| (r.body_len, r.body_digest.clone()))
        .filter(|(len, _)| *len > 1 << 20)
        .collect();
    assert_eq!(uploads, [(SIZE, pattern_digest(SIZE))], "{stderr}");
    assert_eq!(started.fake.layer_digest(), pattern_digest(SIZE));
    assert!(out.status.success(), "{stderr}");
    eprintln!("push-manifest held {peak_kib} KiB at most");
    assert!(peak_kib < 48 << 10, "it held {peak_kib} KiB at most: the blob was held in memory");
}

/// A config blob that is not what its digest names is refused: the
/// platform read from it would be a lie.
#[test]
fn a_config_unlike_its_digest_is_refused() {
    let started = Fake::start(Setup { layer: 1000, lie_about_configs: true, ..Setup::default() });
    let s = sandbox("config-digest", &started.registry.addr);
    let config = docker_config(&s, "docker", json!({}));
    let out = run(&s, &config, &["push-manifest", "a"], &[]);
    out.status(1);
    out.one_line_error(&[&format!("registry {}", started.registry.addr), "digest"]);
}

/// A manifest whose `Docker-Content-Digest` is another's is refused.
#[test]
fn a_manifest_unlike_its_digest_is_refused() {
    let started = Fake::start(Setup { layer: 1000, lie_about_manifests: true, ..Setup::default() });
    let s = sandbox("manifest-digest", &started.registry.addr);
    let config = docker_config(&s, "docker", json!({}));
    let out = run(&s, &config, &["push-manifest", "a"], &[]);
    out.status(1);
    out.one_line_error(&[&format!("registry {}", started.registry.addr), "digest"]);
    assert!(!started.registry.requests().iter().any(|r| r.method == "PUT"), "{out}");
}

/// `:latest` is a copy of the tag's manifest: one unlike its digest (the
/// one the registry tells, or the one it was asked for) is never copied.
#[test]
fn a_manifest_unlike_its_digest_is_never_copied_under_latest() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
    let registry = Server::start("127.0.0.1", move |_, r| match (r.method.as_str(), r.path()) {
        ("GET", path) if path.contains("/manifests/") => Answer::new(200)
            .header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
            .header("Docker-Content-Digest", digest(b"another manifest"))
            .bytes(manifest.to_vec()),
        ("PUT", _) => Answer::new(201),
        _ => Answer::new(404),
    });
    let client = xtask::registry::Registry::new(
        xtask::registry::Credentials::of(xtask::config::EngineKind::Docker),
        xtask::registry::Transport::system(&[]),
    );
    let addr = &registry.addr;
    let by_tag = client.retag(&format!("{addr}/x/a:0123456789abcdef"), &format!("{addr}/x/a:latest"));
    let e = by_tag.expect_err("retagged a manifest unlike its digest");
    assert!(format!("{e:#}").contains("digest"), "{e:#}");
    let asked = digest(b"another manifest");
    let by_digest = client.retag(&format!("{addr}/x/a@{asked}"), &format!("{addr}/x/a:latest"));
    let e = by_digest.expect_err("retagged a manifest unlike the digest asked for");
    assert!(format!("{e:#}").contains("digest"), "{e:#}");
    let puts: Vec<String> = registry.requests().iter().filter(|r| r.method == "PUT").map(Request::line).collect();
    assert_eq!(puts, Vec::<String>::new());
}
