//! What the registry holds: each catalog repository's tags, the manifests
//! they name and the blobs those hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};

use super::keep::Kept;
use super::plan::{Repository, Tag};
use crate::model::Arch;
use crate::registry::Registry;

/// Each repository's tags and what they name, `jobs` repositories at once.
/// A repository whose tags all stay silently (`latest` and tags of revisions
/// to keep) is not read further than its tag list.
pub fn read_repositories(
    registry: &Registry,
    catalog: &[(String, String, Arch)],
    kept: &Kept,
    jobs: usize,
) -> Result<Vec<Repository>> {
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<(usize, Result<Repository>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(catalog.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some((name, path, arch)) = catalog.get(k) else { return };
                let kept_tags = kept.tags.get(&(path.clone(), *arch));
                let stays = |tag: &str| tag == "latest" || kept_tags.is_some_and(|k| k.contains(tag));
                let read = read_repository(registry, name, &stays).map(|tags| Repository {
                    name: name.clone(),
                    path: path.clone(),
                    arch: *arch,
                    tags,
                });
                let failed = read.is_err();
                found.lock().unwrap_or_else(|e| e.into_inner()).push((k, read));
                if failed {
                    return;
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    found.sort_by_key(|(k, _)| *k);
    found.into_iter().map(|(k, r)| r.with_context(|| format!("cannot read {}", catalog[k].0))).collect()
}

fn read_repository(registry: &Registry, name: &str, stays: &dyn Fn(&str) -> bool) -> Result<Vec<Tag>> {
    let listed = registry.tags(name)?;
    if listed.iter().all(|t| stays(t)) {
        let unread = |tag: &String| Tag { tag: tag.clone(), digest: String::new(), children: vec![], blobs: vec![] };
        return Ok(listed.iter().map(unread).collect());
    }
    let mut tags = Vec::new();
    let mut children_read: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for tag in listed {
        // A tag deleted since the listing is no tag.
        let Some(manifest) = registry.manifest(&format!("{name}:{tag}"))? else { continue };
        let value: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| anyhow!("the manifest of {name}:{tag} cannot be read: {e}"))?;
        let (children, blobs) = if manifest.is_index() {
            let children: Vec<String> = value["manifests"]
                .as_array()
                .map(|m| m.iter().filter_map(|e| e["digest"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            let mut blobs = Vec::new();
            for child in &children {
                if !children_read.contains_key(child) {
                    let read = match registry.manifest(&format!("{name}@{child}"))? {
                        Some(m) => image_blobs(&serde_json::from_slice(&m.bytes).unwrap_or_default()),
                        None => Vec::new(),
                    };
                    children_read.insert(child.clone(), read);
                }
                blobs.extend(children_read[child].iter().cloned());
            }
            (children, blobs)
        } else {
            (Vec::new(), image_blobs(&value))
        };
        tags.push(Tag { tag, digest: manifest.digest, children, blobs });
    }
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(tags)
}

/// The config and layers an image manifest holds, with their sizes.
fn image_blobs(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    let config = std::iter::once(&manifest["config"]);
    let layers = manifest["layers"].as_array().into_iter().flatten();
    config
        .chain(layers)
        .filter_map(|d| Some((d["digest"].as_str()?.to_string(), d["size"].as_u64().unwrap_or(0))))
        .collect()
}
