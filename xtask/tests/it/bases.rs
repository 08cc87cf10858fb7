//! Base drift, end to end against the engine under test and the loopback
//! registry: a build records the digest of each external base it used (a
//! label), whether the base was here or only in its registry; `status
//! --bases` tells whether the base's tag still points there, from the local
//! image or the registry's copy; `status` alone asks no base registry; and
//! a base registry that cannot be asked is "could not check". The bases are
//! the tests' own images, pushed under tags of their own, named through a
//! proxy in front of the registry that counts the requests they get.

use std::fs;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::faults::proxy::Proxy;
use crate::support::{engine, engine_ok, manifest_digests, pull, run, untag, Engine, Sandbox};

/// A sandbox whose images are built on bases named through a proxy of
/// their own: `<proxy>/<id>/bases/<name>:t`.
struct World {
    s: Sandbox,
    proxy: Option<Proxy>,
    addr: String,
}

impl World {
    fn new(test: &str) -> World {
        let s = Sandbox::new(test);
        let proxy = Proxy::start(&crate::support::registry(), 1);
        let addr = proxy.addr.clone();
        World { s, proxy: Some(proxy), addr }
    }

    /// `<proxy>/<id>/bases/<name>:t`
    fn base(&self, name: &str) -> String {
        format!("{}/{}/bases/{name}:t", self.addr, self.s.id)
    }

    /// Builds an image holding `/f` (`content`, with the sandbox's id),
    /// pushes it as `base` and pulls it again, so that the engine holds it
    /// by the digest its registry has (podman records another on a push);
    /// that digest.
    fn push_base(&self, base: &str, content: &str) -> String {
        let dir = self.s.path().join(format!("base-{content}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
        fs::write(dir.join("f"), format!("{content} {}\n", self.s.id)).unwrap();
        engine_ok(&["build", "--no-cache", "-q", "-t", base, dir.to_str().unwrap()]);
        let mut push = vec!["push"];
        if engine() == Engine::Podman {
            push.push("--tls-verify=false");
        }
        push.push(base);
        engine_ok(&push);
        untag(&[base.to_string()]);
        pull(base, None);
        let digests = manifest_digests(base);
        assert_eq!(digests.len(), 1, "{base}: {digests:?}");
        digests[0].clone()
    }

    /// Requests the proxy passed on since `from`.
    fn requests_since(&self, from: usize) -> Vec<String> {
        self.proxy.as_ref().map_or(vec![], |p| p.requests()[from..].to_vec())
    }

    fn requests(&self) -> usize {
        self.proxy.as_ref().map_or(0, |p| p.requests().len())
    }

    /// Stops the proxy: nothing listens at the bases' registry any more.
    fn stop_proxy(&mut self) {
        self.proxy = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(&self.addr).is_ok() {
            assert!(Instant::now() < deadline, "the proxy at {} still answers", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The bases label of a local image.
    fn label(&self, reference: &str) -> Option<String> {
        let out = engine_ok(&["image", "inspect", reference]);
        let value: Value = serde_json::from_str(&out).unwrap();
        let key = format!("local.xtask-test.{}.bases", self.s.id);
        value[0]["Config"]["Labels"][key].as_str().map(String::from)
    }

    /// The line of `image` in a `status` table.
    fn row<'a>(&self, table: &'a str, image: &str) -> &'a str {
        table.lines().find(|l| l.split_whitespace().next() == Some(image)).unwrap_or_else(|| panic!("{table}"))
    }

    /// `bases_state` of `image` in a `status --json` document.
    fn bases_state(&self, document: &str, image: &str) -> Value {
        let value: Value = serde_json::from_str(document).unwrap();
        let rows = value["images"].as_array().unwrap();
        let row = rows.iter().find(|r| r["name"] == image).unwrap_or_else(|| panic!("{document}"));
        row.get("bases_state").cloned().unwrap_or(Value::Null)
    }
}

/// The request `status --bases` makes of a base's registry: its manifest.
fn manifest_request(base: &str) -> String {
    let (_, rest) = base.split_once('/').unwrap();
    let (repository, tag) = rest.rsplit_once(':').unwrap();
    format!("GET /v2/{repository}/manifests/{tag} HTTP/1.1")
}

/// A build on a base present here records its digest; `status --bases`
/// says the base is current, then moved (old → new) once its tag is pushed
/// again, from the local image and from the registry's copy alike; `status`
/// alone says nothing of bases and asks no base registry; with nothing
/// listening at the base's registry, the base is "could not check".
#[test]
fn status_tells_whether_a_base_moved() {
    let mut w = World::new("bases-moved");
    let base = w.base("b");
    let first = w.push_base(&base, "first");
    w.s.write("app/Dockerfile", format!("FROM {base}\nCOPY g /g\n"));
    w.s.write("app/g", "app\n");
    w.s.scratch_image("plain");
    let tag = w.s.tag("app");
    w.s.xtask(&["load", "app", "plain"]).success();
    let local = format!("{}:{tag}", w.s.local("app"));
    assert_eq!(w.label(&local), Some(format!("{base}={first}")));
    // Built on no external base: the label says so, empty.
    assert_eq!(w.label(&format!("{}:latest", w.s.local("plain"))), Some(String::new()));
    assert_eq!(w.s.tag("app"), tag, "a label changed the tag");

    let asked = w.requests();
    let current = w.s.xtask(&["status", "--bases"]);
    let header: Vec<&str> = current.success().stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[7..], ["BUILT", "BASES"], "{current}");
    assert!(w.row(&current.stdout, "app").ends_with("  bases current"), "{current}");
    assert!(w.row(&current.stdout, "plain").ends_with("  bases current"), "{current}");
    assert_eq!(w.requests_since(asked), [manifest_request(&base)], "one request per base");
    let document = w.s.xtask(&["status", "app", "--bases", "--json"]);
    assert_eq!(
        w.bases_state(&document.success().stdout, "app"),
        json!({
            "state": "current",
            "reference": local,
            "bases": [{ "reference": base, "built": first, "now": first, "state": "current" }],
        })
    );

    // Without --bases: nothing of bases, and no base registry asked.
    let asked = w.requests();
    let plain = w.s.xtask(&["status"]);
    assert!(!plain.success().stdout.contains("BASES") && !plain.stdout.contains("bases"), "{plain}");
    let document = w.s.xtask(&["status", "--json"]);
    assert_eq!(w.bases_state(&document.success().stdout, "app"), Value::Null, "{document}");
    assert_eq!(w.requests_since(asked), Vec::<String>::new(), "status without --bases asked a base registry");

    // The tag moves to another image.
    let second = w.push_base(&base, "second");
    assert_ne!(first, second);
    let moved = w.s.xtask(&["status", "--bases"]);
    assert!(
        w.row(&moved.success().stdout, "app").ends_with(&format!("  base moved: {base} {first} → {second}")),
        "{moved}"
    );
    let moved_state = json!({
        "state": "moved",
        "reference": local,
        "bases": [{ "reference": base, "built": first, "now": second, "state": "moved" }],
    });
    let document = w.s.xtask(&["status", "app", "--bases", "--json"]);
    assert_eq!(w.bases_state(&document.success().stdout, "app"), moved_state);

    // Only in the registry: the label is read from the registry's copy.
    w.s.xtask(&["push", "app"]).success();
    let remote = format!("{}:{tag}", w.s.remote("app"));
    untag(&[local.clone(), format!("{}:latest", w.s.local("app")), remote.clone()]);
    let document = w.s.xtask(&["status", "app", "--bases", "--json"]);
    let mut from_registry = moved_state.clone();
    from_registry["reference"] = json!(remote);
    assert_eq!(w.bases_state(&document.success().stdout, "app"), from_registry, "{document}");

    // Nothing listens at the base's registry any more.
    w.stop_proxy();
    let unchecked = w.s.xtask(&["status", "app", "--bases"]);
    assert!(w.row(&unchecked.success().stdout, "app").ends_with("  could not check bases"), "{unchecked}");
    let why = format!("no registry at {} (nothing listens there)", w.addr);
    assert_eq!(unchecked.stderr_lines(), [format!("warning: could not check the base {base} of app: {why}")]);
    let document = w.s.xtask(&["status", "app", "--bases", "--json"]);
    assert_eq!(
        w.bases_state(&document.success().stdout, "app"),
        json!({
            "state": "unchecked",
            "reference": remote,
            "bases": [{ "reference": base, "built": first, "now": null, "state": "unchecked", "reason": why }],
        })
    );
}

/// A base that is not here is pulled by the build: the tool resolves its
/// tag first and the build reads a copy of the Dockerfile naming that
/// digest, so the label names what was built on; the image's own
/// Dockerfile and its tag stay as they are.
#[test]
fn a_base_not_here_is_built_from_the_digest_recorded() {
    let w = World::new("bases-absent");
    let base = w.base("b");
    let digest = w.push_base(&base, "only");
    untag(std::slice::from_ref(&base));
    let dockerfile = format!("FROM {base}\nCOPY g /g\n");
    w.s.write("app/Dockerfile", &dockerfile);
    w.s.write("app/g", "app\n");
    let tag = w.s.tag("app");

    // podman pulls over plain HTTP only from a registry its configuration
    // calls insecure, as a project with such a registry has it; docker
    // allows loopback by itself.
    let conf = w.s.path().join("registries.conf");
    fs::write(&conf, format!("[[registry]]\nlocation = \"{}\"\ninsecure = true\n", w.addr)).unwrap();
    let asked = w.requests();
    run(w.s.cmd(&["load", "app"]).env("CONTAINERS_REGISTRIES_CONF", &conf)).success();
    let requests = w.requests_since(asked);
    assert_eq!(requests.first(), Some(&manifest_request(&base)), "the tag is resolved first: {requests:?}");
    assert_eq!(requests.iter().filter(|r| **r == manifest_request(&base)).count(), 1, "{requests:?}");
    let log = fs::read_to_string(w.s.log("app")).unwrap();
    assert!(log.contains(&format!("{base}@{digest}")), "the build did not name the digest:\n{log}");
    assert_eq!(w.label(&format!("{}:{tag}", w.s.local("app"))), Some(format!("{base}={digest}")));
    assert_eq!(fs::read_to_string(w.s.images.join("app/Dockerfile")).unwrap(), dockerfile);
    assert_eq!(w.s.tag("app"), tag);

    let current = w.s.xtask(&["status", "app", "--bases"]);
    assert!(w.row(&current.success().stdout, "app").ends_with("  bases current"), "{current}");
}

/// An image built without the bases label (by hand, as before bases were
/// recorded): its bases are unknown, and no base registry is asked.
#[test]
fn an_image_without_the_label_has_unknown_bases() {
    let w = World::new("bases-unknown");
    w.s.scratch_image("old");
    let tag = w.s.tag("old");
    let local = format!("{}:{tag}", w.s.local("old"));
    engine_ok(&["build", "--no-cache", "-q", "-t", &local, w.s.images.join("old").to_str().unwrap()]);
    let asked = w.requests();
    let status = w.s.xtask(&["status", "--bases"]);
    let row = w.row(&status.success().stdout, "old");
    assert!(row.ends_with("  bases unknown (built before bases were recorded)"), "{status}");
    let document = w.s.xtask(&["status", "--bases", "--json"]);
    assert_eq!(
        w.bases_state(&document.success().stdout, "old"),
        json!({ "state": "unknown", "reference": local, "reason": "built before bases were recorded", "bases": [] })
    );
    assert_eq!(w.requests_since(asked), Vec::<String>::new());
}
