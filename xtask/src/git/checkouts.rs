//! Checkouts: what else the repository holding the images root has checked
//! out or ready to check out: HEAD, every local branch head (`git
//! for-each-ref refs/heads/`) and every work tree (`git worktree list`),
//! and where each work tree keeps the images root on disk.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use xshell::{cmd, Shell};

use super::repo::{Oid, Repo};
use crate::process::first_line;

/// A work tree of the repository, as `git worktree list` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worktree {
    pub path: PathBuf,
    /// None before the first commit, and for a bare repository.
    pub head: Option<Oid>,
    /// The branch checked out (`topic` for `refs/heads/topic`); None when
    /// HEAD is detached.
    pub branch: Option<String>,
    /// The bare repository itself, which has no files checked out.
    pub bare: bool,
}

/// The repository's HEAD, local branch heads (by name) and work trees
/// (the main one first, this one among them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkouts {
    pub head: Option<Oid>,
    pub branches: Vec<(String, Oid)>,
    pub worktrees: Vec<Worktree>,
}

impl Repo {
    /// HEAD, the local branch heads and the work trees.
    pub fn checkouts(&self) -> Result<Checkouts> {
        // An unborn HEAD (no commit yet) is no commit.
        let head = self.commit("HEAD").ok();
        let refs = self.git(&["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/"])?;
        let worktrees = self.git(&["worktree", "list", "--porcelain", "-z"])?;
        Ok(Checkouts { head, branches: branches(&refs)?, worktrees: worktrees_of(&worktrees)? })
    }

    /// Where the images root is in a work tree of this repository.
    pub fn images_in(&self, worktree: &Path) -> PathBuf {
        self.prefix.iter().fold(worktree.to_path_buf(), |dir, part| dir.join(OsStr::from_bytes(part)))
    }

    /// Whether a work tree is the one the images root was found in.
    pub fn is_this(&self, worktree: &Path) -> bool {
        let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        real(worktree) == real(&self.top)
    }

    /// What `git ARGS` prints, run at the top of the work tree.
    fn git(&self, args: &[&str]) -> Result<Vec<u8>> {
        let sh = Shell::new()?;
        let top = &self.top;
        let out = cmd!(sh, "git -C {top} {args...}").quiet().ignore_status().output()?;
        if !out.status.success() {
            bail!("git {} failed: {}", args.join(" "), first_line(&String::from_utf8_lossy(&out.stderr)));
        }
        Ok(out.stdout)
    }
}

/// `git for-each-ref --format='%(objectname) %(refname)' refs/heads/`:
/// each branch by its short name. Ref names hold no blanks or newlines.
fn branches(text: &[u8]) -> Result<Vec<(String, Oid)>> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let parsed = line.split_once(' ').and_then(|(oid, name)| Some((Oid::from_hex(oid)?, name)));
        let Some((oid, name)) = parsed else { bail!("git for-each-ref printed `{line}`") };
        out.push((name.strip_prefix("refs/heads/").unwrap_or(name).to_string(), oid));
    }
    Ok(out)
}

/// `git worktree list --porcelain -z`: attributes each ended by a NUL, a
/// work tree's ended by one more.
fn worktrees_of(text: &[u8]) -> Result<Vec<Worktree>> {
    let mut out = Vec::new();
    let mut current: Option<Worktree> = None;
    for field in text.split(|&b| b == 0) {
        if field.is_empty() {
            out.extend(current.take());
            continue;
        }
        let (key, value) = match field.iter().position(|&b| b == b' ') {
            Some(at) => (&field[..at], &field[at + 1..]),
            None => (field, &b""[..]),
        };
        if key == b"worktree" {
            out.extend(current.take());
            let path = PathBuf::from(OsStr::from_bytes(value));
            current = Some(Worktree { path, head: None, branch: None, bare: false });
            continue;
        }
        let Some(w) = current.as_mut() else {
            bail!("git worktree list printed `{}` before any work tree", String::from_utf8_lossy(field));
        };
        match key {
            b"HEAD" => {
                let hex = String::from_utf8_lossy(value);
                // All zeros: a work tree on a branch with no commit yet.
                w.head = match hex.bytes().all(|b| b == b'0') {
                    true => None,
                    false => {
                        Some(Oid::from_hex(&hex).ok_or_else(|| anyhow!("git worktree list printed HEAD `{hex}`"))?)
                    }
                };
            }
            b"branch" => {
                let name = String::from_utf8_lossy(value);
                w.branch = Some(name.strip_prefix("refs/heads/").unwrap_or(&name).to_string());
            }
            b"bare" => w.bare = true,
            // detached, locked, prunable: nothing that changes what it holds.
            _ => {}
        }
    }
    out.extend(current);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(c: char) -> Oid {
        Oid::from_hex(&c.to_string().repeat(40)).unwrap()
    }

    #[test]
    fn branch_heads() {
        let text = format!("{} refs/heads/main\n{} refs/heads/topic/one\n", "a".repeat(40), "b".repeat(40));
        assert_eq!(branches(text.as_bytes()).unwrap(), vec![("main".into(), oid('a')), ("topic/one".into(), oid('b'))]);
        assert_eq!(branches(b"").unwrap(), vec![]);
        assert_eq!(branches(b"nonsense\n").unwrap_err().to_string(), "git for-each-ref printed `nonsense`");
    }

    #[test]
    fn work_trees() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let text = format!(
            "worktree /r/main\0HEAD {a}\0branch refs/heads/main\0\0\
             worktree /r/wt/with space\0HEAD {b}\0detached\0locked\0\0\
             worktree /r/new\0HEAD {}\0branch refs/heads/unborn\0\0\
             worktree /gone\0HEAD {a}\0branch refs/heads/old\0prunable gitdir file points to non-existent location\0\0",
            "0".repeat(40)
        );
        let wt = |path: &str, head: Option<Oid>, branch: Option<&str>| Worktree {
            path: path.into(),
            head,
            branch: branch.map(String::from),
            bare: false,
        };
        assert_eq!(
            worktrees_of(text.as_bytes()).unwrap(),
            vec![
                wt("/r/main", Some(oid('a')), Some("main")),
                wt("/r/wt/with space", Some(oid('b')), None),
                wt("/r/new", None, Some("unborn")),
                wt("/gone", Some(oid('a')), Some("old")),
            ]
        );
        let bare = worktrees_of(b"worktree /r/repo.git\0bare\0\0").unwrap();
        assert_eq!(bare, vec![Worktree { path: "/r/repo.git".into(), head: None, branch: None, bare: true }]);
        assert!(worktrees_of(b"HEAD x\0\0").is_err());
        assert!(worktrees_of(b"worktree /r\0HEAD xyz\0\0").is_err());
    }
}
