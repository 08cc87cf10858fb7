//! What `prune` prints: a line per name, then the total; and, apart, why
//! images whose names go stay.

use super::plan::{Held, NameAction, Removal};

impl NameAction {
    fn as_str(self) -> &'static str {
        match self {
            NameAction::Remove => "would remove",
            NameAction::Removed => "removed",
            NameAction::Skipped => "skipped",
            NameAction::Failed => "failed",
        }
    }
}

/// One line per name, then the total.
pub fn report(removals: &[Removal], dry_run: bool) -> String {
    let width = removals.iter().map(|r| r.action.as_str().len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in removals {
        let action = r.action.as_str();
        match r.action {
            NameAction::Remove | NameAction::Removed => {
                out.push_str(&format!("{action:<width$}  {}  {} bytes  ({})\n", r.reference, r.bytes, r.reason))
            }
            NameAction::Skipped | NameAction::Failed => {
                out.push_str(&format!("{action:<width$}  {}: {}\n", r.reference, r.reason))
            }
        }
    }
    let going = removals.iter().filter(|r| matches!(r.action, NameAction::Remove | NameAction::Removed)).count();
    let bytes: u64 = removals.iter().map(|r| r.bytes).sum();
    let kept = removals.len() - going;
    let kept = if kept > 0 { format!("; {kept} kept") } else { String::new() };
    if dry_run {
        out.push_str(&format!(
            "total: {going} names would be removed, freeing {bytes} bytes ({}){kept}\n",
            crate::report::human_bytes(bytes)
        ));
    } else {
        out.push_str(&format!(
            "total: {going} names removed, {bytes} bytes ({}) freed{kept}\n",
            crate::report::human_bytes(bytes)
        ));
    }
    out
}

/// Why images whose names go are not deleted: the other names that keep
/// each, and the `--other-prefixes` (beyond those `given`) that would take
/// those of them that read as names of the same catalog image.
pub fn held_note(held: &[Held], dry_run: bool, given: &[String]) -> String {
    if held.is_empty() {
        return String::new();
    }
    let (images, them) = match held.len() {
        1 => ("1 image".to_string(), "it"),
        n => (format!("{n} images"), "they"),
    };
    let (go, deleted) = match (dry_run, them) {
        (false, "it") => ("go", "is not deleted"),
        (false, _) => ("go", "are not deleted"),
        (true, _) => ("would go", "would not be deleted"),
    };
    let mut out = format!("note: other names keep {images} whose names {go}, so {them} {deleted}:\n");
    for h in held {
        out.push_str(&format!("  the image of {} is also {}\n", h.reference, h.by.join(", ")));
    }
    let given: Vec<&str> = given.iter().map(|p| p.trim_end_matches('/')).collect();
    let mut prefixes: Vec<&str> =
        held.iter().flat_map(|h| &h.prefixes).map(String::as_str).filter(|p| !given.contains(p)).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    if !prefixes.is_empty() {
        out.push_str(&format!(
            "to remove the names under other prefixes too: prune --other-prefixes {}\n",
            prefixes.join(" ")
        ));
    }
    out
}
