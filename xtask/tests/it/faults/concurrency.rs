//! Several runs of the tool at once on one tree and one registry: all
//! succeed, and what they leave is exactly what one run would have left.

use std::time::Duration;

use super::inspect::{leftovers, tmp_entries};
use super::state::{check_local, check_registry, hermetic_tree, Fingerprints, Names, PATHS};
use super::Report;
use crate::support::{registry, Sandbox};

const RUNS: usize = 3;
const LIMIT: Duration = Duration::from_secs(180);

pub fn run(report: &mut Report) {
    let mut sandbox = Sandbox::sealed("concurrent");
    let tags = hermetic_tree(&sandbox, &PATHS, 0);
    let mut prints = Fingerprints::default();
    let tmp_before = tmp_entries();

    let at_once = |sandbox: &Sandbox, r: &mut Report, commands: &[&str]| -> Result<(), String> {
        let runs: Vec<_> = commands.iter().map(|c| sandbox.spawn(&[c])).collect();
        r.fault("concurrent runs", commands.len() - 1);
        for run in runs {
            run.wait(LIMIT).success();
        }
        let left = leftovers(sandbox, &tmp_before);
        if !left.is_empty() {
            return Err(format!("left behind: {left:?}"));
        }
        Ok(())
    };

    report.case("concurrency: 3 load-all-images at once", |r| {
        at_once(&sandbox, r, &["load-all-images"; RUNS])?;
        check_local(&sandbox, &tags, &mut prints, Names::All)
    });

    report.case("concurrency: 3 push-all-images at once, nothing local", |r| {
        sandbox.untag_all();
        at_once(&sandbox, r, &["push-all-images"; RUNS])?;
        check_local(&sandbox, &tags, &mut prints, Names::All)?;
        check_registry(&registry(), &sandbox.remote_prefix, &tags, &prints, true, None).map(|_| ())
    });

    // Loads pull what the push has pushed, or build what it has not yet.
    sandbox.use_registry_below(&registry(), "mixed");
    report.case("concurrency: 2 load-all-images and a push-all-images at once", |r| {
        sandbox.untag_all();
        at_once(&sandbox, r, &["load-all-images", "push-all-images", "load-all-images"])?;
        check_local(&sandbox, &tags, &mut prints, Names::All)?;
        check_registry(&registry(), &sandbox.remote_prefix, &tags, &prints, true, None).map(|_| ())
    });
}
