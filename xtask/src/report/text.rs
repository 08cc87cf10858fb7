//! The text people read: one line per image, the plan of `--dry-run`, the
//! summary table and its count, sizes.

use super::Verbosity;
use crate::model::{escape, Action, Outcome};
use crate::planning::Job;

/// `built       web_app 1a2b3c4d5e6f7a8b (1.2s; not in the registry; 3 steps from …:latest)`
pub(super) fn outcome_line(o: &Outcome) -> String {
    let mut details = Vec::new();
    if !matches!(o.action, Action::Blocked | Action::NotStarted) {
        details.push(format!("{:.1}s", o.seconds));
    }
    let why = match o.action {
        // The error comes at the end, with the others; the log is where to look.
        Action::Failed => o.log.as_ref().map(|l| format!("log: {}", l.display())),
        _ => o.reason.clone(),
    };
    details.extend(why);
    if let Some(c) = &o.cache {
        details.push(match c.steps_reused {
            Some(n) => format!("{n} step{} from {}", if n == 1 { "" } else { "s" }, c.reference),
            None => format!("cache from {}", c.reference),
        });
    }
    format!("{:<11} {} {} ({})", o.action.as_str(), o.name(), o.tag(), details.join("; "))
}

/// The action as the summary says it, exactly.
pub fn action_text(o: &Outcome) -> String {
    match (o.action, o.reason.as_deref()) {
        (Action::Skipped, Some(reason)) => format!("skipped: {reason}"),
        (Action::Blocked, Some(reason)) => {
            format!("blocked by {}", reason.trim_start_matches("its base ").trim_end_matches(" failed"))
        }
        (action, _) => action.as_str().to_string(),
    }
}

/// The last `n` lines of a log, if it can be read and is not empty.
pub(super) fn log_tail(log: &std::path::Path, n: usize) -> Option<Vec<String>> {
    let bytes = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    // A carriage return (progress redrawn in place) would hide the prefix.
    let tail: Vec<String> =
        lines[lines.len().saturating_sub(n)..].iter().map(|l| escape(l.trim_end_matches('\r'))).collect();
    (!tail.is_empty()).then_some(tail)
}

/// The plan, one line per image, for `--dry-run`.
pub fn plan_text(jobs: &[Job], skipped: &[Outcome]) -> String {
    let width = jobs.iter().map(|j| j.name.len()).chain(skipped.iter().map(|o| o.name().len())).max().unwrap_or(0);
    let mut out = String::new();
    for job in jobs {
        let mut steps = if job.steps.is_empty() {
            "nothing to do".to_string()
        } else {
            job.steps.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", then ")
        };
        if !job.runs_anyway() {
            let names: Vec<&str> = job.only_if_built.iter().map(|&j| jobs[j].name.as_str()).collect();
            steps = format!("only if {} is built: {steps}", names.join(" or "));
        }
        let cache = job.cache.as_ref().map(|c| format!("; cache from {}", c.reference())).unwrap_or_default();
        out.push_str(&format!("{:<width$}  {}  {steps}  ({}{cache})\n", job.name, job.names.tag, job.why));
    }
    for o in skipped {
        out.push_str(&format!("{:<width$}  {:<16}  {}\n", o.name(), "-", action_text(o)));
    }
    out
}

/// `3 images: 2 built, 1 failed`; `1 image: 1 present`.
pub fn count_line(outcomes: &[Outcome]) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut totals: Vec<String> = Vec::new();
    for a in [
        Action::Present,
        Action::Tagged,
        Action::Pulled,
        Action::Built,
        Action::Latest,
        Action::Pushed,
        Action::Skipped,
        Action::Failed,
        Action::Blocked,
        Action::Interrupted,
        Action::NotStarted,
    ] {
        let n = outcomes.iter().filter(|o| o.action == a).count();
        if n > 0 {
            totals.push(format!("{n} {}", a.as_str()));
        }
    }
    if outcomes.is_empty() {
        return "no images".to_string();
    }
    format!("{}: {}", plural(outcomes.len(), "image"), totals.join(", "))
}

/// What is printed when the work is done: a table when anything happened
/// (not with `--quiet`), the count, then each error, causes first.
pub fn summary_text(outcomes: &[Outcome], verbosity: Verbosity) -> String {
    let idle = outcomes.iter().all(|o| matches!(o.action, Action::Present | Action::Skipped));
    let mut out = String::new();
    if verbosity != Verbosity::Quiet && !idle {
        out.push_str(&table(outcomes));
    }
    out.push_str(&count_line(outcomes));
    out.push('\n');
    if outcomes.iter().any(|o| matches!(o.action, Action::Pulled | Action::Built | Action::Pushed)) {
        let sum = |f: fn(&Outcome) -> u64| human_bytes(outcomes.iter().map(f).sum());
        let unmeasured: u32 = outcomes.iter().map(|o| o.bytes.unmeasured_builds).sum();
        // A build's own layers are told from its base's by the base's size.
        let left_out = match unmeasured {
            0 => String::new(),
            1 => " (1 build not counted: its base image is not here)".to_string(),
            n => format!(" ({n} builds not counted: their base images are not here)"),
        };
        out.push_str(&format!(
            "bytes: {} pulled, {} built{left_out}, {} pushed\n",
            sum(|o| o.bytes.pulled),
            sum(|o| o.bytes.built),
            sum(|o| o.bytes.pushed)
        ));
    }
    let mut failed: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.error.is_some() || o.action == Action::Blocked).collect();
    failed.sort_by_key(|o| o.ended);
    // One line per error; images that failed the same way share it.
    let mut errors: Vec<(Vec<&str>, String)> = Vec::new();
    for o in failed {
        let message = match &o.error {
            Some(e) => e.clone(),
            None => format!("not built: {}", o.reason.as_deref().unwrap_or_default()),
        };
        match errors.iter_mut().find(|(_, m)| *m == message) {
            Some((names, _)) => names.push(o.name()),
            None => errors.push((vec![o.name()], message)),
        }
    }
    for (names, message) in errors {
        out.push_str(&format!("error: {}: {message}\n", names.join(", ")));
    }
    out
}

fn table(outcomes: &[Outcome]) -> String {
    let width = outcomes.iter().map(|o| o.name().len()).max().unwrap_or(0).max("IMAGE".len());
    let actions: Vec<String> = outcomes.iter().map(action_text).collect();
    let action_width = actions.iter().map(|a| a.len()).max().unwrap_or(0).max("ACTION".len());
    // A column for the cache builds started from, when any did.
    let cached = outcomes.iter().any(|o| o.cache.is_some());
    let mut out = format!("{:<width$}  {:<16}  {:<action_width$}  {:>8}", "IMAGE", "TAG", "ACTION", "SECONDS");
    out.push_str(if cached { "  CACHE\n" } else { "\n" });
    for (o, action) in outcomes.iter().zip(&actions) {
        out.push_str(&format!("{:<width$}  {:<16}  {:<action_width$}  {:>8.1}", o.name(), o.tag(), action, o.seconds));
        match &o.cache {
            Some(c) => {
                let steps = c.steps_reused.map(|n| format!(" ({n} reused)")).unwrap_or_default();
                out.push_str(&format!("  {}{steps}\n", c.reference));
            }
            None => out.push('\n'),
        }
    }
    out
}

/// A size as engines print them: decimal units, three significant digits.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value < 10.0 => format!("{value:.2} {}", UNITS[unit]),
        _ if value < 100.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.0} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, CacheUse, ImageInfo};

    fn outcome(name: &str, action: Action, reason: Option<&str>, ended: u64) -> Outcome {
        let tag = format!("{name:0>16}");
        let image = ImageInfo {
            name: name.into(),
            path: name.into(),
            arch: Arch::X86_64,
            tag: Some(tag.clone()),
            local: Some(format!("l/{name}:{tag}")),
            remote: Some(format!("r/{name}_x86_64:{tag}")),
            test: true,
        };
        Outcome { ended, ..Outcome::new(image, action, reason.map(String::from)) }
    }

    fn run() -> Vec<Outcome> {
        let mut built = outcome("web", Action::Built, Some("not in the registry"), 1);
        built.seconds = 1.25;
        built.cache = Some(CacheUse { kind: "local", reference: "l/web:latest".into(), steps_reused: Some(2) });
        let mut failed = outcome("base", Action::Failed, Some("not in the registry"), 2);
        failed.seconds = 0.5;
        failed.error = Some("build failed: no such file; log: /logs/base.log".into());
        failed.log = Some("/logs/base.log".into());
        let mut armonly = outcome("armonly", Action::Skipped, Some("not available for x86_64"), 0);
        armonly.image.tag = None;
        vec![
            armonly,
            failed,
            outcome("app", Action::Blocked, Some("its base base failed"), 3),
            outcome("old", Action::Present, Some("present"), 0),
            outcome("later", Action::NotStarted, None, 4),
            built,
        ]
    }

    #[test]
    fn sizes() {
        let shown: Vec<String> =
            [0, 999, 1_000, 1_994, 12_345, 999_499, 1_990_000, 3_500_000_000].map(human_bytes).into();
        assert_eq!(shown, ["0 B", "999 B", "1.00 kB", "1.99 kB", "12.3 kB", "999 kB", "1.99 MB", "3.50 GB"]);
    }

    #[test]
    fn summary_gives_the_bytes_moved() {
        use crate::model::Bytes;
        let mut pulled = outcome("a", Action::Pulled, None, 0);
        pulled.bytes = Bytes { pulled: 2_000, ..Bytes::default() };
        let mut pushed = outcome("bb", Action::Pushed, None, 1);
        pushed.bytes = Bytes { built: 500, pushed: 500, ..Bytes::default() };
        let present = outcome("c", Action::Present, None, 2);
        let text = summary_text(&[pulled, pushed, present.clone()], Verbosity::Quiet);
        assert_eq!(text, "3 images: 1 present, 1 pulled, 1 pushed\nbytes: 2.00 kB pulled, 500 B built, 500 B pushed\n");
        // Nothing moved, nothing said.
        assert_eq!(summary_text(&[present], Verbosity::Quiet), "1 image: 1 present\n");
    }

    #[test]
    fn the_bytes_built_say_which_builds_they_leave_out() {
        use crate::model::Bytes;
        let mut one = outcome("a", Action::Built, None, 0);
        one.bytes = Bytes { built: 300, unmeasured_builds: 1, ..Bytes::default() };
        assert_eq!(
            summary_text(std::slice::from_ref(&one), Verbosity::Quiet),
            "1 image: 1 built\nbytes: 0 B pulled, 300 B built (1 build not counted: its base image is not here), \
             0 B pushed\n"
        );
        let mut two = outcome("b", Action::Built, None, 1);
        two.bytes = Bytes { unmeasured_builds: 1, ..Bytes::default() };
        assert!(summary_text(&[one, two], Verbosity::Quiet)
            .contains("300 B built (2 builds not counted: their base images are not here), 0 B pushed\n"));
    }

    #[test]
    fn summary_in_full() {
        assert_eq!(
            summary_text(&run(), Verbosity::Normal),
            "\
IMAGE    TAG               ACTION                              SECONDS  CACHE
armonly  -                 skipped: not available for x86_64       0.0
base     000000000000base  failed                                  0.5
app      0000000000000app  blocked by base                         0.0
old      0000000000000old  present                                 0.0
later    00000000000later  not started                             0.0
web      0000000000000web  built                                   1.2  l/web:latest (2 reused)
6 images: 1 present, 1 built, 1 skipped, 1 failed, 1 blocked, 1 not started
bytes: 0 B pulled, 0 B built, 0 B pushed
error: base: build failed: no such file; log: /logs/base.log
error: app: not built: its base base failed
"
        );
    }

    #[test]
    fn quiet_and_idle_runs_print_the_count_alone() {
        let quiet = summary_text(&run(), Verbosity::Quiet);
        assert_eq!(
            quiet,
            "6 images: 1 present, 1 built, 1 skipped, 1 failed, 1 blocked, 1 not started\n\
             bytes: 0 B pulled, 0 B built, 0 B pushed\n\
             error: base: build failed: no such file; log: /logs/base.log\n\
             error: app: not built: its base base failed\n"
        );
        let idle = vec![outcome("a", Action::Present, None, 0)];
        assert_eq!(summary_text(&idle, Verbosity::Normal), "1 image: 1 present\n");
        assert_eq!(count_line(&[]), "no images");
    }

    #[test]
    fn one_line_per_image_worked_on() {
        let all = run();
        let line = |name: &str| outcome_line(all.iter().find(|o| o.name() == name).unwrap());
        assert_eq!(
            line("web"),
            "built       web 0000000000000web (1.2s; not in the registry; 2 steps from l/web:latest)"
        );
        assert_eq!(line("base"), "failed      base 000000000000base (0.5s; log: /logs/base.log)");
        assert_eq!(line("app"), "blocked     app 0000000000000app (its base base failed)");
    }
}
