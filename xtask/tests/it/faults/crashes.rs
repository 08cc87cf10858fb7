//! The tool killed with SIGKILL at random moments of `load-all-images` and
//! `push-all-images`, then run again to the end: no name ever points at
//! content other than its tag says, no engine process outlives the tool,
//! a killed run leaves nothing temporary that the next run does not remove,
//! and the last run leaves the complete state.

use std::time::Duration;

use super::inspect::{leftovers, tmp_entries, tree, wait_engine_processes_gone};
use super::state::{check_local, check_registry, hermetic_tree, Fingerprints, Names, PATHS};
use super::Report;
use crate::rng::Rng;
use crate::support::{untag, Registry, Sandbox};

/// Kills that must land while the tool runs, per command.
const KILLS: usize = 10;
/// Runs per command at most, whether a kill landed or the run ended first.
const TRIES: usize = 30;
const LIMIT: Duration = Duration::from_secs(120);
/// How long the engine processes of a killed run may take to end.
const GRACE: Duration = Duration::from_secs(10);

pub fn run(report: &mut Report, rng: &mut Rng) {
    let mut sandbox = Sandbox::sealed("crash");
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(registry_dir.path(), None);
    sandbox.use_registry_below(&registry.addr, "load");
    let tags = hermetic_tree(&sandbox, &PATHS, 0);
    let tree_before = tree(&sandbox.images);
    let tmp_before = tmp_entries();
    let mut prints = Fingerprints::default();

    // After each run: what is left must be consistent, even if incomplete.
    // A killed run cannot remove the image-ID files its builds wrote (a
    // build may even write one after the kill); the next run removes them,
    // so they are allowed after a kill and nothing is after a whole run.
    let aftermath = |sandbox: &Sandbox, prints: &mut Fingerprints, killed: bool| -> Result<(), String> {
        let left = wait_engine_processes_gone(&sandbox.id, GRACE);
        if !left.is_empty() {
            return Err(format!("engine processes outlived the killed tool by {GRACE:?}: {left:#?}"));
        }
        let mut junk = leftovers(sandbox, &tmp_before);
        if killed {
            junk.retain(|j| !is_killed_runs_id_file(j));
        }
        if !junk.is_empty() {
            return Err(format!("left behind: {junk:?}"));
        }
        if tree(&sandbox.images) != tree_before {
            return Err("the images tree changed".into());
        }
        check_local(sandbox, &tags, prints, Names::Any)
    };

    report.case("crashes: load-all-images killed at random moments", |r| {
        // A run from nothing, timed: kills land at random within that time.
        let full = sandbox.xtask_within(&["load-all-images"], LIMIT);
        full.success();
        check_local(&sandbox, &tags, &mut prints, Names::All)?;
        until_killed_enough(|_| {
            forget(&sandbox, rng);
            let killed = kill_at_random(&sandbox, r, rng, "load-all-images", full.took);
            aftermath(&sandbox, &mut prints, true)?;
            Ok(killed)
        })?;
        sandbox.xtask_within(&["load-all-images"], LIMIT).success();
        aftermath(&sandbox, &mut prints, false)?;
        // `load` promises the local names; the remote one only comes with a
        // pull or a build.
        check_local(&sandbox, &tags, &mut prints, Names::Local)
    });

    report.case("crashes: push-all-images killed at random moments", |r| {
        sandbox.use_registry_below(&registry.addr, "push");
        sandbox.untag_all();
        let full = sandbox.xtask_within(&["push-all-images"], LIMIT);
        full.success();
        // A repository prefix of its own for each run, so each has pushing to do.
        let mut prefixes = Vec::new();
        until_killed_enough(|k| {
            sandbox.use_registry_below(&registry.addr, &format!("push{k}"));
            prefixes.push(sandbox.remote_prefix.clone());
            forget(&sandbox, rng);
            let killed = kill_at_random(&sandbox, r, rng, "push-all-images", full.took);
            aftermath(&sandbox, &mut prints, true)?;
            check_registry(&registry.addr, &sandbox.remote_prefix, &tags, &prints, false, None)?;
            Ok(killed)
        })?;
        sandbox.xtask_within(&["push-all-images"], LIMIT).success();
        aftermath(&sandbox, &mut prints, false)?;
        check_registry(&registry.addr, &sandbox.remote_prefix, &tags, &prints, true, None)?;
        // What the killed runs pushed is whole, or not there at all.
        for prefix in &prefixes {
            check_registry(&registry.addr, prefix, &tags, &prints, false, None)?;
        }
        Ok(())
    });
}

/// Runs `one_try` (given its number) until [`KILLS`] of its runs were
/// killed while running, at most [`TRIES`] times; each returns how many of
/// its runs were.
fn until_killed_enough(mut one_try: impl FnMut(usize) -> Result<usize, String>) -> Result<(), String> {
    let mut kills = 0;
    for k in 0..TRIES {
        kills += one_try(k)?;
        if kills == KILLS {
            return Ok(());
        }
    }
    Err(format!("only {kills} of {TRIES} runs were still running when killed"))
}

/// Whether a leftover is an image-ID, metadata or Dockerfile file in the log directory,
/// or the link to the latest log it was making, named for a process that is gone
/// (`<image>.<pid>.iid`).
fn is_killed_runs_id_file(leftover: &str) -> bool {
    let Some(path) = leftover.strip_prefix("in the log directory: ") else { return false };
    let name = std::path::Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(stem) =
        [".iid", ".metadata.json", ".bake.json", ".Dockerfile", ".link"].iter().find_map(|s| name.strip_suffix(s))
    else {
        return false;
    };
    let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else { return false };
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Untags all of the sandbox's local names, or about half of them, so the
/// next run has work to do.
fn forget(sandbox: &Sandbox, rng: &mut Rng) {
    let all = rng.below(2) == 0;
    let names: Vec<String> = sandbox.tagged_names().into_iter().filter(|_| all || rng.below(2) == 0).collect();
    if !names.is_empty() {
        untag(&names);
    }
}

/// Runs `command` and kills it at a random moment within `window`; returns
/// 1 if the kill landed while it ran, 0 if it had ended (successfully) first.
fn kill_at_random(sandbox: &Sandbox, r: &mut Report, rng: &mut Rng, command: &str, window: Duration) -> usize {
    let mut running = sandbox.spawn(&[command]);
    let at = Duration::from_millis(rng.below(window.as_millis().max(200) as usize) as u64);
    while running.elapsed() < at && running.running() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (was_running, run) = running.kill();
    if was_running {
        r.fault("SIGKILL of the tool", 1);
        1
    } else {
        run.success();
        0
    }
}
