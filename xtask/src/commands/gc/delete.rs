//! The deletions: each planned manifest once, by digest, unless a tag that
//! stays has come to name it since the plan was made.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use super::plan::{Decision, TagAction};
use crate::registry::{self, Registry};

/// Deletes the planned manifests by digest, each once, after checking that
/// no tag that stays has come to name it since the plan was made.
pub fn delete(registry: &Registry, decisions: &mut [Decision], jobs: usize) {
    let mut by_repo: HashMap<String, Vec<usize>> = HashMap::new();
    for (k, d) in decisions.iter().enumerate() {
        if d.action == TagAction::Delete {
            by_repo.entry(d.repository.clone()).or_default().push(k);
        }
    }
    let work: Vec<(String, Vec<usize>)> = by_repo.into_iter().collect();
    let snapshot: &[Decision] = decisions;
    let results = registry::each(&work, jobs, |(repo, planned)| delete_in(registry, repo, planned, snapshot));
    for (k, outcome) in results.into_iter().flatten() {
        let d = &mut decisions[k];
        match outcome {
            Deletion::Deleted => d.action = TagAction::Deleted,
            Deletion::Kept(why) => (d.action, d.reason) = (TagAction::Keep, Some(why)),
            Deletion::Failed(why) => (d.action, d.reason) = (TagAction::Failed, Some(why)),
        }
    }
}

/// What became of a planned deletion.
enum Deletion {
    Deleted,
    /// A tag that stays came to hold its manifest since the plan was made.
    Kept(String),
    Failed(String),
}

/// One repository's deletions: what each planned decision became.
fn delete_in(registry: &Registry, repo: &str, planned: &[usize], decisions: &[Decision]) -> Vec<(usize, Deletion)> {
    let going: HashSet<&str> = planned.iter().map(|&k| decisions[k].tag.as_str()).collect();
    // The manifests the tags that stay hold now (their own, and those
    // their indexes list), and which tag holds each.
    let staying = || -> Result<HashMap<String, String>> {
        let mut held = HashMap::new();
        for tag in registry.tags(repo)? {
            if going.contains(tag.as_str()) {
                continue;
            }
            let Some(m) = registry.manifest(&format!("{repo}:{tag}"))? else { continue };
            if m.is_index() {
                let value: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
                for child in value["manifests"].as_array().into_iter().flatten() {
                    if let Some(digest) = child["digest"].as_str() {
                        held.insert(digest.to_string(), format!("listed by index {tag}"));
                    }
                }
            }
            held.insert(m.digest, format!("names the same manifest as {tag}"));
        }
        Ok(held)
    };
    let staying = match staying() {
        Ok(s) => s,
        Err(e) => return planned.iter().map(|&k| (k, Deletion::Failed(format!("{e:#}")))).collect(),
    };
    let mut done: HashMap<&str, Result<(), String>> = HashMap::new();
    let mut out = Vec::new();
    for &k in planned {
        let d = &decisions[k];
        let outcome = match staying.get(&d.digest) {
            Some(why) => Deletion::Kept(format!("{why}, which stays")),
            None => {
                let deleted = done.entry(d.digest.as_str()).or_insert_with(|| {
                    registry.delete_manifest(&format!("{repo}@{}", d.digest)).map_err(|e| format!("{e:#}"))
                });
                match deleted {
                    Ok(()) => Deletion::Deleted,
                    Err(e) => Deletion::Failed(e.clone()),
                }
            }
        };
        out.push((k, outcome));
    }
    out
}
