//! The command: what the revisions to keep give, what the registry holds,
//! the plan, the deletions and what is printed, in that order.

use anyhow::{Context, Result};

use super::delete::delete;
use super::keep::kept_tags;
use super::plan::{held, plan, TagAction};
use super::read::read_repositories;
use super::text::report;
use crate::catalog::discovery::is_image_path;
use crate::config::Settings;
use crate::git::history::History;
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
