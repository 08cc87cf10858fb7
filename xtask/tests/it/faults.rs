//! The fault suite: the real binary against the real engine and registries
//! while things go wrong on purpose — several runs at once on one tree, the
//! tool killed at random moments, a registry that fails, stalls or dies, bad
//! credentials, and hostile file names. Each group of cases is a test of its
//! own (`cargo nextest run -E 'test(/^faults::crashes/)'`), ending with
//! a counted report; it fails when any of its cases failed. The groups run
//! one at a time (the `faults` test group in .config/nextest.toml): each
//! loads the engine, and several at once would test the machine's load.
//!
//! Each case works in a sealed sandbox of the shared harness
//! (`support::Sandbox::sealed`: a TMPDIR of its own, no inherited docker
//! config) and runs the binary with the harness's timed runner, which kills
//! a run past its limit; registries of a case's own are `support::Registry`.
//! Here are the cases, the hermetic tree and the checks of the state the
//! tool leaves (`state`), what those checks look at (`inspect`), and a
//! flaky proxy in front of a registry (`proxy`).
//!
//! Randomness comes from one seed (`XTASK_FAULT_SEED`, decimal or 0x-hex, to
//! replay a run), printed in the report.
//! `XTASK_FAULT_KEEP=1` keeps each case's files (trees, logs, registry
//! storage) and prints where they are.

mod concurrency;
mod crashes;
mod credentials;
mod flaky;
mod inspect;
mod names;
pub(crate) mod proxy;
mod state;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::rng::Rng;

const DEFAULT_SEED: u64 = 0x5eed_fa17;

/// What the suite did: each case with its outcome, and the faults injected by kind.
pub struct Report {
    pub seed: u64,
    cases: Vec<(String, Result<(), String>, Duration, usize)>,
    faults: BTreeMap<&'static str, usize>,
    /// Things worth knowing that are not failures.
    notes: Vec<String>,
    /// Faults injected by the case running now.
    current: usize,
}

impl Report {
    fn new(seed: u64) -> Report {
        Report { seed, cases: Vec::new(), faults: BTreeMap::new(), notes: Vec::new(), current: 0 }
    }

    /// Runs one case; a panic or an `Err` is its failure, and the suite goes on.
    pub fn case(&mut self, name: &str, body: impl FnOnce(&mut Report) -> Result<(), String>) {
        eprintln!("fault case: {name}");
        self.current = 0;
        let start = Instant::now();
        let outcome = match catch_unwind(AssertUnwindSafe(|| body(self))) {
            Ok(result) => result,
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())),
        };
        if let Err(e) = &outcome {
            eprintln!("FAILED: {name}: {e}");
        }
        self.cases.push((name.to_string(), outcome, start.elapsed(), self.current));
    }

    /// Counts `n` faults of `kind` injected.
    pub fn fault(&mut self, kind: &'static str, n: usize) {
        *self.faults.entry(kind).or_default() += n;
        self.current += n;
    }

    /// Something the report should say that is not a failure.
    pub fn note(&mut self, text: String) {
        eprintln!("note: {text}");
        self.notes.push(text);
    }

    fn failures(&self) -> usize {
        self.cases.iter().filter(|c| c.1.is_err()).count()
    }

    fn text(&self, took: Duration) -> String {
        let mut out = format!("fault suite report (seed {:#x})\n", self.seed);
        let width = self.cases.iter().map(|c| c.0.len()).max().unwrap_or(4);
        out.push_str(&format!("  {:<width$}  result  faults  seconds\n", "case"));
        for (name, outcome, time, faults) in &self.cases {
            let result = if outcome.is_ok() { "ok" } else { "FAILED" };
            out.push_str(&format!("  {name:<width$}  {result:<6}  {faults:>6}  {:>7.1}\n", time.as_secs_f64()));
        }
        let total: usize = self.faults.values().sum();
        let kinds: Vec<String> = self.faults.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push_str(&format!("faults injected: {total} ({})\n", kinds.join(", ")));
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for (name, outcome, ..) in &self.cases {
            if let Err(e) = outcome {
                out.push_str(&format!("failure: {name}: {e}\n"));
            }
        }
        out.push_str(&format!(
            "{} cases tried, {total} faults injected, {} failures, {:.0}s\n",
            self.cases.len(),
            self.failures(),
            took.as_secs_f64()
        ));
        out
    }
}

fn seed() -> u64 {
    match std::env::var("XTASK_FAULT_SEED") {
        Ok(s) if !s.is_empty() => {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("XTASK_FAULT_SEED={s} is not a number"))
        }
        _ => DEFAULT_SEED,
    }
}

/// Runs one group of cases with a report of its own, printed at the end;
/// fails when any case failed.
fn suite(group: &str, cases: impl FnOnce(&mut Report, &mut Rng)) {
    // A failed check is reported with its case; its backtrace is noise.
    std::panic::set_hook(Box::new(|info| eprintln!("  {info}")));
    let start = Instant::now();
    let mut report = Report::new(seed());
    let mut rng = Rng::new(report.seed);
    cases(&mut report, &mut rng);
    for note in state::NOTES.lock().unwrap().drain(..) {
        report.note(note);
    }
    let text = report.text(start.elapsed());
    eprint!("\n{group}: {text}");
    assert_eq!(report.failures(), 0, "{group}: fault cases failed: see the report above");
}

#[test]
fn concurrency() {
    suite("concurrency", |report, _| concurrency::run(report));
}

#[test]
fn crashes() {
    suite("crashes", crashes::run);
}

#[test]
fn flaky() {
    suite("flaky", flaky::flaky);
}

#[test]
fn dying() {
    suite("dying", flaky::dying);
}

#[test]
fn credentials() {
    suite("credentials", |report, _| credentials::run(report));
}

#[test]
fn names() {
    suite("names", |report, _| names::run(report));
}
