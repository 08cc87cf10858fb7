//! The plan, pure: which of the registry's tags go, which stay and why.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::keep::Kept;
use crate::model::Arch;

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
    /// A deletion of the tag the work tree gives its image now: no revision
    /// to keep gives it, yet it may have been pushed a moment ago.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub work_tree: bool,
}

/// Whether a tag is one this tool makes: 16 lower-case hex digits.
pub fn is_tool_tag(tag: &str) -> bool {
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
            work_tree: false,
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

/// The repositories of images at a revision to keep that hold tags this
/// tool makes, but none that such a revision gives their image: every one
/// of them would go. That is what a registry filled under other settings
/// (build arguments, tag scheme, local prefix), which give other tags,
/// looks like.
pub fn unmatched<'r>(repositories: &'r [Repository], kept: &Kept) -> Vec<&'r Repository> {
    repositories
        .iter()
        .filter(|repo| {
            let key = (repo.path.clone(), repo.arch);
            let Some(kept_tags) = kept.tags.get(&key) else { return false };
            !kept.unsure.contains_key(&key)
                && repo.tags.iter().any(|t| is_tool_tag(&t.tag))
                && !repo.tags.iter().any(|t| kept_tags.contains(&t.tag))
        })
        .collect()
}

/// Marks the planned deletions of the tags the work tree gives their images
/// now (`work_tree`, by image path and architecture).
pub fn mark_work_tree(
    repositories: &[Repository],
    work_tree: &HashMap<(String, Arch), String>,
    decisions: &mut [Decision],
) {
    let ours: HashSet<(&str, &str)> = repositories
        .iter()
        .filter_map(|repo| Some((repo.name.as_str(), work_tree.get(&(repo.path.clone(), repo.arch))?.as_str())))
        .collect();
    for d in decisions.iter_mut().filter(|d| d.action == TagAction::Delete) {
        d.work_tree = ours.contains(&(d.repository.as_str(), d.tag.as_str()));
    }
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
            work_tree: false,
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
    fn a_repository_with_none_of_the_kept_tags_of_its_image_is_unmatched() {
        let other = |path: &str, tags: Vec<Tag>| Repository {
            name: format!("r:5000/p/{path}_x86_64"),
            path: path.into(),
            arch: Arch::X86_64,
            tags,
        };
        let mut k = kept(&[NOW]);
        k.tags.insert(("unsure".into(), Arch::X86_64), HashSet::new());
        k.unsure.insert(("unsure".into(), Arch::X86_64), "cannot be computed".into());
        k.tags.insert(("b".into(), Arch::X86_64), [NOW.to_string()].into());
        k.tags.insert(("unpushed".into(), Arch::X86_64), [OLD.to_string()].into());
        let repositories = [
            // Other tags alone: every one would go.
            repo(vec![tag(OLD, "sha256:o", &[], &[]), tag(OLDER, "sha256:p", &[], &[])]),
            // A kept tag among others, latest alone, an image gone from
            // the tree, an image whose kept tag is unknown: nothing amiss.
            other("b", vec![tag(NOW, "sha256:n", &[], &[]), tag(OLD, "sha256:o", &[], &[])]),
            other("unpushed", vec![tag("latest", "sha256:l", &[], &[]), tag("v1.0", "sha256:v", &[], &[])]),
            other("gone", vec![tag(OLD, "sha256:o", &[], &[])]),
            other("unsure", vec![tag(OLD, "sha256:o", &[], &[])]),
        ];
        let found: Vec<&str> = unmatched(&repositories, &k).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(found, ["r:5000/p/a_x86_64"]);
    }

    #[test]
    fn the_work_trees_tags_are_marked_where_they_would_go() {
        let r = repo(vec![
            tag(NOW, "sha256:n", &[], &[]),
            tag(OLD, "sha256:o", &[], &[]),
            tag(OLDER, "sha256:p", &[], &[]),
        ]);
        let mut decisions = plan(std::slice::from_ref(&r), &kept(&[NOW]));
        let ours = HashMap::from([(("a".to_string(), Arch::X86_64), OLDER.to_string())]);
        mark_work_tree(std::slice::from_ref(&r), &ours, &mut decisions);
        let mut theirs = d(OLDER, "sha256:p", TagAction::Delete, None, 0);
        theirs.work_tree = true;
        assert_eq!(decisions, vec![d(OLD, "sha256:o", TagAction::Delete, None, 0), theirs]);
        // The work tree's tag kept by a revision is no deletion to mark.
        let ours = HashMap::from([(("a".to_string(), Arch::X86_64), NOW.to_string())]);
        let mut decisions = plan(std::slice::from_ref(&r), &kept(&[NOW]));
        mark_work_tree(std::slice::from_ref(&r), &ours, &mut decisions);
        assert!(decisions.iter().all(|d| !d.work_tree));
    }
}
