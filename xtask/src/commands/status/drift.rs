//! `status --bases`: whether the external bases each image was built on are
//! still where their tags point. The image's bases label (see
//! [`provenance`]) is read from the local image, else from the registry's
//! copy of the tag (its config blob), else from a stale local image; each
//! base's tag is resolved through its registry once, however many images
//! name it, several at once. Nothing here runs without `--bases`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{LocalState, RegistryState, Status, NOT_ASKED};
use crate::git::provenance::{self, BaseDigest};
use crate::model::{escape, Reference};
use crate::registry::{self, Registry};

/// How many registries are asked at once.
const PARALLEL: usize = 8;

/// Where an image's bases stand, or one base's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Drift {
    /// Every base's tag points where it did at the build.
    Current,
    /// A base's tag points elsewhere now.
    Moved,
    /// A registry could not be asked (the base's, or the one holding the
    /// only copy of the image): neither moved nor current.
    Unchecked,
    /// The image says nothing of its bases.
    Unknown,
}

/// An image's bases, as `--json` prints them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BasesStatus {
    pub state: Drift,
    /// The image whose label was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Why the state is unknown or unchecked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each base the label names.
    pub bases: Vec<BaseCheck>,
}

/// One base of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseCheck {
    /// The `name:tag` the image's Dockerfile follows.
    pub reference: String,
    /// The digest the image was built on.
    pub built: String,
    /// Where the tag points now; `null` when its registry could not be asked.
    pub now: Option<String>,
    pub state: Drift,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where an image's bases label is read from.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    /// A local image's labels.
    Local(&'a str, &'a BTreeMap<String, String>),
    /// The registry's copy of the image's tag.
    Registry(&'a str),
    /// None: the state and why.
    Unread(Drift, String),
}

/// The image whose label tells the bases of `row`: the local image with the
/// current tag, else the registry's (the image as a pull would bring it),
/// else the stale local one `status` describes.
fn source(row: &Status) -> Source<'_> {
    let local = row.local.image.as_ref().map(|i| Source::Local(&i.reference, &i.labels));
    match (row.local.state, row.registry.state, local) {
        (LocalState::Current, _, Some(local)) => local,
        (_, RegistryState::HasTag, _) => Source::Registry(&row.registry.reference),
        (_, _, Some(local)) => local,
        (_, RegistryState::Unknown, None) if row.registry.reason.as_deref() == Some(NOT_ASKED) => {
            Source::Unread(Drift::Unknown, "no image here, and the registry was not asked: --local".into())
        }
        (_, RegistryState::Unknown, None) => {
            let reason = row.registry.reason.clone().unwrap_or_default();
            Source::Unread(Drift::Unchecked, format!("the registry cannot be asked for the image: {reason}"))
        }
        _ => Source::Unread(Drift::Unknown, "no image here or in the registry".into()),
    }
}

/// The bases an image's label names, or where they stand without them, and why.
type Recorded = Result<Vec<BaseDigest>, (Drift, String)>;

/// The bases an image's labels name.
fn recorded(labels: &BTreeMap<String, String>, key: &str) -> Recorded {
    let value = labels.get(key).ok_or((Drift::Unknown, "built before bases were recorded".to_string()))?;
    provenance::read_bases(value).map_err(|reason| (Drift::Unknown, reason))
}

/// Where the bases `built` on stand, given where each tag points now (or
/// why its registry could not tell).
pub fn decide(built: Vec<BaseDigest>, now: &HashMap<String, Result<String, String>>) -> (Drift, Vec<BaseCheck>) {
    let checks: Vec<BaseCheck> = built
        .into_iter()
        .map(|b| {
            let answer = now.get(&b.reference).cloned().unwrap_or_else(|| Err("not asked".into()));
            let (state, now, reason) = match answer {
                Ok(now) if now == b.digest => (Drift::Current, Some(now), None),
                Ok(now) => (Drift::Moved, Some(now), None),
                Err(reason) => (Drift::Unchecked, None, Some(reason)),
            };
            BaseCheck { reference: b.reference, built: b.digest, now, state, reason }
        })
        .collect();
    let any = |state| checks.iter().any(|c| c.state == state);
    let state = if any(Drift::Moved) {
        Drift::Moved
    } else if any(Drift::Unchecked) {
        Drift::Unchecked
    } else {
        Drift::Current
    };
    (state, checks)
}

/// Fills in the bases of each row: reads the labels (the registry's copies
/// of images not here, several at once), then resolves every base named,
/// each once; warns once of each registry that could not be asked.
pub fn check(rows: &mut [Status], registry: &Registry, local_prefix: &str) {
    let key = provenance::bases_key(local_prefix);
    let sources: Vec<Source> = rows.iter().map(source).collect();
    let remote: Vec<&str> =
        sources.iter().filter_map(|s| if let Source::Registry(r) = s { Some(*r) } else { None }).collect();
    let fetched = registry::each(&remote, PARALLEL, |r| registry.labels(r));
    let mut fetched: HashMap<&str, _> = remote.iter().copied().zip(fetched).collect();
    let read: Vec<(Option<String>, Recorded)> = sources
        .into_iter()
        .map(|source| match source {
            Source::Local(reference, labels) => (Some(reference.to_string()), recorded(labels, &key)),
            Source::Registry(reference) => {
                let labels = match fetched.remove(reference) {
                    Some(Ok(Some(labels))) => recorded(&labels, &key),
                    Some(Ok(None)) => Err((Drift::Unknown, "the registry no longer has the image".into())),
                    Some(Err(e)) => Err((Drift::Unchecked, format!("the registry's image cannot be read: {e:#}"))),
                    None => Err((Drift::Unchecked, "not asked".into())),
                };
                (Some(reference.to_string()), labels)
            }
            Source::Unread(state, reason) => (None, Err((state, reason))),
        })
        .collect();

    let asked: BTreeSet<&str> =
        read.iter().filter_map(|(_, r)| r.as_ref().ok()).flatten().map(|b| b.reference.as_str()).collect();
    let asked: Vec<&str> = asked.into_iter().collect();
    let answers = registry::each(&asked, PARALLEL, |r| match registry.manifest(r) {
        Ok(Some(manifest)) => Ok(manifest.digest),
        Ok(None) => Err(match Reference::parse(r) {
            Ok(parsed) => format!("registry {} has no {parsed}", parsed.host),
            Err(e) => format!("{e:#}"),
        }),
        Err(e) => Err(format!("{e:#}")),
    });
    let now: HashMap<String, Result<String, String>> = asked.iter().map(|r| r.to_string()).zip(answers).collect();

    for (row, (reference, read)) in rows.iter_mut().zip(read) {
        row.bases = Some(match read {
            Ok(built) => {
                let (state, bases) = decide(built, &now);
                BasesStatus { state, reference, reason: None, bases }
            }
            Err((state, reason)) => BasesStatus { state, reference, reason: Some(reason), bases: Vec::new() },
        });
    }
    warn_unchecked(rows);
}

/// Says once why each base could not be checked, naming the images built
/// on it, and why each image whose label could not be read was not.
fn warn_unchecked(rows: &[Status]) {
    let mut bases: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
    for row in rows {
        let Some(status) = row.bases.as_ref().filter(|b| b.state == Drift::Unchecked) else { continue };
        let name = row.image.name.as_str();
        if let (true, Some(reason)) = (status.bases.is_empty(), status.reason.as_deref()) {
            eprintln!("warning: could not check the bases of {name}: {}", escape(reason));
        }
        for base in status.bases.iter().filter(|b| b.state == Drift::Unchecked) {
            let reason = base.reason.as_deref().unwrap_or_default();
            bases.entry(&base.reference).or_insert((reason, Vec::new())).1.push(name);
        }
    }
    for (reference, (reason, names)) in bases {
        eprintln!("warning: could not check the base {reference} of {}: {}", names.join(", "), escape(reason));
    }
}

/// The text `status` shows of an image's bases.
pub fn cell(bases: &BasesStatus) -> String {
    match bases.state {
        Drift::Current => "bases current".into(),
        Drift::Moved => {
            let moved = bases.bases.iter().filter(|b| b.state == Drift::Moved);
            let moved: Vec<String> = moved
                .map(|b| format!("base moved: {} {} → {}", b.reference, b.built, b.now.as_deref().unwrap_or("?")))
                .collect();
            moved.join("; ")
        }
        Drift::Unchecked => "could not check bases".into(),
        Drift::Unknown => format!("bases unknown ({})", escape(bases.reason.as_deref().unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::{markdown_table, table, Local, LocalImage, RegistryStatus};
    use crate::model::{Arch, ImageInfo};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn built(pairs: &[(&str, char)]) -> Vec<BaseDigest> {
        pairs.iter().map(|(r, d)| BaseDigest { reference: r.to_string(), digest: digest(*d) }).collect()
    }

    fn check(reference: &str, built: char, now: Option<char>, state: Drift, reason: Option<&str>) -> BaseCheck {
        BaseCheck {
            reference: reference.into(),
            built: digest(built),
            now: now.map(digest),
            state,
            reason: reason.map(String::from),
        }
    }

    #[test]
    fn a_base_moved_when_its_tag_points_elsewhere_and_is_never_guessed() {
        let now: HashMap<String, Result<String, String>> = [
            ("x.test/a:1", Ok(digest('1'))),
            ("x.test/b:2", Ok(digest('9'))),
            ("x.test/c:3", Err("no registry at x.test (nothing listens there)".to_string())),
        ]
        .into_iter()
        .map(|(r, a)| (r.to_string(), a))
        .collect();
        let (current, moved, unchecked) = (
            check("x.test/a:1", '1', Some('1'), Drift::Current, None),
            check("x.test/b:2", '2', Some('9'), Drift::Moved, None),
            check("x.test/c:3", '3', None, Drift::Unchecked, Some("no registry at x.test (nothing listens there)")),
        );
        let all = built(&[("x.test/a:1", '1'), ("x.test/b:2", '2'), ("x.test/c:3", '3')]);
        assert_eq!(decide(all, &now), (Drift::Moved, vec![current.clone(), moved, unchecked.clone()]));
        let unreachable = built(&[("x.test/a:1", '1'), ("x.test/c:3", '3')]);
        assert_eq!(decide(unreachable, &now), (Drift::Unchecked, vec![current.clone(), unchecked]));
        assert_eq!(decide(built(&[("x.test/a:1", '1')]), &now), (Drift::Current, vec![current]));
        assert_eq!(decide(Vec::new(), &now), (Drift::Current, vec![]));
    }

    #[test]
    fn what_status_shows_of_the_bases() {
        let status = |state, reason: Option<&str>, bases| BasesStatus {
            state,
            reference: Some("l/x:t".into()),
            reason: reason.map(String::from),
            bases,
        };
        let (a, b) = (digest('a'), digest('b'));
        assert_eq!(cell(&status(Drift::Current, None, vec![])), "bases current");
        assert_eq!(
            cell(&status(
                Drift::Moved,
                None,
                vec![
                    check("x.test/a:1", 'a', Some('b'), Drift::Moved, None),
                    check("x.test/c:3", 'c', Some('c'), Drift::Current, None),
                    check("x.test/d:4", 'a', None, Drift::Unchecked, Some("down")),
                    check("x.test/e:5", 'b', Some('a'), Drift::Moved, None),
                ]
            )),
            format!("base moved: x.test/a:1 {a} → {b}; base moved: x.test/e:5 {b} → {a}")
        );
        assert_eq!(cell(&status(Drift::Unchecked, Some("down"), vec![])), "could not check bases");
        assert_eq!(
            cell(&status(Drift::Unknown, Some("built before bases were recorded"), vec![])),
            "bases unknown (built before bases were recorded)"
        );
        assert_eq!(cell(&status(Drift::Unknown, Some("a\u{1b}b"), vec![])), "bases unknown (a\\u{1b}b)");
        let json = serde_json::to_value(status(
            Drift::Moved,
            None,
            vec![
                check("x.test/a:1", 'a', Some('b'), Drift::Moved, None),
                check("x.test/d:4", 'a', None, Drift::Unchecked, Some("down")),
            ],
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "state": "moved",
                "reference": "l/x:t",
                "bases": [
                    {"reference": "x.test/a:1", "built": a, "now": b, "state": "moved"},
                    {"reference": "x.test/d:4", "built": a, "now": null, "state": "unchecked", "reason": "down"},
                ],
            })
        );
    }

    fn row(local: LocalState, labels: &[(&str, &str)], registry: RegistryState, reason: Option<&str>) -> Status {
        let image = (local != LocalState::Absent).then(|| LocalImage {
            reference: "l/x:t".into(),
            id: "sha256:1".into(),
            size: 1,
            layers: 1,
            platform: "linux/amd64".into(),
            created: String::new(),
            revision: None,
            source: None,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        });
        Status {
            image: ImageInfo {
                name: "x".into(),
                path: "x".into(),
                arch: Arch::X86_64,
                tag: Some("t".into()),
                local: Some("l/x:t".into()),
                remote: Some("r/x_x86_64:t".into()),
                test: true,
            },
            local: Local { state: local, image },
            registry: RegistryStatus {
                state: registry,
                reference: "r/x_x86_64:t".into(),
                reason: reason.map(String::from),
            },
            bases: None,
        }
    }

    /// The label is read from the image with the current tag (local, else
    /// the registry's), else from the stale local one; without any, the
    /// bases are unknown, or unchecked when the registry could not say.
    #[test]
    fn where_the_label_is_read_from() {
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let (current, stale, absent) = (LocalState::Current, LocalState::Stale, LocalState::Absent);
        let (has, lacks, unknown) = (RegistryState::HasTag, RegistryState::LacksTag, RegistryState::Unknown);
        assert_eq!(source(&row(current, &[("k", "v")], has, None)), Source::Local("l/x:t", &labels));
        assert_eq!(source(&row(stale, &[], has, None)), Source::Registry("r/x_x86_64:t"));
        assert_eq!(source(&row(absent, &[], has, None)), Source::Registry("r/x_x86_64:t"));
        assert_eq!(source(&row(stale, &[("k", "v")], lacks, None)), Source::Local("l/x:t", &labels));
        assert_eq!(source(&row(stale, &[("k", "v")], unknown, Some(NOT_ASKED))), Source::Local("l/x:t", &labels));
        let none = "no image here or in the registry".to_string();
        assert_eq!(source(&row(absent, &[], lacks, None)), Source::Unread(Drift::Unknown, none));
        assert_eq!(
            source(&row(absent, &[], unknown, Some(NOT_ASKED))),
            Source::Unread(Drift::Unknown, "no image here, and the registry was not asked: --local".into())
        );
        assert_eq!(
            source(&row(absent, &[], unknown, Some("no registry at r"))),
            Source::Unread(Drift::Unchecked, "the registry cannot be asked for the image: no registry at r".into())
        );

        let key = "p.bases";
        let a = digest('a');
        assert_eq!(recorded(&BTreeMap::new(), key), Err((Drift::Unknown, "built before bases were recorded".into())));
        let with = |value: &str| BTreeMap::from([(key.to_string(), value.to_string())]);
        assert_eq!(recorded(&with(""), key), Ok(vec![]));
        assert_eq!(recorded(&with(&format!("x.test/a:1={a}")), key), Ok(built(&[("x.test/a:1", 'a')])));
        assert_eq!(
            recorded(&with("nonsense"), key),
            Err((Drift::Unknown, "its bases label is not a list of `name:tag=sha256:<digest>`".into()))
        );
    }

    /// With `--bases`, the table and the summary end with the bases.
    #[test]
    fn a_bases_column_when_asked() {
        let mut moved = row(LocalState::Current, &[], RegistryState::HasTag, None);
        let (a, b) = (digest('a'), digest('b'));
        let bases = vec![check("x.test/a:1", 'a', Some('b'), Drift::Moved, None)];
        moved.bases = Some(BasesStatus { state: Drift::Moved, reference: Some("l/x:t".into()), reason: None, bases });
        let mut current = row(LocalState::Absent, &[], RegistryState::HasTag, None);
        current.image.name = "y".into();
        current.bases = Some(BasesStatus { state: Drift::Current, reference: None, reason: None, bases: vec![] });
        let rows = [moved, current];
        assert_eq!(
            table(&rows),
            format!(
                "IMAGE  TAG  LOCAL    REGISTRY  SIZE  LAYERS  ARCH   BUILT  BASES\n\
                 x      t    current  has tag    1 B       1  amd64         base moved: x.test/a:1 {a} → {b}\n\
                 y      t    absent   has tag      -       -  -      -      bases current\n"
            )
        );
        assert_eq!(
            markdown_table(&rows, Arch::X86_64),
            format!(
                "### Images for x86_64\n\n\
                 | Image | Tag | Local | Registry | Size | Layers | Arch | Built | Revision | Bases |\n\
                 | --- | --- | --- | --- | ---: | ---: | --- | --- | --- | --- |\n\
                 | x | `t` | current | has tag | 1 B | 1 | amd64 |  | - | base moved: x.test/a:1 {a} → {b} |\n\
                 | y | `t` | absent | has tag | - | - | - | - | - | bases current |\n\n"
            )
        );
    }
}
