//! Provenance: the labels every built image carries (the git revision it
//! was built from, where its source lives, and the tool's own record of its
//! path, tag and tag scheme, and of the digest each external base it was
//! built on had) and the git state they are read from. Labels go on the
//! build's command line: they never enter a tag.

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

/// The last part of the key of the label that names, for each external
/// base of a build, the digest of what the build used: `<prefix>.bases`.
const BASES: &str = "bases";

/// The most bases one label is read with: a label listing more is not read.
pub const MAX_BASES: usize = 256;

/// The key of the bases label of images named under `local_prefix`.
pub fn bases_key(local_prefix: &str) -> String {
    format!("{}.{BASES}", label_prefix(local_prefix))
}

/// An external base a build used: the `name:tag` its Dockerfile follows,
/// and the digest of what was built on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaseDigest {
    pub reference: String,
    pub digest: String,
}

/// The bases label's value: `name:tag=sha256:<hex>` for each base, joined
/// by `,`, empty for a build on none. Neither `=` nor `,` can be part of a
/// reference or a digest, and every character is one a Dockerfile's
/// `LABEL` line takes as it is, so that the labels still cost one step.
pub fn bases_value(bases: &[BaseDigest]) -> String {
    let pairs: Vec<String> = bases.iter().map(|b| format!("{}={}", b.reference, b.digest)).collect();
    pairs.join(",")
}

/// The bases a label's value lists, or why it is not such a list. The
/// value may come from any image (a registry's, another tool's), so it is
/// read whole or not at all: each reference plain and followed by a tag,
/// each digest a sha256, at most [`MAX_BASES`].
pub fn read_bases(value: &str) -> Result<Vec<BaseDigest>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = value.split(',').collect();
    if entries.len() > MAX_BASES {
        return Err(format!("its bases label lists {} bases, more than the {MAX_BASES} read", entries.len()));
    }
    let plain = |r: &str| r.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c));
    entries
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((reference, digest))
                if plain(reference)
                    && crate::model::Parts::of(reference).tag.is_some()
                    && crate::model::Reference::parse(reference).is_ok()
                    && is_sha256(digest) =>
            {
                Ok(BaseDigest { reference: reference.to_string(), digest: digest.to_string() })
            }
            _ => Err("its bases label is not a list of `name:tag=sha256:<digest>`".to_string()),
        })
        .collect()
}

/// Whether `digest` is a sha256 digest as registries write it: `sha256:`
/// and 64 lower-case hex digits.
pub fn is_sha256(digest: &str) -> bool {
    let hex = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    digest.strip_prefix("sha256:").is_some_and(hex)
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

    /// The label naming the digest of each external base a build used.
    pub fn bases_label(&self, bases: &[BaseDigest]) -> (String, String) {
        (format!("{}.{BASES}", self.prefix), bases_value(bases))
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
    fn bases_labels_read_back_whole_or_not_at_all() {
        let (a, b) = ("a".repeat(64), "0123456789abcdef".repeat(4));
        let bases = [
            BaseDigest { reference: "127.0.0.1:5000/x/b:t".into(), digest: format!("sha256:{a}") },
            BaseDigest { reference: "alpine:3.20".into(), digest: format!("sha256:{b}") },
        ];
        let value = bases_value(&bases);
        assert_eq!(value, format!("127.0.0.1:5000/x/b:t=sha256:{a},alpine:3.20=sha256:{b}"));
        assert_eq!(read_bases(&value).unwrap(), bases);
        assert_eq!(bases_value(&[]), "");
        assert_eq!(read_bases(""), Ok(vec![]));
        assert_eq!(bases_key("gvisor.dev/images"), "dev.gvisor.images.bases");
        let provenance = Provenance { prefix: "dev.gvisor.images".into(), ..Provenance::default() };
        assert_eq!(provenance.bases_label(&bases[1..]), ("dev.gvisor.images.bases".into(), bases_value(&bases[1..])));

        let not_a_list = Err("its bases label is not a list of `name:tag=sha256:<digest>`".to_string());
        for bad in [
            format!("alpine=sha256:{a}"),
            format!("alpine:3@sha256:{b}=sha256:{a}"),
            format!("alpine:3=sha256:{}", a.to_uppercase()),
            "alpine:3=sha256:00".into(),
            format!("alpine:3=md5:{a}"),
            format!("al pine:3=sha256:{a}"),
            format!("alpine:3=sha256:{a},"),
            format!("alpine:3\u{1b}=sha256:{a}"),
            "{\"alpine:3\": 1}".into(),
        ] {
            assert_eq!(read_bases(&bad), not_a_list, "{bad}");
        }
        let many = vec![format!("alpine:3=sha256:{a}"); MAX_BASES + 1].join(",");
        assert_eq!(read_bases(&many), Err(format!("its bases label lists 257 bases, more than the {MAX_BASES} read")));
        assert_eq!(read_bases(&vec![format!("alpine:3=sha256:{a}"); MAX_BASES].join(",")).map(|b| b.len()), Ok(256));
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
