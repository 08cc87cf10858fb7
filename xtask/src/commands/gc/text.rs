//! What `gc` prints for people: a line per tag that goes or stays for a
//! reason, and the total.

use super::plan::{Decision, TagAction};

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
