//! What the registry holds: which of its repositories are the catalog
//! repositories below the remote prefix, each one's tags, the manifests
//! they name and the blobs those hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

use super::keep::Kept;
use super::plan::{Repository, Tag};
use crate::catalog::discovery::is_image_path;
use crate::model::{Arch, Reference};
use crate::registry::Registry;

/// Where `gc` looks: a registry, and the repository path below it that the
/// remote prefix names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub host: String,
    /// `p/` for the prefix `host/p`.
    pub path: String,
}

impl Scope {
    /// The scope of a remote prefix, which must name a repository path: the
    /// registry alone would make every `<path>_<arch>` repository there
    /// look like one of ours.
    pub fn of(remote_prefix: &str) -> Result<Scope> {
        let probe = Reference::parse(&format!("{remote_prefix}/x"))?;
        let path = probe.repository.strip_suffix('x').unwrap_or_default().to_string();
        if path.is_empty() {
            bail!(
                "the remote prefix `{remote_prefix}` is a registry with no repository path: gc would take every \
                 <path>_<arch> repository there for its own, other projects' too; set REMOTE_IMAGE_PREFIX (or \
                 --remote-image-prefix, or remote_image_prefix in xtask/images.toml) to host[:port]/path, and push \
                 the images under it"
            );
        }
        Ok(Scope { host: probe.host, path })
    }

    /// The catalog repositories in scope, those of images gone from the
    /// tree too: (`host/repository`, image path, architecture).
    pub fn repositories(&self, registry: &Registry) -> Result<Vec<(String, String, Arch)>> {
        let names = registry
            .repositories(&self.host)
            .with_context(|| format!("cannot list the repositories of {}", self.host))?;
        Ok(names
            .iter()
            .filter_map(|name| {
                let (path, arch) = Arch::split_suffix(name.strip_prefix(&self.path)?)?;
                is_image_path(path).then(|| (format!("{}/{name}", self.host), path.to_string(), arch))
            })
            .collect())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_needs_a_repository_path() {
        let scope = |host: &str, path: &str| Scope { host: host.into(), path: path.into() };
        assert_eq!(Scope::of("r:5000/p").unwrap(), scope("r:5000", "p/"));
        assert_eq!(Scope::of("r.example/team/p").unwrap(), scope("r.example", "team/p/"));
        assert_eq!(Scope::of("someone").unwrap(), scope("docker.io", "someone/"));
        for bare in ["127.0.0.1:5000", "localhost", "r.example", "localhost:5000"] {
            let e = Scope::of(bare).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("the remote prefix `{bare}` is a registry with no repository path: ")),
                "{e}"
            );
        }
    }
}
