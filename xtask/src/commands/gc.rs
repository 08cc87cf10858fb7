//! `gc`: deletes from the registry the tags of catalog repositories
//! (`<REMOTE_IMAGE_PREFIX>/<path>_<arch>`) that are the tag of no image at
//! the git revisions to keep. Tags at those revisions come from git's
//! objects (see [`crate::git::history`]); the registry is read over the
//! distribution API (`_catalog`, `tags/list`, manifests), and manifests are
//! deleted by digest. Blob storage is the registry's own garbage
//! collector's to free.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::catalog::discovery::is_image_path;
use crate::config::Settings;
use crate::git::history::{History, Oid};
use crate::model::Arch;
use crate::model::Reference;
use crate::registry::Registry;

/// What to keep and what to do.
pub struct GcOptions {
    /// Git revisions and ranges whose tags stay (`HEAD` when none is given).
    pub keep: Vec<String>,
    /// Also every first-parent commit of HEAD of the last this many seconds.
    pub keep_since: Option<u64>,
    /// Delete; otherwise only say what would go.
    pub delete: bool,
    pub json: bool,
    /// Registry requests at once.
    pub jobs: usize,
}

/// A catalog repository of the registry, and what each of its tags names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    /// `host/repository`.
    pub name: String,
    pub path: String,
    pub arch: Arch,
    pub tags: Vec<Tag>,
}

/// A tag and the manifest it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tag: String,
    pub digest: String,
    /// The manifests an index lists, by digest (none for an image).
    pub children: Vec<String>,
    /// The blobs it holds (an index: its images'), digest and size.
    pub blobs: Vec<(String, u64)>,
}

/// The tags the revisions to keep give each (path, architecture), and the
/// images whose tag at some revision to keep could not be computed.
#[derive(Clone, Debug, Default)]
pub struct Kept {
    pub tags: HashMap<(String, Arch), HashSet<String>>,
    pub unsure: HashMap<(String, Arch), String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagAction {
    /// Planned (the default dry run).
    Delete,
    Deleted,
    /// Kept though it is no kept revision's tag.
    Keep,
    Failed,
}

/// A tag that goes, or that stays for a reason worth telling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub action: TagAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes of the blobs its manifest holds (shared ones included).
    pub bytes: u64,
}

/// Whether a tag is one this tool makes: 16 lower-case hex digits.
fn is_tool_tag(tag: &str) -> bool {
    tag.len() == crate::catalog::tagging::TAG_LEN
        && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The plan: which tags go. `latest` and the tags of revisions to keep
/// stay silently; a tag that is none of them stays, and is reported, when
/// its repository's tag at a revision to keep is unknown, when it is not a
/// tag this tool makes, when a tag that stays names the same manifest, or
/// when an index that stays lists its manifest. Deletions come indexes first.
pub fn plan(repositories: &[Repository], kept: &Kept) -> Vec<Decision> {
    let mut out = Vec::new();
    for repo in repositories {
        let key = (repo.path.clone(), repo.arch);
        let kept_tags = kept.tags.get(&key);
        let mut stays: Vec<&Tag> = Vec::new();
        let mut goes: Vec<&Tag> = Vec::new();
        let decision = |t: &Tag, action, reason: Option<String>| Decision {
            repository: repo.name.clone(),
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            action,
            reason,
            bytes: t.blobs.iter().map(|(_, s)| s).sum(),
        };
        for t in &repo.tags {
            if t.tag == "latest" || kept_tags.is_some_and(|k| k.contains(&t.tag)) {
                stays.push(t);
            } else if let Some(why) = kept.unsure.get(&key) {
                stays.push(t);
                out.push(decision(t, TagAction::Keep, Some(why.clone())));
            } else if !is_tool_tag(&t.tag) {
                stays.push(t);
                out.push(decision(t, TagAction::Keep, Some("not a tag this tool makes".into())));
            } else {
                goes.push(t);
            }
        }
        // What stays holds its manifest, and the manifests its indexes list,
        // and so on down.
        let mut held: HashMap<&str, String> = HashMap::new();
        let mut queue: Vec<(&Tag, String)> = stays.iter().map(|t| (*t, t.tag.clone())).collect();
        while let Some((t, by)) = queue.pop() {
            held.entry(t.digest.as_str()).or_insert_with(|| by.clone());
            for child in &t.children {
                if let Some(listed) = repo.tags.iter().find(|o| &o.digest == child) {
                    if !held.contains_key(listed.digest.as_str()) {
                        held.insert(listed.digest.as_str(), format!("index {by}"));
                        queue.push((listed, by.clone()));
                    }
                } else {
                    held.entry(child.as_str()).or_insert_with(|| format!("index {by}"));
                }
            }
        }
        let mut deletions = Vec::new();
        for t in goes {
            match held.get(t.digest.as_str()) {
                Some(by) if by.starts_with("index ") => {
                    out.push(decision(t, TagAction::Keep, Some(format!("listed by {by}, which stays"))))
                }
                Some(by) => out.push(decision(
                    t,
                    TagAction::Keep,
                    Some(format!("names the same manifest as {by}, which stays")),
                )),
                None => deletions.push((t.children.is_empty(), decision(t, TagAction::Delete, None))),
            }
        }
        deletions.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.tag.cmp(&b.1.tag)));
        out.extend(deletions.into_iter().map(|(_, d)| d));
    }
    out
}

/// Bytes of the distinct blobs the deleted manifests hold: the most the
/// registry's garbage collector can free (a blob another manifest holds stays).
pub fn held(repositories: &[Repository], decisions: &[Decision]) -> u64 {
    let going: HashSet<(&str, &str)> = decisions
        .iter()
        .filter(|d| matches!(d.action, TagAction::Delete | TagAction::Deleted))
        .map(|d| (d.repository.as_str(), d.digest.as_str()))
        .collect();
    let mut blobs: HashMap<&str, u64> = HashMap::new();
    for repo in repositories {
        for t in repo.tags.iter().filter(|t| going.contains(&(repo.name.as_str(), t.digest.as_str()))) {
            blobs.extend(t.blobs.iter().map(|(d, s)| (d.as_str(), *s)));
        }
    }
    blobs.values().sum()
}

/// Runs `gc`; returns the process exit status.
pub fn run(settings: &Settings, opts: &GcOptions) -> Result<i32> {
    let history = History::open(&settings.images_dir)?;
    let mut revisions = if opts.keep.is_empty() { vec!["HEAD".to_string()] } else { opts.keep.clone() };
    revisions.dedup();
    let mut commits = history.repo.commits(&revisions)?;
    if let Some(seconds) = opts.keep_since {
        for c in history.repo.first_parents_since(seconds)? {
            if !commits.contains(&c) {
                commits.push(c);
            }
        }
    }
    eprintln!("keeping the tags of {} commit{}", commits.len(), if commits.len() == 1 { "" } else { "s" });
    let kept = kept_tags(settings, &history, &commits)?;

    let registry = Registry::of(settings);
    let probe = Reference::parse(&format!("{}/x", settings.remote_prefix))?;
    let prefix = probe.repository.strip_suffix('x').unwrap_or_default().to_string();
    let names = registry
        .repositories(&probe.host)
        .with_context(|| format!("cannot list the repositories of {}", probe.host))?;
    let catalog: Vec<(String, String, Arch)> = names
        .iter()
        .filter_map(|name| {
            let (path, arch) = Arch::split_suffix(name.strip_prefix(&prefix)?)?;
            is_image_path(path).then(|| (format!("{}/{name}", probe.host), path.to_string(), arch))
        })
        .collect();
    let repositories = read_repositories(&registry, &catalog, &kept, opts.jobs)?;

    let mut decisions = plan(&repositories, &kept);
    let held = held(&repositories, &decisions);
    if opts.delete {
        delete(&registry, &mut decisions, opts.jobs);
    }
    if opts.json {
        crate::report::print_list("tags", &decisions)?;
    }
    let text = report(&decisions, held, opts.delete);
    if opts.json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(if decisions.iter().any(|d| d.action == TagAction::Failed) { crate::model::EXIT_FAILURE } else { 0 })
}

/// The tags every image has at each commit, for every architecture.
fn kept_tags(settings: &Settings, history: &History, commits: &[Oid]) -> Result<Kept> {
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

/// Each repository's tags and what they name, `jobs` repositories at once.
/// A repository whose tags all stay silently (`latest` and tags of revisions
/// to keep) is not read further than its tag list.
fn read_repositories(
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

/// Deletes the planned manifests by digest, each once, after checking that
/// no tag that stays has come to name it since the plan was made.
fn delete(registry: &Registry, decisions: &mut [Decision], jobs: usize) {
    let mut by_repo: HashMap<String, Vec<usize>> = HashMap::new();
    for (k, d) in decisions.iter().enumerate() {
        if d.action == TagAction::Delete {
            by_repo.entry(d.repository.clone()).or_default().push(k);
        }
    }
    let work: Vec<(String, Vec<usize>)> = by_repo.into_iter().collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Deletion)>> = Mutex::new(Vec::new());
    let snapshot: &[Decision] = decisions;
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(work.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some((repo, planned)) = work.get(k) else { return };
                let outcome = delete_in(registry, repo, planned, snapshot);
                results.lock().unwrap_or_else(|e| e.into_inner()).extend(outcome);
            });
        }
    });
    for (k, outcome) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
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

/// One line per tag that goes or stays for a reason, then the total.
pub fn report(decisions: &[Decision], held: u64, deleted: bool) -> String {
    let mut out = String::new();
    for d in decisions {
        let line = match d.action {
            TagAction::Delete => format!("would delete  {}:{}  {}  {} bytes", d.repository, d.tag, d.digest, d.bytes),
            TagAction::Deleted => format!("deleted  {}:{}  {}  {} bytes", d.repository, d.tag, d.digest, d.bytes),
            TagAction::Keep => format!("kept  {}:{}: {}", d.repository, d.tag, d.reason.as_deref().unwrap_or_default()),
            TagAction::Failed => {
                format!("failed  {}:{}: {}", d.repository, d.tag, d.reason.as_deref().unwrap_or_default())
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    let count = |a: TagAction| decisions.iter().filter(|d| d.action == a).count();
    let human = crate::report::human_bytes(held);
    if deleted {
        out.push_str(&format!(
            "total: {} tags deleted, {} kept, {} failed; they held {held} bytes ({human}), which the registry's garbage collector frees where nothing else holds them\n",
            count(TagAction::Deleted),
            count(TagAction::Keep),
            count(TagAction::Failed)
        ));
    } else {
        out.push_str(&format!(
            "total: {} tags would be deleted, {} kept; they hold {held} bytes ({human}); run with --delete to delete them\n",
            count(TagAction::Delete),
            count(TagAction::Keep)
        ));
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

    fn tag(tag: &str, digest: &str, children: &[&str], blobs: &[(&str, u64)]) -> Tag {
        Tag {
            tag: tag.into(),
            digest: digest.into(),
            children: children.iter().map(|c| c.to_string()).collect(),
            blobs: blobs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        }
    }

    const OLD: &str = "0000000000000001";
    const OLDER: &str = "0000000000000002";
    const NOW: &str = "00000000000000ff";

    fn kept(tags: &[&str]) -> Kept {
        let mut k = Kept::default();
        k.tags.insert(("a".into(), Arch::X86_64), tags.iter().map(|t| t.to_string()).collect());
        k
    }

    fn repo(tags: Vec<Tag>) -> Repository {
        Repository { name: "r:5000/p/a_x86_64".into(), path: "a".into(), arch: Arch::X86_64, tags }
    }

    fn d(tag: &str, digest: &str, action: TagAction, reason: Option<&str>, bytes: u64) -> Decision {
        Decision {
            repository: "r:5000/p/a_x86_64".into(),
            tag: tag.into(),
            digest: digest.into(),
            action,
            reason: reason.map(String::from),
            bytes,
        }
    }

    #[test]
    fn old_tags_go_latest_and_kept_ones_stay() {
        let r = repo(vec![
            tag(NOW, "sha256:n", &[], &[("c", 1), ("l1", 10)]),
            tag("latest", "sha256:n", &[], &[("c", 1), ("l1", 10)]),
            tag(OLD, "sha256:o", &[], &[("c2", 2), ("l1", 10)]),
            tag(OLDER, "sha256:p", &[], &[("c3", 3), ("l3", 30)]),
            tag("v1.0", "sha256:v", &[], &[("c4", 4)]),
        ]);
        let decisions = plan(std::slice::from_ref(&r), &kept(&[NOW]));
        assert_eq!(
            decisions,
            vec![
                d("v1.0", "sha256:v", TagAction::Keep, Some("not a tag this tool makes"), 4),
                d(OLD, "sha256:o", TagAction::Delete, None, 12),
                d(OLDER, "sha256:p", TagAction::Delete, None, 33),
            ]
        );
        // Each blob once: c2, l1, c3, l3.
        assert_eq!(held(&[r], &decisions), 45);
    }

    #[test]
    fn a_tag_sharing_a_manifest_with_one_that_stays_stays() {
        let r = repo(vec![tag(NOW, "sha256:n", &[], &[]), tag(OLD, "sha256:n", &[], &[("c", 5)])]);
        assert_eq!(
            plan(&[r], &kept(&[NOW])),
            vec![d(
                OLD,
                "sha256:n",
                TagAction::Keep,
                Some(&format!("names the same manifest as {NOW}, which stays")),
                5
            )]
        );
        let r = repo(vec![tag("latest", "sha256:o", &[], &[]), tag(OLD, "sha256:o", &[], &[])]);
        assert_eq!(
            plan(&[r], &kept(&[])),
            vec![d(OLD, "sha256:o", TagAction::Keep, Some("names the same manifest as latest, which stays"), 0)]
        );
    }

    #[test]
    fn an_index_holds_what_it_lists_and_goes_first() {
        // `latest` is an index over OLD's manifest: OLD stays.
        let r =
            repo(vec![tag("latest", "sha256:i", &["sha256:o"], &[("c", 1)]), tag(OLD, "sha256:o", &[], &[("c", 1)])]);
        assert_eq!(
            plan(&[r], &kept(&[])),
            vec![d(OLD, "sha256:o", TagAction::Keep, Some("listed by index latest, which stays"), 1)]
        );
        // An old index and the image it lists both go, the index first.
        let r = repo(vec![
            tag(OLDER, "sha256:o", &[], &[("c", 1)]),
            tag(OLD, "sha256:i", &["sha256:o"], &[("c", 1)]),
            tag(NOW, "sha256:n", &[], &[]),
        ]);
        assert_eq!(
            plan(&[r], &kept(&[NOW])),
            vec![d(OLD, "sha256:i", TagAction::Delete, None, 1), d(OLDER, "sha256:o", TagAction::Delete, None, 1)]
        );
    }

    #[test]
    fn an_image_whose_kept_tag_is_unknown_keeps_every_tag() {
        let mut k = kept(&[NOW]);
        k.unsure.insert(("a".into(), Arch::X86_64), "its tag at 0123 cannot be computed: bad".into());
        let r = repo(vec![tag(NOW, "sha256:n", &[], &[]), tag(OLD, "sha256:o", &[], &[])]);
        assert_eq!(
            plan(&[r], &k),
            vec![d(OLD, "sha256:o", TagAction::Keep, Some("its tag at 0123 cannot be computed: bad"), 0)]
        );
    }

    #[test]
    fn a_repository_of_an_image_that_is_gone_loses_every_tag_but_latest() {
        let r = repo(vec![tag("latest", "sha256:l", &[], &[]), tag(OLD, "sha256:o", &[], &[])]);
        assert_eq!(plan(&[r], &Kept::default()), vec![d(OLD, "sha256:o", TagAction::Delete, None, 0)]);
    }

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
