//! `.dockerignore`: which paths of a build context the engine leaves out, with
//! the engine's rules (patterns anchored at the context root, a pattern that
//! matches a directory excludes what is under it, `!` re-includes, last match wins).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::catalog::image_files;
use crate::model::{escape, excerpt};

/// Whether the engine receives a path of the build context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inclusion {
    Included,
    /// `.dockerignore` excludes it.
    Excluded,
    /// `.dockerignore` excludes this directory and no pattern can re-include
    /// anything under it, so the walk does not enter it.
    Pruned,
}

#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<(GlobMatcher, bool)>,
    /// The line of each rule, from 1.
    lines: Vec<usize>,
    has_exceptions: bool,
}

impl DockerIgnore {
    /// Reads `<dir>/.dockerignore` (see [`image_files::read`]); no file
    /// means nothing is excluded.
    pub fn load(dir: &Path) -> Result<DockerIgnore> {
        match image_files::read(dir, ".dockerignore")? {
            Some(bytes) => DockerIgnore::parse(&String::from_utf8_lossy(&bytes)).with_context(|| {
                format!("invalid pattern in {}", escape(&dir.join(".dockerignore").display().to_string()))
            }),
            None => Ok(DockerIgnore::default()),
        }
    }

    pub fn parse(text: &str) -> Result<DockerIgnore> {
        let mut rules = Vec::new();
        let mut lines = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            // globset's own message quotes the whole pattern, unescaped.
            let glob: Glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| anyhow!("{}", e.kind()))
                .with_context(|| format!("pattern `{}`", excerpt(line)))?;
            rules.push((glob.compile_matcher(), !include));
            lines.push(number + 1);
        }
        let has_exceptions = rules.iter().any(|(_, exclude)| !exclude);
        Ok(DockerIgnore { rules, lines, has_exceptions })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when nothing under an excluded directory can be re-included, so a
    /// walk may skip the whole directory.
    pub fn prunes(&self) -> bool {
        !self.has_exceptions
    }

    /// Whether the engine receives `rel` (relative to the context root), a
    /// directory when `is_dir`: the one rule of every walk of a context.
    pub fn inclusion(&self, rel: &Path, is_dir: bool) -> Inclusion {
        if self.is_empty() || !self.excluded(rel) {
            Inclusion::Included
        } else if is_dir && self.prunes() {
            Inclusion::Pruned
        } else {
            Inclusion::Excluded
        }
    }

    /// `rel` is relative to the context root.
    pub fn excluded(&self, rel: &Path) -> bool {
        self.excluded_by(rel).is_some()
    }

    /// The line of the pattern that excludes `rel`, if one does.
    pub fn excluded_by(&self, rel: &Path) -> Option<usize> {
        let mut excluded = None;
        for ((glob, exclude), line) in self.rules.iter().zip(&self.lines) {
            if excluded.is_some() == *exclude {
                continue;
            }
            if rel.ancestors().filter(|p| !p.as_os_str().is_empty()).any(|p| glob.is_match(p)) {
                excluded = exclude.then_some(*line);
            }
        }
        excluded
    }
}

/// Like Go's `filepath.Clean`, less what a relative, anchored pattern never has.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ignore: &str, path: &str) -> bool {
        DockerIgnore::parse(ignore).unwrap().excluded(Path::new(path))
    }

    #[test]
    fn rules() {
        let cases = [
            ("*.log", "a.log", true),
            ("*.log", "dir/a.log", false),
            ("**/*.log", "dir/a.log", true),
            ("build", "build/x/y", true),
            ("/build", "build", true),
            ("./build/", "build/y", true),
            ("build", "src/build", false),
            ("*\n!keep", "keep", false),
            ("*\n!keep", "other", true),
            ("dir\n!dir/keep", "dir/keep", false),
            ("dir\n!dir/keep", "dir/other", true),
            ("# comment\n", "# comment", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[ab]x", "bx", true),
            ("!x\nx", "x", true),
        ];
        for (ignore, path, want) in cases {
            assert_eq!(check(ignore, path), want, "{ignore:?} on {path:?}");
        }
    }

    #[test]
    fn line_of_the_excluding_pattern() {
        let ignore = DockerIgnore::parse("# c\n\n*.md\n!README.md\nREADME*\n").unwrap();
        assert_eq!(ignore.excluded_by(Path::new("a.md")), Some(3));
        assert_eq!(ignore.excluded_by(Path::new("README.md")), Some(5));
        assert_eq!(ignore.excluded_by(Path::new("x")), None);
    }
}
