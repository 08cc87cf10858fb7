//! The command: what the revisions to keep give, what the registry holds,
//! the plan, the deletions and what is printed, in that order.

use anyhow::{bail, Result};

use super::delete::delete;
use super::keep::{kept_commits, kept_tags, work_tree_tags};
use super::plan::{held, mark_work_tree, plan, unmatched, TagAction};
use super::read::{read_repositories, Scope};
use super::text::{self, report, Summary};
use crate::config::Settings;
use crate::git::history::History;
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

/// Runs `gc`; returns the process exit status. Refuses, before anything
/// else, a remote prefix that names no repository path; with `--delete`,
/// refuses to delete anything from a registry that looks filled under other
/// settings (a dry run warns of it).
pub fn run(settings: &Settings, opts: &GcOptions) -> Result<i32> {
    let scope = Scope::of(&settings.remote_prefix)?;
    let history = History::open(&settings.images_dir)?;
    let commits = kept_commits(&history, &opts.keep, opts.keep_since)?;
    eprintln!("keeping the tags of {} commit{}", commits.len(), if commits.len() == 1 { "" } else { "s" });
    let kept = kept_tags(settings, &history, &commits)?;

    let registry = Registry::of(settings);
    let catalog = scope.repositories(&registry)?;
    let repositories = read_repositories(&registry, &catalog, &kept, opts.jobs)?;

    let mut decisions = plan(&repositories, &kept);
    mark_work_tree(&repositories, &work_tree_tags(settings), &mut decisions);
    let unmatched = unmatched(&repositories, &kept);
    if !unmatched.is_empty() {
        let why = text::unmatched(&unmatched, settings);
        if opts.delete {
            bail!("refusing to delete anything: {why}");
        }
        eprintln!("warning: {why}; with --delete, gc refuses");
    }
    if opts.delete {
        delete(&registry, &mut decisions, opts.jobs);
    }
    if opts.json {
        crate::report::print_list("tags", &decisions)?;
    }
    let text = report(&Summary {
        decisions: &decisions,
        tags: repositories.iter().map(|r| r.tags.len()).sum(),
        // After the deletions: what they freed, not what was planned.
        held: held(&repositories, &decisions),
        deleted: opts.delete,
    });
    if opts.json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(if decisions.iter().any(|d| d.action == TagAction::Failed) { crate::model::EXIT_FAILURE } else { 0 })
}
