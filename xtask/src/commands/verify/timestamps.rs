//! File times: whether the builder could set every file's time to
//! `SOURCE_DATE_EPOCH` (BuildKit 0.13 and later with the exporter's
//! `rewrite-timestamp=true`, podman with `--timestamp`), and whether that
//! would make two builds that differ in file times identical.

use serde::Serialize;

use super::compare::Comparison;
use crate::engine::Builder;

/// The first BuildKit that rewrites file times (`rewrite-timestamp=true`).
const REWRITING_BUILDKIT: (u32, u32) = (0, 13);

/// What rewriting file times would do for an image whose file times differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// Whether file times are all that differ, so that rewriting them would
    /// make the two builds the same image, byte for byte.
    pub would_fix: bool,
    /// Whether this builder can rewrite them; `None` when it does not say.
    pub builder_can: Option<bool>,
    pub note: String,
}

/// What rewriting file times would do, when they differ: `buildkit` is the
/// BuildKit version the builder reports (`v0.13.1`).
pub fn rewrite(comparison: &Comparison, builder: &Builder, buildkit: Option<&str>, epoch: u64) -> Option<Rewrite> {
    if !comparison.file_times_differ() {
        return None;
    }
    let would_fix = comparison.reproducible();
    let effect = if would_fix {
        "which would make the two builds identical"
    } else {
        "which would not be enough: more than file times differ"
    };
    let option = "--output type=docker,rewrite-timestamp=true";
    let (builder_can, note) = match builder {
        Builder::Buildx { .. } => match buildkit.map(|v| (v, at_least(v, REWRITING_BUILDKIT))) {
            Some((version, true)) => (
                Some(true),
                format!("BuildKit {version} can set every file time to SOURCE_DATE_EPOCH ({option}), {effect}"),
            ),
            Some((version, false)) => (
                Some(false),
                format!(
                    "BuildKit 0.13 or later could set every file time to SOURCE_DATE_EPOCH ({option}), {effect}; \
                     this builder's is {version}"
                ),
            ),
            None => (
                None,
                format!(
                    "BuildKit 0.13 or later can set every file time to SOURCE_DATE_EPOCH ({option}), {effect}; \
                     this builder did not say its version"
                ),
            ),
        },
        Builder::DaemonBuildKit => (
            Some(false),
            format!(
                "buildx with BuildKit 0.13 or later could set every file time to SOURCE_DATE_EPOCH ({option}), \
                 {effect}; the daemon's BuildKit, through a docker client before 23, cannot"
            ),
        ),
        Builder::Classic => (
            Some(false),
            format!(
                "docker's classic builder cannot rewrite file times; BuildKit 0.13 or later could set them all to \
                 SOURCE_DATE_EPOCH ({option}), {effect}"
            ),
        ),
        Builder::Podman => (
            Some(true),
            format!(
                "podman build --timestamp {epoch} would set every file time, and the image's creation time, to \
                 SOURCE_DATE_EPOCH, {effect}"
            ),
        ),
    };
    Some(Rewrite { would_fix, builder_can, note })
}

/// Whether a version (`v0.13.1`, `v0.8+unknown`, `0.12.5-tp-docker`) is at
/// least `(major, minor)`.
fn at_least(version: &str, wanted: (u32, u32)) -> bool {
    let digits = version.trim().trim_start_matches('v');
    let core = digits.split(|c: char| !(c.is_ascii_digit() || c == '.')).next().unwrap_or_default();
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        (Some(major), None) => major > wanted.0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::compare::{Kind, LayerDiff};
    use super::*;

    fn differing(kinds: &[Kind]) -> Comparison {
        let paths = kinds.iter().map(|k| (*k, vec!["/t".to_string()])).collect::<BTreeMap<_, _>>();
        Comparison { layers: vec![LayerDiff { layer: 1, step: "RUN touch /t".into(), paths }], ..Comparison::default() }
    }

    #[test]
    fn versions() {
        for (version, ok) in [("v0.13.1", true), ("v0.8+unknown", false), ("0.12.5-tp", false), ("v1.0", true)] {
            assert_eq!(at_least(version, (0, 13)), ok, "{version}");
        }
        assert!(!at_least("", (0, 13)));
    }

    #[test]
    fn what_rewriting_would_do_on_each_builder() {
        let times = differing(&[Kind::Mtime]);
        let buildx = Builder::Buildx { driver: "docker".into() };
        assert_eq!(rewrite(&Comparison::default(), &buildx, Some("v0.13.1"), 7), None);
        assert_eq!(
            rewrite(&times, &buildx, Some("v0.8+unknown"), 7),
            Some(Rewrite {
                would_fix: true,
                builder_can: Some(false),
                note: "BuildKit 0.13 or later could set every file time to SOURCE_DATE_EPOCH (--output \
                       type=docker,rewrite-timestamp=true), which would make the two builds identical; this \
                       builder's is v0.8+unknown"
                    .into()
            })
        );
        let new = rewrite(&times, &buildx, Some("v0.13.1"), 7).unwrap();
        assert_eq!((new.would_fix, new.builder_can), (true, Some(true)));
        let content = rewrite(&differing(&[Kind::Content, Kind::Mtime]), &buildx, Some("v0.13.1"), 7).unwrap();
        assert!(!content.would_fix && content.note.ends_with("which would not be enough: more than file times differ"));
        assert_eq!(rewrite(&times, &Builder::Classic, None, 7).unwrap().builder_can, Some(false));
        assert_eq!(rewrite(&times, &Builder::DaemonBuildKit, None, 7).unwrap().builder_can, Some(false));
        let podman = rewrite(&times, &Builder::Podman, None, 7).unwrap();
        assert!(podman.note.starts_with("podman build --timestamp 7 "), "{}", podman.note);
    }
}
