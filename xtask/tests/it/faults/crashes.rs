//! The tool killed with SIGKILL at random moments of `load-all-images` and
//! `push-all-images`, then run again to the end: no name ever points at
//! content other than its tag says, no engine process outlives the tool,
//! a killed run leaves nothing temporary that the next run does not remove,
//! and the last run leaves the complete state.

use std::time::Duration;

use super::state::{check_local, check_registry, hermetic_tree, Fingerprints, Names, PATHS};
use super::world::{leftovers, tmp_entries, tree, untag, wait_engine_processes_gone, Registry, Rng, World};
use super::Report;

/// Kills that must land while the tool runs, per command.
const KILLS: usize = 10;
/// Runs per command at most, whether a kill landed or the run ended first.
const TRIES: usize = 30;
const LIMIT: Duration = Duration::from_secs(120);
/// How long the engine processes of a killed run may take to end.
const GRACE: Duration = Duration::from_secs(10);

pub fn run(report: &mut Report, rng: &mut Rng) {
    let mut world = World::new("crash");
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(registry_dir.path(), None);
    world.use_registry(&registry.addr, Some("load"));
    let tags = hermetic_tree(&world, &PATHS, 0);
    let tree_before = tree(&world.images);
    let tmp_before = tmp_entries();
    let mut prints = Fingerprints::default();

    // After each run: what is left must be consistent, even if incomplete.
    // A killed run cannot remove the image-ID files its builds wrote (a
    // build may even write one after the kill); the next run removes them,
    // so they are allowed after a kill and nothing is after a whole run.
    let aftermath = |world: &World, prints: &mut Fingerprints, killed: bool| -> Result<(), String> {
        let left = wait_engine_processes_gone(&world.id, GRACE);
        if !left.is_empty() {
            return Err(format!("engine processes outlived the killed tool by {GRACE:?}: {left:#?}"));
        }
        let mut junk = leftovers(world, &tmp_before);
        if killed {
            junk.retain(|j| !is_killed_runs_id_file(j));
        }
        if !junk.is_empty() {
            return Err(format!("left behind: {junk:?}"));
        }
        if tree(&world.images) != tree_before {
            return Err("the images tree changed".into());
        }
        check_local(world, &tags, prints, Names::Any)
    };

    report.case("crashes: load-all-images killed at random moments", |r| {
        // A run from nothing, timed: kills land at random within that time.
        let full = world.xtask(&["load-all-images"], LIMIT);
        full.expect(0);
        check_local(&world, &tags, &mut prints, Names::All)?;
        let mut kills = 0;
        for _ in 0..TRIES {
            forget(&world, rng);
            kills += kill_at_random(&world, r, rng, "load-all-images", full.took);
            aftermath(&world, &mut prints, true)?;
            if kills == KILLS {
                break;
            }
        }
        if kills < KILLS {
            return Err(format!("only {kills} of {TRIES} runs were still running when killed"));
        }
        world.xtask(&["load-all-images"], LIMIT).expect(0);
        aftermath(&world, &mut prints, false)?;
        // `load` promises the local names; the remote one only comes with a
        // pull or a build.
        check_local(&world, &tags, &mut prints, Names::Local)
    });

    report.case("crashes: push-all-images killed at random moments", |r| {
        world.use_registry(&registry.addr, Some("push"));
        world.untag_all();
        let full = world.xtask(&["push-all-images"], LIMIT);
        full.expect(0);
        // A repository prefix of its own for each run, so each has pushing to do.
        let mut prefixes = Vec::new();
        let mut kills = 0;
        for k in 0..TRIES {
            world.use_registry(&registry.addr, Some(&format!("push{k}")));
            prefixes.push(world.remote_prefix.clone());
            forget(&world, rng);
            kills += kill_at_random(&world, r, rng, "push-all-images", full.took);
            aftermath(&world, &mut prints, true)?;
            check_registry(&registry.addr, &world.remote_prefix, &tags, &prints, false, None)?;
            if kills == KILLS {
                break;
            }
        }
        if kills < KILLS {
            return Err(format!("only {kills} of {TRIES} runs were still running when killed"));
        }
        world.xtask(&["push-all-images"], LIMIT).expect(0);
        aftermath(&world, &mut prints, false)?;
        check_registry(&registry.addr, &world.remote_prefix, &tags, &prints, true, None)?;
        // What the killed runs pushed is whole, or not there at all.
        for prefix in &prefixes {
            check_registry(&registry.addr, prefix, &tags, &prints, false, None)?;
        }
        Ok(())
    });
}

/// Whether a leftover is an image-ID, metadata or Dockerfile file in the log directory
/// named for a process that is gone (`<image>.<pid>.iid`).
fn is_killed_runs_id_file(leftover: &str) -> bool {
    let Some(path) = leftover.strip_prefix("in the log directory: ") else { return false };
    let name = std::path::Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(stem) = [".iid", ".metadata.json", ".bake.json", ".Dockerfile"].iter().find_map(|s| name.strip_suffix(s))
    else {
        return false;
    };
    let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else { return false };
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Untags all of the world's local names, or about half of them, so the
/// next run has work to do.
fn forget(world: &World, rng: &mut Rng) {
    let all = rng.below(2) == 0;
    let names: Vec<String> = world.local_names().into_iter().filter(|_| all || rng.below(2) == 0).collect();
    untag(&names);
}

/// Runs `command` and kills it at a random moment within `window`; returns
/// 1 if the kill landed while it ran, 0 if it had ended (successfully) first.
fn kill_at_random(world: &World, r: &mut Report, rng: &mut Rng, command: &str, window: Duration) -> usize {
    let mut running = world.spawn(&[command]);
    let at = Duration::from_millis(rng.below(window.as_millis().max(200) as usize) as u64);
    while running.elapsed() < at && running.running() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (was_running, run) = running.kill();
    if was_running {
        r.fault("SIGKILL of the tool", 1);
        1
    } else {
        run.expect(0);
        0
    }
}
