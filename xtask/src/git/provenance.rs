//! Provenance: the labels every built image carries (the git revision it
//! was built from, where its source lives, and the tool's own record of its
//! path, tag and tag scheme) and the git state they are read from. Labels
//! go on the build's command line: they never enter a tag.

use std::path::Path;

use xshell::{cmd, Shell};

use crate::config::Settings;

/// The git commit an image was built from, `-dirty` when its directory had
/// uncommitted changes.
pub const REVISION: &str = "org.opencontainers.image.revision";
/// Where the image's source lives (the `source` setting).
pub const SOURCE: &str = "org.opencontainers.image.source";

/// The prefix of the tool's own label keys, from the local name prefix:
/// its domain's labels reversed (a port dropped), then the rest of its
/// path, joined by `.`, with `_` written `-`. `gvisor.dev/images` gives
/// `dev.gvisor.images`; a prefix with no domain (`local/x`) is only joined:
/// `local.x`.
pub fn label_prefix(local_prefix: &str) -> String {
    let mut segments = local_prefix.split('/');
    let first = segments.next().unwrap_or_default();
    let mut parts: Vec<&str> = Vec::new();
    if first.contains(['.', ':']) || first == "localhost" {
        let host = first.split(':').next().unwrap_or(first);
        parts.extend(host.split('.').rev());
    } else {
        parts.push(first);
    }
    parts.extend(segments);
    parts.iter().filter(|p| !p.is_empty()).map(|p| p.replace('_', "-")).collect::<Vec<_>>().join(".")
}

/// The git state of the images root: the commit checked out, and the files
/// under the root with uncommitted changes (untracked ones included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitState {
    pub commit: String,
    /// Paths relative to the images root, `/`-separated.
    pub changed: Vec<String>,
}

impl GitState {
    /// Two git calls; `None` when the images root is not in a git checkout
    /// (or git is missing): the images then carry no revision.
    pub fn read(images_root: &Path) -> Option<GitState> {
        let sh = Shell::new().ok()?;
        let out = cmd!(sh, "git -C {images_root} rev-parse --show-prefix HEAD").quiet().ignore_stderr().read().ok()?;
        let mut lines = out.lines();
        let (prefix, commit) = match (lines.next(), lines.next()) {
            (Some(prefix), Some(commit)) => (prefix.to_string(), commit.trim().to_string()),
            // At the top of the checkout the prefix is an empty line, which `read` trims.
            (Some(commit), None) => (String::new(), commit.trim().to_string()),
            _ => return None,
        };
        let status = cmd!(sh, "git -C {images_root} status --porcelain -z --untracked-files=all --no-renames -- .")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()?;
        Some(GitState { commit, changed: changed_paths(&status, &prefix) })
    }

    /// Whether anything under the image directory `path` has changed.
    pub fn dirty(&self, path: &str) -> bool {
        self.changed.iter().any(|c| c == path || c.starts_with(&format!("{path}/")))
    }
}

/// The paths `git status --porcelain -z` lists (relative to the checkout),
/// relative to the images root at `prefix` in the checkout.
fn changed_paths(status: &str, prefix: &str) -> Vec<String> {
    status
        .split('\0')
        .filter_map(|entry| entry.get(3..))
        .filter_map(|path| path.strip_prefix(prefix))
        .map(|path| path.trim_end_matches('/').to_string())
        .collect()
}

/// What a run's builds are labelled with.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    prefix: String,
    scheme: &'static str,
    source: Option<String>,
    git: Option<GitState>,
}

impl Provenance {
    pub fn new(settings: &Settings, git: Option<GitState>) -> Provenance {
        Provenance {
            prefix: label_prefix(&settings.local_prefix),
            scheme: settings.tag_scheme.as_str(),
            source: settings.source.clone(),
            git,
        }
    }

    /// The labels of the image at `path` (relative to the images root) built under `tag`.
    pub fn labels(&self, path: &str, tag: &str) -> Vec<(String, String)> {
        let mut labels = Vec::new();
        if let Some(git) = &self.git {
            let dirty = if git.dirty(path) { "-dirty" } else { "" };
            labels.push((REVISION.to_string(), format!("{}{dirty}", git.commit)));
        }
        if let Some(source) = &self.source {
            labels.push((SOURCE.to_string(), source.clone()));
        }
        labels.push((format!("{}.path", self.prefix), path.to_string()));
        labels.push((format!("{}.tag", self.prefix), tag.to_string()));
        labels.push((format!("{}.tag-scheme", self.prefix), self.scheme.to_string()));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for (local, prefix) in [
            ("gvisor.dev/images", "dev.gvisor.images"),
            ("localhost:5000/a/b_c", "localhost.a.b-c"),
            ("registry.example.com", "com.example.registry"),
            ("local/x", "local.x"),
        ] {
            assert_eq!(label_prefix(local), prefix, "{local}");
        }
    }

    #[test]
    fn changed_paths_under_the_root() {
        let status = " M images/basic/hello/hello.txt\0?? images/basic/new/\0 D README.md\0";
        assert_eq!(changed_paths(status, "images/"), ["basic/hello/hello.txt", "basic/new"]);
        let git = GitState { commit: "c".into(), changed: changed_paths(status, "images/") };
        assert!(git.dirty("basic/hello") && git.dirty("basic") && git.dirty("basic/new"));
        assert!(!git.dirty("basic/hell") && !git.dirty("default"));
    }

    #[test]
    fn labels() {
        let provenance = Provenance {
            prefix: "dev.gvisor.images".into(),
            scheme: "content",
            source: Some("https://example.com/repo".into()),
            git: Some(GitState { commit: "abc".into(), changed: vec!["basic/hello/x".into()] }),
        };
        let pairs = |path: &str| -> Vec<String> {
            provenance.labels(path, "0123").into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        assert_eq!(
            pairs("basic/hello"),
            [
                "org.opencontainers.image.revision=abc-dirty",
                "org.opencontainers.image.source=https://example.com/repo",
                "dev.gvisor.images.path=basic/hello",
                "dev.gvisor.images.tag=0123",
                "dev.gvisor.images.tag-scheme=content",
            ]
        );
        assert_eq!(pairs("default")[0], "org.opencontainers.image.revision=abc");
        let bare = Provenance { git: None, source: None, ..provenance.clone() };
        assert_eq!(bare.labels("x", "t").len(), 3);
    }
}
