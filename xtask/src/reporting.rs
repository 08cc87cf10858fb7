//! Reporting: what people see while work runs (a live progress line, one line
//! per finished image) and after it (a summary table), and `--json` for machines.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::execute::{Action, Outcome};
use crate::planning::Job;

/// A line for people, on stderr, that does not tear the progress line.
pub fn note(line: &str) {
    match PROGRESS.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(bar) if !bar.is_hidden() => bar.println(line),
        _ => eprintln!("{line}"),
    }
}

static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// How many lines of a failed image's build log follow its error when the
/// output is read later (CI), not watched.
pub const LOG_TAIL_LINES: usize = 100;

pub struct Progress {
    bar: ProgressBar,
    running: Mutex<Vec<String>>,
    /// Someone watches a terminal: a live line, and the log tails stay in the logs.
    interactive: bool,
}

impl Progress {
    /// `interactive`: stderr is a terminal, outside CI. Otherwise there is
    /// no live line; each finished image gets a line of its own, and a failed
    /// one its log's last lines.
    pub fn new(total: usize, interactive: bool) -> Progress {
        let target = if interactive { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        Progress { bar, running: Mutex::new(Vec::new()), interactive }
    }

    pub fn started(&self, name: &str) {
        let mut running = self.running.lock().unwrap();
        running.push(name.to_string());
        self.bar.set_message(running.join(" "));
    }

    pub fn finished(&self, o: &Outcome) {
        let mut running = self.running.lock().unwrap();
        running.retain(|n| n != &o.name);
        self.bar.set_message(running.join(" "));
        self.bar.inc(1);
        drop(running);
        if self.interactive && matches!(o.action, Action::Present | Action::Skipped) {
            return;
        }
        let cache = match &o.cache {
            Some(c) => match c.steps_reused {
                Some(n) => format!(", {n} step{} from {}", if n == 1 { "" } else { "s" }, c.reference),
                None => format!(", cache from {}", c.reference),
            },
            None => String::new(),
        };
        let mut line = format!("{:<11} {} {} ({:.1}s{cache})", o.action.as_str(), o.name, o.tag, o.seconds);
        if let Some(e) = &o.error {
            line.push_str(&format!(": {e}"));
        }
        if !self.interactive && o.action == Action::Failed {
            if let Some((log, tail)) = o.log.as_deref().and_then(|log| Some((log, log_tail(log, LOG_TAIL_LINES)?))) {
                line.push_str(&format!("\n--- last lines of {}", log.display()));
                for l in tail {
                    line.push_str(&format!("\n{} | {l}", o.name));
                }
            }
        }
        note(&line);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The last `n` lines of a log, if it can be read and is not empty.
fn log_tail(log: &std::path::Path, n: usize) -> Option<Vec<String>> {
    let bytes = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    // A carriage return (progress redrawn in place) would hide the prefix.
    let tail: Vec<String> =
        lines[lines.len().saturating_sub(n)..].iter().map(|l| l.trim_end_matches('\r').to_string()).collect();
    (!tail.is_empty()).then_some(tail)
}

/// A line an engine call printed, or its command line, under `--verbose`:
/// prefixed with the image it was for.
pub fn echo(image: Option<&str>, line: &str) {
    note(&format!("{} | {line}", image.unwrap_or("engine")));
}

/// The plan, one line per image, for `--dry-run`.
pub fn plan_text(jobs: &[Job]) -> String {
    let width = jobs.iter().map(|j| j.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for job in jobs {
        let steps = if job.steps.is_empty() {
            "nothing to do".to_string()
        } else {
            job.steps.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", then ")
        };
        let cache = job.cache.as_ref().map(|c| format!("; cache from {}", c.reference())).unwrap_or_default();
        out.push_str(&format!("{:<width$}  {}  {steps}  ({}{cache})\n", job.name, job.tag, job.why));
    }
    out
}

/// The table printed when work is done.
pub fn summary_text(outcomes: &[Outcome]) -> String {
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(0).max("IMAGE".len());
    // A column for the cache builds started from, when any did.
    let cached = outcomes.iter().any(|o| o.cache.is_some());
    let mut out = format!("{:<width$}  {:<16}  {:<11}  {:>8}", "IMAGE", "TAG", "ACTION", "SECONDS");
    out.push_str(if cached { "  CACHE\n" } else { "\n" });
    for o in outcomes {
        out.push_str(&format!("{:<width$}  {:<16}  {:<11}  {:>8.1}", o.name, o.tag, o.action.as_str(), o.seconds));
        match &o.cache {
            Some(c) => {
                let steps = c.steps_reused.map(|n| format!(" ({n} reused)")).unwrap_or_default();
                out.push_str(&format!("  {}{steps}\n", c.reference));
            }
            None => out.push('\n'),
        }
    }
    let count = |a: Action| outcomes.iter().filter(|o| o.action == a).count();
    let mut totals = Vec::new();
    for a in [
        Action::Present,
        Action::Tagged,
        Action::Pulled,
        Action::Built,
        Action::Latest,
        Action::Pushed,
        Action::Skipped,
        Action::Failed,
        Action::NotStarted,
    ] {
        let n = count(a);
        if n > 0 {
            totals.push(format!("{n} {}", a.as_str()));
        }
    }
    out.push_str(&format!("{} images: {}\n", outcomes.len(), totals.join(", ")));
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        out.push_str(&format!("error: {}: {}\n", o.name, o.error.as_deref().unwrap_or_default()));
    }
    out
}

/// Bytes as people read them: `12.3 MB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
