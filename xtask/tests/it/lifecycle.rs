//! Image lifecycle end to end, against the real engine and registries of
//! the tests' own with deletes enabled: `prune` (local names whose tag no
//! checkout gives), `gc` (registry tags no kept git revision gives its
//! image) and `--changed-since` (what a change touched), on git
//! repositories the tests make; and the tool's own start in a project, the
//! README's migration.

use crate::support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{arch, engine, engine_ok, git, outcome, run, Engine, Registry, Sandbox};

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// The ID of a local image as the tool writes it (`sha256:…`; podman's
/// own answer leaves the algorithm out).
fn image_id(reference: &str) -> Option<String> {
    support::image_id(reference).map(|id| if id.contains(':') { id } else { format!("sha256:{id}") })
}

/// Untags names a test made outside its sandbox's prefixes, when it ends.
struct Untag(Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new(engine().program()).arg("rmi").args(&self.0).output();
        }
    }
}

/// Removes a container when the test ends.
struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = Command::new(engine().program()).args(["rm", "-f", &self.0]).output();
    }
}

fn size(reference: &str) -> u64 {
    engine_ok(&["image", "inspect", "--format", "{{.Size}}", reference]).trim().parse().unwrap()
}

fn tag_local(source: &str, target: &str) {
    engine_ok(&["tag", source, target]);
}

/// The `--json` rows of a run, compared whole: the one array of its
/// document (`names` for prune, `tags` for gc, `images` for lists).
fn rows(run: &support::Run) -> Value {
    let document: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    let fields = document.as_object().unwrap_or_else(|| panic!("not an object: {run}"));
    assert_eq!(fields.get("schema"), Some(&json!(1)), "{run}");
    let arrays: Vec<&Value> = fields.iter().filter(|(k, _)| *k != "schema").map(|(_, v)| v).collect();
    assert_eq!(arrays.len(), 1, "{run}");
    arrays[0].clone()
}

fn removal(reference: &str, image: &str, action: &str, reason: &str, bytes: u64) -> Value {
    json!({ "reference": reference, "image": image, "action": action, "reason": reason, "bytes": bytes })
}

// ---- prune ---------------------------------------------------------------------------

#[test]
fn prune_removes_stale_names_and_keeps_current_ones() {
    let s = Sandbox::new("prune");
    s.scratch_image("a");
    s.scratch_image("b");
    let (a1, b1) = (s.tag("a"), s.tag("b"));
    s.xtask(&["rebuild", "a", "b"]).success();
    let (la, lb, ra, rb) = (s.local("a"), s.local("b"), s.remote("a"), s.remote("b"));
    let old_a = image_id(&format!("{la}:{a1}")).unwrap();
    let old_b = image_id(&format!("{lb}:{b1}")).unwrap();
    let old_a_size = size(&old_a);
    // A stale-looking name outside the two prefixes, on b's image.
    let outside = format!("xtask-test.other/{}/a:{a1}", s.id);
    tag_local(&old_b, &outside);
    let _outside = Untag(vec![outside.clone()]);

    // a is loaded again once changed; b is changed but not loaded, so its
    // :latest points at no current tag.
    s.write("a/id", format!("{} a, changed\n", s.id));
    let a2 = s.tag("a");
    s.xtask(&["rebuild", "a"]).success();
    let new_a = image_id(&format!("{la}:{a2}")).unwrap();
    s.write("b/id", format!("{} b, changed\n", s.id));
    let before = s.local_names();

    let not_current = |t: &str| format!("{t} is not a current tag");
    let dry = s.xtask(&["prune", "--dry-run", "--json"]);
    assert_eq!(
        rows(dry.success()),
        json!([
            removal(&format!("{ra}:{a1}"), &old_a, "remove", &not_current(&a1), 0),
            removal(&format!("{rb}:{b1}"), &old_b, "remove", &not_current(&b1), 0),
            removal(&format!("{la}:{a1}"), &old_a, "remove", &not_current(&a1), old_a_size),
            removal(&format!("{lb}:{b1}"), &old_b, "remove", &not_current(&b1), 0),
            removal(&format!("{lb}:latest"), &old_b, "remove", "latest is under no current tag", 0),
        ])
    );
    assert_eq!(s.local_names(), before, "a dry run changed nothing");

    let pruned = s.xtask(&["prune"]);
    let line = |r: &str, bytes: u64, why: &str| format!("removed  {r}  {bytes} bytes  ({why})\n");
    assert_eq!(
        pruned.success().stdout,
        [
            line(&format!("{ra}:{a1}"), 0, &not_current(&a1)),
            line(&format!("{rb}:{b1}"), 0, &not_current(&b1)),
            line(&format!("{la}:{a1}"), old_a_size, &not_current(&a1)),
            line(&format!("{lb}:{b1}"), 0, &not_current(&b1)),
            line(&format!("{lb}:latest"), 0, "latest is under no current tag"),
            format!("total: 5 names removed, {old_a_size} bytes ({}) freed\n", xtask::report::human_bytes(old_a_size)),
        ]
        .concat()
    );
    assert_eq!(s.local_names(), sorted(vec![format!("{ra}:{a2}"), format!("{la}:{a2}"), format!("{la}:latest")]));
    assert_eq!(image_id(&old_a), None, "the old image of a is still there");
    assert_eq!(image_id(&outside), Some(old_b), "a name outside the prefixes was touched");
    assert_eq!(image_id(&format!("{la}:latest")), Some(new_a));

    let again = s.xtask(&["prune", "--json"]);
    assert_eq!(rows(again.success()), json!([]));
    assert_eq!(again.stderr, "total: 0 names removed, 0 bytes (0 B) freed\n");
}

#[test]
fn prune_keeps_every_architecture_current_tag_and_scopes_by_arch() {
    let s = Sandbox::new("prune-arch");
    s.scratch_image("a");
    let host_tag = s.tag("a");
    let other = if arch() == "x86_64" { "aarch64" } else { "x86_64" };
    let other_tag = s.arch_tag(other, "a");
    assert_ne!(host_tag, other_tag, "content tags differ by architecture");
    s.xtask(&["load", "a"]).success();
    let (la, ra, ro) = (s.local("a"), s.remote("a"), s.remote_for(other, "a"));
    let id = image_id(&format!("{la}:{host_tag}")).unwrap();
    // Names for the other architecture, on this image: the platform of a
    // remote name's image does not matter, its name says the architecture.
    let stale_remote = format!("{ro}:0000000000000000");
    let stale_local = format!("{la}:1111111111111111");
    for name in [format!("{ro}:{other_tag}"), stale_remote.clone(), format!("{la}:{other_tag}"), stale_local.clone()] {
        tag_local(&id, &name);
    }
    let everything = s.local_names();

    // This image is for the host: with the other architecture in scope,
    // only the other architecture's stale remote name goes.
    let scoped = s.xtask(&["prune", "--arch", other, "--json"]);
    let why = |t: &str| format!("{t} is not a current tag");
    assert_eq!(rows(scoped.success()), json!([removal(&stale_remote, &id, "removed", &why("0000000000000000"), 0)]));
    let host = s.xtask(&["prune", "--arch", arch(), "--json"]);
    assert_eq!(rows(host.success()), json!([removal(&stale_local, &id, "removed", &why("1111111111111111"), 0)]));
    let left: Vec<String> = everything.into_iter().filter(|n| *n != stale_local && *n != stale_remote).collect();
    assert_eq!(
        left,
        sorted(vec![
            format!("{ra}:{host_tag}"),
            format!("{ro}:{other_tag}"),
            format!("{la}:{host_tag}"),
            format!("{la}:{other_tag}"),
            format!("{la}:latest"),
        ])
    );
    assert_eq!(s.local_names(), left);
    assert_eq!(rows(s.xtask(&["prune", "--json"]).success()), json!([]));
}

#[test]
fn prune_skips_images_a_container_uses() {
    let s = Sandbox::new("prune-in-use");
    s.scratch_image("a");
    let a1 = s.tag("a");
    s.xtask(&["rebuild", "a"]).success();
    let (la, ra) = (s.local("a"), s.remote("a"));
    let old = image_id(&format!("{la}:{a1}")).unwrap();
    let container = format!("xtask-test-{}", s.id);
    engine_ok(&["create", "--name", &container, &format!("{la}:{a1}"), "/id"]);
    let mut created = RemoveContainer(container.clone());
    s.write("a/id", format!("{} changed\n", s.id));
    let a2 = s.tag("a");
    s.xtask(&["rebuild", "a"]).success();

    let in_use = format!("in use by container {container}");
    let pruned = s.xtask(&["prune", "--json"]);
    assert_eq!(
        rows(pruned.success()),
        json!([
            removal(&format!("{ra}:{a1}"), &old, "skipped", &in_use, 0),
            removal(&format!("{la}:{a1}"), &old, "skipped", &in_use, 0),
        ])
    );
    assert_eq!(image_id(&format!("{la}:{a1}")), Some(old.clone()));
    assert_eq!(image_id(&format!("{ra}:{a1}")), Some(old.clone()));

    engine_ok(&["rm", &container]);
    created.0.clear();
    let size = size(&old);
    let pruned = s.xtask(&["prune", "--json"]);
    let why = format!("{a1} is not a current tag");
    assert_eq!(
        rows(pruned.success()),
        json!([
            removal(&format!("{ra}:{a1}"), &old, "removed", &why, 0),
            removal(&format!("{la}:{a1}"), &old, "removed", &why, size),
        ])
    );
    assert_eq!(s.local_names(), sorted(vec![format!("{ra}:{a2}"), format!("{la}:{a2}"), format!("{la}:latest")]));
}

/// The engine's calls, each as its program and subcommand. podman lists
/// images again when one vanishes under its listing (another test removed
/// it): a listing repeated at once counts once.
fn subcommands(calls: &[String]) -> Vec<String> {
    let out: Vec<String> = calls
        .iter()
        .map(|c| {
            let words: Vec<&str> = c.split_whitespace().collect();
            let n = if words.get(1) == Some(&"image") { 3 } else { 2 };
            words[..n.min(words.len())].join(" ")
        })
        .collect();
    out
}

#[test]
fn prune_looks_with_two_engine_calls_whatever_the_number_of_images() {
    let s = Sandbox::new("prune-calls");
    let paths: Vec<String> = (0..12).map(|i| format!("g/i{i}")).collect();
    for p in &paths {
        s.scratch_image(p);
    }
    s.xtask(&["build-all-images"]).success();
    let recorder = s.recording_engine();
    let program = engine().program();

    let none = run(s.cmd(&["prune"]).env("PATH", &recorder.path));
    assert_eq!(none.success().stdout, "total: 0 names removed, 0 bytes (0 B) freed\n");
    let look = vec![format!("{program} version"), format!("{program} images"), format!("{program} ps")];
    assert_eq!(subcommands(&recorder.take()), look);

    // Every image changed: 36 names go, with one more call for their sizes,
    // one to remove them and one to check.
    for p in &paths {
        s.write(&format!("{p}/id"), format!("{} {p} changed\n", s.id));
    }
    let dry = run(s.cmd(&["prune", "--dry-run"]).env("PATH", &recorder.path));
    assert_eq!(dry.success().stdout.lines().filter(|l| l.starts_with("would remove")).count(), 36, "{dry}");
    let sized: Vec<String> = look.iter().cloned().chain([format!("{program} image inspect")]).collect();
    assert_eq!(subcommands(&recorder.take()), sized);
    let pruned = run(s.cmd(&["prune"]).env("PATH", &recorder.path));
    assert_eq!(pruned.success().stdout.lines().filter(|l| l.starts_with("removed")).count(), 36, "{pruned}");
    let removed: Vec<String> =
        sized.iter().cloned().chain([format!("{program} rmi"), format!("{program} images")]).collect();
    assert_eq!(subcommands(&recorder.take()), removed);
    assert_eq!(s.local_names(), Vec::<String>::new());
}

#[test]
fn prune_names_what_keeps_an_image_and_takes_other_prefixes_when_asked() {
    let s = Sandbox::new("prune-prefixes");
    s.scratch_image("a");
    let a1 = s.tag("a");
    s.xtask(&["rebuild", "a"]).success();
    let (la, ra) = (s.local("a"), s.remote("a"));
    let old = image_id(&format!("{la}:{a1}")).unwrap();
    let old_size = size(&old);
    // The name a former remote prefix gave the image, and one of the user's own.
    let before = format!("xtask-test.before/{}", s.id);
    let former = format!("{before}/a_{}:{a1}", arch());
    let own = format!("xtask-test.own/{}:debug", s.id);
    tag_local(&old, &former);
    tag_local(&old, &own);
    let _untag = Untag(vec![former.clone(), own.clone()]);
    s.write("a/id", format!("{} a, changed\n", s.id));
    s.xtask(&["rebuild", "a"]).success();

    let pruned = s.xtask(&["prune"]);
    let why = format!("{a1} is not a current tag");
    assert_eq!(
        pruned.success().stdout,
        format!(
            "removed  {ra}:{a1}  0 bytes  ({why})\n\
             removed  {la}:{a1}  0 bytes  ({why})\n\
             total: 2 names removed, 0 bytes (0 B) freed\n"
        )
    );
    assert_eq!(
        pruned.stderr,
        format!(
            "note: other names keep 1 image whose names go, so it is not deleted:\n  \
             the image of {la}:{a1} is also {former}, {own}\n\
             to remove the names under other prefixes too: prune --other-prefixes {before}\n"
        )
    );
    assert_eq!(image_id(&former), Some(old.clone()));

    // The former prefix's names go when asked for; the user's own stays
    // until the user removes it.
    support::untag(std::slice::from_ref(&own));
    let again = s.xtask(&["prune", "--other-prefixes", &before, "--json"]);
    assert_eq!(rows(again.success()), json!([removal(&former, &old, "removed", &why, old_size)]));
    assert_eq!(image_id(&old), None, "the stale image is still there");
    assert_eq!(rows(s.xtask(&["prune", "--other-prefixes", &before, "--json"]).success()), json!([]));
}

#[test]
fn prune_keeps_the_tags_other_checkouts_give() {
    let s = Sandbox::new("prune-checkouts");
    git_init(&s);
    // A second work tree goes beside the images, ignored by the first.
    fs::write(s.path().join(".gitignore"), "/target/\n/second/\n").unwrap();
    s.scratch_image("a");
    let (la, ra) = (s.local("a"), s.remote("a"));
    // Each version of `a`, loaded in turn: (tag, image).
    let mut versions: Vec<(String, String)> = Vec::new();
    let mut build = |images: &std::path::Path, version: &str| {
        fs::write(images.join("a/id"), format!("{} a {version}\n", s.id)).unwrap();
        run(s.cmd(&["rebuild", "a"]).env("IMAGES_DIR", images)).success();
        let printed = run(s.cmd(&["local-image", "a"]).env("IMAGES_DIR", images)).success().stdout.clone();
        let tag = printed.trim().rsplit_once(':').unwrap().1.to_string();
        let id = image_id(&format!("{la}:{tag}")).unwrap();
        versions.push((tag, id));
    };
    // 0: committed, then left behind by every checkout.
    build(&s.images, "zero");
    commit(&s, "zero");
    // 1: the head of a branch.
    build(&s.images, "one");
    commit(&s, "one");
    git(s.path(), &["branch", "topic"]);
    // 2: the detached HEAD of a second work tree, and 3: that work tree's
    // files, changed and loaded from there.
    build(&s.images, "two");
    commit(&s, "two");
    let second = s.path().join("second");
    git(s.path(), &["worktree", "add", "-q", "--detach", second.to_str().unwrap()]);
    build(&second.join("images"), "three");
    // 4: HEAD here, and 5: this work tree, changed since.
    build(&s.images, "four");
    commit(&s, "four");
    build(&s.images, "five");

    let second = second.canonicalize().unwrap().display().to_string();
    let because = [
        format!("{} is not a current tag", versions[0].0),
        format!("{} is current on branch topic", versions[1].0),
        format!("{} is current at the HEAD of the work tree at {second}", versions[2].0),
        format!("{} is current in the work tree at {second}", versions[3].0),
        format!("{} is current at HEAD", versions[4].0),
    ];
    let planned = |action_of: &dyn Fn(usize) -> &'static str, bytes: u64| {
        let mut rows: Vec<(String, Value)> = Vec::new();
        for (k, (tag, id)) in versions[..5].iter().enumerate() {
            for (name, last) in [(&ra, false), (&la, true)] {
                let reference = format!("{name}:{tag}");
                let freed = if k == 0 && last { bytes } else { 0 };
                rows.push((reference.clone(), removal(&reference, id, action_of(k), &because[k], freed)));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Array(rows.into_iter().map(|(_, row)| row).collect())
    };
    let zero_size = size(&versions[0].1);
    let dry = s.xtask(&["prune", "--dry-run", "--json"]);
    assert_eq!(rows(dry.success()), planned(&|k| if k == 0 { "remove" } else { "skipped" }, zero_size), "{dry}");

    // With this work tree's tags alone, every other version would go.
    let alone = s.xtask(&["prune", "--dry-run", "--json", "--work-tree-only"]);
    let actions: Vec<String> =
        rows(alone.success()).as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions, ["remove"; 10], "{alone}");

    let pruned = s.xtask(&["prune", "--json"]);
    assert_eq!(rows(pruned.success()), planned(&|k| if k == 0 { "removed" } else { "skipped" }, zero_size));
    assert_eq!(image_id(&versions[0].1), None, "the version no checkout gives is still there");
    for (tag, id) in &versions[1..] {
        assert_eq!(image_id(&format!("{la}:{tag}")).as_ref(), Some(id));
        assert_eq!(image_id(&format!("{ra}:{tag}")).as_ref(), Some(id));
    }
}

// ---- git repositories -------------------------------------------------------------------

/// Makes the sandbox a git repository (its images root, not its build logs).
fn git_init(s: &Sandbox) {
    fs::write(s.path().join(".gitignore"), "/target/\n").unwrap();
    git(s.path(), &["init", "-q"]);
}

fn commit(s: &Sandbox, message: &str) -> String {
    git(s.path(), &["add", "-A"]);
    git(s.path(), &["commit", "-q", "-m", message]);
    git(s.path(), &["rev-parse", "HEAD"]).trim().to_string()
}

// ---- the registry over plain HTTP ----------------------------------------------------------

/// A request to a loopback registry: the status and the body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let (status, _, body) = support::exchange(addr, method, path, headers, body, Duration::from_secs(20)).unwrap();
    (status, body)
}

/// A repository's tags (`host/repository`), sorted; none when it has none.
fn registry_tags(repository: &str) -> Vec<String> {
    let (addr, name) = repository.split_once('/').unwrap();
    let (status, body) = http(addr, "GET", &format!("/v2/{name}/tags/list"), &[], b"");
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let value: Value = serde_json::from_slice(&body).unwrap();
    let mut tags: Vec<String> = value["tags"]
        .as_array()
        .map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// The digest of the manifest a tag names.
fn registry_digest(repository: &str, tag: &str) -> String {
    let (addr, name) = repository.split_once('/').unwrap();
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json";
    let (status, body) = http(addr, "GET", &format!("/v2/{name}/manifests/{tag}"), &[("Accept", accept)], b"");
    assert_eq!(status, 200, "{repository}:{tag}: {}", String::from_utf8_lossy(&body));
    format!("sha256:{}", sha256_hex(&body))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    xtask::model::hex(&sha2::Sha256::digest(bytes))
}

/// Stores an index under `tag` in `repository`, listing the manifests of
/// `members` (tags of the same repository).
fn put_index(repository: &str, tag: &str, members: &[&str]) {
    let (addr, name) = repository.split_once('/').unwrap();
    let manifests: Vec<Value> = members
        .iter()
        .map(|m| {
            let accept =
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
            let (status, body) = http(addr, "GET", &format!("/v2/{name}/manifests/{m}"), &[("Accept", accept)], b"");
            assert_eq!(status, 200);
            let media: Value = serde_json::from_slice(&body).unwrap();
            json!({
                "mediaType": media["mediaType"],
                "digest": format!("sha256:{}", sha256_hex(&body)),
                "size": body.len(),
                "platform": { "architecture": "amd64", "os": "linux" },
            })
        })
        .collect();
    let media = "application/vnd.oci.image.index.v1+json";
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": media, "manifests": manifests })).unwrap();
    let (status, body) = http(addr, "PUT", &format!("/v2/{name}/manifests/{tag}"), &[("Content-Type", media)], &index);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

fn decision(repository: &str, tag: &str, digest: &str, action: &str, reason: Option<&str>, bytes: u64) -> Value {
    let mut d = json!({ "repository": repository, "tag": tag, "digest": digest, "action": action, "bytes": bytes });
    if let Some(reason) = reason {
        d["reason"] = json!(reason);
    }
    d
}

/// Bytes of the blobs a tag's manifest holds, as the registry lists them.
fn manifest_bytes(repository: &str, tag: &str) -> u64 {
    let (addr, name) = repository.split_once('/').unwrap();
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let (_, body) = http(addr, "GET", &format!("/v2/{name}/manifests/{tag}"), &[("Accept", accept)], b"");
    let m: Value = serde_json::from_slice(&body).unwrap();
    m["config"]["size"].as_u64().unwrap()
        + m["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum::<u64>()
}

// ---- gc ------------------------------------------------------------------------------------

/// A sandbox whose images root is a git repository of five revisions, each
/// changing image `a` and pushed, with `b` the same throughout; pushed to a
/// registry of its own. Returns a's tag at each revision, oldest first.
fn five_pushed_revisions(test: &str) -> (Sandbox, Registry, Vec<String>) {
    pushed_revisions(test, 5)
}

/// [`five_pushed_revisions`], of `count` revisions.
fn pushed_revisions(test: &str, count: usize) -> (Sandbox, Registry, Vec<String>) {
    let mut s = Sandbox::new(test);
    let registry = Registry::start(s.path(), None);
    s.use_registry(&registry.addr);
    git_init(&s);
    s.scratch_image("b");
    let mut tags = Vec::new();
    for n in 1..=count {
        s.write("a/Dockerfile", "FROM scratch\nCOPY id /id\n");
        s.write("a/id", format!("{} revision {n}\n", s.id));
        commit(&s, &format!("revision {n}"));
        tags.push(s.tag("a"));
        s.xtask(&["push", "a", "b"]).success();
    }
    (s, registry, tags)
}

#[test]
fn gc_deletes_exactly_the_tags_of_revisions_not_kept() {
    let (s, _registry, tags) = five_pushed_revisions("gc");
    let (ra, rb) = (s.remote("a"), s.remote("b"));
    let b = s.tag("b");
    assert_eq!(registry_tags(&ra), sorted(tags.clone()));
    assert_eq!(registry_tags(&rb), vec![b.clone()]);
    let digests: Vec<String> = tags.iter().map(|t| registry_digest(&ra, t)).collect();
    let bytes: Vec<u64> = tags.iter().map(|t| manifest_bytes(&ra, t)).collect();
    let goes = |k: usize, action: &str| decision(&ra, &tags[k], &digests[k], action, None, bytes[k]);
    // Deletions come in the order of their tags.
    let by_tag = |mut ks: Vec<usize>| {
        ks.sort_by_key(|&k| tags[k].clone());
        ks
    };

    // A range keeps the commits git lists for it (HEAD~2, HEAD~1 and HEAD):
    // the tags of the others go.
    let revisions: Vec<String> = git(s.path(), &["rev-list", "--reverse", "HEAD"]).lines().map(String::from).collect();
    let listed: Vec<String> = git(s.path(), &["rev-list", "HEAD~3..HEAD"]).lines().map(String::from).collect();
    assert_eq!(listed.len(), 3);
    let others: Vec<usize> = (0..5).filter(|&k| !listed.contains(&revisions[k])).collect();
    assert_eq!(others, [0, 1]);
    let range = s.xtask(&["gc", "--keep", "HEAD~3..HEAD", "--json"]);
    let planned: Vec<Value> = by_tag(others).into_iter().map(|k| goes(k, "delete")).collect();
    assert_eq!(rows(range.success()), Value::Array(planned));
    assert_eq!(range.stderr_lines()[0], "keeping the tags of 3 commits");

    // The default is a dry run: it lists each tag and the bytes it holds,
    // and counts every tag that stays (a's two, b's one).
    let dry = s.xtask(&["gc", "--keep", "HEAD~1", "HEAD"]);
    let older = by_tag(vec![0, 1, 2]);
    let lines: Vec<String> =
        older.iter().map(|&k| format!("would delete  {ra}:{}  {}  {} bytes", tags[k], digests[k], bytes[k])).collect();
    let stdout: Vec<&str> = dry.success().stdout.lines().collect();
    assert_eq!(stdout[..3], lines, "{dry}");
    assert_eq!(stdout.len(), 4, "{dry}");
    assert!(stdout[3].starts_with("total: 3 tags would be deleted, 3 kept; "), "{dry}");
    assert_eq!(registry_tags(&ra), sorted(tags.clone()), "a dry run deleted something");

    let deleted = s.xtask(&["gc", "--keep", "HEAD~1", "HEAD", "--delete", "--json"]);
    let done: Vec<Value> = older.iter().map(|&k| goes(k, "deleted")).collect();
    assert_eq!(rows(deleted.success()), Value::Array(done));
    assert_eq!(registry_tags(&ra), sorted(tags[3..].to_vec()));
    assert_eq!(registry_tags(&rb), vec![b]);

    let again = s.xtask(&["gc", "--keep", "HEAD~1", "HEAD", "--delete", "--json"]);
    assert_eq!(rows(again.success()), json!([]));
    assert_eq!(registry_tags(&ra), sorted(tags[3..].to_vec()));
}

/// Stores `tag` in a repository (`host/repository`) as the very manifest
/// `source` names there.
fn retag(repository: &str, source: &str, tag: &str) {
    let (addr, name) = repository.split_once('/').unwrap();
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let (status, manifest) = http(addr, "GET", &format!("/v2/{name}/manifests/{source}"), &[("Accept", accept)], b"");
    assert_eq!(status, 200, "{repository}:{source}");
    let media = serde_json::from_slice::<Value>(&manifest).unwrap()["mediaType"].as_str().unwrap().to_string();
    let (status, body) =
        http(addr, "PUT", &format!("/v2/{name}/manifests/{tag}"), &[("Content-Type", &media)], &manifest);
    assert_eq!(status, 201, "{repository}:{tag}: {}", String::from_utf8_lossy(&body));
}

#[test]
fn gc_keeps_latest_what_it_cannot_attribute_and_what_an_index_holds() {
    let (s, registry, tags) = five_pushed_revisions("gc-keeps");
    let ra = s.remote("a");
    // latest names revision 1's manifest; an index that stays (a tag this
    // tool does not make) lists revision 2's; an old index lists revision
    // 3's; another tag this tool does not make names revision 4's.
    retag(&ra, &tags[0], "latest");
    put_index(&ra, "v2-index", &[&tags[1]]);
    put_index(&ra, "ffffffffffffffff", &[&tags[2]]);
    retag(&ra, &tags[3], "v1.0");
    // An image gone from the tree still has its repository.
    s.scratch_image("gone");
    let gone = s.tag("gone");
    s.xtask(&["push", "gone"]).success();
    fs::remove_dir_all(s.images.join("gone")).unwrap();
    let rg = s.remote("gone");
    // A repository outside the prefix, and one not named <path>_<arch>.
    let outside = format!("{}/elsewhere-{}/a_{}", registry.addr, s.id, arch());
    let cache = format!("{ra}-buildcache");
    let current = image_id(&format!("{}:{}", s.local("a"), tags[4])).unwrap();
    for repo in [&outside, &cache] {
        let target = format!("{repo}:0123456789abcdef");
        engine_ok(&["tag", &current, &target]);
        let tls = (engine() == Engine::Podman).then_some("--tls-verify=false");
        let push: Vec<&str> = ["push"].into_iter().chain(tls).chain([target.as_str()]).collect();
        engine_ok(&push);
    }
    let _untag = Untag(vec![format!("{outside}:0123456789abcdef"), format!("{cache}:0123456789abcdef")]);
    // podman's builds keep their layers in the cache repository too.
    let cache_tags = registry_tags(&cache);

    let digest = |k: usize| registry_digest(&ra, &tags[k]);
    let bytes = |k: usize| manifest_bytes(&ra, &tags[k]);
    let keep = |k: usize, why: &str| decision(&ra, &tags[k], &digest(k), "keep", Some(why), bytes(k));
    // What stays for a reason: tags that are none of the tool's, in tag
    // order; then old tags that stay, in tag order; then deletions, indexes first.
    let mut held = vec![
        (tags[0].clone(), keep(0, "names the same manifest as latest, which stays")),
        (tags[1].clone(), keep(1, "listed by index v2-index, which stays")),
        (tags[3].clone(), keep(3, "names the same manifest as v1.0, which stays")),
    ];
    held.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        decision(&ra, "v1.0", &digest(3), "keep", Some("not a tag this tool makes"), bytes(3)),
        decision(
            &ra,
            "v2-index",
            &registry_digest(&ra, "v2-index"),
            "keep",
            Some("not a tag this tool makes"),
            bytes(1),
        ),
    ];
    expected.extend(held.into_iter().map(|(_, d)| d));
    expected.push(decision(
        &ra,
        "ffffffffffffffff",
        &registry_digest(&ra, "ffffffffffffffff"),
        "deleted",
        None,
        bytes(2),
    ));
    expected.push(decision(&ra, &tags[2], &digest(2), "deleted", None, bytes(2)));
    expected.push(decision(&rg, &gone, &registry_digest(&rg, &gone), "deleted", None, manifest_bytes(&rg, &gone)));

    let result = s.xtask(&["gc", "--delete", "--json"]);
    assert_eq!(rows(result.success()), Value::Array(expected));
    let mut left: Vec<String> = [0, 1, 3, 4].iter().map(|&k| tags[k].clone()).collect();
    left.extend(["latest".to_string(), "v1.0".into(), "v2-index".into()]);
    assert_eq!(registry_tags(&ra), sorted(left));
    assert_eq!(registry_tags(&rg), Vec::<String>::new());
    assert_eq!(registry_tags(&outside), vec!["0123456789abcdef".to_string()]);
    assert_eq!(registry_tags(&cache), cache_tags);
}

#[test]
fn gc_keeps_every_tag_of_an_image_whose_kept_tag_is_unknown() {
    let (s, _registry, tags) = five_pushed_revisions("gc-unknown");
    let (ra, rb) = (s.remote("a"), s.remote("b"));
    // At HEAD, a is built FROM an image that is not there: its tag at HEAD
    // cannot be computed, so no tag of it can be known to be unneeded.
    s.write("a/Dockerfile", format!("FROM {}/missing\nCOPY id /id\n", s.local_prefix));
    let head = commit(&s, "a broken");
    let b = s.tag("b");
    let why = format!(
        "its tag at {} cannot be computed: a is built FROM {}/missing, which is not an image for {}: add {}/missing \
         or fix the FROM line",
        &head[..12],
        s.local_prefix,
        arch(),
        s.images.display()
    );
    let result = s.xtask(&["gc", "--delete", "--json"]);
    let mut expected: Vec<(String, Value)> = tags
        .iter()
        .map(|t| {
            let d = decision(&ra, t, &registry_digest(&ra, t), "keep", Some(&why), manifest_bytes(&ra, t));
            (t.clone(), d)
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rows(result.success()), Value::Array(expected.into_iter().map(|(_, d)| d).collect()));
    assert_eq!(registry_tags(&ra), sorted(tags));
    assert_eq!(registry_tags(&rb), vec![b]);
}

#[test]
fn gc_keep_since_keeps_recent_first_parent_commits() {
    let (s, _registry, tags) = five_pushed_revisions("gc-since");
    let ra = s.remote("a");
    // Every commit is recent: nothing goes.
    let recent = s.xtask(&["gc", "--keep-since", "30d", "--json"]);
    assert_eq!(rows(recent.success()), json!([]));
    assert_eq!(recent.stderr_lines()[0], "keeping the tags of 5 commits");
    assert_eq!(registry_tags(&ra), sorted(tags));
    let bad = s.xtask(&["gc", "--keep-since", "30y"]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("invalid age `30y`: use a number and one of s, m, h, d, w (e.g. 30d)"), "{bad}");
}

#[test]
fn gc_outside_a_git_repository_is_one_clear_error() {
    let s = Sandbox::new("gc-no-git");
    s.scratch_image("a");
    let out = s.xtask(&["gc"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: the images directory {} is not in a git work tree, so its history cannot be read: ",
            s.images.display()
        )),
        "{out}"
    );
}

/// What `gc` says of repositories holding tags of images at the revisions
/// to keep, but none of the tags those revisions give them.
fn unmatched(repositories: &str, scheme: &str, build_args: &str, local_prefix: &str) -> String {
    format!(
        "the registry holds tags of {repositories}, but none that a revision to keep gives their images, so every \
         one would go: the registry was likely filled under other settings than these (TAG_SCHEME={scheme}, \
         DOCKER_BUILD_ARGS={build_args:?}, LOCAL_IMAGE_PREFIX={local_prefix}), which give other tags; run gc with \
         the settings the images are pushed with (CI's), or keep revisions whose images were pushed (--keep)"
    )
}

#[test]
fn gc_refuses_to_delete_what_settings_unlike_the_pushers_would_not_keep() {
    let (s, _registry, tags) = pushed_revisions("gc-settings", 2);
    let (ra, rb) = (s.remote("a"), s.remote("b"));
    let b = s.tag("b");
    let everything = [(ra.clone(), sorted(tags.clone())), (rb.clone(), vec![b.clone()])];
    let left = || [(ra.clone(), registry_tags(&ra)), (rb.clone(), registry_tags(&rb))];
    // Other build arguments, or the other tag scheme, give every image other
    // tags than those the pushes made: each of the registry's tags would go.
    for (variable, value, scheme, build_args) in [
        ("DOCKER_BUILD_ARGS", "--build-arg GC_TEST=1", "content", "--build-arg GC_TEST=1"),
        ("TAG_SCHEME", "gvisor", "gvisor", ""),
    ] {
        let why = unmatched(&format!("{ra} (2 tags), {rb} (1 tag)"), scheme, build_args, &s.local_prefix);
        let refused = run(s.cmd(&["gc", "--delete"]).env(variable, value));
        refused.status(1);
        assert_eq!(
            refused.stderr_lines(),
            ["keeping the tags of 1 commit".to_string(), format!("error: refusing to delete anything: {why}")],
            "{refused}"
        );
        assert_eq!(refused.stdout, "", "{refused}");
        assert_eq!(left(), everything, "{variable}={value}: a refused run deleted something");

        // A dry run says the same, and still lists its plan.
        let dry = run(s.cmd(&["gc"]).env(variable, value));
        let warning = format!("warning: {why}; with --delete, gc refuses");
        assert_eq!(dry.success().stderr_lines(), ["keeping the tags of 1 commit", &warning], "{dry}");
        let planned: Vec<String> = dry
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("would delete  "))
            .map(|l| l.split("  ").next().unwrap().to_string())
            .collect();
        let mut all: Vec<String> = tags.iter().map(|t| format!("{ra}:{t}")).collect();
        all.push(format!("{rb}:{b}"));
        assert_eq!(sorted(planned), sorted(all), "{dry}");
    }
    // Under the settings of the pushes, the same run goes ahead.
    s.xtask(&["gc", "--delete"]).success();
    assert_eq!(registry_tags(&ra), vec![tags[1].clone()]);
    assert_eq!(registry_tags(&rb), vec![b]);
}

#[test]
fn gc_refuses_a_remote_prefix_that_is_a_registry_alone() {
    // Another project's image, pushed under a path of the registry.
    let mut s = Sandbox::new("gc-bare");
    let registry = Registry::start(s.path(), None);
    s.use_registry(&registry.addr);
    git_init(&s);
    s.scratch_image("a");
    commit(&s, "a");
    s.xtask(&["push", "a"]).success();
    let theirs = s.remote("a");
    let tag = s.tag("a");
    assert_eq!(registry_tags(&theirs), vec![tag.clone()]);

    // This project's prefix is the registry alone: the other project's
    // repository would be taken for one of its images, gone since.
    s.remote_prefix = registry.addr.clone();
    for args in [&["gc"][..], &["gc", "--delete"]] {
        let out = s.xtask(args);
        out.status(1);
        assert_eq!(
            out.stderr,
            format!(
                "error: the remote prefix `{}` is a registry with no repository path: gc would take every \
                 <path>_<arch> repository there for its own, other projects' too; set REMOTE_IMAGE_PREFIX (or \
                 --remote-image-prefix, or remote_image_prefix in xtask/images.toml) to host[:port]/path, and push \
                 the images under it\n",
                registry.addr
            ),
            "{out}"
        );
        assert_eq!(registry_tags(&theirs), vec![tag.clone()], "{out}");
    }
}

#[test]
fn gc_counts_every_tag_it_keeps() {
    let (s, _registry, tags) = pushed_revisions("gc-counts", 2);
    let ra = s.remote("a");
    retag(&ra, &tags[1], "latest");
    let (digest, bytes) = (registry_digest(&ra, &tags[0]), manifest_bytes(&ra, &tags[0]));
    let human = xtask::report::human_bytes(bytes);
    // One tag goes; a's current tag, its latest and b's stay.
    let dry = s.xtask(&["gc"]);
    assert_eq!(
        dry.success().stdout,
        format!(
            "would delete  {ra}:{}  {digest}  {bytes} bytes\n\
             total: 1 tag would be deleted, 3 kept; it holds {bytes} bytes ({human}); run with --delete to delete it\n",
            tags[0]
        ),
        "{dry}"
    );
    let deleted = s.xtask(&["gc", "--delete"]);
    assert_eq!(
        deleted.success().stdout,
        format!(
            "deleted  {ra}:{}  {digest}  {bytes} bytes\n\
             total: 1 tag deleted, 3 kept, 0 failed; it held {bytes} bytes ({human}), which the registry's garbage \
             collector frees where nothing else holds them\n",
            tags[0]
        ),
        "{deleted}"
    );
    let again = s.xtask(&["gc"]);
    assert_eq!(again.success().stdout, "total: 0 tags would be deleted, 3 kept\n", "{again}");
}

#[test]
fn gc_says_which_tags_it_would_delete_are_the_work_trees() {
    let (s, _registry, tags) = pushed_revisions("gc-work-tree", 2);
    let ra = s.remote("a");
    // The work tree changes a, uncommitted, and pushes it: its tag is no
    // revision's, and goes like the old one; the line says whose it is.
    s.write("a/id", format!("{} work tree\n", s.id));
    let ours = s.tag("a");
    s.xtask(&["push", "a"]).success();
    let mut going = [(tags[0].clone(), ""), (ours.clone(), "  (work tree)")];
    going.sort();
    let going: Vec<(String, String, u64, &str)> = going
        .into_iter()
        .map(|(t, note)| {
            let (digest, bytes) = (registry_digest(&ra, &t), manifest_bytes(&ra, &t));
            (t, digest, bytes, note)
        })
        .collect();
    let lines = |verb: &str| -> Vec<String> {
        going
            .iter()
            .map(|(tag, digest, bytes, note)| format!("{verb}  {ra}:{tag}  {digest}  {bytes} bytes{note}"))
            .collect()
    };
    let note = "note: the tag marked (work tree) is the tag the work tree gives its image now, uncommitted changes \
                included, and no revision to keep gives it; to keep such a tag, commit the work tree and keep that \
                commit";
    let held: u64 = going.iter().map(|(_, _, bytes, _)| bytes).sum();
    let human = xtask::report::human_bytes(held);

    let dry = s.xtask(&["gc"]);
    let mut expected = lines("would delete");
    expected.push(note.to_string());
    expected.push(format!(
        "total: 2 tags would be deleted, 2 kept; they hold {held} bytes ({human}); run with --delete to delete them"
    ));
    assert_eq!(dry.success().stdout.lines().collect::<Vec<_>>(), expected, "{dry}");

    let json = s.xtask(&["gc", "--json"]);
    let rows_expected: Vec<Value> = going
        .iter()
        .map(|(t, digest, bytes, note)| {
            let mut d = decision(&ra, t, digest, "delete", None, *bytes);
            if !note.is_empty() {
                d["work_tree"] = json!(true);
            }
            d
        })
        .collect();
    assert_eq!(rows(json.success()), Value::Array(rows_expected), "{json}");

    // What goes is the same.
    let mut expected = lines("deleted");
    expected.push(note.to_string());
    let deleted = s.xtask(&["gc", "--delete"]);
    let stdout: Vec<&str> = deleted.success().stdout.lines().collect();
    assert_eq!(stdout[..3], expected, "{deleted}");
    assert_eq!(stdout.len(), 4, "{deleted}");
    assert_eq!(registry_tags(&ra), vec![tags[1].clone()]);
}

// ---- --changed-since -----------------------------------------------------------------------

#[test]
fn changed_since_selects_what_a_change_touched() {
    let s = Sandbox::new("changed");
    git_init(&s);
    s.scratch_image("base");
    s.write("dep/Dockerfile", format!("FROM {}:latest\nCOPY f /f\n", s.local("base")));
    s.write("dep/f", format!("{} dep\n", s.id));
    s.scratch_image("other");
    commit(&s, "three images");
    s.write("base/id", format!("{} base, changed\n", s.id));
    s.scratch_image("fresh");
    commit(&s, "base changed, fresh added");

    let list = |scheme: &str, rev: &str| {
        let out = run(s.cmd(&["list-all-images", "--changed-since", rev]).env("TAG_SCHEME", scheme));
        out.success().stdout.clone()
    };
    assert_eq!(list("content", "HEAD~1"), "base\ndep\nfresh\n");
    // The legacy tag decides: a dependent of a changed image is unchanged.
    assert_eq!(list("gvisor", "HEAD~1"), "base\nfresh\n");
    assert_eq!(list("content", "HEAD"), "");
    // Uncommitted work counts: the tree now against the revision.
    s.write("other/id", format!("{} other, changed\n", s.id));
    assert_eq!(list("content", "HEAD"), "other\n");
    git(s.path(), &["checkout", "-q", "--", "images/other"]);

    let json = s.xtask(&["list-all-test-images", "--changed-since", "HEAD~1", "--json"]);
    let names: Vec<String> =
        rows(json.success()).as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["base", "dep", "fresh"]);

    let tested = s.xtask(&["test-all-test-images", "--changed-since", "HEAD~1", "--json"]);
    let tag = |n: &str| s.tag(n);
    assert_eq!(
        tested.success().outcomes(),
        [
            outcome("base", &tag("base"), "built", Some(&s.log("base"))),
            outcome("dep", &tag("dep"), "built", Some(&s.log("dep"))),
            outcome("fresh", &tag("fresh"), "built", Some(&s.log("fresh"))),
        ]
    );
    assert!(tested.stderr.contains("changed since HEAD~1: 3 of 4 images"), "{tested}");

    let unknown = s.xtask(&["list-all-images", "--changed-since", "no-such-rev"]);
    assert_eq!(unknown.code, Some(1), "{unknown}");
    assert_eq!(
        unknown.stderr,
        format!(
            "error: `no-such-rev` is not a commit of the repository at {}: fetch it first (a shallow clone may lack it)\n",
            s.path().display()
        )
    );
}

// ---- adopting the tool ----------------------------------------------------------------------

/// The README's migration, its commands run as written (`cargo xtask` is
/// the binary built already, run as cargo runs it from the project) in a
/// tree shaped like gVisor's: the tool comes without its integration tests,
/// which cannot run there, and git ignores cargo's `target/`, once.
#[test]
fn the_migration_brings_no_test_suite_and_ignores_target() {
    let readme = fs::read_to_string(xtask::workspace_root().join("README.md")).unwrap();
    let section = readme.split("\n## Migrating from the legacy Makefile\n").nth(1).expect("the README migrates");
    let commands = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("its commands");
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gvisor-tree");
    assert!(Command::new("cp").arg("-a").arg(fixture).arg(&project).status().unwrap().success());
    let script =
        format!("set -e\ncargo() {{ shift; CARGO_MANIFEST_DIR=\"$PWD/xtask\" \"$XTASK_BIN\" \"$@\"; }}\n{commands}");
    let mut sh = Command::new("sh");
    support::clean_env(&mut sh);
    sh.arg("-c").arg(&script).current_dir(&project).env("TOOL", xtask::workspace_root());
    sh.env("XTASK_BIN", env!("CARGO_BIN_EXE_xtask")).env_remove("CARGO_MANIFEST_DIR");
    let migrated = run(&mut sh);
    assert!(
        migrated.success().stderr.ends_with("\nadded target/ to .gitignore: cargo builds the tool there\n"),
        "{migrated}"
    );

    for file in
        ["xtask/src/lib.rs", "xtask/Cargo.toml", "xtask/images.toml", ".cargo/config.toml", "Cargo.toml", "Cargo.lock"]
    {
        assert!(project.join(file).is_file(), "the migration did not bring {file}");
    }
    assert!(!project.join("xtask/tests").exists(), "the migration brought the tool's integration tests");
    assert_eq!(fs::read_to_string(project.join(".gitignore")).unwrap(), "target/\n");
    // The unit tests come with the sources: none may need a file of this
    // workspace outside the crate, which the project does not have.
    for entry in walkdir::WalkDir::new(project.join("xtask/src")) {
        let path = entry.unwrap().into_path();
        if path.extension().is_some_and(|x| x == "rs") {
            let text = fs::read_to_string(&path).unwrap();
            assert!(!text.contains(".join(\"../"), "{} reads a file outside the crate", path.display());
        }
    }

    // init again, from the legacy file kept aside: .gitignore stays as it is.
    fs::copy(format!("{fixture}/tools/images.mk"), project.join("legacy.mk")).unwrap();
    let mut init = Command::new(env!("CARGO_BIN_EXE_xtask"));
    support::clean_env(&mut init).args(["init", "--force", "--from-makefile", "legacy.mk"]);
    let again = run(init.current_dir(&project).env("CARGO_MANIFEST_DIR", project.join("xtask")));
    assert!(!again.success().stderr.contains(".gitignore"), "{again}");
    assert_eq!(fs::read_to_string(project.join(".gitignore")).unwrap(), "target/\n");
}
