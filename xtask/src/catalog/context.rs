//! An image's build context on disk as the engine receives it: the walk of
//! its directory that applies `.dockerignore`. Pure: it reads the directory
//! and nothing else; what is made of each path (hashed, looked up) is the
//! caller's.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::catalog::discovery::walk_error;
use crate::catalog::dockerignore::DockerIgnore;
pub use crate::catalog::dockerignore::Inclusion;

/// One path below an image directory, as the walk finds it.
#[derive(Debug)]
pub struct ContextEntry {
    /// The path relative to the image directory.
    pub rel: PathBuf,
    /// What is there; a symlink is not followed.
    pub entry: walkdir::DirEntry,
    pub inclusion: Inclusion,
}

/// Every path below `dir` (not `dir` itself), in the order of a walk by
/// file name, with whether `ignore` leaves it in the build context. Symlinks
/// are recorded, not followed. A path that cannot be read ends the walk
/// with an error naming it.
pub fn walk<'a>(dir: &'a Path, ignore: &'a DockerIgnore) -> impl Iterator<Item = Result<ContextEntry>> + 'a {
    let mut walk = walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name().min_depth(1).into_iter();
    std::iter::from_fn(move || {
        let entry = match walk.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(walk_error(e))),
        };
        let rel = entry.path().strip_prefix(dir).expect("walk stays in the image").to_path_buf();
        let inclusion = ignore.inclusion(&rel, entry.file_type().is_dir());
        if inclusion == Inclusion::Pruned {
            walk.skip_current_dir();
        }
        Some(Ok(ContextEntry { rel, entry, inclusion }))
    })
}

#[cfg(test)]
mod tests {
    use super::Inclusion::*;
    use super::*;

    fn walked(dir: &Path, ignore: &str) -> Vec<(String, Inclusion)> {
        let ignore = DockerIgnore::parse(ignore).unwrap();
        walk(dir, &ignore).map(|e| e.unwrap()).map(|e| (e.rel.to_string_lossy().into_owned(), e.inclusion)).collect()
    }

    fn rows(rows: &[(&str, Inclusion)]) -> Vec<(String, Inclusion)> {
        rows.iter().map(|(path, inclusion)| (path.to_string(), *inclusion)).collect()
    }

    #[test]
    fn every_path_in_order_with_what_the_engine_receives() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for file in ["b/y", "b/x", "a", "c/z", ".dockerignore"] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        std::os::unix::fs::symlink("b", dir.join("d")).unwrap();
        assert_eq!(
            walked(dir, ""),
            rows(&[
                (".dockerignore", Included),
                ("a", Included),
                ("b", Included),
                ("b/x", Included),
                ("b/y", Included),
                ("c", Included),
                ("c/z", Included),
                ("d", Included),
            ])
        );
        assert_eq!(
            walked(dir, "b\nd"),
            rows(&[
                (".dockerignore", Included),
                ("a", Included),
                ("b", Pruned),
                ("c", Included),
                ("c/z", Included),
                ("d", Excluded)
            ])
        );
        // With a pattern that re-includes, an excluded directory is walked.
        assert_eq!(
            walked(dir, "b\n!b/y"),
            rows(&[
                (".dockerignore", Included),
                ("a", Included),
                ("b", Excluded),
                ("b/x", Excluded),
                ("b/y", Included),
                ("c", Included),
                ("c/z", Included),
                ("d", Included),
            ])
        );
    }
}
