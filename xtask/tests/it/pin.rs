//! `pin` against the test registry: base images of the tests' own, single-
//! and multi-platform, pushed under tags of their own over the
//! distribution API; Dockerfiles compared byte for byte with what they
//! must become; a tag moved under a pinned line; a tag that does not exist;
//! the requests `pin --check` makes on a tree of 100 images, counted by a
//! proxy in front of the registry; and a registry that wants a token (the
//! token service of `registry`). No engine.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest;

use crate::faults::proxy::Proxy;
use crate::support::{self, bare_xtask, run, Run};

// ---- base images in the registry -------------------------------------------------------

/// A request to the loopback registry: status, headers (names lower case) and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    support::exchange(addr, method, path, headers, body, Duration::from_secs(20)).unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", xtask::model::hex(&sha2::Sha256::digest(bytes)))
}

/// A repository of the loopback registry (`host:port/name`) that the test
/// stores images in, with a bearer token when the registry wants one.
struct Repository {
    addr: String,
    name: String,
    token: Option<String>,
}

impl Repository {
    fn new(repository: &str) -> Repository {
        let (addr, name) = repository.split_once('/').unwrap();
        Repository { addr: addr.to_string(), name: name.to_string(), token: None }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all = headers.to_vec();
        all.extend(bearer.as_deref().map(|b| ("Authorization", b)));
        http(&self.addr, method, path, &all, body)
    }

    /// Uploads a blob; its digest.
    fn blob(&self, bytes: &[u8]) -> String {
        let (status, headers, body) = self.send("POST", &format!("/v2/{}/blobs/uploads/", self.name), &[], b"");
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        let location = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone()).unwrap();
        let location = location.split_once(self.addr.as_str()).map_or(location.as_str(), |(_, path)| path).to_string();
        let d = digest(bytes);
        let separator = if location.contains('?') { '&' } else { '?' };
        let (status, _, body) = self.send("PUT", &format!("{location}{separator}digest={d}"), &[], bytes);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        d
    }

    /// Stores a manifest under `reference` (a tag or a digest); its digest and size.
    fn manifest(&self, reference: &str, manifest: &Value) -> (String, usize) {
        let bytes = serde_json::to_vec_pretty(manifest).unwrap();
        let media = manifest["mediaType"].as_str().unwrap();
        let path = format!("/v2/{}/manifests/{reference}", self.name);
        let (status, _, body) = self.send("PUT", &path, &[("Content-Type", media)], &bytes);
        assert_eq!(status, 201, "{}:{reference}: {}", self.name, String::from_utf8_lossy(&body));
        (digest(&bytes), bytes.len())
    }

    /// An image for linux/`arch` holding `content`, stored under
    /// `reference`; its manifest's digest and size.
    fn image(&self, reference: &str, arch: &str, content: &str) -> (String, usize) {
        let layer = format!("layer of {} for {arch}: {content}", self.name).into_bytes();
        let layer_digest = self.blob(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        }))
        .unwrap();
        let config_digest = self.blob(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
        });
        self.manifest(reference, &manifest)
    }

    /// An index over an image for each of `arches`, stored under `tag`; its digest.
    fn index(&self, tag: &str, arches: &[&str], content: &str) -> String {
        let manifests: Vec<Value> = arches
            .iter()
            .map(|arch| {
                let (d, size) = self.image(&format!("{tag}-{arch}"), arch, content);
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": d,
                    "size": size,
                    "platform": { "architecture": arch, "os": "linux" },
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.manifest(tag, &index).0
    }
}

/// An image for linux/`arch` in `repository`, under `reference`.
fn push_image(repository: &str, reference: &str, arch: &str, content: &str) -> (String, usize) {
    Repository::new(repository).image(reference, arch, content)
}

/// An index in `repository` over an image for each of `arches`, under `tag`.
fn push_index(repository: &str, tag: &str, arches: &[&str], content: &str) -> String {
    Repository::new(repository).index(tag, arches, content)
}

// ---- trees of images -------------------------------------------------------------------

/// An images root in a temporary directory, with base repositories of its
/// own in the test registry (`<registry>/pin-<unique>/<name>`).
struct Tree {
    dir: tempfile::TempDir,
    /// `<registry>/pin-<unique>`: where its bases are.
    bases: String,
}

const LOCAL: &str = "xtask-test.local/pin";

impl Tree {
    fn new() -> Tree {
        Tree::at(&support::registry())
    }

    /// A tree whose bases are named at `registry` (`host:port`).
    fn at(registry: &str) -> Tree {
        let tree = Tree { dir: tempfile::tempdir().unwrap(), bases: format!("{registry}/pin-{}", support::unique()) };
        fs::create_dir(tree.root()).unwrap();
        tree
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).unwrap()
    }

    /// `<registry>/pin-<unique>/<name>`
    fn base(&self, name: &str) -> String {
        format!("{}/{name}", self.bases)
    }

    /// The binary, run from the tree's directory (so paths print as
    /// `images/…`), with settings of its own.
    fn pin(&self, args: &[&str]) -> Run {
        self.pin_with(args, &[])
    }

    /// [`Tree::pin`], with more environment variables.
    fn pin_with(&self, args: &[&str], envs: &[(&str, &std::path::Path)]) -> Run {
        let mut cmd: Command = bare_xtask();
        cmd.envs(envs.iter().copied());
        let config = self.dir.path().join("images.toml");
        fs::write(&config, "").unwrap();
        cmd.current_dir(self.dir.path())
            .env("IMAGES_CONFIG", &config)
            .env("IMAGES_DIR", "images")
            .env("LOCAL_IMAGE_PREFIX", LOCAL)
            .env("REMOTE_IMAGE_PREFIX", format!("{}/cache", self.bases))
            .arg("pin")
            .args(args);
        run(&mut cmd)
    }

    /// Every file under the root, with its bytes.
    fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(self.root())
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().strip_prefix(self.root()).unwrap().display().to_string(), fs::read(e.path()).unwrap()))
            .collect();
        files.sort();
        files
    }
}

// ---- the tests -------------------------------------------------------------------------

/// Every form of a base, in a file with CRLF line endings: each external
/// one pinned where it is written, and every other byte as it was.
#[test]
fn pins_every_form_byte_for_byte() {
    let tree = Tree::new();
    let (one, multi, tools) = (tree.base("one"), tree.base("multi"), tree.base("tools"));
    let (one_digest, _) = push_image(&one, "1", "amd64", "one");
    let multi_digest = push_index(&multi, "2", &["amd64", "arm64"], "multi");
    let (tools_digest, _) = push_image(&tools, "3", "amd64", "tools");
    let old = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let dockerfile = |one_pin: &str, multi_pin: &str, tools_pin: &str| {
        format!(
            "# syntax=docker/dockerfile:1\r\n\
             ARG UNUSED=1 BASE={multi}:2{multi_pin}\r\n\
             from --platform=linux/amd64 {one}:1{one_pin} AS build\r\n\
             RUN echo a \\\r\n  # FROM {one}:1 in a comment\r\n  b\r\n\
             FROM ${{BASE}} as run\r\n\
             COPY --link --from={tools}:3{tools_pin} /t /t\r\n\
             COPY --from=build /a /b\r\n\
             FROM {one}:1@{old}\r\n\
             FROM {LOCAL}/b:latest\r\n\
             FROM scratch\r\n"
        )
    };
    tree.write("a/Dockerfile", &dockerfile("", "", ""));
    tree.write("b/Dockerfile", "FROM scratch\n");
    tree.write("c/Dockerfile.aarch64", &format!("FROM {one}:1\n"));

    let pinned = tree.pin(&[]);
    pinned.success();
    let at = |d: &str| format!("@{d}");
    assert_eq!(tree.read("a/Dockerfile"), dockerfile(&at(&one_digest), &at(&multi_digest), &at(&tools_digest)));
    assert_eq!(tree.read("b/Dockerfile"), "FROM scratch\n");
    assert_eq!(tree.read("c/Dockerfile.aarch64"), format!("FROM {one}:1@{one_digest}\n"));
    assert_eq!(
        pinned.stdout,
        format!(
            "images/a/Dockerfile:2: {multi}:2 → {multi}:2@{multi_digest}\n\
             images/a/Dockerfile:3: {one}:1 → {one}:1@{one_digest}\n\
             images/a/Dockerfile:8: {tools}:3 → {tools}:3@{tools_digest}\n\
             images/c/Dockerfile.aarch64:1: {one}:1 → {one}:1@{one_digest}\n"
        )
    );
    assert_eq!(
        pinned.stderr_lines(),
        [
            format!(
                "warning: images/a/Dockerfile:8: {tools}:3 has no image for linux/arm64 (it has linux/amd64), which \
                 this Dockerfile is built for"
            ),
            format!(
                "warning: images/c/Dockerfile.aarch64:1: {one}:1 has no image for linux/arm64 (it has linux/amd64), \
                 which this Dockerfile is built for"
            ),
            "5 bases in 3 Dockerfiles: 4 pinned, 0 moved, 1 unchanged".to_string(),
        ]
    );

    // Again: everything is pinned, and nothing changes.
    let before = tree.files();
    let again = tree.pin(&[]);
    assert_eq!(again.success().stdout, "");
    assert_eq!(again.stderr, "5 bases in 3 Dockerfiles: 0 pinned, 0 moved, 5 unchanged\n");
    assert_eq!(tree.files(), before);
}

/// A tag pushed again under a pinned line: `--check` says it drifted and
/// fails, changing nothing, and so does a plain `pin`; `--update` moves it.
#[test]
fn check_sees_a_moved_tag_and_update_moves_the_pin() {
    let tree = Tree::new();
    let one = tree.base("one");
    let first = push_index(&one, "1", &["amd64", "arm64"], "first");
    tree.write("a/Dockerfile", &format!("FROM {one}:1\n"));
    tree.write("d/Dockerfile", &format!("ARG BASE={one}:1\nFROM $BASE\n"));

    let unpinned = tree.pin(&["--check"]);
    assert_eq!(
        unpinned.status(1).stdout,
        format!("images/a/Dockerfile:1: unpinned FROM {one}:1\nimages/d/Dockerfile:1: unpinned ARG BASE {one}:1\n")
    );
    assert_eq!(
        unpinned.stderr,
        "checked 2 bases in 2 Dockerfiles: 2 unpinned, 0 drifted: run `cargo xtask pin --update`\n"
    );
    tree.pin(&[]).success();
    let pinned = tree.files();
    let checked = tree.pin(&["--check"]);
    assert_eq!(checked.success().stdout, "");
    assert_eq!(checked.stderr, "checked 2 bases in 2 Dockerfiles: every one pinned where its tag points\n");

    let second = push_index(&one, "1", &["amd64", "arm64"], "second");
    assert_ne!(first, second);
    let drifted = tree.pin(&["--check"]);
    assert_eq!(
        drifted.status(1).stdout,
        format!(
            "images/a/Dockerfile:1: drifted FROM {one}:1@{first}: {one}:1 now points at {second}\n\
             images/d/Dockerfile:1: drifted ARG BASE {one}:1@{first}: {one}:1 now points at {second}\n"
        )
    );
    let document = tree.pin(&["--check", "--json"]);
    let row = |path: &str| {
        json!({
            "path": path, "line": 1, "reference": format!("{one}:1@{first}"), "state": "drifted",
            "digest": first, "current": second,
        })
    };
    assert_eq!(
        serde_json::from_str::<Value>(&document.status(1).stdout).unwrap(),
        json!({ "schema": 1, "bases": [row("images/a/Dockerfile"), row("images/d/Dockerfile")] })
    );
    let plain = tree.pin(&[]);
    assert_eq!(plain.success().stdout, "");
    assert_eq!(tree.files(), pinned, "--check or a plain pin changed a file");

    let updated = tree.pin(&["--update"]);
    assert_eq!(
        updated.success().stdout,
        format!(
            "images/a/Dockerfile:1: {one}:1@{first} → {one}:1@{second}\n\
             images/d/Dockerfile:1: {one}:1@{first} → {one}:1@{second}\n"
        )
    );
    assert_eq!(updated.stderr, "2 bases in 2 Dockerfiles: 0 pinned, 2 moved, 0 unchanged\n");
    assert_eq!(tree.read("a/Dockerfile"), format!("FROM {one}:1@{second}\n"));
    assert_eq!(tree.read("d/Dockerfile"), format!("ARG BASE={one}:1@{second}\nFROM $BASE\n"));
    tree.pin(&["--check"]).success();
}

/// A tag the registry lacks, or a registry nothing answers at: an error
/// naming the line and the image, and no file written, not even the ones
/// whose bases resolve.
#[test]
fn a_base_that_does_not_resolve_writes_nothing() {
    let tree = Tree::new();
    let one = tree.base("one");
    push_image(&one, "1", "amd64", "one");
    tree.write("a/Dockerfile", &format!("FROM {one}:1\n"));
    tree.write("b/Dockerfile", &format!("FROM scratch\nCOPY --from={one}:nope /x /x\n"));
    let before = tree.files();
    let missing = tree.pin(&[]);
    let line = missing.error_line();
    assert_eq!(
        line,
        format!(
            "error: images/b/Dockerfile:2: COPY --from {one}:nope: registry {} has no {one}:nope: name a tag it \
             has; nothing was written",
            support::registry()
        )
    );
    assert_eq!(tree.files(), before);

    // Nothing listens on port 1.
    tree.write("b/Dockerfile", "FROM 127.0.0.1:1/gone:1\n");
    let before = tree.files();
    let unreachable = tree.pin(&[]);
    let line = unreachable.error_line();
    assert!(
        line.starts_with(
            "error: images/b/Dockerfile:1: FROM 127.0.0.1:1/gone:1: no registry at 127.0.0.1:1 (nothing listens \
             there)"
        ),
        "{unreachable}"
    );
    assert!(line.ends_with("; nothing was written"), "{unreachable}");
    assert_eq!(tree.files(), before);
}

/// `pin` on 100 images built on 4 bases asks the registry once per base
/// (and once more for the platform of each single-platform one), and `pin
/// --check` once per base; their wall times and request counts are printed.
#[test]
fn check_asks_once_per_distinct_base() {
    let registry = support::registry();
    let proxy = Proxy::start(&registry, 1);
    let tree = Tree::at(&proxy.addr);
    let names = ["alpha", "beta", "gamma", "delta"];
    for (k, name) in names.iter().enumerate() {
        let repository = format!("{registry}/{}", tree.base(name).split_once('/').unwrap().1);
        if k % 2 == 0 {
            push_image(&repository, "1", "amd64", name);
        } else {
            push_index(&repository, "1", &["amd64", "arm64"], name);
        }
    }
    for n in 0..100 {
        let base = tree.base(names[n % names.len()]);
        tree.write(&format!("group{}/image{n}/Dockerfile", n % 7), &format!("FROM {base}:1\nRUN echo {n}\n"));
    }
    let start = Instant::now();
    tree.pin(&[]).success();
    let (wall, asked) = (start.elapsed(), proxy.requests().len());
    // Each base's manifest, and the config of each single-platform one, for its platform.
    assert_eq!(asked, names.len() + 2, "{:#?}", proxy.requests());
    eprintln!("pin, 100 images on 4 bases: {:.3} s, {asked} registry requests", wall.as_secs_f64());

    let start = Instant::now();
    let checked = tree.pin(&["--check"]);
    let wall = start.elapsed();
    checked.success();
    let requests: Vec<String> = proxy.requests()[asked..].to_vec();
    eprintln!("pin --check, 100 images on 4 bases: {:.3} s, {} registry requests", wall.as_secs_f64(), requests.len());
    let mut expected: Vec<String> = names
        .iter()
        .map(|name| format!("GET /v2/{}/manifests/1 HTTP/1.1", tree.base(name).split_once('/').unwrap().1))
        .collect();
    let mut requests = requests;
    requests.sort();
    expected.sort();
    assert_eq!(requests, expected);
}

/// A registry that wants a bearer token from a token service: the base is
/// resolved with the login docker keeps for it (`DOCKER_CONFIG`), as the
/// client's own tests (`registry`) do for pushes.
#[test]
fn pins_through_a_registry_that_wants_a_token() {
    use crate::registry::{free_port, openssl, self_signed, wait_listening, Server, TOKEN_SERVICE};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    self_signed(dir, "key.pem", "cert.pem", "xtask-test-token");
    openssl(dir, &["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    let port = free_port("127.0.0.1");
    let password = format!("pw-{}", support::unique());
    fs::write(dir.join("token.py"), TOKEN_SERVICE).unwrap();
    let log = fs::File::create(dir.join("token.log")).unwrap();
    let mut child = Command::new("python3")
        .arg(dir.join("token.py"))
        .arg(port.to_string())
        .arg(dir.join("key.pem"))
        .arg(dir.join("cert.der"))
        .arg("tester")
        .arg(&password)
        .arg(dir.join("scopes.log"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("python3");
    wait_listening(&format!("127.0.0.1:{port}"), &mut child, &dir.join("token.log"));
    let _tokens = Server(child);
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: xtask-test\n    issuer: \
         xtask-test-issuer\n    rootcertbundle: {}\n",
        dir.join("cert.pem").display()
    );
    let registry =
        support::Registry::start_with(&dir.join("registry"), support::Setup { auth: Some(auth), ..Default::default() });
    let login = support::base64(format!("tester:{password}").as_bytes());
    let docker = dir.join("docker");
    fs::create_dir(&docker).unwrap();
    fs::write(docker.join("config.json"), json!({ "auths": { &registry.addr: { "auth": login } } }).to_string())
        .unwrap();

    let tree = Tree::at(&registry.addr);
    let mut one = Repository::new(&tree.base("one"));
    let scope = format!("repository:{}:pull,push", one.name);
    let path = format!("/token?service=xtask-test&scope={scope}");
    let basic = format!("Basic {login}");
    let (status, _, body) = http(&format!("127.0.0.1:{port}"), "GET", &path, &[("Authorization", &basic)], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    one.token = serde_json::from_slice::<Value>(&body).unwrap()["token"].as_str().map(String::from);
    let pinned = one.index("1", &["amd64", "arm64"], "one");
    tree.write("a/Dockerfile", &format!("FROM {}:1\n", tree.base("one")));

    let refused = tree.pin_with(&[], &[("DOCKER_CONFIG", dir)]);
    let line = refused.error_line();
    assert!(line.contains(&format!("registry {} refused the credentials", registry.addr)), "{refused}");
    assert_eq!(tree.read("a/Dockerfile"), format!("FROM {}:1\n", tree.base("one")));
    tree.pin_with(&[], &[("DOCKER_CONFIG", &docker)]).success();
    assert_eq!(tree.read("a/Dockerfile"), format!("FROM {}:1@{pinned}\n", tree.base("one")));
}
