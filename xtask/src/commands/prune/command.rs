//! Running `prune`: the current tags (this work tree's, and those other
//! checkouts keep), one look at the engine (its images and containers), the
//! plan, the removals, and what each freed.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};

use super::keep::kept_elsewhere;
use super::plan::{freed, held, names_of_catalog_images, plan, Current, Elsewhere, Held, NameAction, Removal};
use super::text::{held_note, report};
use crate::catalog::discovery::discover_every_arch;
use crate::catalog::tagging;
use crate::config::Settings;
use crate::engine::{Engine, EngineCli};
use crate::model::Arch;

/// What `prune` is asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Only names of images for this architecture.
    pub scope: Option<Arch>,
    pub dry_run: bool,
    pub json: bool,
    /// Keep only the tags this work tree gives: not those of HEAD, of the
    /// branch heads or of other work trees.
    pub work_tree_only: bool,
    /// Prefixes whose names of catalog images count as those under the two
    /// prefixes do.
    pub other_prefixes: Vec<String>,
}

/// What became of the names, and the images other names keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub removals: Vec<Removal>,
    pub held: Vec<Held>,
}

/// Runs `prune`; returns the process exit status.
pub fn run(settings: &Settings, opts: &PruneOptions) -> Result<i32> {
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
    let elsewhere = || {
        if opts.work_tree_only {
            return Elsewhere::default();
        }
        let (elsewhere, warnings) = kept_elsewhere(settings);
        for w in warnings {
            eprintln!("warning: {w}");
        }
        elsewhere
    };

    let pruned = prune(&EngineCli::new(settings.engine), settings, &current, elsewhere, opts)?;

    if opts.json {
        crate::report::print_list("names", &pruned.removals)?;
    }
    let text = report(&pruned.removals, opts.dry_run);
    if opts.json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    eprint!("{}", held_note(&pruned.held, opts.dry_run, &opts.other_prefixes));
    Ok(if pruned.removals.iter().any(|r| r.action == NameAction::Failed) { crate::model::EXIT_FAILURE } else { 0 })
}

/// What becomes of the names of `current`'s images on `engine`: one look
/// at its images and containers makes the [`plan`], which the run (not
/// `dry_run`) carries out. `elsewhere` gives the tags other checkouts keep,
/// asked for only when some name is not current here.
pub fn prune(
    engine: &dyn Engine,
    settings: &Settings,
    current: &Current,
    elsewhere: impl FnOnce() -> Elsewhere,
    opts: &PruneOptions,
) -> Result<Pruned> {
    engine.check()?;
    let listed = engine.image_names()?;
    let containers = engine.containers(&listed)?;
    let names = names_of_catalog_images(&listed, current, settings, settings.engine, &opts.other_prefixes);
    let nowhere = Elsewhere::default();
    let stale_here = !plan(&names, current, &nowhere, None, &containers, &HashMap::new()).is_empty();
    let elsewhere = if stale_here { elsewhere() } else { nowhere };
    let elsewhere = &elsewhere;
    // Sizes and platforms, asked for only when some name may go, or may be
    // out of scope by its image's platform.
    let first = plan(&names, current, elsewhere, None, &containers, &HashMap::new());
    let facts = if first.iter().any(|r| r.action == NameAction::Remove) || (opts.scope.is_some() && !first.is_empty()) {
        let mut ids: Vec<&str> = listed.iter().map(|(_, id)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        engine.image_facts(&ids)?
    } else {
        HashMap::new()
    };
    let mut removals = plan(&names, current, elsewhere, opts.scope, &containers, &facts);
    let held = held(&listed, &names, &removals, settings.engine);
    let doomed = doomed(&listed, &removals);
    let deleted = if opts.dry_run {
        doomed
    } else {
        let deleted = remove(engine, &mut removals)?;
        deleted.intersection(&doomed).cloned().collect()
    };
    attribute(&mut removals, &freed(&deleted, &facts));
    Ok(Pruned { removals, held })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::prune::plan::tests::{current, settings};
    use crate::engine::fake::{self, Fake};

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

    fn opts(dry_run: bool) -> PruneOptions {
        PruneOptions { dry_run, ..PruneOptions::default() }
    }

    /// What each name became, in order: (reference, action, reason, bytes).
    fn outcome(removals: &[Removal]) -> Vec<(&str, NameAction, &str, u64)> {
        removals.iter().map(|r| (r.reference.as_str(), r.action, r.reason.as_str(), r.bytes)).collect()
    }

    #[test]
    fn prune_removes_stale_names_and_keeps_the_rest() {
        let engine = engine();
        let removals = prune(&engine, &settings(), &current(), Elsewhere::default, &opts(false)).unwrap().removals;
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
        let removals = prune(&engine, &settings(), &current(), Elsewhere::default, &opts(true)).unwrap().removals;
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
        let removals = prune(&engine, &settings(), &current(), Elsewhere::default, &opts(false)).unwrap().removals;
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

    #[test]
    fn tags_other_checkouts_give_stay_and_say_where() {
        let engine = engine().holding(&["r.test:5000/q/a_aarch64:2222"], fake::details("sha256:8", "arm64")).holding(
            &["r.test:5000/q/a_aarch64:3333", "r.test:5000/q/a_aarch64:latest"],
            fake::details("sha256:9", "arm64"),
        );
        let mut elsewhere = Elsewhere::default();
        elsewhere.insert("a", Arch::X86_64, "0000", "on branch topic");
        elsewhere.insert("a", Arch::X86_64, "0000", "in the work tree at /w/second");
        elsewhere.insert("a", Arch::Aarch64, "1111", "at HEAD");
        // A remote name stays only for the architecture its name says.
        elsewhere.insert("a", Arch::X86_64, "2222", "at HEAD");
        elsewhere.insert("g/b", Arch::X86_64, "old", "in the work tree at /w/second");
        elsewhere.insert("a", Arch::Aarch64, "3333", "at the HEAD of the work tree at /w/third");
        let removals = prune(&engine, &settings(), &current(), || elsewhere, &opts(false)).unwrap().removals;
        assert_eq!(
            outcome(&removals),
            vec![
                ("l.test/p/a:0000", NameAction::Skipped, "0000 is current on branch topic", 0),
                ("l.test/p/a:1111", NameAction::Skipped, "1111 is current at HEAD", 0),
                ("l.test/p/g/b:0000", NameAction::Skipped, "in use by container web", 0),
                ("l.test/p/g/b:old", NameAction::Skipped, "old is current in the work tree at /w/second", 0),
                ("r.test:5000/q/a_aarch64:2222", NameAction::Removed, "2222 is not a current tag", 1000),
                (
                    "r.test:5000/q/a_aarch64:3333",
                    NameAction::Skipped,
                    "3333 is current at the HEAD of the work tree at /w/third",
                    0
                ),
                (
                    "r.test:5000/q/a_aarch64:latest",
                    NameAction::Skipped,
                    "latest names an image current at the HEAD of the work tree at /w/third",
                    0
                ),
                ("r.test:5000/q/a_x86_64:0000", NameAction::Skipped, "0000 is current on branch topic", 0),
            ]
        );
        assert_eq!(engine.events(), ["remove r.test:5000/q/a_aarch64:2222"]);
        assert_eq!(
            report(&removals, false).lines().last(),
            Some("total: 1 names removed, 1000 bytes (1.00 kB) freed; 7 kept")
        );
    }

    #[test]
    fn names_under_other_prefixes_keep_images_until_asked_for() {
        let engine = || {
            engine()
                .holding(
                    &["old.test/images/a_x86_64:0000", "old.test/images/a:latest"],
                    fake::details("sha256:2", "amd64"),
                )
                .holding(&["old.test/images/g/b:0000", "mine:debug"], fake::details("sha256:4", "amd64"))
                .holding(&["old.test/images/a_x86_64:aaaa"], fake::details("sha256:1", "amd64"))
        };
        let dry = prune(&engine(), &settings(), &current(), Elsewhere::default, &opts(true)).unwrap();
        let stays = Held {
            reference: "l.test/p/a:0000".into(),
            image: "sha256:2".into(),
            by: vec!["old.test/images/a:latest".into(), "old.test/images/a_x86_64:0000".into()],
            prefixes: vec!["old.test/images".into()],
        };
        assert_eq!(dry.held, [stays]);
        assert_eq!(
            outcome(&dry.removals)[0],
            ("l.test/p/a:0000", NameAction::Remove, "0000 is not a current tag", 0),
            "its image stays: nothing is freed"
        );
        assert_eq!(
            held_note(&dry.held, true, &[]),
            "note: other names keep 1 image whose names would go, so it would not be deleted:\n  \
             the image of l.test/p/a:0000 is also old.test/images/a:latest, old.test/images/a_x86_64:0000\n\
             to remove the names under other prefixes too: prune --other-prefixes old.test/images\n"
        );

        let engine = engine();
        let other = PruneOptions { other_prefixes: vec!["old.test/images/".into()], ..opts(false) };
        let pruned = prune(&engine, &settings(), &current(), Elsewhere::default, &other).unwrap();
        assert_eq!(
            outcome(&pruned.removals),
            vec![
                ("l.test/p/a:0000", NameAction::Removed, "0000 is not a current tag", 0),
                ("l.test/p/a:1111", NameAction::Removed, "1111 is not a current tag", 0),
                ("l.test/p/g/b:0000", NameAction::Skipped, "in use by container web", 0),
                ("l.test/p/g/b:old", NameAction::Removed, "old is not a current tag", 0),
                ("old.test/images/a:latest", NameAction::Removed, "latest is under no current tag", 0),
                ("old.test/images/a_x86_64:0000", NameAction::Removed, "0000 is not a current tag", 1000),
                ("old.test/images/g/b:0000", NameAction::Skipped, "in use by container web", 0),
                ("r.test:5000/q/a_x86_64:0000", NameAction::Removed, "0000 is not a current tag", 1000),
            ]
        );
        assert_eq!(pruned.held, []);
        assert!(engine.image_names().unwrap().contains(&("old.test/images/a_x86_64:aaaa".into(), "sha256:1".into())));
    }

    #[test]
    fn other_checkouts_are_read_only_when_some_name_is_not_current_here() {
        let engine = Fake::with(&[])
            .holding(&["l.test/p/a:aaaa", "l.test/p/a:latest"], fake::details("sha256:1", "amd64"))
            .holding(&["r.test:5000/q/a_aarch64:bbbb", "other/thing:0000"], fake::details("sha256:5", "arm64"));
        let unread = || -> Elsewhere { panic!("other checkouts were read with nothing stale here") };
        let pruned = prune(&engine, &settings(), &current(), unread, &opts(true)).unwrap();
        assert_eq!(pruned, Pruned { removals: vec![], held: vec![] });
    }
}
