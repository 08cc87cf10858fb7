//! What a tag points at now: the manifest or index its registry serves for
//! it (one `GET` per distinct reference, several at once with
//! [`registry::each`](crate::registry::each)), checked against the digest
//! the registry tells; and which platforms that covers.

use anyhow::{anyhow, Result};
use serde::Deserialize;

use crate::model::{Platform, Reference};
use crate::registry::{Manifest, Registry};

/// How many look-ups run at once.
pub const PARALLEL: usize = 8;

/// The manifest `reference` (`name:tag`) names in its registry now; a tag
/// it lacks is an error.
pub fn manifest(registry: &Registry, reference: &str) -> Result<Manifest> {
    let r = Reference::parse(reference)?;
    let found = registry.manifest(reference)?;
    found.ok_or_else(|| anyhow!("registry {} has no {r}: name a tag it has", r.host))
}

/// The platforms of what `reference` names: an index's entries, or one
/// image's, from its config (one more request).
pub fn platforms(registry: &Registry, reference: &str, manifest: &Manifest) -> Result<Vec<Platform>> {
    if !manifest.is_index() {
        return Ok(vec![registry.platform_in(reference, manifest)?]);
    }
    #[derive(Deserialize)]
    struct IndexDocument {
        manifests: Vec<IndexEntry>,
    }
    #[derive(Deserialize)]
    struct IndexEntry {
        #[serde(default)]
        platform: Option<IndexEntryPlatform>,
    }
    #[derive(Deserialize)]
    struct IndexEntryPlatform {
        os: String,
        architecture: String,
        #[serde(default)]
        variant: String,
    }
    let index: IndexDocument = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| anyhow!("the index {reference} names in its registry cannot be read: {e}"))?;
    Ok(index
        .manifests
        .into_iter()
        .filter_map(|e| e.platform)
        .map(|p| Platform { os: p.os, architecture: p.architecture, variant: p.variant })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_of_an_index() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:1","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:2","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:3","annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}"#;
        let manifest = Manifest {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: crate::registry::digest_of(bytes),
            bytes: bytes.to_vec(),
        };
        let registry = Registry::new(crate::registry::Credentials::from_files(vec![]), Default::default());
        let platform = |a: &str, v: &str| Platform { os: "linux".into(), architecture: a.into(), variant: v.into() };
        assert_eq!(platforms(&registry, "x/y:1", &manifest).unwrap(), [platform("amd64", ""), platform("arm64", "v8")]);
    }
}
