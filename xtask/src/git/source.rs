//! A snapshot of the images root as a [`Source`] for tagging: paths resolved
//! through trees and symlinks as a checkout of the commit would resolve them,
//! files read and hashed from their blobs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::history::Snapshot;
use super::repo::{find, Oid, Repo, TreeEntry};
use crate::catalog::dockerignore::{DockerIgnore, Inclusion};
use crate::catalog::image_files;
use crate::catalog::tagging::{self, Kind, Source};

/// A snapshot as a [`Source`] for tagging.
pub(super) struct Git<'s> {
    pub(super) snapshot: &'s Snapshot<'s>,
}

impl Git<'_> {
    fn repo(&self) -> &Repo {
        &self.snapshot.history.repo
    }

    /// Walks a tree depth first, children by name; `visit` returns whether
    /// to enter a directory.
    fn walk(
        &self,
        tree: &Oid,
        rel: &mut Vec<u8>,
        visit: &mut dyn FnMut(&[u8], &TreeEntry) -> Result<bool>,
    ) -> Result<()> {
        for e in self.repo().tree(tree)?.iter() {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&e.name);
            if visit(rel, e)? && e.is_tree() {
                self.walk(&e.oid, rel, visit)?;
            }
            rel.truncate(len);
        }
        Ok(())
    }

    /// The entry at a path under the work tree's top (components), following
    /// symlinks on the way and, when `follow`, at the end; `None` when
    /// nothing is there.
    fn lookup(&self, path: Vec<Vec<u8>>, follow: bool, shown: &str) -> Result<Option<TreeEntry>> {
        Ok(self.resolve(path, follow, shown)?.map(|(entry, _)| entry))
    }

    /// [`Git::lookup`], with the path the entry was found at (components
    /// from the top).
    fn resolve(&self, path: Vec<Vec<u8>>, follow: bool, shown: &str) -> Result<Option<(TreeEntry, Vec<Vec<u8>>)>> {
        let repo = self.repo();
        let mut pending: Vec<Vec<u8>> = path.into_iter().rev().collect();
        let mut trail: Vec<Oid> = vec![self.snapshot.top];
        let mut at: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        let mut last: Option<TreeEntry> = None;
        while let Some(part) = pending.pop() {
            if part.is_empty() || part == b"." {
                continue;
            }
            if part == b".." {
                if at.pop().is_none() {
                    bail!("{shown} leads outside the repository: a checkout would read what is outside it");
                }
                trail.pop();
                last = None;
                continue;
            }
            let dir = *trail.last().expect("the top is always there");
            let Some(entry) = find(&repo.tree(&dir)?, &part).cloned() else { return Ok(None) };
            if entry.is_symlink() && (follow || !pending.is_empty()) {
                hops += 1;
                if hops > 40 {
                    bail!("{shown}: too many levels of symbolic links");
                }
                let target = repo.blob(&entry.oid)?;
                if target.starts_with(b"/") {
                    bail!(
                        "{shown} is a symlink to an absolute path, which a checkout would read outside the repository"
                    );
                }
                for c in target.split(|&b| b == b'/').rev() {
                    pending.push(c.to_vec());
                }
                last = None;
                continue;
            }
            if !pending.is_empty() {
                if !entry.is_tree() {
                    return Ok(None);
                }
                trail.push(entry.oid);
            }
            at.push(part);
            last = Some(entry);
        }
        Ok(last.map(|entry| (entry, at)))
    }

    /// A path relative to the images root, as components from the top.
    fn components(&self, path: &str) -> Vec<Vec<u8>> {
        let mut out = self.repo().prefix.clone();
        out.extend(path.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()));
        out
    }

    /// The tree of an image directory.
    fn dir_tree(&self, dir: &str) -> Result<Oid> {
        match self.snapshot.dirs.get(dir) {
            Some(oid) => Ok(*oid),
            None => match self.lookup(self.components(dir), false, dir)? {
                Some(e) if e.is_tree() => Ok(e.oid),
                _ => bail!("{dir} is not a directory at this revision"),
            },
        }
    }

    fn resolved_blob(&self, path: &str) -> Result<Option<Oid>> {
        // A file right in an image directory (its Dockerfile, its
        // .dockerignore) is found in that directory's tree; a symlink there
        // is followed, and may not lead out of the directory, as on disk.
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut link = None;
        if let Some(tree) = self.snapshot.dirs.get(dir) {
            match find(&self.repo().tree(tree)?, name.as_bytes()) {
                None => return Ok(None),
                Some(e) if e.is_file() => return Ok(Some(e.oid)),
                Some(e) if e.is_symlink() => link = Some(self.repo().blob(&e.oid)?),
                Some(_) => {}
            }
        }
        let shown = self.shown(path);
        let Some((entry, at)) = self.resolve(self.components(path), true, &shown)? else { return Ok(None) };
        if let Some(target) = link.filter(|_| !at.starts_with(&self.components(dir))) {
            return Err(image_files::outside(&shown, &String::from_utf8_lossy(&target), name));
        }
        if !entry.is_file() {
            bail!("cannot read {shown}: Is a directory");
        }
        Ok(Some(entry.oid))
    }
}

impl Source for Git<'_> {
    type File = Oid;

    fn regular_files(&self, dir: &str) -> Result<Vec<(Vec<u8>, Oid)>> {
        let tree = self.dir_tree(dir)?;
        let mut files = Vec::new();
        let mut rel = dir.as_bytes().to_vec();
        self.walk(&tree, &mut rel, &mut |path, e| {
            if e.is_file() {
                files.push((path.to_vec(), e.oid));
            }
            Ok(true)
        })?;
        Ok(files)
    }

    fn context(&self, dir: &str, ignore: &DockerIgnore) -> Result<tagging::BuildContext<Oid>> {
        let tree = self.dir_tree(dir)?;
        let mut entries = Vec::new();
        self.walk(&tree, &mut Vec::new(), &mut |rel, e| {
            match ignore.inclusion(Path::new(OsStr::from_bytes(rel)), e.is_tree()) {
                Inclusion::Included => {}
                Inclusion::Excluded => return Ok(true),
                Inclusion::Pruned => return Ok(false),
            }
            let kind = if e.is_tree() || e.is_gitlink() {
                Kind::Dir
            } else if e.is_symlink() {
                Kind::Symlink(self.repo().blob(&e.oid)?)
            } else {
                Kind::File { exec: e.mode & 0o111 != 0, file: e.oid }
            };
            entries.push((rel.to_vec(), kind));
            Ok(true)
        })?;
        Ok(entries)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        match self.resolved_blob(path)? {
            Some(oid) => self.repo().blob(&oid),
            None => bail!("cannot read {}: No such file or directory", self.shown(path)),
        }
    }

    fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.resolved_blob(path)?.map(|oid| self.repo().blob(&oid)).transpose()
    }

    fn file(&self, path: &str) -> Result<Oid> {
        self.resolved_blob(path)?.ok_or_else(|| anyhow!("cannot read {}: No such file or directory", self.shown(path)))
    }

    fn digests(&self, files: &[&Oid]) -> Result<Vec<[u8; 32]>> {
        self.repo().blob_digests(files)
    }

    fn shown(&self, path: &str) -> String {
        self.snapshot.history.root.join(path).display().to_string()
    }
}
