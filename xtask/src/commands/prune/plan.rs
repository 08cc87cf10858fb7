//! The plan: which local names of catalog images go, and which stay though
//! stale, and why; and the bytes deleting images frees. Pure: names,
//! current tags, containers and image facts in, data out.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::config::{EngineKind, Settings};
use crate::engine::{Container, ImageFacts};
use crate::model::{Arch, Parts};

/// The tags that are current now: image path -> architecture -> tag.
pub type Current = HashMap<String, HashMap<Arch, String>>;

/// The tags other checkouts give the images (HEAD, branch heads, other
/// work trees), each with where it is current: the first place found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elsewhere {
    /// Image path -> (architecture, tag) -> where (`on branch topic`).
    tags: HashMap<String, HashMap<(Arch, String), String>>,
}

impl Elsewhere {
    /// Notes that `place` gives the image at `path` this tag, unless an
    /// earlier place did.
    pub fn insert(&mut self, path: &str, arch: Arch, tag: &str, place: &str) {
        let by_tag = self.tags.entry(path.to_string()).or_default();
        by_tag.entry((arch, tag.to_string())).or_insert_with(|| place.to_string());
    }

    /// Where the tag is current for the architecture, or (`None`) for any.
    pub fn place(&self, path: &str, arch: Option<Arch>, tag: &str) -> Option<&str> {
        let by_tag = self.tags.get(path)?;
        let arches = match arch {
            Some(arch) => vec![arch],
            None => Arch::ALL.to_vec(),
        };
        arches.into_iter().find_map(|a| by_tag.get(&(a, tag.to_string()))).map(String::as_str)
    }
}

/// A local name of a catalog image, under one of the two prefixes or one of
/// the other prefixes asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// As the engine lists it.
    pub reference: String,
    pub image: String,
    pub path: String,
    /// The architecture its name says: remote names only.
    pub arch: Option<Arch>,
    pub tag: String,
}

/// What becomes of a local name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameAction {
    /// Planned (`--dry-run`).
    Remove,
    Removed,
    Skipped,
    Failed,
}

/// One local name the plan is about, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub reference: String,
    pub image: String,
    pub action: NameAction,
    /// Why it goes, or why it stays.
    pub reason: String,
    /// What removing it freed (or would free): the image's own bytes when
    /// this was its last name, else nothing.
    pub bytes: u64,
}

/// An image whose every name the plan looks at goes, but which other names
/// keep: removing its names frees nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its last name that goes.
    pub reference: String,
    pub image: String,
    /// The names that keep it, sorted.
    pub by: Vec<String>,
    /// The prefixes of those of them that read `<prefix>/<path>[_<arch>]:<tag>`
    /// for the path of a name that goes: `--other-prefixes` takes them.
    pub prefixes: Vec<String>,
}

/// The local names of catalog images under the two prefixes (local names
/// under the local one, remote names under the remote one) and under
/// `other_prefixes` (either), each with its image path, tag and (remote
/// names) architecture. Names of other images, and names that are not
/// `<prefix>/<path>[_<arch>]:<tag>`, are left out.
pub fn names_of_catalog_images(
    names: &[(String, String)],
    current: &Current,
    settings: &Settings,
    engine: EngineKind,
    other_prefixes: &[String],
) -> Vec<Name> {
    let local = format!("{}/", settings.local_prefix);
    let remote = format!("{}/", settings.remote_prefix);
    let others: Vec<String> = other_prefixes.iter().map(|p| format!("{}/", p.trim_end_matches('/'))).collect();
    let as_local = |rest: &str| current.contains_key(rest).then(|| (rest.to_string(), None));
    let as_remote = |rest: &str| {
        Arch::split_suffix(rest)
            .filter(|(path, arch)| current.get(*path).is_some_and(|by_arch| by_arch.contains_key(arch)))
            .map(|(path, arch)| (path.to_string(), Some(arch)))
    };
    let mut out = Vec::new();
    for (reference, image) in names {
        let Some((repository, tag)) = repository_and_tag(reference, engine) else { continue };
        let found = repository
            .strip_prefix(&local)
            .and_then(as_local)
            .or_else(|| repository.strip_prefix(&remote).and_then(as_remote))
            .or_else(|| {
                let mut under = others.iter().filter_map(|p| repository.strip_prefix(p.as_str()));
                under.find_map(|rest| as_local(rest).or_else(|| as_remote(rest)))
            });
        if let Some((path, arch)) = found {
            out.push(Name { reference: reference.clone(), image: image.clone(), path, arch, tag: tag.to_string() });
        }
    }
    out
}

/// A tagged name's repository and tag; podman keeps a name without a
/// registry domain under `localhost/`, which it leaves out.
fn repository_and_tag(reference: &str, engine: EngineKind) -> Option<(&str, &str)> {
    let plain = match engine {
        EngineKind::Podman => reference.strip_prefix("localhost/").unwrap_or(reference),
        EngineKind::Docker => reference,
    };
    let Parts { name, tag: Some(tag), .. } = Parts::of(plain) else { return None };
    Some((name, tag))
}

/// The plan: which names go, and which stay though stale, and why. A name
/// goes when its tag is not current (a remote name: for its architecture; a
/// local name: for any), or when it is `latest` and its image is under no
/// current tag of that image. A tag another checkout gives the image stays,
/// as does a `latest` on an image under one, each saying where. `scope`
/// limits it to names of images for one architecture (local names by the
/// platform of their image). Names of images a container uses stay.
pub fn plan(
    names: &[Name],
    current: &Current,
    elsewhere: &Elsewhere,
    scope: Option<Arch>,
    containers: &[Container],
    facts: &HashMap<String, ImageFacts>,
) -> Vec<Removal> {
    let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in containers {
        if let Some(image) = &c.image {
            users.entry(image.as_str()).or_default().push(&c.name);
        }
    }
    // The images under a current tag: a `latest` pointing at one stays.
    let is_current = |n: &Name| match n.arch {
        Some(arch) => current[&n.path].get(&arch) == Some(&n.tag),
        None => current[&n.path].values().any(|t| *t == n.tag),
    };
    let kept_for = |n: &Name| elsewhere.place(&n.path, n.arch, &n.tag);
    let current_images: HashSet<(&str, Option<Arch>, &str)> =
        names.iter().filter(|n| is_current(n)).map(|n| (n.path.as_str(), n.arch, n.image.as_str())).collect();
    // In the order of the names, so that the place said is always the same.
    let kept_images: Vec<(&str, Option<Arch>, &str, &str)> = names
        .iter()
        .filter(|n| n.tag != "latest")
        .filter_map(|n| Some((n.path.as_str(), n.arch, n.image.as_str(), kept_for(n)?)))
        .collect();
    let mut out = Vec::new();
    for n in names {
        // Does an image (path, architecture, ID) under some tag hold this `latest`?
        let holds_latest =
            |p: &str, a: Option<Arch>, i: &str| p == n.path && i == n.image && (n.arch.is_none() || a == n.arch);
        let (action, reason) = if n.tag == "latest" {
            if current_images.iter().any(|(p, a, i)| holds_latest(p, *a, i)) {
                continue;
            }
            match kept_images.iter().find(|(p, a, i, _)| holds_latest(p, *a, i)) {
                Some((.., place)) => (NameAction::Skipped, format!("latest names an image current {place}")),
                None => (NameAction::Remove, "latest is under no current tag".to_string()),
            }
        } else if is_current(n) {
            continue;
        } else if let Some(place) = kept_for(n) {
            (NameAction::Skipped, format!("{} is current {place}", n.tag))
        } else {
            (NameAction::Remove, format!("{} is not a current tag", n.tag))
        };
        let arch = match n.arch {
            Some(arch) => Some(arch),
            None => Arch::ALL.into_iter().find(|a| facts.get(&n.image).is_some_and(|f| f.platform.is(*a))),
        };
        if scope.is_some() && arch != scope {
            continue;
        }
        let (action, reason) = match users.get(n.image.as_str()) {
            Some(users) if action == NameAction::Remove => {
                (NameAction::Skipped, format!("in use by container {}", users.join(", ")))
            }
            _ => (action, reason),
        };
        out.push(Removal { reference: n.reference.clone(), image: n.image.clone(), action, reason, bytes: 0 });
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    out
}

/// The images every name of which in `names` goes by `removals`, but that
/// other names of `listed` (every local name and its image) keep.
pub fn held(listed: &[(String, String)], names: &[Name], removals: &[Removal], engine: EngineKind) -> Vec<Held> {
    let going: HashSet<&str> = removals
        .iter()
        .filter(|r| matches!(r.action, NameAction::Remove | NameAction::Removed))
        .map(|r| r.reference.as_str())
        .collect();
    let mut looked_at: HashMap<&str, Vec<&Name>> = HashMap::new();
    for n in names {
        looked_at.entry(n.image.as_str()).or_default().push(n);
    }
    let mut others: HashMap<&str, Vec<&str>> = HashMap::new();
    let named: HashSet<&str> = names.iter().map(|n| n.reference.as_str()).collect();
    for (reference, image) in listed.iter().filter(|(reference, _)| !named.contains(reference.as_str())) {
        others.entry(image.as_str()).or_default().push(reference);
    }
    let mut out = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    // The last name that goes of each image, in the plan's order.
    for r in removals.iter().rev().filter(|r| going.contains(r.reference.as_str())) {
        if !seen.insert(&r.image) {
            continue;
        }
        let mine = looked_at.get(r.image.as_str()).map_or(&[][..], Vec::as_slice);
        let Some(by) = others.get(r.image.as_str()) else { continue };
        if mine.iter().any(|n| !going.contains(n.reference.as_str())) {
            continue;
        }
        let mut by: Vec<String> = by.iter().map(|b| b.to_string()).collect();
        by.sort();
        let paths: Vec<&str> = mine.iter().map(|n| n.path.as_str()).collect();
        let mut prefixes: Vec<String> = by.iter().filter_map(|b| prefix_of(b, &paths, engine)).collect();
        prefixes.sort();
        prefixes.dedup();
        out.push(Held { reference: r.reference.clone(), image: r.image.clone(), by, prefixes });
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    out
}

/// The prefix of a name that reads `<prefix>/<path>[_<arch>]:<tag>` for one
/// of `paths`.
fn prefix_of(reference: &str, paths: &[&str], engine: EngineKind) -> Option<String> {
    let (repository, _) = repository_and_tag(reference, engine)?;
    let bare = Arch::split_suffix(repository).map(|(bare, _)| bare);
    [Some(repository), bare].into_iter().flatten().find_map(|repository| {
        paths.iter().find_map(|path| {
            let prefix = repository.strip_suffix(path)?.strip_suffix('/')?;
            (!prefix.is_empty()).then(|| prefix.to_string())
        })
    })
}

/// The bytes freed by deleting `deleted` images, each counted once: an
/// image's size less that of the largest image kept (or deleted before it)
/// whose layers its own begin with, which it shares.
pub fn freed(deleted: &HashSet<String>, facts: &HashMap<String, ImageFacts>) -> HashMap<String, u64> {
    let mut order: Vec<&String> = deleted.iter().filter(|id| facts.contains_key(*id)).collect();
    order.sort_by_key(|id| (facts[*id].layers.len(), (*id).clone()));
    let mut counted: HashSet<&str> = HashSet::new();
    let mut out = HashMap::new();
    for id in order {
        let me = &facts[id];
        let shared = facts
            .iter()
            .filter(|(other, _)| *other != id && (!deleted.contains(*other) || counted.contains(other.as_str())))
            .filter(|(_, f)| f.layers.len() <= me.layers.len() && me.layers.starts_with(&f.layers))
            .map(|(_, f)| f.size)
            .max()
            .unwrap_or(0);
        out.insert(id.clone(), me.size.saturating_sub(shared));
        counted.insert(id);
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::Platform;

    /// The settings of prune's unit tests.
    pub(in crate::commands::prune) fn settings() -> Settings {
        Settings::for_tests("l.test/p", "r.test:5000/q")
    }

    /// Two images' current tags: `a` for both architectures, `g/b` for x86_64.
    pub(in crate::commands::prune) fn current() -> Current {
        let mut c = Current::new();
        c.insert("a".into(), HashMap::from([(Arch::X86_64, "aaaa".into()), (Arch::Aarch64, "bbbb".into())]));
        c.insert("g/b".into(), HashMap::from([(Arch::X86_64, "cccc".into())]));
        c
    }

    fn listed(names: &[(&str, &str)]) -> Vec<(String, String)> {
        names.iter().map(|(n, i)| (n.to_string(), i.to_string())).collect()
    }

    fn facts(arch: &str, size: u64, layers: &[&str]) -> ImageFacts {
        ImageFacts {
            platform: Platform { os: "linux".into(), architecture: arch.into(), variant: String::new() },
            size,
            layers: layers.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn only_names_of_catalog_images_under_the_prefixes_count() {
        let names = listed(&[
            ("l.test/p/a:aaaa", "i1"),
            ("l.test/p/a:0000", "i2"),
            ("l.test/p/g/b:latest", "i3"),
            ("r.test:5000/q/a_x86_64:0000", "i2"),
            ("r.test:5000/q/a_aarch64:bbbb", "i4"),
            ("r.test:5000/q/g/b_aarch64:0000", "i5"),
            ("r.test:5000/q/a_x86_64-buildcache:0000", "i6"),
            ("l.test/p/gone:0000", "i7"),
            ("l.test/other/a:0000", "i8"),
            ("r.test:5000/q/a:0000", "i9"),
            ("localhost/l.test/p/a:0001", "i10"),
        ]);
        let got = names_of_catalog_images(&names, &current(), &settings(), EngineKind::Docker, &[]);
        let name = |r: &str, i: &str, p: &str, a: Option<Arch>, t: &str| Name {
            reference: r.into(),
            image: i.into(),
            path: p.into(),
            arch: a,
            tag: t.into(),
        };
        assert_eq!(
            got,
            vec![
                name("l.test/p/a:aaaa", "i1", "a", None, "aaaa"),
                name("l.test/p/a:0000", "i2", "a", None, "0000"),
                name("l.test/p/g/b:latest", "i3", "g/b", None, "latest"),
                name("r.test:5000/q/a_x86_64:0000", "i2", "a", Some(Arch::X86_64), "0000"),
                name("r.test:5000/q/a_aarch64:bbbb", "i4", "a", Some(Arch::Aarch64), "bbbb"),
            ]
        );
        // podman keeps a name without a domain under localhost/.
        let podman = names_of_catalog_images(&names, &current(), &settings(), EngineKind::Podman, &[]);
        assert_eq!(podman.last(), Some(&name("localhost/l.test/p/a:0001", "i10", "a", None, "0001")));
    }

    #[test]
    fn the_plan_keeps_current_tags_of_every_architecture() {
        let names = listed(&[
            ("l.test/p/a:aaaa", "x1"),
            ("l.test/p/a:bbbb", "x2"),
            ("l.test/p/a:latest", "x1"),
            ("l.test/p/a:0000", "x3"),
            ("r.test:5000/q/a_x86_64:bbbb", "x2"),
            ("r.test:5000/q/a_aarch64:bbbb", "x2"),
            ("r.test:5000/q/a_aarch64:latest", "x3"),
            ("l.test/p/g/b:latest", "x3"),
        ]);
        let names = names_of_catalog_images(&names, &current(), &settings(), EngineKind::Docker, &[]);
        let f = HashMap::from([
            ("x1".to_string(), facts("amd64", 10, &["l1"])),
            ("x2".to_string(), facts("arm64", 10, &["l2"])),
            ("x3".to_string(), facts("amd64", 10, &["l3"])),
        ]);
        let removal = |r: &str, i: &str, why: &str| Removal {
            reference: r.into(),
            image: i.into(),
            action: NameAction::Remove,
            reason: why.into(),
            bytes: 0,
        };
        assert_eq!(
            plan(&names, &current(), &Elsewhere::default(), None, &[], &f),
            vec![
                removal("l.test/p/a:0000", "x3", "0000 is not a current tag"),
                removal("l.test/p/g/b:latest", "x3", "latest is under no current tag"),
                removal("r.test:5000/q/a_aarch64:latest", "x3", "latest is under no current tag"),
                removal("r.test:5000/q/a_x86_64:bbbb", "x2", "bbbb is not a current tag"),
            ]
        );
        // In scope: remote names by their name, local names by their image.
        assert_eq!(
            plan(&names, &current(), &Elsewhere::default(), Some(Arch::Aarch64), &[], &f),
            vec![removal("r.test:5000/q/a_aarch64:latest", "x3", "latest is under no current tag")]
        );
        let users = [Container { id: "c1".into(), name: "web".into(), image: Some("x3".into()) }];
        let planned = plan(&names, &current(), &Elsewhere::default(), Some(Arch::X86_64), &users, &f);
        let skipped: Vec<(&str, NameAction, &str)> =
            planned.iter().map(|r| (r.reference.as_str(), r.action, r.reason.as_str())).collect();
        assert_eq!(
            skipped,
            vec![
                ("l.test/p/a:0000", NameAction::Skipped, "in use by container web"),
                ("l.test/p/g/b:latest", NameAction::Skipped, "in use by container web"),
                ("r.test:5000/q/a_x86_64:bbbb", NameAction::Remove, "bbbb is not a current tag"),
            ]
        );
    }

    #[test]
    fn freed_bytes_leave_out_layers_shared_with_what_stays() {
        let f = HashMap::from([
            ("base".to_string(), facts("amd64", 100, &["b"])),
            ("mid".to_string(), facts("amd64", 130, &["b", "m"])),
            ("top".to_string(), facts("amd64", 150, &["b", "m", "t"])),
            ("other".to_string(), facts("amd64", 7, &["o"])),
        ]);
        let deleted: HashSet<String> = ["mid", "top", "other"].iter().map(|s| s.to_string()).collect();
        let got = freed(&deleted, &f);
        let want = HashMap::from([("mid".to_string(), 30), ("top".to_string(), 20), ("other".to_string(), 7)]);
        assert_eq!(got, want);
    }
}
