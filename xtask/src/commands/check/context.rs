//! What an image's build context holds, for the checks of its COPY and
//! ADD sources and of its `.dockerignore`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use super::rules::{Diagnostic, IGNORED_DOCKERFILE, SYNTAX};
use crate::catalog::context::{self, Inclusion};
use crate::catalog::dockerignore::DockerIgnore;

/// What an image's build context holds: every path in it, and those the
/// engine receives (not excluded by `.dockerignore`), with their ancestors.
#[derive(Default)]
pub(super) struct Contents {
    ignore: DockerIgnore,
    /// Why `.dockerignore` could not be read; nothing is excluded then.
    ignore_error: Option<String>,
    on_disk: HashSet<String>,
    included: HashSet<String>,
    /// Excluded directories not walked (nothing under them can be re-included).
    pruned: Vec<String>,
}

/// Whether a COPY or ADD source is in the build context.
pub(super) enum Presence {
    Included,
    Excluded,
    Missing,
}

impl Contents {
    pub(super) fn read(dir: &Path) -> Result<Contents> {
        let mut contents = Contents::default();
        match DockerIgnore::load(dir) {
            Ok(ignore) => contents.ignore = ignore,
            Err(e) => contents.ignore_error = Some(format!("{:#}", e)),
        }
        for walked in context::walk(dir, &contents.ignore) {
            let walked = walked?;
            let name = walked.rel.to_string_lossy().into_owned();
            contents.on_disk.insert(name.clone());
            match walked.inclusion {
                Inclusion::Pruned => contents.pruned.push(name),
                Inclusion::Excluded => {}
                Inclusion::Included => {
                    let mut path = Some(name.as_str());
                    while let Some(p) = path {
                        if !contents.included.insert(p.to_string()) {
                            break;
                        }
                        path = p.rsplit_once('/').map(|(parent, _)| parent);
                    }
                }
            }
        }
        Ok(contents)
    }

    /// The findings about the image's `.dockerignore` (at `path`, relative
    /// to the images root) for its Dockerfile `dockerfile`.
    pub(super) fn ignore_findings(&self, path: &str, dockerfile: &str) -> Vec<Diagnostic> {
        let file = format!("{path}/.dockerignore");
        let mut found = Vec::new();
        if let Some(line) = self.ignore.excluded_by(Path::new(dockerfile)) {
            found.push(Diagnostic::new(
                &file,
                Some(line),
                IGNORED_DOCKERFILE,
                format!(
                    "excludes {dockerfile}, the image's own Dockerfile: remove the pattern, or re-include it with `!{dockerfile}`"
                ),
            ));
        }
        if let Some(e) = &self.ignore_error {
            found.push(Diagnostic::new(&file, None, SYNTAX, e.clone()));
        }
        found
    }

    /// Whether a COPY or ADD source (`/`-separated, relative to the context,
    /// wildcards as the builder matches them) names anything the engine gets.
    pub(super) fn find(&self, source: &str) -> Presence {
        let mut parts: Vec<&str> = Vec::new();
        for part in source.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let path = parts.join("/");
        if path.is_empty() {
            return Presence::Included;
        }
        let under_pruned = |p: &str| self.pruned.iter().any(|d| p == d || p.starts_with(&format!("{d}/")));
        if path.contains(['*', '?', '[']) {
            let Ok(glob) = globset::GlobBuilder::new(&path).literal_separator(true).build() else {
                return Presence::Missing;
            };
            let glob = glob.compile_matcher();
            if self.included.iter().any(|p| glob.is_match(p)) {
                return Presence::Included;
            }
            if self.on_disk.iter().any(|p| glob.is_match(p)) {
                return Presence::Excluded;
            }
            return Presence::Missing;
        }
        if self.included.contains(&path) {
            Presence::Included
        } else if self.on_disk.contains(&path) || under_pruned(&path) {
            Presence::Excluded
        } else {
            Presence::Missing
        }
    }
}
