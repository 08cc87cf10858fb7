//! Source dates: the time a reproducible build of an image is stamped with
//! (`SOURCE_DATE_EPOCH`), read from git: the commit time of the last commit
//! that changed the image's directory; HEAD's when the directory has
//! uncommitted changes or no commit changed it; 0 outside a git checkout.

use std::path::Path;

use xshell::{cmd, Shell};

use super::provenance::GitState;

/// Where an image's source date comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DateFrom {
    /// The last commit that changed the image's directory.
    LastChange,
    /// HEAD: the directory has uncommitted changes.
    HeadDirty,
    /// HEAD: no commit changed the directory (it is ignored, or new).
    HeadUncommitted,
    /// Not in a git checkout (or git could not tell): 0.
    NoGit,
}

/// An image's source date, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SourceDate {
    /// Seconds since the epoch.
    pub seconds: u64,
    pub from: DateFrom,
    /// The commit whose time it is.
    pub commit: Option<String>,
}

impl SourceDate {
    /// Where it comes from, for people: `commit 0123abcd4567, the last to
    /// change basic/hello`.
    pub fn describe(&self, path: &str) -> String {
        let short = |c: &Option<String>| c.as_deref().unwrap_or_default().chars().take(12).collect::<String>();
        match self.from {
            DateFrom::LastChange => format!("the time of commit {}, the last to change {path}", short(&self.commit)),
            DateFrom::HeadDirty => format!("HEAD's time ({}): {path} has uncommitted changes", short(&self.commit)),
            DateFrom::HeadUncommitted => format!("HEAD's time ({}): no commit changed {path}", short(&self.commit)),
            DateFrom::NoGit => "0: the images directory is not in a git checkout".to_string(),
        }
    }
}

/// The source dates of images under one images root, asking git once per
/// image (and once for HEAD).
pub struct SourceDates<'a> {
    root: &'a Path,
    git: Option<GitState>,
    head: Option<Option<(String, u64)>>,
}

impl<'a> SourceDates<'a> {
    /// Reads the checkout's state (two git calls); outside git, every date is 0.
    pub fn read(images_root: &'a Path) -> SourceDates<'a> {
        SourceDates { root: images_root, git: GitState::read(images_root), head: None }
    }

    /// The source date of the image at `path` (relative to the images root).
    pub fn of(&mut self, path: &str) -> SourceDate {
        let no_git = SourceDate { seconds: 0, from: DateFrom::NoGit, commit: None };
        let Some(git) = &self.git else { return no_git };
        let from = if git.dirty(path) {
            DateFrom::HeadDirty
        } else {
            match last_commit(self.root, Some(path)) {
                Some((commit, seconds)) => {
                    return SourceDate { seconds, from: DateFrom::LastChange, commit: Some(commit) }
                }
                None => DateFrom::HeadUncommitted,
            }
        };
        let head = self.head.get_or_insert_with(|| last_commit(self.root, None));
        match head {
            Some((commit, seconds)) => SourceDate { seconds: *seconds, from, commit: Some(commit.clone()) },
            None => no_git,
        }
    }
}

/// The last commit (its name and commit time) that changed `path` under
/// `root`, or HEAD's.
fn last_commit(root: &Path, path: Option<&str>) -> Option<(String, u64)> {
    let sh = Shell::new().ok()?;
    let format = "--format=%H %ct";
    let paths: Vec<&str> = path.map(|p| vec!["--", p]).unwrap_or_default();
    // Image paths are names, never patterns.
    let out = cmd!(sh, "git -C {root} log -1 {format} {paths...}")
        .env("GIT_LITERAL_PATHSPECS", "1")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    parse_last_commit(&out)
}

/// `<commit> <seconds>`, as `git log --format='%H %ct'` prints it.
fn parse_last_commit(text: &str) -> Option<(String, u64)> {
    let (commit, seconds) = text.trim().split_once(' ')?;
    Some((commit.to_string(), seconds.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_lines() {
        assert_eq!(parse_last_commit("abc 1700000000\n"), Some(("abc".into(), 1_700_000_000)));
        assert_eq!(parse_last_commit(""), None);
        assert_eq!(parse_last_commit("abc soon"), None);
    }

    #[test]
    fn descriptions_say_where_the_date_comes_from() {
        let commit = Some("0123456789abcdef0123".to_string());
        let date = |from| SourceDate { seconds: 7, from, commit: commit.clone() };
        assert_eq!(
            date(DateFrom::LastChange).describe("basic/hello"),
            "the time of commit 0123456789ab, the last to change basic/hello"
        );
        assert_eq!(
            date(DateFrom::HeadDirty).describe("basic/hello"),
            "HEAD's time (0123456789ab): basic/hello has uncommitted changes"
        );
        assert_eq!(date(DateFrom::HeadUncommitted).describe("a"), "HEAD's time (0123456789ab): no commit changed a");
        let none = SourceDate { seconds: 0, from: DateFrom::NoGit, commit: None };
        assert_eq!(none.describe("a"), "0: the images directory is not in a git checkout");
    }
}
