//! What an image's build context holds, for the checks of its COPY and
//! ADD sources and of its `.dockerignore`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use crate::catalog::discovery::walk_error;
use crate::catalog::dockerignore::DockerIgnore;

/// What an image's build context holds: every path in it, and those the
/// engine receives (not excluded by `.dockerignore`), with their ancestors.
#[derive(Default)]
pub(super) struct BuildContext {
    pub(super) ignore: Option<DockerIgnore>,
    pub(super) ignore_error: Option<String>,
    pub(super) on_disk: HashSet<String>,
    pub(super) included: HashSet<String>,
    /// Excluded directories not walked (nothing under them can be re-included).
    pub(super) pruned: Vec<String>,
}

pub(super) enum Found {
    Included,
    Excluded,
    Missing,
}

impl BuildContext {
    pub(super) fn read(dir: &Path) -> Result<BuildContext> {
        let mut context = BuildContext::default();
        match DockerIgnore::load(dir) {
            Ok(ignore) => context.ignore = Some(ignore),
            Err(e) => context.ignore_error = Some(format!("{:#}", e)),
        }
        let ignore = context.ignore.take().unwrap_or_default();
        let mut walk = walkdir::WalkDir::new(dir).follow_links(false).min_depth(1).into_iter();
        while let Some(entry) = walk.next() {
            let entry = entry.map_err(walk_error)?;
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let name = rel.to_string_lossy().into_owned();
            context.on_disk.insert(name.clone());
            if ignore.excluded(rel) {
                if entry.file_type().is_dir() && ignore.prunes() {
                    context.pruned.push(name);
                    walk.skip_current_dir();
                }
                continue;
            }
            let mut path = Some(name.as_str());
            while let Some(p) = path {
                if !context.included.insert(p.to_string()) {
                    break;
                }
                path = p.rsplit_once('/').map(|(parent, _)| parent);
            }
        }
        context.ignore = Some(ignore);
        Ok(context)
    }

    /// Whether a COPY or ADD source (`/`-separated, relative to the context,
    /// wildcards as the builder matches them) names anything the engine gets.
    pub(super) fn find(&self, source: &str) -> Found {
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
            return Found::Included;
        }
        let under_pruned = |p: &str| self.pruned.iter().any(|d| p == d || p.starts_with(&format!("{d}/")));
        if path.contains(['*', '?', '[']) {
            let Ok(glob) = globset::GlobBuilder::new(&path).literal_separator(true).build() else {
                return Found::Missing;
            };
            let glob = glob.compile_matcher();
            if self.included.iter().any(|p| glob.is_match(p)) {
                return Found::Included;
            }
            if self.on_disk.iter().any(|p| glob.is_match(p)) {
                return Found::Excluded;
            }
            return Found::Missing;
        }
        if self.included.contains(&path) {
            Found::Included
        } else if self.on_disk.contains(&path) || under_pruned(&path) {
            Found::Excluded
        } else {
            Found::Missing
        }
    }
}
