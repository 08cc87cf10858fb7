//! Compare: two builds of an image side by side. Their configs, less the
//! fields that only record when and where the build ran; and each layer,
//! entry by entry (path, type, content digest, mode, owner, link target,
//! and apart from those the time each entry was last changed), the
//! differing paths grouped by the Dockerfile step that made the layer and
//! by kind of difference.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::archive::{Layer, Summary};

/// Config fields that record when or where a build ran rather than what
/// it made; the comparison leaves them out. Each is a path of keys, through
/// arrays (`history`, `created`: the `created` of every history entry).
pub const BUILD_TIME_FIELDS: [&[&str]; 8] = [
    // When the image, and each step of it, was made.
    &["created"],
    &["history", "created"],
    // podman: `FROM <ID of the image the step ran on>`, an intermediate
    // image whose ID holds its own time.
    &["history", "comment"],
    // docker's classic builder: the container the last step ran in, its
    // config, and the intermediate image that step ran on.
    &["container"],
    &["container_config"],
    &["config", "Image"],
    // BuildKit: the inline cache metadata every build of the tool carries,
    // which records when each layer was made.
    &["moby.buildkit.cache.v0"],
    // The layers' digests: the layers are compared entry by entry instead,
    // and a file's time alone changes its layer's digest.
    &["rootfs", "diff_ids"],
];

/// How an entry differs between the two builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A file's content, a link's target, a device's numbers or the type.
    Content,
    Mode,
    /// The owner: uid or gid.
    Owner,
    OnlyInFirst,
    OnlyInSecond,
    /// When it was last changed, alone of all: no part of what the image
    /// holds, but part of its digest.
    Mtime,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Content => "content",
            Kind::Mode => "mode",
            Kind::Owner => "owner",
            Kind::OnlyInFirst => "only in the first build",
            Kind::OnlyInSecond => "only in the second build",
            Kind::Mtime => "mtime",
        }
    }
}

/// A config field whose value differs: its path (`config.Env`,
/// `history[4].created_by`) and each build's value, as compact JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    pub field: String,
    pub first: String,
    pub second: String,
}

/// The differences in one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDiff {
    /// From 1, the base's first layer first.
    pub layer: usize,
    /// The step that made it, shortened (`RUN date > /stamp`).
    pub step: String,
    /// The differing paths, sorted, by kind.
    pub paths: BTreeMap<Kind, Vec<String>>,
}

/// How two builds of an image differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub config: Vec<FieldDiff>,
    /// The number of layers of each build, when they differ.
    pub layer_counts: Option<(usize, usize)>,
    /// The layers with a difference, in order.
    pub layers: Vec<LayerDiff>,
}

impl Comparison {
    /// Whether the builds made the same image, file times aside.
    pub fn reproducible(&self) -> bool {
        self.config.is_empty()
            && self.layer_counts.is_none()
            && self.layers.iter().all(|l| l.paths.keys().all(|k| *k == Kind::Mtime))
    }

    /// Whether some entry's time differs.
    pub fn file_times_differ(&self) -> bool {
        self.layers.iter().any(|l| l.paths.contains_key(&Kind::Mtime))
    }
}

/// How `second` differs from `first`.
pub fn compare(first: &Summary, second: &Summary) -> Comparison {
    let mut config = Vec::new();
    let (mut a, mut b) = (first.config.clone(), second.config.clone());
    for path in BUILD_TIME_FIELDS {
        remove(&mut a, path);
        remove(&mut b, path);
    }
    differences("", &a, &b, &mut config);
    let steps = steps(&first.config, first.layers.len());
    let layers = first
        .layers
        .iter()
        .zip(&second.layers)
        .zip(steps)
        .enumerate()
        .map(|(at, ((a, b), step))| LayerDiff { layer: at + 1, step, paths: layer_differences(a, b) })
        .filter(|l| !l.paths.is_empty())
        .collect();
    let counts = (first.layers.len(), second.layers.len());
    Comparison { config, layer_counts: (counts.0 != counts.1).then_some(counts), layers }
}

/// Removes the field at `path` from `value`, in every element of the arrays on the way.
fn remove(value: &mut Value, path: &[&str]) {
    match (value, path) {
        (Value::Array(items), _) => items.iter_mut().for_each(|item| remove(item, path)),
        (Value::Object(map), [last]) => {
            map.remove(*last);
        }
        (Value::Object(map), [first, rest @ ..]) => {
            if let Some(inner) = map.get_mut(*first) {
                remove(inner, rest);
            }
        }
        _ => {}
    }
}

/// Where `a` and `b` differ, field by field: objects key by key, arrays of
/// one length item by item, anything else whole.
fn differences(at: &str, a: &Value, b: &Value, out: &mut Vec<FieldDiff>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let field = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
                differences(&field, x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (k, (a, b)) in x.iter().zip(y).enumerate() {
                differences(&format!("{at}[{k}]"), a, b, out);
            }
        }
        _ if a != b => out.push(FieldDiff { field: at.to_string(), first: a.to_string(), second: b.to_string() }),
        _ => {}
    }
}

/// How the entries of one layer differ between the builds.
fn layer_differences(a: &Layer, b: &Layer) -> BTreeMap<Kind, Vec<String>> {
    let mut out: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for path in paths {
        let mut kinds = Vec::new();
        match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) => {
                if (x.kind, x.digest, &x.link) != (y.kind, y.digest, &y.link) {
                    kinds.push(Kind::Content);
                }
                if x.mode != y.mode {
                    kinds.push(Kind::Mode);
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    kinds.push(Kind::Owner);
                }
                if x.mtime != y.mtime {
                    kinds.push(Kind::Mtime);
                }
            }
            (Some(_), None) => kinds.push(Kind::OnlyInFirst),
            (None, _) => kinds.push(Kind::OnlyInSecond),
        }
        for kind in kinds {
            out.entry(kind).or_default().push(path.clone());
        }
    }
    out
}

/// The step that made each of `layers` layers, from the config's history
/// (its entries that made a layer, in order); `layer N` where the history
/// does not say.
fn steps(config: &Value, layers: usize) -> Vec<String> {
    let made: Vec<&Value> = match config["history"].as_array() {
        Some(history) => history.iter().filter(|h| h["empty_layer"] != Value::Bool(true)).collect(),
        None => Vec::new(),
    };
    (0..layers)
        .map(|k| match made.get(k).and_then(|h| h["created_by"].as_str()).filter(|_| made.len() == layers) {
            Some(created_by) => step(created_by),
            None => format!("layer {}", k + 1),
        })
        .collect()
}

/// The most characters of a step shown.
const STEP_CHARS: usize = 72;

/// A history entry's `created_by` as the Dockerfile step it was:
/// `RUN date > /stamp` for docker's classic builder's and podman's
/// `/bin/sh -c date > /stamp`, BuildKit's `RUN /bin/sh -c date > /stamp #
/// buildkit`, and either with the build arguments the RUN saw (`|1 A=b
/// /bin/sh -c …`); `COPY file:<digest> in /f` for `/bin/sh -c #(nop) COPY …`.
/// Digests are cut to 12 digits, and the whole to [`STEP_CHARS`].
pub fn step(created_by: &str) -> String {
    let text = created_by.trim();
    let text = text.strip_suffix("# buildkit").map_or(text, str::trim_end);
    let (run, text) = match text.strip_prefix("RUN ") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text),
    };
    // `|2 A=1 B=2 /bin/sh -c …`: the build arguments the step saw, which
    // may hold spaces of their own.
    let text = match text.strip_prefix('|').filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) {
        Some(rest) => rest.find(" /bin/sh -c ").map_or(text, |at| &rest[at + 1..]),
        None => text,
    };
    let shown = match text.strip_prefix("/bin/sh -c ") {
        Some(command) => match command.strip_prefix("#(nop)") {
            Some(instruction) => instruction.trim().to_string(),
            None => format!("RUN {}", command.trim()),
        },
        None if run => format!("RUN {text}"),
        None => text.to_string(),
    };
    let shown = short_digests(&shown);
    if shown.chars().count() > STEP_CHARS {
        format!("{}…", shown.chars().take(STEP_CHARS - 1).collect::<String>())
    } else {
        shown
    }
}

/// `text` with every run of 64 hex digits cut to its first 12.
fn short_digests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() == 64 {
            out.push_str(&run[..12]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::archive::{Entry, Kind as EntryKind};
    use super::*;

    fn entry(content: u8, mode: u32, uid: u64, mtime: &str) -> Entry {
        Entry { kind: EntryKind::File, digest: Some([content; 32]), mode, uid, gid: 0, link: None, mtime: mtime.into() }
    }

    fn layer(entries: &[(&str, Entry)]) -> Layer {
        entries.iter().map(|(p, e)| (p.to_string(), e.clone())).collect()
    }

    fn config(created: &str, created_by: &[&str]) -> Value {
        let history: Vec<Value> =
            created_by.iter().map(|c| json!({ "created": created, "created_by": c, "comment": created })).collect();
        json!({
            "architecture": "amd64",
            "created": created,
            "container": created,
            "container_config": { "Hostname": created },
            "config": { "Env": ["A=1"], "Image": created },
            "moby.buildkit.cache.v0": created,
            "history": history,
            "rootfs": { "type": "layers", "diff_ids": [created] },
        })
    }

    #[test]
    fn build_times_are_no_difference() {
        let first = Summary { config: config("one", &["/bin/sh -c x"]), layers: vec![layer(&[])] };
        let second = Summary { config: config("two", &["/bin/sh -c x"]), layers: vec![layer(&[])] };
        let same = compare(&first, &second);
        assert_eq!(same, Comparison::default());
        assert!(same.reproducible() && !same.file_times_differ());

        let mut other = second.clone();
        other.config["config"]["Env"] = json!(["A=2"]);
        other.config["history"][0]["created_by"] = json!("/bin/sh -c y");
        assert_eq!(
            compare(&first, &other).config,
            [
                FieldDiff { field: "config.Env[0]".into(), first: "\"A=1\"".into(), second: "\"A=2\"".into() },
                FieldDiff {
                    field: "history[0].created_by".into(),
                    first: "\"/bin/sh -c x\"".into(),
                    second: "\"/bin/sh -c y\"".into()
                },
            ]
        );
    }

    #[test]
    fn entries_differ_by_kind_under_their_step() {
        let steps = ["/bin/sh -c #(nop) ADD file:abc in / ", "/bin/sh -c date > /stamp"];
        let base = layer(&[("/bin/sh", entry(1, 0o755, 0, "0"))]);
        let first = Summary {
            config: config("one", &steps),
            layers: vec![
                base.clone(),
                layer(&[
                    ("/stamp", entry(2, 0o644, 0, "10")),
                    ("/etc", entry(3, 0o755, 0, "10")),
                    ("/tmp/a", entry(4, 0o644, 0, "10")),
                ]),
            ],
        };
        let second = Summary {
            config: config("two", &steps),
            layers: vec![
                base,
                layer(&[
                    ("/stamp", entry(5, 0o600, 1, "11")),
                    ("/etc", entry(3, 0o755, 0, "11")),
                    ("/tmp/b", entry(4, 0o644, 0, "10")),
                ]),
            ],
        };
        let comparison = compare(&first, &second);
        let paths = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            comparison,
            Comparison {
                config: vec![],
                layer_counts: None,
                layers: vec![LayerDiff {
                    layer: 2,
                    step: "RUN date > /stamp".into(),
                    paths: BTreeMap::from([
                        (Kind::Content, paths(&["/stamp"])),
                        (Kind::Mode, paths(&["/stamp"])),
                        (Kind::Owner, paths(&["/stamp"])),
                        (Kind::OnlyInFirst, paths(&["/tmp/a"])),
                        (Kind::OnlyInSecond, paths(&["/tmp/b"])),
                        (Kind::Mtime, paths(&["/etc", "/stamp"])),
                    ]),
                }],
            }
        );
        assert!(!comparison.reproducible() && comparison.file_times_differ());
    }

    #[test]
    fn times_alone_keep_it_reproducible() {
        let first = Summary { config: config("one", &["x"]), layers: vec![layer(&[("/t", entry(0, 0o644, 0, "1"))])] };
        let mut second = first.clone();
        second.layers[0].get_mut("/t").unwrap().mtime = "2".into();
        let comparison = compare(&first, &second);
        assert!(comparison.reproducible() && comparison.file_times_differ());
        assert_eq!(comparison.layers[0].step, "x");
        // One more layer in the second build: not the same image.
        second.layers.push(layer(&[]));
        second.config = config("two", &["x", "y"]);
        let comparison = compare(&first, &second);
        assert_eq!(comparison.layer_counts, Some((1, 2)));
        assert!(!comparison.reproducible());
    }

    #[test]
    fn steps_as_the_dockerfile_said_them() {
        let digest = "662ccb3385420becb5514f28e79a6bbe83af61451ee56dd11678a81bfcfefa3f";
        for (created_by, shown) in [
            ("/bin/sh -c date > /stamp", "RUN date > /stamp".to_string()),
            ("RUN /bin/sh -c date > /stamp # buildkit", "RUN date > /stamp".into()),
            ("|1 SOURCE_DATE_EPOCH=7 /bin/sh -c touch /t", "RUN touch /t".into()),
            ("RUN |2 A=a b B=c /bin/sh -c echo $A # buildkit", "RUN echo $A".into()),
            (&format!("/bin/sh -c #(nop) COPY file:{digest} in /f "), "COPY file:662ccb338542 in /f".into()),
            ("COPY f /f # buildkit", "COPY f /f".into()),
            ("RUN sh -c 'exit 0' # buildkit", "RUN sh -c 'exit 0'".into()),
            (&format!("/bin/sh -c {}", "x".repeat(100)), format!("RUN {}…", "x".repeat(67))),
        ] {
            assert_eq!(step(created_by), shown, "{created_by}");
        }
        let history = json!({ "history": [
            { "created_by": "ADD a", "empty_layer": false },
            { "created_by": "ENV A=1", "empty_layer": true },
            { "created_by": "RUN /bin/sh -c b # buildkit" },
        ]});
        assert_eq!(steps(&history, 2), ["ADD a", "RUN b"]);
        assert_eq!(steps(&history, 3), ["layer 1", "layer 2", "layer 3"]);
    }
}
