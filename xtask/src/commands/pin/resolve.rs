//! What a tag points at now: the manifest or index its registry serves for
//! it (one `GET` per distinct reference, several at once), checked against
//! the digest the registry tells; and which platforms that covers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// `f` of each item, `parallel` at a time, in the items' order.
pub fn each<T: Sync, R: Send>(items: &[T], parallel: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(items.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(k) else { return };
                let answer = f(item);
                answers.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(answer);
            });
        }
    });
    let answers = answers.into_inner().unwrap_or_else(|e| e.into_inner());
    answers.into_iter().map(|a| a.expect("every item is asked")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_keeps_the_order() {
        let items: Vec<u32> = (0..50).collect();
        assert_eq!(each(&items, 4, |n| n * 2), items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(each(&[] as &[u32], 4, |n| *n), Vec::<u32>::new());
    }

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
