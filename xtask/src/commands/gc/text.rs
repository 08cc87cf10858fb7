//! What `gc` prints for people: a line per tag that goes or stays for a
//! reason, a note on the work tree's tags, the total; and the warning (the
//! refusal, with `--delete`) about a registry filled under other settings.

use super::plan::{is_tool_tag, Decision, Repository, TagAction};
use crate::config::Settings;
use crate::model::escape;

/// What a run planned or did, for [`report`].
pub struct Summary<'a> {
    pub decisions: &'a [Decision],
    /// The tags of the repositories in scope, those that stay silently
    /// (`latest`, the tags of revisions to keep) included.
    pub tags: usize,
    /// Bytes of the distinct blobs only the deleted (in a dry run: the
    /// planned) manifests hold.
    pub held: u64,
    /// Deletions were made (`--delete`), not planned.
    pub deleted: bool,
}

/// `1 tag`, `2 tags`.
fn tags(n: usize) -> String {
    format!("{n} tag{}", if n == 1 { "" } else { "s" })
}

/// One line per tag that goes or stays for a reason, a note when some that
/// go are the work tree's, then the total.
pub fn report(summary: &Summary) -> String {
    let Summary { decisions, held, deleted, .. } = *summary;
    let mut out = String::new();
    for d in decisions {
        let mark = if d.work_tree && matches!(d.action, TagAction::Delete | TagAction::Deleted) {
            "  (work tree)"
        } else {
            ""
        };
        // What the registry named is shown escaped: a tag can hold anything.
        let (repository, tag, digest) = (escape(&d.repository), escape(&d.tag), escape(&d.digest));
        let reason = escape(d.reason.as_deref().unwrap_or_default());
        let line = match d.action {
            TagAction::Delete => format!("would delete  {repository}:{tag}  {digest}  {} bytes{mark}", d.bytes),
            TagAction::Deleted => format!("deleted  {repository}:{tag}  {digest}  {} bytes{mark}", d.bytes),
            TagAction::Keep => format!("kept  {repository}:{tag}: {reason}"),
            TagAction::Failed => format!("failed  {repository}:{tag}: {reason}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let count = |a: TagAction| decisions.iter().filter(|d| d.action == a).count();
    let goes = |d: &&Decision| matches!(d.action, TagAction::Delete | TagAction::Deleted);
    match decisions.iter().filter(goes).filter(|d| d.work_tree).count() {
        0 => {}
        1 => out.push_str(
            "note: the tag marked (work tree) is the tag the work tree gives its image now, uncommitted changes \
             included, and no revision to keep gives it; to keep such a tag, commit the work tree and keep that \
             commit\n",
        ),
        n => out.push_str(&format!(
            "note: the {n} tags marked (work tree) are the tags the work tree gives its images now, uncommitted \
             changes included, and no revision to keep gives them; to keep such tags, commit the work tree and \
             keep that commit\n"
        )),
    }
    let (gone, failed) =
        if deleted { (count(TagAction::Deleted), count(TagAction::Failed)) } else { (count(TagAction::Delete), 0) };
    let kept = summary.tags.saturating_sub(gone + failed);
    let human = crate::report::human_bytes(held);
    // The tags that go, as the subject and as the object of a sentence.
    let (they, them) = if gone == 1 { ("it", "it") } else { ("they", "them") };
    if deleted {
        out.push_str(&format!("total: {} deleted, {kept} kept, {failed} failed", tags(gone)));
        if gone > 0 {
            out.push_str(&format!(
                "; {they} held {held} bytes ({human}), which the registry's garbage collector frees where nothing \
                 else holds them"
            ));
        }
    } else {
        out.push_str(&format!("total: {} would be deleted, {kept} kept", tags(gone)));
        if gone > 0 {
            let holds = if gone == 1 { "holds" } else { "hold" };
            out.push_str(&format!("; {they} {holds} {held} bytes ({human}); run with --delete to delete {them}"));
        }
    }
    out.push('\n');
    out
}

/// Why the registry looks filled under other settings than these: it holds
/// tags of `repositories`, but none that a revision to keep gives their image.
pub fn unmatched(repositories: &[&Repository], settings: &Settings) -> String {
    const SHOWN: usize = 5;
    let mut list: Vec<String> = repositories
        .iter()
        .take(SHOWN)
        .map(|r| format!("{} ({})", r.name, tags(r.tags.iter().filter(|t| is_tool_tag(&t.tag)).count())))
        .collect();
    if repositories.len() > SHOWN {
        list.push(format!("and {} more", repositories.len() - SHOWN));
    }
    let their = if repositories.len() == 1 { "its image" } else { "their images" };
    format!(
        "the registry holds tags of {}, but none that a revision to keep gives {their}, so every one would go: the \
         registry was likely filled under other settings than these (TAG_SCHEME={}, DOCKER_BUILD_ARGS={:?}, \
         LOCAL_IMAGE_PREFIX={}), which give other tags; run gc with the settings the images are pushed with \
         (CI's), or keep revisions whose images were pushed (--keep)",
        list.join(", "),
        settings.tag_scheme.as_str(),
        settings.build_args.join(" "),
        settings.local_prefix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::gc::Tag;
    use crate::model::Arch;

    fn d(tag: &str, action: TagAction, work_tree: bool) -> Decision {
        let reason = match action {
            TagAction::Keep => Some("not a tag this tool makes".to_string()),
            TagAction::Failed => Some("the registry answered 500".to_string()),
            _ => None,
        };
        Decision {
            repository: "r:5000/p/a_x86_64".into(),
            tag: tag.into(),
            digest: format!("sha256:{tag}"),
            action,
            reason,
            bytes: 10,
            work_tree,
        }
    }

    fn report_of(decisions: &[Decision], tags: usize, held: u64, deleted: bool) -> String {
        report(&Summary { decisions, tags, held, deleted })
    }

    #[test]
    fn what_the_registry_names_is_shown_escaped() {
        let forged = [d("\u{1b}[2K\rtotal: 0 tags would be deleted", TagAction::Keep, false)];
        assert_eq!(
            report_of(&forged, 1, 0, false),
            "kept  r:5000/p/a_x86_64:\\u{1b}[2K\\rtotal: 0 tags would be deleted: not a tag this tool makes\n\
             total: 0 tags would be deleted, 1 kept\n"
        );
    }

    #[test]
    fn totals_count_every_tag_that_stays_in_the_singular_or_the_plural() {
        let one = [d("1", TagAction::Delete, false)];
        assert_eq!(
            report_of(&one, 3, 10, false),
            "would delete  r:5000/p/a_x86_64:1  sha256:1  10 bytes\n\
             total: 1 tag would be deleted, 2 kept; it holds 10 bytes (10 B); run with --delete to delete it\n"
        );
        let two = [d("v1", TagAction::Keep, false), d("1", TagAction::Delete, false), d("2", TagAction::Delete, false)];
        assert_eq!(
            report_of(&two, 4, 1500, false),
            "kept  r:5000/p/a_x86_64:v1: not a tag this tool makes\n\
             would delete  r:5000/p/a_x86_64:1  sha256:1  10 bytes\n\
             would delete  r:5000/p/a_x86_64:2  sha256:2  10 bytes\n\
             total: 2 tags would be deleted, 2 kept; they hold 1500 bytes (1.50 kB); run with --delete to delete them\n"
        );
        assert_eq!(report_of(&[], 1, 0, false), "total: 0 tags would be deleted, 1 kept\n");

        let done = [d("1", TagAction::Deleted, false), d("2", TagAction::Failed, false)];
        assert_eq!(
            report_of(&done, 4, 10, true),
            "deleted  r:5000/p/a_x86_64:1  sha256:1  10 bytes\n\
             failed  r:5000/p/a_x86_64:2: the registry answered 500\n\
             total: 1 tag deleted, 2 kept, 1 failed; it held 10 bytes (10 B), which the registry's garbage \
             collector frees where nothing else holds them\n"
        );
        let done = [d("1", TagAction::Deleted, false), d("2", TagAction::Deleted, false)];
        assert!(report_of(&done, 2, 20, true).ends_with("total: 2 tags deleted, 0 kept, 0 failed; they held 20 bytes (20 B), which the registry's garbage collector frees where nothing else holds them\n"));
        assert_eq!(report_of(&[], 2, 0, true), "total: 0 tags deleted, 2 kept, 0 failed\n");
    }

    #[test]
    fn the_work_trees_tags_are_marked_and_explained() {
        let one = [d("1", TagAction::Delete, false), d("2", TagAction::Delete, true)];
        assert_eq!(
            report_of(&one, 3, 20, false),
            "would delete  r:5000/p/a_x86_64:1  sha256:1  10 bytes\n\
             would delete  r:5000/p/a_x86_64:2  sha256:2  10 bytes  (work tree)\n\
             note: the tag marked (work tree) is the tag the work tree gives its image now, uncommitted changes \
             included, and no revision to keep gives it; to keep such a tag, commit the work tree and keep that \
             commit\n\
             total: 2 tags would be deleted, 1 kept; they hold 20 bytes (20 B); run with --delete to delete them\n"
        );
        let two = [d("1", TagAction::Deleted, true), d("2", TagAction::Deleted, true)];
        let text = report_of(&two, 2, 20, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "deleted  r:5000/p/a_x86_64:1  sha256:1  10 bytes  (work tree)",
                "deleted  r:5000/p/a_x86_64:2  sha256:2  10 bytes  (work tree)"
            ]
        );
        assert_eq!(
            lines[2],
            "note: the 2 tags marked (work tree) are the tags the work tree gives its images now, uncommitted \
             changes included, and no revision to keep gives them; to keep such tags, commit the work tree and \
             keep that commit"
        );
    }

    #[test]
    fn an_unmatched_registry_is_explained_with_the_settings_used() {
        let tag = |t: &str| Tag { tag: t.into(), digest: String::new(), children: vec![], blobs: vec![] };
        let repo = |n: usize, tags: &[&str]| Repository {
            name: format!("r:5000/p/i{n}_x86_64"),
            path: format!("i{n}"),
            arch: Arch::X86_64,
            tags: tags.iter().map(|t| tag(t)).collect(),
        };
        let mut settings = Settings::for_tests("local/p", "r:5000/p");
        settings.build_args = vec!["--build-arg".into(), "X=1".into()];
        let a = repo(0, &["0000000000000001", "0000000000000002", "latest"]);
        assert_eq!(
            unmatched(&[&a], &settings),
            "the registry holds tags of r:5000/p/i0_x86_64 (2 tags), but none that a revision to keep gives its \
             image, so every one would go: the registry was likely filled under other settings than these \
             (TAG_SCHEME=content, DOCKER_BUILD_ARGS=\"--build-arg X=1\", LOCAL_IMAGE_PREFIX=local/p), which give \
             other tags; run gc with the settings the images are pushed with (CI's), or keep revisions whose \
             images were pushed (--keep)"
        );
        let many: Vec<Repository> = (0..7).map(|n| repo(n, &["0000000000000001"])).collect();
        let refs: Vec<&Repository> = many.iter().collect();
        let text = unmatched(&refs, &Settings::for_tests("local/p", "r:5000/p"));
        assert!(
            text.starts_with(
                "the registry holds tags of r:5000/p/i0_x86_64 (1 tag), r:5000/p/i1_x86_64 (1 tag), \
                 r:5000/p/i2_x86_64 (1 tag), r:5000/p/i3_x86_64 (1 tag), r:5000/p/i4_x86_64 (1 tag), and 2 more, \
                 but none that a revision to keep gives their images, "
            ),
            "{text}"
        );
        assert!(text.contains("DOCKER_BUILD_ARGS=\"\""), "{text}");
    }
}
