//! What other checkouts keep: the tags that HEAD, every local branch head
//! and every other work tree of the repository holding the images root
//! give the images. Commits are read from git's objects through one
//! [`History`], so an image directory whose tree is the same at several of
//! them is read once; another work tree is read as it is on disk,
//! uncommitted changes included.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use super::plan::Elsewhere;
use crate::catalog::discovery::discover_every_arch;
use crate::catalog::tagging;
use crate::config::Settings;
use crate::git::history::{History, Oid};
use crate::git::Checkouts;
use crate::model::Arch;

/// The tags other checkouts give, each with where, and warnings about
/// those that cannot be read. Outside a git work tree there are none.
pub fn kept_elsewhere(settings: &Settings) -> (Elsewhere, Vec<String>) {
    let mut kept = Elsewhere::default();
    let mut warnings = Vec::new();
    let Ok(history) = History::open(&settings.images_dir) else { return (kept, warnings) };
    let checkouts = match history.repo.checkouts() {
        Ok(checkouts) => checkouts,
        Err(e) => {
            warnings.push(format!(
                "cannot tell which branches and work trees the repository has, so only this work tree's tags \
                 stay: {e:#}"
            ));
            return (kept, warnings);
        }
    };
    let mut read: HashSet<Oid> = HashSet::new();
    for (commit, place) in commits(&checkouts) {
        if !read.insert(commit) {
            continue;
        }
        match tags_at(settings, &history, &commit) {
            Ok(tags) => tags.iter().for_each(|(path, arch, tag)| kept.insert(path, *arch, tag, &place)),
            Err(e) => warnings.push(format!("the tags {place} cannot be computed, so they do not stay: {e:#}")),
        }
    }
    for w in checkouts.worktrees.iter().filter(|w| !w.bare && !history.repo.is_this(&w.path)) {
        let images = history.repo.images_in(&w.path);
        // Gone (`git worktree prune` would drop it), or sparse: its HEAD is all it has.
        if !images.is_dir() {
            continue;
        }
        let place = format!("in the work tree at {}", w.path.display());
        match tags_on_disk(settings, &images) {
            Ok(tags) => tags.iter().for_each(|(path, arch, tag)| kept.insert(path, *arch, tag, &place)),
            Err(e) => warnings.push(format!("the tags {place} cannot be computed, so only its HEAD's stay: {e:#}")),
        }
    }
    (kept, warnings)
}

/// The commits to keep the tags of, each with where it is checked out or
/// ready to be: HEAD first, then the branch heads, then the detached HEADs
/// of other work trees (those on a branch are its head).
fn commits(checkouts: &Checkouts) -> Vec<(Oid, String)> {
    let head = checkouts.head.map(|c| (c, "at HEAD".to_string()));
    let branches = checkouts.branches.iter().map(|(name, c)| (*c, format!("on branch {name}")));
    let detached = checkouts
        .worktrees
        .iter()
        .filter(|w| w.branch.is_none())
        .filter_map(|w| Some((w.head?, format!("at the HEAD of the work tree at {}", w.path.display()))));
    head.into_iter().chain(branches).chain(detached).collect()
}

/// Every image's tag at a commit, for every architecture; images whose tag
/// cannot be computed there have none.
fn tags_at(settings: &Settings, history: &History, commit: &Oid) -> Result<Vec<(String, Arch, String)>> {
    let snapshot = history.at(commit)?;
    let catalogs = Arch::ALL.iter().map(|a| snapshot.catalog(*a)).collect::<Result<Vec<_>>>()?;
    let refs: Vec<_> = catalogs.iter().collect();
    let mut out = Vec::new();
    for (catalog, tags) in catalogs.iter().zip(snapshot.tags(settings, &refs)) {
        for (i, image) in catalog.indexed() {
            if let Some(Ok(tag)) = tags.get(&i) {
                out.push((image.path.clone(), catalog.arch, tag.clone()));
            }
        }
    }
    Ok(out)
}

/// Every image's tag in an images root on disk, for every architecture.
fn tags_on_disk(settings: &Settings, images: &Path) -> Result<Vec<(String, Arch, String)>> {
    let catalogs = discover_every_arch(images)?;
    let refs: Vec<_> = catalogs.iter().collect();
    let tags = tagging::tags_by_arch(settings, &refs)?;
    let mut out = Vec::new();
    for (catalog, tags) in catalogs.iter().zip(tags) {
        for (i, image) in catalog.indexed() {
            if let Some(tag) = tags.get(&i) {
                out.push((image.path.clone(), catalog.arch, tag.clone()));
            }
        }
    }
    Ok(out)
}
