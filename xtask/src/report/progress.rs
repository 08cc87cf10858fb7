//! What people see while work runs: notes and retries above a live progress
//! line on a terminal, one line per finished image off one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::text::{log_tail, outcome_line};
use crate::model::{Action, Event, Observer, Outcome};

/// Where one command's lines for people go (stderr): above the live
/// progress line while there is one. Clones share it.
#[derive(Clone)]
pub struct Reporter(Arc<Shared>);

struct Shared {
    bar: Mutex<Option<ProgressBar>>,
    /// The images being worked on, in the order they started, each with the
    /// build step it is at when one is known (`3/7`).
    running: Mutex<Vec<(String, Option<String>)>>,
    /// `--quiet`: no line for a retry.
    quiet: bool,
}

impl Reporter {
    /// `quiet`: `--quiet`.
    pub fn new(quiet: bool) -> Reporter {
        Reporter(Arc::new(Shared { bar: Mutex::new(None), running: Mutex::new(Vec::new()), quiet }))
    }

    /// A line for people, that does not tear the progress line.
    pub fn note(&self, line: &str) {
        match self.0.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    /// A registry call about to be tried again: on the progress line when
    /// there is one, else a line of its own (none with `--quiet`).
    pub fn retrying(&self, what: &str) {
        let bar = self.0.bar.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) if !bar.is_hidden() => bar.set_message(format!("retrying: {what}")),
            _ if self.0.quiet => {}
            _ => eprintln!("retrying: {what}"),
        }
    }

    /// The images being worked on change: `change` edits the list, then the
    /// progress line shows it (`web_app: step 3/7 certs`).
    fn running(&self, change: impl FnOnce(&mut Vec<(String, Option<String>)>)) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut running);
        let shown: Vec<String> = running
            .iter()
            .map(|(name, step)| match step {
                Some(step) => format!("{name}: step {step}"),
                None => name.clone(),
            })
            .collect();
        if let Some(bar) = self.0.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_message(shown.join(" "));
        }
    }

    /// A build of `image` began step `step` of its Dockerfile.
    pub fn step(&self, image: &str, step: &str) {
        self.running(|running| {
            if let Some((_, at)) = running.iter_mut().find(|(name, _)| name == image) {
                *at = Some(step.to_string());
            }
        });
    }

    /// A line an engine call printed, or its command line, under
    /// `--verbose`: prefixed with the image it was for.
    pub fn echo(&self, image: Option<&str>, line: &str) {
        self.note(&format!("{} | {line}", image.unwrap_or("engine")));
    }
}

/// The lines for people that are no one image's progress ([`Progress`] takes
/// those): notes, retries, and the `--verbose` echo of engine calls.
impl Observer for Reporter {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Note(text) => self.note(&text),
            Event::Retrying(what) => self.retrying(&what),
            Event::Echo { image, line } => self.echo(image, line),
            Event::Step { image, step } => self.step(image, step),
            Event::Started(_) | Event::Finished(_) => {}
        }
    }
}

/// How many lines of a failed image's build log follow its error when the
/// output is read later (CI), not watched.
pub const LOG_TAIL_LINES: usize = 100;

/// How much people see: `--quiet` (errors and the final count), the
/// default, or `--verbose` (every engine call too, through [`Reporter::echo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
}

pub struct Progress {
    bar: ProgressBar,
    reporter: Reporter,
    /// Someone watches a terminal: a live line, and the log tails stay in the logs.
    interactive: bool,
    verbosity: Verbosity,
}

impl Progress {
    /// `interactive`: stderr is a terminal, outside CI. Otherwise there is
    /// no live line; each finished image gets a line of its own, and a failed
    /// one its log's last lines.
    pub fn new(reporter: &Reporter, total: usize, interactive: bool, verbosity: Verbosity) -> Progress {
        let shown = interactive && verbosity != Verbosity::Quiet;
        let target = if shown { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        *reporter.0.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        Progress { bar, reporter: reporter.clone(), interactive, verbosity }
    }

    pub fn started(&self, name: &str) {
        self.reporter.running(|running| running.push((name.to_string(), None)));
    }

    /// One line per finished image: on a terminal, for those that did
    /// something or failed; off one, for every image, a failed one followed by
    /// its log's last lines. Nothing with `--quiet`.
    pub fn finished(&self, o: &Outcome) {
        self.reporter.running(|running| running.retain(|(n, _)| n != o.name()));
        // A base brought only because a pull failed was not counted at first.
        if self.bar.length().is_some_and(|len| self.bar.position() >= len) {
            self.bar.inc_length(1);
        }
        self.bar.inc(1);
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        // What needed nothing is in the count line (and the table).
        if matches!(o.action, Action::Present | Action::Skipped) {
            return;
        }
        let mut line = outcome_line(o);
        if !self.interactive && o.action == Action::Failed {
            if let Some((log, tail)) = o.log.as_deref().and_then(|log| Some((log, log_tail(log, LOG_TAIL_LINES)?))) {
                line.push_str(&format!("\n--- last lines of {}", log.display()));
                for l in tail {
                    line.push_str(&format!("\n{} | {l}", o.name()));
                }
            }
        }
        self.reporter.note(&line);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *self.reporter.0.bar.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Observer for Progress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started(name) => self.started(name),
            Event::Finished(outcome) => self.finished(outcome),
            other => self.reporter.event(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Progress, Reporter, Verbosity};
    use crate::model::{Event, Observer};

    /// The progress line names each image being worked on, with the build
    /// step it is at once its build says.
    #[test]
    fn the_line_names_each_building_images_step() {
        let reporter = Reporter::new(false);
        let progress = Progress::new(&reporter, 3, false, Verbosity::Normal);
        progress.event(Event::Started("web_app"));
        progress.event(Event::Started("certs"));
        assert_eq!(progress.bar.message(), "web_app certs");
        // Steps reach the reporter, which the engine was given.
        reporter.event(Event::Step { image: "web_app", step: "3/7" });
        reporter.event(Event::Step { image: "elsewhere", step: "1/2" });
        assert_eq!(progress.bar.message(), "web_app: step 3/7 certs");
        reporter.event(Event::Step { image: "certs", step: "1/2" });
        assert_eq!(progress.bar.message(), "web_app: step 3/7 certs: step 1/2");
        progress.finish();
    }
}
