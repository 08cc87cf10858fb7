//! What `prune` prints: a line per name, then the total.

use super::plan::{NameAction, Removal};

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
