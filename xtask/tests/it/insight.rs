//! Seeing the images, end to end against the real engine and the loopback
//! registry `tests/run` starts: `status` (local and registry state, what the
//! local image is, its cost in engine calls), the labels built images carry
//! (revision, source, the tool's own) and keep through a pull, and the bytes
//! the end-of-run summary reports.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use support::{engine, engine_ok, git, run, untag, Sandbox};
use xtask::report::human_bytes;

/// What the engine itself says of a local image.
struct Inspected {
    id: String,
    size: u64,
    layers: usize,
    created: String,
    labels: BTreeMap<String, String>,
}

fn inspect(reference: &str) -> Inspected {
    let out = engine_ok(&["image", "inspect", reference]);
    let value: Value = serde_json::from_str(&out).unwrap();
    let image = &value[0];
    let id = image["Id"].as_str().unwrap();
    let mut labels: BTreeMap<String, String> =
        serde_json::from_value(image["Config"]["Labels"].clone()).unwrap_or_default();
    // podman's own, on everything it builds.
    labels.retain(|k, _| !k.starts_with("io.buildah."));
    Inspected {
        id: if id.contains(':') { id.to_string() } else { format!("sha256:{id}") },
        size: image["Size"].as_u64().unwrap(),
        layers: image["RootFS"]["Layers"].as_array().unwrap().len(),
        created: image["Created"].as_str().unwrap().to_string(),
        labels,
    }
}

/// The host's platform, as `status` writes it.
fn platform() -> &'static str {
    xtask::model::Arch::host().unwrap().platform()
}

/// The table `status` prints: columns two blanks apart, as wide as their
/// widest cell, SIZE and LAYERS aligned right.
fn render(rows: &[[String; 8]]) -> String {
    let header = ["IMAGE", "TAG", "LOCAL", "REGISTRY", "SIZE", "LAYERS", "ARCH", "BUILT"].map(String::from);
    let all: Vec<&[String; 8]> = std::iter::once(&header).chain(rows).collect();
    let width = |k: usize| all.iter().map(|r| r[k].len()).max().unwrap();
    let mut out = String::new();
    for row in &all {
        let cells: Vec<String> = (0..8)
            .map(|k| {
                if k == 4 || k == 5 {
                    format!("{:>w$}", row[k], w = width(k))
                } else {
                    format!("{:<w$}", row[k], w = width(k))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `2026-01-02T03:04:05.678Z` to the second, as the table shows it.
fn to_the_second(created: &str) -> String {
    let zone = created[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    format!("{}{zone}", &created[..19])
}

/// Makes the directory above the sandbox's images root a git checkout with
/// everything under `images/` committed; returns the commit.
fn git_checkout(s: &Sandbox) -> String {
    git(s.path(), &["init", "-q"]);
    git(s.path(), &["add", "images"]);
    git(s.path(), &["commit", "-q", "-m", "images"]);
    git(s.path(), &["rev-parse", "HEAD"]).trim().to_string()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A settings file beside the sandbox's, with `text`.
fn settings_file(s: &Sandbox, text: &str) -> std::path::PathBuf {
    let file = s.path().join("with-source.toml");
    fs::write(&file, text).unwrap();
    file
}

/// Every state `status` tells apart, in its table, `--json` and `--markdown`,
/// and what the engine and the registry are asked for it.
#[test]
fn status_tells_each_state() {
    let s = Sandbox::new("status");
    for image in ["current", "pushed", "stale", "absent"] {
        s.scratch_image(image);
    }
    let commit = git_checkout(&s);
    s.xtask(&["load", "current"]).success();
    s.xtask(&["push", "pushed"]).success();
    s.xtask(&["load", "stale"]).success();
    let old_stale = s.tag("stale");
    s.write("stale/id", format!("{} stale, changed\n", s.id));
    let tags: BTreeMap<&str, String> = ["current", "pushed", "stale", "absent"].map(|i| (i, s.tag(i))).into();
    assert_ne!(tags["stale"], old_stale);

    let out = s.xtask(&["status", "--json"]);
    let document: Value = serde_json::from_str(&out.success().stdout).unwrap();
    assert_eq!(document["schema"], json!(1), "{out}");
    let rows = document["images"].clone();
    // Each image was built from the clean commit (`stale` before its change).
    let local = |reference: String| -> Value {
        let seen = inspect(&reference);
        json!({
            "state": if reference.ends_with(":latest") { "stale" } else { "current" },
            "reference": reference,
            "id": seen.id,
            "size": seen.size,
            "layers": seen.layers,
            "platform": platform(),
            "created": seen.created,
            "revision": commit,
            "source": null,
        })
    };
    let row = |image: &str, local: Value, registry: &str| {
        json!({
            "name": image,
            "path": image,
            "arch": support::arch(),
            "tag": tags[image],
            "local": format!("{}:{}", s.local(image), tags[image]),
            "remote": format!("{}:{}", s.remote(image), tags[image]),
            "test": true,
            "local_state": local,
            "registry_state": { "state": registry, "reference": format!("{}:{}", s.remote(image), tags[image]) },
        })
    };
    assert_eq!(
        rows,
        json!([
            row("absent", json!({ "state": "absent" }), "lacks-tag"),
            row("current", local(format!("{}:{}", s.local("current"), tags["current"])), "lacks-tag"),
            row("pushed", local(format!("{}:{}", s.local("pushed"), tags["pushed"])), "has-tag"),
            row("stale", local(format!("{}:latest", s.local("stale"))), "lacks-tag"),
        ]),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");

    // The table, and the Markdown summary, say the same; --local asks the
    // engine twice (the listing, one inspection) and the registry nothing.
    let recorder = s.recording_engine();
    let summary = s.path().join("summary.md");
    fs::write(&summary, "# CI run\n\n").unwrap();
    let markdown = summary.display().to_string();
    let table = run(s.cmd(&["status", "--local", "--markdown", &markdown]).env("PATH", &recorder.path));
    let calls = recorder.take();
    let program = engine().program();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].starts_with(&format!("{program} images ")), "{calls:#?}");
    assert!(calls[1].starts_with(&format!("{program} image inspect ")), "{calls:#?}");
    // (image, local state, the local image described)
    let described = [
        ("absent", "absent", None),
        ("current", "current", Some(format!("{}:{}", s.local("current"), tags["current"]))),
        ("pushed", "current", Some(format!("{}:{}", s.local("pushed"), tags["pushed"]))),
        ("stale", "stale", Some(format!("{}:latest", s.local("stale")))),
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = described
        .iter()
        .map(|(image, state, reference)| {
            let seen = reference.as_deref().map(inspect);
            [
                image.to_string(),
                tags[image].clone(),
                state.to_string(),
                "unknown (--local)".to_string(),
                seen.as_ref().map_or_else(dash, |i| human_bytes(i.size)),
                seen.as_ref().map_or_else(dash, |i| i.layers.to_string()),
                seen.as_ref().map_or_else(dash, |_| platform().trim_start_matches("linux/").to_string()),
                seen.as_ref().map_or_else(dash, |i| to_the_second(&i.created)),
            ]
        })
        .collect();
    let expected = render(&rows);
    assert_eq!(table.success().stdout, expected, "{table}");
    let mut md = format!(
        "# CI run\n\n### Images for {}\n\n\
         | Image | Tag | Local | Registry | Size | Layers | Arch | Built | Revision |\n\
         | --- | --- | --- | --- | ---: | ---: | --- | --- | --- |\n",
        support::arch()
    );
    for (row, (_, _, reference)) in rows.iter().zip(&described) {
        let revision = if reference.is_some() { format!("`{}`", &commit[..12]) } else { dash() };
        let [image, tag, state, registry, size, layers, arch, built] = row;
        md.push_str(&format!(
            "| {image} | `{tag}` | {state} | {registry} | {size} | {layers} | {arch} | {built} | {revision} |\n"
        ));
    }
    md.push('\n');
    assert_eq!(fs::read_to_string(&summary).unwrap(), md);
}

/// A registry that cannot be asked leaves the registry state unknown, says
/// why once, and still shows the local side.
#[test]
fn status_with_the_registry_down() {
    let mut s = Sandbox::new("status-down");
    s.scratch_image("a");
    s.scratch_image("b");
    s.use_registry("127.0.0.1:1");
    let out = s.xtask(&["status", "--json"]);
    let document: Value = serde_json::from_str(&out.success().stdout).unwrap();
    let rows = document["images"].clone();
    let states: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["local_state"]["state"].as_str().unwrap(), r["registry_state"]["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("absent", "unknown"), ("absent", "unknown")], "{out}");
    let reason = rows[0]["registry_state"]["reason"].as_str().unwrap();
    assert_eq!(reason, "no registry at 127.0.0.1:1 (nothing listens there)", "{out}");
    assert_eq!(
        out.stderr,
        format!("warning: cannot ask the registry about a, b; the first error: {reason}\n"),
        "{out}"
    );
    let table = s.xtask(&["status"]);
    let cells: Vec<Vec<&str>> = table
        .success()
        .stdout
        .lines()
        .map(|l| l.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect())
        .collect();
    assert_eq!(cells[1][2..4], ["absent", "unknown (error)"], "{table}");
    assert_eq!(cells[2][2..4], ["absent", "unknown (error)"], "{table}");
}

/// Built images carry the revision (`-dirty` when their directory has
/// uncommitted changes), the source setting and the tool's own labels; the
/// labels leave tags alone; a pulled image keeps them; and the summary gives
/// the bytes pulled, built and pushed.
#[test]
fn labels_record_provenance_and_survive_a_pull() {
    let s = Sandbox::new("labels");
    s.scratch_image("lab");
    s.scratch_image("other");
    let commit = git_checkout(&s);
    let config = settings_file(&s, "source = \"https://example.com/images.git\"\n");
    let with_source = |args: &[&str]| run(s.cmd(args).env("IMAGES_CONFIG", &config));
    let tag = s.tag("lab");
    assert_eq!(
        run(s.cmd(&["local-image", "--print", "tag", "lab"]).env("IMAGES_CONFIG", &config)).success().stdout,
        format!("{tag}\n"),
        "labels must not change the tag"
    );

    let pushed = with_source(&["push", "lab"]);
    pushed.success();
    let local = format!("{}:{tag}", s.local("lab"));
    let built = inspect(&local);
    let prefix = format!("local.xtask-test.{}", s.id);
    let expected = labels(&[
        ("org.opencontainers.image.revision", &commit),
        ("org.opencontainers.image.source", "https://example.com/images.git"),
        (&format!("{prefix}.path"), "lab"),
        (&format!("{prefix}.tag"), &tag),
        (&format!("{prefix}.tag-scheme"), "content"),
        // Built on no external base.
        (&format!("{prefix}.bases"), ""),
    ]);
    assert_eq!(built.labels, expected, "{pushed}");
    // docker's classic builder and podman make a step of each `LABEL`
    // instruction (and of each `--label`): all the labels take one.
    let log = fs::read_to_string(s.log("lab")).unwrap();
    let label_steps = log.lines().filter(|l| l.contains(" : LABEL ") || l.contains(": LABEL ")).count();
    assert!(label_steps <= 1, "{label_steps} LABEL steps:\n{log}");
    let size = human_bytes(built.size);
    assert!(
        pushed.stderr_lines().contains(&format!("bytes: 0 B pulled, {size} built, {size} pushed").as_str()),
        "{pushed}"
    );

    // Pulled, the image is the one pushed, labels and all.
    untag(&s.local_names());
    let loaded = with_source(&["load", "lab"]);
    loaded.success();
    // Sizes are the engine's: podman counts a pulled image apart from the one it built.
    let pulled = inspect(&local);
    let size = human_bytes(pulled.size);
    assert!(
        loaded.stderr_lines().contains(&format!("bytes: {size} pulled, 0 B built, 0 B pushed").as_str()),
        "{loaded}"
    );
    assert_eq!((pulled.id, pulled.labels), (built.id.clone(), expected), "{loaded}");

    // Present images report no bytes; nor does a run without a source
    // setting rebuild them: the labels are not part of the tag.
    let again = s.xtask(&["load", "lab", "--json"]);
    assert_eq!(again.success().outcomes(), [support::outcome("lab", &tag, "present", None)], "{again}");
    assert!(!again.stderr.contains("bytes:"), "{again}");

    // An uncommitted change: the next build is from a dirty revision, which
    // `status` shows; the other image's directory is clean.
    s.write("lab/id", format!("{} uncommitted\n", s.id));
    let dirty_tag = s.tag("lab");
    s.xtask(&["load", "lab", "other"]).success();
    let status = s.xtask(&["status", "--local", "--json"]);
    let document: Value = serde_json::from_str(&status.success().stdout).unwrap();
    let rows = document["images"].clone();
    let revisions: Vec<(&str, &str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["name"].as_str().unwrap(), r["tag"].as_str().unwrap(), r["local_state"]["revision"].as_str().unwrap())
        })
        .collect();
    let other_tag = s.tag("other");
    let dirty = format!("{commit}-dirty");
    assert_eq!(
        revisions,
        [("lab", dirty_tag.as_str(), dirty.as_str()), ("other", other_tag.as_str(), commit.as_str())],
        "{status}"
    );
    assert_eq!(inspect(&format!("{}:{dirty_tag}", s.local("lab"))).labels.get("org.opencontainers.image.source"), None);
}

/// Outside a git checkout, builds carry no revision; the tool's own labels
/// still say what the image is, under the other tag scheme too.
#[test]
fn without_git_no_revision() {
    let s = Sandbox::new("no-git");
    s.scratch_image("plain");
    assert!(!Path::new(&s.images).join(".git").exists());
    let built = run(s.cmd(&["load", "plain"]).env("TAG_SCHEME", "gvisor"));
    built.success();
    let tag = support::run(s.cmd(&["local-image", "--print", "tag", "plain"]).env("TAG_SCHEME", "gvisor"))
        .stdout
        .trim()
        .to_string();
    let prefix = format!("local.xtask-test.{}", s.id);
    assert_eq!(
        inspect(&format!("{}:{tag}", s.local("plain"))).labels,
        labels(&[
            (&format!("{prefix}.path"), "plain"),
            (&format!("{prefix}.tag"), &tag),
            (&format!("{prefix}.tag-scheme"), "gvisor"),
            (&format!("{prefix}.bases"), ""),
        ]),
        "{built}"
    );
}
