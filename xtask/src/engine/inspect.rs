//! What engines say of local images and containers: the part of `image
//! inspect`'s JSON read, and the plain values the [`Engine`](super::Engine)
//! gives for it.

use std::collections::{BTreeMap, HashSet};

use crate::model::Platform;

/// A local image as the engine describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDetails {
    pub id: String,
    pub platform: Platform,
    /// Bytes, as the engine counts them (every layer, the base's included).
    pub size: u64,
    pub layers: usize,
    /// When it was built, as the engine writes it (RFC 3339).
    pub created: String,
    pub labels: BTreeMap<String, String>,
    /// `repository@digest` of each registry manifest the engine knows it
    /// as (pulled by, or pushed as).
    pub repo_digests: Vec<String>,
}

/// The part of `image inspect` read: what an image is for, and what it is.
#[derive(serde::Deserialize)]
pub(super) struct InspectedImage {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Os", default)]
    os: String,
    #[serde(rename = "Architecture", default)]
    architecture: String,
    #[serde(rename = "Variant", default)]
    variant: Option<String>,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "Created", default)]
    created: Option<String>,
    #[serde(rename = "RootFS", default)]
    rootfs: Option<InspectedRootFs>,
    #[serde(rename = "Config", default)]
    config: Option<InspectedConfig>,
    #[serde(rename = "RepoDigests", default)]
    repo_digests: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct InspectedRootFs {
    #[serde(rename = "Layers", default)]
    layers: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct InspectedConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

impl InspectedImage {
    pub(super) fn details(self) -> ImageDetails {
        ImageDetails {
            id: full_id(&self.id),
            platform: Platform {
                os: self.os,
                architecture: self.architecture,
                variant: self.variant.unwrap_or_default(),
            },
            size: self.size,
            layers: self.rootfs.and_then(|r| r.layers).map_or(0, |l| l.len()),
            created: self.created.unwrap_or_default(),
            labels: self.config.and_then(|c| c.labels).unwrap_or_default(),
            repo_digests: self.repo_digests.unwrap_or_default(),
        }
    }

    /// Its ID, and its [`ImageFacts`].
    pub(super) fn facts(self) -> (String, ImageFacts) {
        let facts = ImageFacts {
            platform: Platform {
                os: self.os,
                architecture: self.architecture,
                variant: self.variant.unwrap_or_default(),
            },
            size: self.size,
            layers: self.rootfs.and_then(|r| r.layers).unwrap_or_default(),
        };
        (full_id(&self.id), facts)
    }
}

/// A local image as `image inspect` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    pub platform: Platform,
    /// Bytes, its base's layers included.
    pub size: u64,
    /// Its layers' digests, base first.
    pub layers: Vec<String>,
}

/// What removing names did: the images deleted (by ID), and what the
/// engine said of the names it kept.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    pub deleted: HashSet<String>,
    pub refused: Vec<String>,
}

/// A container and the image it was created from, when the engine's
/// answer tells which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: Option<String>,
}

/// Image IDs as docker writes them; podman leaves out the `sha256:`.
pub(super) fn full_id(id: &str) -> String {
    if id.contains(':') {
        id.to_string()
    } else {
        format!("sha256:{id}")
    }
}
