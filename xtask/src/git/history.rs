//! History: the images root at git revisions, read from git's objects
//! ([`super::repo`]), never from a checkout: each commit's catalog, each
//! image's tag there under either scheme, exactly as a checkout of that
//! commit would be tagged (blobs, modes and symlinks as git records them),
//! and which images changed since a revision.
//!
//! Work is shared across revisions: a directory's tree object names its
//! content, so the images found below a tree and the inputs of an image
//! directory are computed once per tree, however many revisions hold it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::repo::find;
pub use super::repo::{Oid, Repo};
use super::source::Git;
use crate::catalog::by_arch::{self, OwnByArch};
use crate::catalog::discovery::{catalog_of, Catalog, Dockerfiles};
use crate::catalog::tagging::{self, Own};
use crate::config::Settings;
use crate::model::Arch;
use crate::model::ImageIndex;

/// A directory holding Dockerfiles, below some tree: its path relative to
/// that tree (empty for the tree itself), which Dockerfiles, and its tree.
type Found = (Vec<u8>, Dockerfiles, Oid);

/// The images root's history: its repository, and what was computed from
/// each tree, for every revision that holds it.
pub struct History {
    pub repo: Repo,
    /// Shown in messages as the images root.
    pub(super) root: PathBuf,
    found: Mutex<HashMap<Oid, Arc<Vec<Found>>>>,
    /// By image tree, architecture, and whether the Dockerfile is the
    /// architecture's own (`Dockerfile.<arch>`) or the plain one.
    own: Mutex<HashMap<(Oid, Arch, bool), Own>>,
    gvisor: Mutex<HashMap<(String, Oid), String>>,
}

impl History {
    pub fn open(images_dir: &Path) -> Result<History> {
        Ok(History {
            repo: Repo::open(images_dir)?,
            root: images_dir.to_path_buf(),
            found: Mutex::new(HashMap::new()),
            own: Mutex::new(HashMap::new()),
            gvisor: Mutex::new(HashMap::new()),
        })
    }

    /// The images root as it is at a commit.
    pub fn at(&self, commit: &Oid) -> Result<Snapshot<'_>> {
        let top = self.repo.commit_tree(commit)?;
        let mut images = Some(top);
        for part in &self.repo.prefix {
            let Some(tree) = images else { break };
            images = find(&self.repo.tree(&tree)?, part).filter(|e| e.is_tree()).map(|e| e.oid);
        }
        let found = match images {
            Some(tree) => self.found_below(&tree, false)?.to_vec(),
            None => Vec::new(),
        };
        let dirs = found.iter().map(|(rel, _, oid)| (String::from_utf8_lossy(rel).into_owned(), *oid)).collect();
        Ok(Snapshot { history: self, top, found, dirs })
    }

    /// The directories holding Dockerfiles below a tree, in the order a
    /// walk by file name meets them, as [`crate::catalog::discovery`] finds them on
    /// disk: symlinks and submodules are not entered.
    fn found_below(&self, tree: &Oid, remember: bool) -> Result<Arc<Vec<Found>>> {
        if let Some(found) = self.found.lock().unwrap_or_else(|e| e.into_inner()).get(tree) {
            return Ok(found.clone());
        }
        let entries = self.repo.tree(tree)?;
        let mut out: Vec<Found> = Vec::new();
        let mut own = Dockerfiles::default();
        let mut own_at = None;
        for e in entries.iter() {
            if e.is_tree() {
                for (rel, d, oid) in self.found_below(&e.oid, true)?.iter() {
                    let mut path = e.name.clone();
                    if !rel.is_empty() {
                        path.push(b'/');
                        path.extend_from_slice(rel);
                    }
                    out.push((path, *d, *oid));
                }
            } else if !e.is_gitlink() && own.note(&e.name) && own_at.is_none() {
                own_at = Some(out.len());
            }
        }
        if let Some(at) = own_at {
            out.insert(at, (Vec::new(), own, *tree));
        }
        let out = Arc::new(out);
        // The root's own list changes with every revision: not worth keeping.
        if remember {
            self.found.lock().unwrap_or_else(|e| e.into_inner()).insert(*tree, out.clone());
        }
        Ok(out)
    }
}

/// The images root at one commit.
pub struct Snapshot<'h> {
    pub(super) history: &'h History,
    /// The tree of the work tree's top.
    pub(super) top: Oid,
    found: Vec<Found>,
    /// Each directory holding Dockerfiles (relative to the images root) and its tree.
    pub(super) dirs: HashMap<String, Oid>,
}

impl Snapshot<'_> {
    /// The catalog for one architecture, as discovery would find it in a checkout.
    pub fn catalog(&self, arch: Arch) -> Result<Catalog> {
        let dirs = self.found.iter().map(|(rel, d, _)| (PathBuf::from(OsStr::from_bytes(rel)), *d)).collect();
        catalog_of(&self.history.root, arch, dirs)
    }

    /// Every image's tag in each catalog (of this snapshot, one per
    /// architecture), or why it cannot be computed. Each image directory's
    /// inputs are read once for every architecture, and not at all when an
    /// earlier revision had the same tree.
    pub fn tags(&self, settings: &Settings, catalogs: &[&Catalog]) -> Vec<HashMap<ImageIndex, Result<String, String>>> {
        let src = Git { snapshot: self };
        by_arch::tags(
            settings.tag_scheme,
            catalogs,
            |path| self.gvisor_tag(&src, path),
            |path, wants| self.own_inputs(&src, settings, path, wants),
        )
        .tags
    }

    fn gvisor_tag(&self, src: &Git<'_>, path: &str) -> Result<String> {
        let tree = self.dirs[path];
        let key = (path.to_string(), tree);
        if let Some(tag) = self.history.gvisor.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(tag.clone());
        }
        let tag = tagging::gvisor_tag(src, path)?;
        self.history.gvisor.lock().unwrap_or_else(|e| e.into_inner()).insert(key, tag.clone());
        Ok(tag)
    }

    /// [`tagging::own_inputs`], remembered by the image's tree when nothing
    /// outside it counts: its Dockerfiles and `.dockerignore` are no symlinks.
    fn own_inputs(&self, src: &Git<'_>, settings: &Settings, path: &str, wants: &[(Arch, &str)]) -> Result<OwnByArch> {
        let tree = self.dirs[path];
        let key = |(arch, dockerfile): &(Arch, &str)| (tree, *arch, *dockerfile != "Dockerfile");
        let mut out = Vec::with_capacity(wants.len());
        let mut missing = Vec::new();
        {
            // Only what depends on the tree alone is remembered: a hit needs
            // no look at the tree.
            let memo = self.history.own.lock().unwrap_or_else(|e| e.into_inner());
            for want in wants {
                match memo.get(&key(want)) {
                    Some(o) => out.push((want.0, Ok(o.clone()))),
                    None => missing.push(*want),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let entries = self.history.repo.tree(&tree)?;
        let linked = |name: &str| entries.iter().any(|e| e.name == name.as_bytes() && !e.is_file());
        let own_tree = !linked(".dockerignore") && missing.iter().all(|(_, d)| !linked(d));
        let computed = tagging::own_inputs(src, settings, path, &missing)?;
        let mut memo = self.history.own.lock().unwrap_or_else(|e| e.into_inner());
        for (want, o) in missing.iter().zip(computed) {
            if let (true, Ok(o)) = (own_tree, &o) {
                memo.insert(key(want), o.clone());
            }
            out.push((want.0, o.map_err(|e| format!("{e:#}"))));
        }
        Ok(out)
    }
}

/// The images among `requested` (indexes into `catalog`, the images root
/// as it is now) whose tag differs from their tag at `rev`, or that were no
/// image at `rev`, in order.
pub fn changed_since(
    settings: &Settings,
    catalog: &Catalog,
    requested: &[ImageIndex],
    rev: &str,
) -> Result<Vec<ImageIndex>> {
    let now = tagging::tags(catalog, settings, requested)?;
    let history = History::open(&settings.images_dir)?;
    let commit = history.repo.commit(rev)?;
    let snapshot = history.at(&commit)?;
    let then_catalog = snapshot.catalog(settings.arch)?;
    let then_tags = snapshot.tags(settings, &[&then_catalog]).pop().unwrap_or_default();
    let then: HashMap<&str, &str> = then_catalog
        .indexed()
        .filter_map(|(i, image)| Some((image.name.as_str(), then_tags.get(&i)?.as_deref().ok()?)))
        .collect();
    Ok(requested.iter().copied().filter(|i| then.get(catalog[*i].name.as_str()) != Some(&now[i].as_str())).collect())
}
