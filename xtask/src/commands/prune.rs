//! `prune`: removes the local images of catalog images whose tag is no
//! longer current, under their local names (`<LOCAL_IMAGE_PREFIX>/<path>:<tag>`)
//! and their remote names (`<REMOTE_IMAGE_PREFIX>/<path>_<arch>:<tag>`). The
//! current tags and one look at the engine (its images and containers) make
//! a plan, which `--dry-run` prints; the run removes what it lists.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::catalog::discovery::discover_every_arch;
use crate::catalog::tagging;
use crate::config::{EngineKind, Settings};
use crate::engine::{Container, Engine, EngineCli, ImageFacts};
use crate::model::{Arch, Parts};

/// The tags that are current now: image path -> architecture -> tag.
pub type Current = HashMap<String, HashMap<Arch, String>>;

/// A local name under one of the two prefixes, of a catalog image.
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

impl NameAction {
    fn as_str(self) -> &'static str {
        match self {
            NameAction::Remove => "would remove",
            NameAction::Removed => "removed",
            NameAction::Skipped => "skipped",
            NameAction::Failed => "failed",
        }
    }
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

/// The local names under the two prefixes of catalog images, each with its
/// image path, tag and (remote names) architecture. Names of other images,
/// and names that are not `<prefix>/<path>[_<arch>]:<tag>`, are left out.
pub fn names_of_catalog_images(
    names: &[(String, String)],
    current: &Current,
    settings: &Settings,
    engine: EngineKind,
) -> Vec<Name> {
    let local = format!("{}/", settings.local_prefix);
    let remote = format!("{}/", settings.remote_prefix);
    let mut out = Vec::new();
    for (reference, image) in names {
        // podman keeps a name without a registry domain under `localhost/`.
        let plain = match engine {
            EngineKind::Podman => reference.strip_prefix("localhost/").unwrap_or(reference),
            EngineKind::Docker => reference,
        };
        let Parts { name: repository, tag: Some(tag), .. } = Parts::of(plain) else { continue };
        let found = if let Some(path) = repository.strip_prefix(&local).filter(|p| current.contains_key(*p)) {
            Some((path.to_string(), None))
        } else if let Some(rest) = repository.strip_prefix(&remote) {
            Arch::split_suffix(rest)
                .filter(|(path, arch)| current.get(*path).is_some_and(|by_arch| by_arch.contains_key(arch)))
                .map(|(path, arch)| (path.to_string(), Some(arch)))
        } else {
            None
        };
        if let Some((path, arch)) = found {
            out.push(Name { reference: reference.clone(), image: image.clone(), path, arch, tag: tag.to_string() });
        }
    }
    out
}

/// The plan: which names go, and which stay though stale, and why. A name
/// goes when its tag is not current (a remote name: for its architecture; a
/// local name: for any), or when it is `latest` and its image is under no
/// current tag of that image. `scope` limits it to names of images for one
/// architecture (local names by the platform of their image). Names of
/// images a container uses stay.
pub fn plan(
    names: &[Name],
    current: &Current,
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
    let current_images: HashSet<(&str, Option<Arch>, &str)> =
        names.iter().filter(|n| is_current(n)).map(|n| (n.path.as_str(), n.arch, n.image.as_str())).collect();
    let mut out = Vec::new();
    for n in names {
        let reason = if n.tag == "latest" {
            let points_at_current = match n.arch {
                Some(_) => current_images.contains(&(n.path.as_str(), n.arch, n.image.as_str())),
                None => current_images.iter().any(|(p, _, i)| *p == n.path && *i == n.image),
            };
            if points_at_current {
                continue;
            }
            "latest is under no current tag".to_string()
        } else if is_current(n) {
            continue;
        } else {
            format!("{} is not a current tag", n.tag)
        };
        let arch = match n.arch {
            Some(arch) => Some(arch),
            None => Arch::ALL.into_iter().find(|a| facts.get(&n.image).is_some_and(|f| f.platform.is(*a))),
        };
        if scope.is_some() && arch != scope {
            continue;
        }
        let (action, reason) = match users.get(n.image.as_str()) {
            Some(users) => (NameAction::Skipped, format!("in use by container {}", users.join(", "))),
            None => (NameAction::Remove, reason),
        };
        out.push(Removal { reference: n.reference.clone(), image: n.image.clone(), action, reason, bytes: 0 });
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    out
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

/// Puts each deleted image's bytes on its last name in the plan.
fn attribute(removals: &mut [Removal], freed: &HashMap<String, u64>) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (k, r) in removals.iter().enumerate() {
        if matches!(r.action, NameAction::Remove | NameAction::Removed) {
            last.insert(&r.image, k);
        }
    }
    let last: Vec<(usize, u64)> = last.into_iter().filter_map(|(image, k)| Some((k, *freed.get(image)?))).collect();
    for (k, bytes) in last {
        removals[k].bytes = bytes;
    }
}

/// Runs `prune`; returns the process exit status.
pub fn run(settings: &Settings, scope: Option<Arch>, dry_run: bool, json: bool) -> Result<i32> {
    let catalogs = discover_every_arch(&settings.images_dir)?;
    for bad in &catalogs[0].invalid {
        eprintln!("warning: skipped: {}", bad.reason);
    }
    let refs: Vec<_> = catalogs.iter().collect();
    let tags = tagging::tags_by_arch(settings, &refs).context("cannot tell which tags are current")?;
    let mut current: Current = HashMap::new();
    for (catalog, tags) in catalogs.iter().zip(&tags) {
        for (i, image) in catalog.indexed() {
            current.entry(image.path.clone()).or_default().insert(catalog.arch, tags[&i].clone());
        }
    }

    let removals = prune(&EngineCli::new(settings.engine), settings, &current, scope, dry_run)?;

    if json {
        crate::report::print_list("names", &removals)?;
    }
    let text = report(&removals, dry_run);
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(if removals.iter().any(|r| r.action == NameAction::Failed) { crate::model::EXIT_FAILURE } else { 0 })
}

/// What becomes of the names of `current`'s images on `engine`: one look
/// at its images and containers makes the [`plan`], which the run (not
/// `dry_run`) carries out.
pub fn prune(
    engine: &dyn Engine,
    settings: &Settings,
    current: &Current,
    scope: Option<Arch>,
    dry_run: bool,
) -> Result<Vec<Removal>> {
    engine.check()?;
    let listed = engine.image_names()?;
    let containers = engine.containers(&listed)?;
    let names = names_of_catalog_images(&listed, current, settings, settings.engine);
    // Sizes and platforms, asked for only when some name may go.
    let facts = if plan(&names, current, None, &containers, &HashMap::new()).is_empty() {
        HashMap::new()
    } else {
        let mut ids: Vec<&str> = listed.iter().map(|(_, id)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        engine.image_facts(&ids)?
    };
    let mut removals = plan(&names, current, scope, &containers, &facts);
    let doomed = doomed(&listed, &removals);
    let deleted = if dry_run {
        doomed
    } else {
        let deleted = remove(engine, &mut removals)?;
        deleted.intersection(&doomed).cloned().collect()
    };
    attribute(&mut removals, &freed(&deleted, &facts));
    Ok(removals)
}

/// The images every name of which goes (of `listed`, every local name and
/// its image): they are deleted.
fn doomed(listed: &[(String, String)], removals: &[Removal]) -> HashSet<String> {
    let mut left: HashMap<&str, usize> = HashMap::new();
    for (_, id) in listed {
        *left.entry(id.as_str()).or_default() += 1;
    }
    for r in removals.iter().filter(|r| r.action == NameAction::Remove) {
        if let Some(n) = left.get_mut(r.image.as_str()) {
            *n -= 1;
        }
    }
    left.iter().filter(|(_, n)| **n == 0).map(|(id, _)| id.to_string()).collect()
}

/// Removes the names `removals` plans to remove, and says of each whether
/// it went (the engine's listing no longer has it); the images the engine
/// deleted.
fn remove(engine: &dyn Engine, removals: &mut [Removal]) -> Result<HashSet<String>> {
    let going: Vec<String> =
        removals.iter().filter(|r| r.action == NameAction::Remove).map(|r| r.reference.clone()).collect();
    let said = if going.is_empty() { Default::default() } else { engine.remove_names(&going)? };
    let after: HashSet<String> =
        if going.is_empty() { HashSet::new() } else { engine.image_names()?.into_iter().map(|(n, _)| n).collect() };
    for r in removals.iter_mut().filter(|r| r.action == NameAction::Remove) {
        if after.contains(&r.reference) {
            r.action = NameAction::Failed;
            r.reason = said
                .refused
                .iter()
                .find(|l| l.contains(&r.reference))
                .or(said.refused.first())
                .cloned()
                .unwrap_or_else(|| "the engine kept it".into());
        } else {
            r.action = NameAction::Removed;
        }
    }
    Ok(said.deleted)
}

/// One line per name, then the total.
pub fn report(removals: &[Removal], dry_run: bool) -> String {
    let width = removals.iter().map(|r| r.action.as_str().len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in removals {
        let action = r.action.as_str();
        match r.action {
            NameAction::Remove | NameAction::Removed => {
                out.push_str(&format!("{action:<width$}  {}  {} bytes  ({})\n", r.reference, r.bytes, r.reason))
            }
            NameAction::Skipped | NameAction::Failed => {
                out.push_str(&format!("{action:<width$}  {}: {}\n", r.reference, r.reason))
            }
        }
    }
    let going = removals.iter().filter(|r| matches!(r.action, NameAction::Remove | NameAction::Removed)).count();
    let bytes: u64 = removals.iter().map(|r| r.bytes).sum();
    let kept = removals.len() - going;
    let kept = if kept > 0 { format!("; {kept} kept") } else { String::new() };
    if dry_run {
        out.push_str(&format!(
            "total: {going} names would be removed, freeing {bytes} bytes ({}){kept}\n",
            crate::report::human_bytes(bytes)
        ));
    } else {
        out.push_str(&format!(
            "total: {going} names removed, {bytes} bytes ({}) freed{kept}\n",
            crate::report::human_bytes(bytes)
        ));
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::engine::fake::{self, Fake};
    use crate::model::Platform;

    fn settings() -> Settings {
        Settings::for_tests("l.test/p", "r.test:5000/q")
    }

    fn current() -> Current {
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
        let got = names_of_catalog_images(&names, &current(), &settings(), EngineKind::Docker);
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
        let podman = names_of_catalog_images(&names, &current(), &settings(), EngineKind::Podman);
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
        let names = names_of_catalog_images(&names, &current(), &settings(), EngineKind::Docker);
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
            plan(&names, &current(), None, &[], &f),
            vec![
                removal("l.test/p/a:0000", "x3", "0000 is not a current tag"),
                removal("l.test/p/g/b:latest", "x3", "latest is under no current tag"),
                removal("r.test:5000/q/a_aarch64:latest", "x3", "latest is under no current tag"),
                removal("r.test:5000/q/a_x86_64:bbbb", "x2", "bbbb is not a current tag"),
            ]
        );
        // In scope: remote names by their name, local names by their image.
        assert_eq!(
            plan(&names, &current(), Some(Arch::Aarch64), &[], &f),
            vec![removal("r.test:5000/q/a_aarch64:latest", "x3", "latest is under no current tag")]
        );
        let users = [Container { id: "c1".into(), name: "web".into(), image: Some("x3".into()) }];
        let planned = plan(&names, &current(), Some(Arch::X86_64), &users, &f);
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

    /// An engine with names of every kind: current, stale, `latest`, in use
    /// by a container, of other images, and one sharing an image with a
    /// current name.
    fn engine() -> Fake {
        Fake::with(&[])
            .holding(&["l.test/p/a:aaaa", "l.test/p/a:latest"], fake::details("sha256:1", "amd64"))
            .holding(&["l.test/p/a:0000"], fake::details("sha256:2", "amd64"))
            .holding(&["l.test/p/a:1111", "r.test:5000/q/a_x86_64:0000"], fake::details("sha256:3", "amd64"))
            .holding(&["l.test/p/g/b:0000"], fake::details("sha256:4", "amd64"))
            .holding(&["r.test:5000/q/a_aarch64:bbbb"], fake::details("sha256:5", "arm64"))
            .holding(&["other/thing:0000"], fake::details("sha256:6", "amd64"))
            .holding(&["l.test/p/g/b:cccc", "l.test/p/g/b:old"], fake::details("sha256:7", "amd64"))
            .with_container("web", "sha256:4")
    }

    /// What each name became, in order: (reference, action, reason, bytes).
    fn outcome(removals: &[Removal]) -> Vec<(&str, NameAction, &str, u64)> {
        removals.iter().map(|r| (r.reference.as_str(), r.action, r.reason.as_str(), r.bytes)).collect()
    }

    #[test]
    fn prune_removes_stale_names_and_keeps_the_rest() {
        let engine = engine();
        let removals = prune(&engine, &settings(), &current(), None, false).unwrap();
        assert_eq!(
            outcome(&removals),
            vec![
                ("l.test/p/a:0000", NameAction::Removed, "0000 is not a current tag", 1000),
                ("l.test/p/a:1111", NameAction::Removed, "1111 is not a current tag", 0),
                ("l.test/p/g/b:0000", NameAction::Skipped, "in use by container web", 0),
                ("l.test/p/g/b:old", NameAction::Removed, "old is not a current tag", 0),
                ("r.test:5000/q/a_x86_64:0000", NameAction::Removed, "0000 is not a current tag", 1000),
            ]
        );
        assert_eq!(
            engine.events(),
            ["remove l.test/p/a:0000 l.test/p/a:1111 l.test/p/g/b:old r.test:5000/q/a_x86_64:0000"]
        );
        let left: Vec<String> = engine.image_names().unwrap().into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            left,
            [
                "l.test/p/a:aaaa",
                "l.test/p/a:latest",
                "l.test/p/g/b:0000",
                "l.test/p/g/b:cccc",
                "other/thing:0000",
                "r.test:5000/q/a_aarch64:bbbb",
            ]
        );
        assert_eq!(
            report(&removals, false).lines().last(),
            Some("total: 4 names removed, 2000 bytes (2.00 kB) freed; 1 kept")
        );
    }

    #[test]
    fn a_dry_run_plans_the_same_and_removes_nothing() {
        let engine = engine();
        let before = engine.image_names().unwrap();
        let removals = prune(&engine, &settings(), &current(), None, true).unwrap();
        assert_eq!(
            outcome(&removals),
            vec![
                ("l.test/p/a:0000", NameAction::Remove, "0000 is not a current tag", 1000),
                ("l.test/p/a:1111", NameAction::Remove, "1111 is not a current tag", 0),
                ("l.test/p/g/b:0000", NameAction::Skipped, "in use by container web", 0),
                ("l.test/p/g/b:old", NameAction::Remove, "old is not a current tag", 0),
                ("r.test:5000/q/a_x86_64:0000", NameAction::Remove, "0000 is not a current tag", 1000),
            ]
        );
        assert_eq!(engine.events(), Vec::<String>::new());
        assert_eq!(engine.image_names().unwrap(), before);
    }

    #[test]
    fn a_name_the_engine_keeps_has_failed() {
        // A container the listing cannot tie to its image: the plan lets
        // the image's last name go, the engine keeps it.
        let engine = engine().with_hidden_container("db", "sha256:2");
        let removals = prune(&engine, &settings(), &current(), None, false).unwrap();
        let refusal = "Error response from daemon: conflict: unable to remove repository reference \
                       \"l.test/p/a:0000\" (must force) - container c-db is using its referenced image sha256:2";
        assert_eq!(
            outcome(&removals),
            vec![
                ("l.test/p/a:0000", NameAction::Failed, refusal, 0),
                ("l.test/p/a:1111", NameAction::Removed, "1111 is not a current tag", 0),
                ("l.test/p/g/b:0000", NameAction::Skipped, "in use by container web", 0),
                ("l.test/p/g/b:old", NameAction::Removed, "old is not a current tag", 0),
                ("r.test:5000/q/a_x86_64:0000", NameAction::Removed, "0000 is not a current tag", 1000),
            ]
        );
        assert!(engine.image_names().unwrap().contains(&("l.test/p/a:0000".into(), "sha256:2".into())));
    }
}
