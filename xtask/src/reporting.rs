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

pub struct Progress {
    bar: ProgressBar,
    running: Mutex<Vec<String>>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        Progress { bar, running: Mutex::new(Vec::new()) }
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
        if matches!(o.action, Action::Present | Action::Skipped) {
            return;
        }
        let mut line = format!("{:<11} {} {} ({:.1}s)", o.action.as_str(), o.name, o.tag, o.seconds);
        if let Some(e) = &o.error {
            line.push_str(&format!(": {e}"));
        }
        note(&line);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
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
        out.push_str(&format!("{:<width$}  {}  {steps}  ({})\n", job.name, job.tag, job.why));
    }
    out
}

/// The table printed when work is done.
pub fn summary_text(outcomes: &[Outcome]) -> String {
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(0).max("IMAGE".len());
    let mut out = format!("{:<width$}  {:<16}  {:<11}  {:>8}\n", "IMAGE", "TAG", "ACTION", "SECONDS");
    for o in outcomes {
        out.push_str(&format!("{:<width$}  {:<16}  {:<11}  {:>8.1}\n", o.name, o.tag, o.action.as_str(), o.seconds));
    }
    let count = |a: Action| outcomes.iter().filter(|o| o.action == a).count();
    let mut totals = Vec::new();
    for a in [
        Action::Present,
        Action::Tagged,
        Action::Pulled,
        Action::Built,
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

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
