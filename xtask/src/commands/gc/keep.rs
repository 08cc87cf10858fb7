//! What stays: the revisions to keep, the tags they give their images, and
//! the ages `--keep-since` takes; and the tags the work tree gives its
//! images now, which no revision may give.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Result};

use crate::catalog::discovery::discover_every_arch;
use crate::catalog::tagging;
use crate::config::Settings;
use crate::git::history::{History, Oid};
use crate::model::Arch;

/// The tags the revisions to keep give each (path, architecture), and the
/// images whose tag at some revision to keep could not be computed.
#[derive(Clone, Debug, Default)]
pub struct Kept {
    pub tags: HashMap<(String, Arch), HashSet<String>>,
    pub unsure: HashMap<(String, Arch), String>,
}

/// The commits `keep` (revisions and ranges; `HEAD` when empty) lists, then
/// the first-parent commits of HEAD of the last `since` seconds, each once.
pub fn kept_commits(history: &History, keep: &[String], since: Option<u64>) -> Result<Vec<Oid>> {
    let mut revisions = if keep.is_empty() { vec!["HEAD".to_string()] } else { keep.to_vec() };
    revisions.dedup();
    let mut commits = history.repo.commits(&revisions)?;
    if let Some(seconds) = since {
        for c in history.repo.first_parents_since(seconds)? {
            if !commits.contains(&c) {
                commits.push(c);
            }
        }
    }
    Ok(commits)
}

/// The tags every image has at each commit, for every architecture.
pub fn kept_tags(settings: &Settings, history: &History, commits: &[Oid]) -> Result<Kept> {
    let mut kept = Kept::default();
    for commit in commits {
        let snapshot = history.at(commit)?;
        let catalogs = Arch::ALL.iter().map(|a| snapshot.catalog(*a)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<_> = catalogs.iter().collect();
        for (catalog, tags) in catalogs.iter().zip(snapshot.tags(settings, &refs)) {
            for (i, image) in catalog.indexed() {
                let key = (image.path.clone(), catalog.arch);
                match &tags[&i] {
                    Ok(tag) => {
                        kept.tags.entry(key).or_default().insert(tag.clone());
                    }
                    Err(e) => {
                        let why = format!("its tag at {} cannot be computed: {e}", &commit.hex()[..12]);
                        kept.unsure.entry(key).or_insert(why);
                    }
                }
            }
        }
    }
    Ok(kept)
}

/// The tag the work tree gives each image now, uncommitted changes
/// included, for every architecture. They only annotate what is printed,
/// so a work tree whose tags cannot all be computed (a broken `FROM`, say)
/// gives none, and nothing fails for it.
pub fn work_tree_tags(settings: &Settings) -> HashMap<(String, Arch), String> {
    let Ok(catalogs) = discover_every_arch(&settings.images_dir) else { return HashMap::new() };
    let refs: Vec<_> = catalogs.iter().collect();
    let Ok(tags) = tagging::tags_by_arch(settings, &refs) else { return HashMap::new() };
    let mut out = HashMap::new();
    for (catalog, mut tags) in catalogs.iter().zip(tags) {
        for (i, image) in catalog.indexed() {
            if let Some(tag) = tags.remove(&i) {
                out.insert((image.path.clone(), catalog.arch), tag);
            }
        }
    }
    out
}

/// `30d`, `12h`, `2w`, `90m`, `45s`: a duration in seconds.
pub fn parse_age(text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| anyhow!("invalid age `{text}`: use a number and a unit, e.g. 30d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("invalid age `{text}`: use a number and one of s, m, h, d, w (e.g. 30d)"),
    };
    Ok(n * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_age("2w").unwrap(), 14 * 86_400);
        assert_eq!(parse_age("90m").unwrap(), 5400);
        assert_eq!(parse_age("12h").unwrap(), 43_200);
        for bad in ["", "d", "30", "30y", "-1d", "1.5d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
