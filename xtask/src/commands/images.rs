//! The engine commands (`load`, `pull`, `rebuild`, `tag`, `test`, `push` and
//! their `*-all-*` forms): choose the images, observe what is there, plan,
//! then print the plan (`--dry-run`) or execute it, and report.

mod from;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::{observe, RunArgs};
use crate::catalog::discovery::{discover_lenient, Catalog};
use crate::catalog::shard::{self, Shard};
use crate::catalog::{image_files, tagging};
use crate::config::Settings;
use crate::engine::{cross, Builder, Engine, EngineCli};
use crate::execute;
use crate::git::history;
use crate::git::provenance::{GitState, Provenance};
use crate::model::{escape, Action, Arch, ImageIndex, ImageInfo, ImageRef, Outcome, EXIT_FAILURE, EXIT_INTERRUPTED};
use crate::planning::{Job, Mode, Options, Target};
use crate::registry::Registry;
use crate::report::{self, Progress, Reporter, Verbosity};

pub enum Selection {
    Names(Vec<String>),
    All(Option<Shard>),
    AllTests(Option<Shard>),
}

/// Runs one engine command; returns the process exit status. With
/// `changed_since`, an `*-all-*` selection keeps only the images whose tag
/// differs from their tag at that git revision.
pub fn run(
    settings: &Settings,
    mode: Mode,
    selection: Selection,
    args: &RunArgs,
    changed_since: Option<&str>,
) -> Result<i32> {
    let reporter = Reporter::new(args.quiet);
    let chosen = choose(settings, &selection, changed_since, &reporter)?;
    let targets = targets(&chosen.catalog, settings, &chosen.requested)?;

    let mut engine = EngineCli::new(settings.engine)
        .telling_retries(Arc::new(reporter.clone()))
        .telling_steps(Arc::new(reporter.clone()));
    if args.verbose {
        engine = engine.echoing(Arc::new(reporter.clone()));
    }
    engine.check()?;
    let registry = Registry::of(settings).retrying(engine.retry().clone());
    let asking = observe::Asking { registry: &registry, parallel: args.look_ups(), events: &reporter };
    let want = observe::Wanted { mode, arch: settings.arch, skip_load: args.skip_image_load };
    let mut seen = match observe::observe(&engine, &asking, want, &targets)? {
        Ok(seen) => seen,
        Err(unreachable) => return fail_every_image(settings, mode, args, &chosen, &targets, &unreachable),
    };
    let options = Options {
        mode,
        arch: settings.arch,
        cache: settings.cache_from && !args.no_cache,
        skip_load: args.skip_image_load,
        push_latest: args.push_as_latest,
    };
    let jobs = observe::plan(&asking, &targets, &chosen.requested, &mut seen, options);

    if args.dry_run {
        if args.json {
            report::print_json(&report::PlanDocument::new(mode, settings.arch, &jobs, &chosen.skipped))?;
        } else {
            print!("{}", report::plan_text(&jobs, &chosen.skipped));
        }
        return Ok(invalid_failure(&chosen.invalid).unwrap_or(0));
    }
    let work = Execution { settings, mode, args, engine: &engine, registry: &registry, reporter: &reporter };
    let (mut outcomes, built) = work.execute(&chosen, &jobs, seen.registry_down)?;
    outcomes.sort_by(|a, b| a.name().cmp(b.name()));
    if args.json {
        let builder = built.then(|| engine.builder().kind());
        report::print_json(&report::OutcomeDocument { mode, arch: settings.arch, builder, images: &outcomes })?;
    }
    eprint!("{}", report::summary_text(&outcomes, verbosity(args)));
    if engine.interrupted() {
        eprintln!("interrupted: no tag was applied to unfinished images");
        return Ok(EXIT_INTERRUPTED);
    }
    let failures = outcomes.iter().filter(|o| o.action.is_failure()).count();
    let invalid = invalid_failure(&chosen.invalid);
    Ok(if failures > 0 { EXIT_FAILURE } else { invalid.unwrap_or(0) })
}

/// The images a run is for.
struct Chosen {
    catalog: Catalog,
    /// The images to work on, after `--changed-since` and `--shard`.
    requested: Vec<ImageIndex>,
    /// Images without a Dockerfile for the architecture: reported as
    /// skipped, with the rest.
    skipped: Vec<Outcome>,
    /// Why each invalid image directory was left out of an `*-all-*` run.
    invalid: Vec<String>,
}

/// Discovers the catalog and picks the images `selection` names, less
/// those unchanged since `changed_since` and those of other shards.
fn choose(
    settings: &Settings,
    selection: &Selection,
    changed_since: Option<&str>,
    reporter: &Reporter,
) -> Result<Chosen> {
    // A directory that cannot make an image name stops only what names it:
    // `*-all-*` does the rest, then fails naming it.
    let catalog = discover_lenient(&settings.images_dir, settings.arch)?;
    let invalid: Vec<String> = match selection {
        Selection::Names(_) => Vec::new(),
        _ => catalog.invalid.iter().map(|bad| bad.reason.clone()).collect(),
    };
    for reason in &invalid {
        reporter.note(&format!("warning: skipped: {reason}"));
    }
    let (requested, shard, unavailable) = match selection {
        Selection::Names(names) => {
            let (chosen, unavailable) = catalog.select_available(names)?;
            (chosen, None, unavailable)
        }
        Selection::All(shard) => (catalog.indices().collect(), *shard, catalog.other_arch.iter().collect()),
        Selection::AllTests(shard) => (
            catalog.indices().filter(|&i| catalog[i].is_test(settings)).collect(),
            *shard,
            catalog.other_arch.iter().filter(|i| i.is_test(settings)).collect(),
        ),
    };
    let skipped: Vec<Outcome> = unavailable
        .iter()
        .map(|image| {
            let info = ImageInfo {
                name: image.name.clone(),
                path: image.path.clone(),
                arch: settings.arch,
                tag: None,
                local: None,
                remote: None,
                test: image.is_test(settings),
            };
            Outcome::new(info, Action::Skipped, Some(format!("not available for {}", settings.arch)))
        })
        .collect();
    let requested = match changed_since {
        Some(rev) if !matches!(selection, Selection::Names(_)) => {
            let changed = history::changed_since(settings, &catalog, &requested, rev)?;
            reporter.note(&format!("changed since {rev}: {} of {} images", changed.len(), requested.len()));
            changed
        }
        _ => requested,
    };
    let requested = match shard {
        Some(shard) => shard_of(&catalog, settings, &requested, shard, reporter)?,
        None => requested,
    };
    Ok(Chosen { catalog, requested, skipped, invalid })
}

/// The registry could not be asked and the mode cannot do without it:
/// every image fails, naming the registry; the summary still says what each
/// image is.
fn fail_every_image(
    settings: &Settings,
    mode: Mode,
    args: &RunArgs,
    chosen: &Chosen,
    targets: &HashMap<ImageIndex, Target>,
    unreachable: &anyhow::Error,
) -> Result<i32> {
    let error = format!("{unreachable:#}");
    let mut outcomes: Vec<Outcome> = chosen
        .requested
        .iter()
        .map(|i| {
            let mut o = Outcome::new(targets[i].info(settings.arch), Action::Failed, None);
            o.error = Some(error.clone());
            o
        })
        .collect();
    outcomes.sort_by(|a, b| a.name().cmp(b.name()));
    if args.json {
        report::print_json(&report::OutcomeDocument { mode, arch: settings.arch, builder: None, images: &outcomes })?;
    }
    eprint!("{}", report::summary_text(&outcomes, verbosity(args)));
    Ok(EXIT_FAILURE)
}

/// What executing a plan works with.
struct Execution<'a> {
    settings: &'a Settings,
    mode: Mode,
    args: &'a RunArgs,
    engine: &'a EngineCli,
    registry: &'a Registry,
    reporter: &'a Reporter,
}

impl Execution<'_> {
    /// Runs the plan's jobs, with progress; the outcomes of every image,
    /// the skipped ones too, and whether anything was built.
    fn execute(&self, chosen: &Chosen, jobs: &[Job], registry_down: bool) -> Result<(Vec<Outcome>, bool)> {
        let (settings, mode, args, engine) = (self.settings, self.mode, self.args, self.engine);
        let log_dir = log_dir(settings)?;
        let run = run_id();
        let idle = if matches!(mode, Mode::Test | Mode::Push) { Action::Skipped } else { Action::Present };
        let may_build = jobs.iter().any(Job::may_build);
        // Builders that match cached layers whatever their platform would hand a
        // foreign build the host's layers: such builds go without the cache.
        let fresh_builds =
            may_build && settings.arch != Arch::host()? && engine.builder().shares_cache_across_platforms();
        // Said when a build starts: a run may only pull, or build only
        // when a pull fails. Only a run that may build asks the builder.
        let builds = execute::Builds::announcing(
            (may_build && !args.quiet).then(|| builder_note(engine.builder(), fresh_builds, settings.arch)),
        );
        // What built images are labelled with: git is asked only when something may build.
        let git = if may_build { GitState::read(&settings.images_dir) } else { None };
        let provenance = Provenance::new(settings, git);
        let catalog = &chosen.catalog;
        let paths = catalog.images.iter().chain(&catalog.other_arch).map(|i| i.path.clone()).collect();
        let built_on =
            execute::BuiltOn::new(&settings.local_prefix, &settings.remote_prefix, paths, &settings.build_args);
        // A job that runs only if a build needs it is counted when it does.
        let total = jobs.iter().filter(|j| j.runs_anyway()).count() + chosen.skipped.len();
        let progress = Progress::new(self.reporter, total, settings.interactive, verbosity(args));
        let ctx = execute::Context {
            engine,
            images_root: &chosen.catalog.root,
            arch: settings.arch,
            build_args: &settings.build_args,
            log_dir: &log_dir,
            run: &run,
            idle,
            registry: self.registry,
            registry_down: &AtomicBool::new(registry_down),
            fresh_builds,
            no_cache: args.no_cache,
            cache_to: mode == Mode::Push && settings.cache_from,
            direct_push: mode == Mode::Push && may_build && engine.pushes_from_builder(),
            provenance: &provenance,
            built_on: &built_on,
            prebuilt: &Default::default(),
            builds: &builds,
            events: &progress,
        };
        if may_build {
            cross::register(settings.arch)?;
        }
        engine.processes().stop_all_on_signals();
        for o in &chosen.skipped {
            progress.finished(o);
        }
        let mut outcomes = execute::execute(&ctx, jobs, args.jobs(settings.engine), args.keep_going);
        progress.finish();
        // Again at the end: a build of a run that was killed may write its
        // image-ID file after this run began.
        remove_left_behind(&log_dir);
        outcomes.extend(chosen.skipped.iter().cloned());
        Ok((outcomes, builds.started()))
    }
}

/// `building with BuildKit (…)`, and why the layer cache is left out when it is.
fn builder_note(builder: &Builder, fresh_builds: bool, arch: Arch) -> String {
    let how = if fresh_builds {
        let remedy = match builder {
            Builder::Podman => "",
            _ => " (BuildKit keeps them apart: install docker's buildx plugin)",
        };
        format!(", without the layer cache for {arch} images: it would reuse layers cached for another architecture{remedy}")
    } else {
        String::new()
    };
    format!("building with {}{how}", builder.describe())
}

fn verbosity(args: &RunArgs) -> Verbosity {
    if args.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    }
}

/// Says why each invalid image directory was left out, once the rest is
/// done; the run then fails.
fn invalid_failure(reasons: &[String]) -> Option<i32> {
    for reason in reasons {
        eprintln!("error: {reason}");
    }
    (!reasons.is_empty()).then_some(EXIT_FAILURE)
}

/// The requested images and, transitively, the local images they are built
/// on; each with what its build starts from.
fn targets(catalog: &Catalog, settings: &Settings, requested: &[ImageIndex]) -> Result<HashMap<ImageIndex, Target>> {
    let mut bases: HashMap<ImageIndex, Vec<ImageIndex>> = HashMap::new();
    let mut stack = requested.to_vec();
    while let Some(i) = stack.pop() {
        if bases.contains_key(&i) {
            continue;
        }
        let own = tagging::local_bases(catalog, settings, i)?.to_vec();
        stack.extend(&own);
        bases.insert(i, own);
    }
    let all: Vec<ImageIndex> = bases.keys().copied().collect();
    let tags = tagging::tags(catalog, settings, &all)?;
    bases
        .into_iter()
        .map(|(i, bases)| {
            let image = &catalog[i];
            // Read as the catalog reads it: a bounded regular file inside the image.
            let dir = image.dir(&catalog.root);
            let text = image_files::read(&dir, &image.dockerfile)?.with_context(|| {
                format!(
                    "cannot read {}: No such file or directory",
                    escape(&dir.join(&image.dockerfile).display().to_string())
                )
            })?;
            let text = String::from_utf8_lossy(&text);
            let target = Target {
                image: i,
                name: image.name.clone(),
                path: image.path.clone(),
                dockerfile: image.dockerfile.clone(),
                test: image.is_test(settings),
                names: ImageRef::new(settings, &image.path, &tags[&i]),
                bases,
                from: from::from_image(&text, &settings.build_args),
            };
            Ok((i, target))
        })
        .collect()
}

fn log_dir(settings: &Settings) -> Result<PathBuf> {
    let dir = settings.logs.join(settings.arch.as_str());
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    remove_left_behind(&dir);
    Ok(dir)
}

/// How many logs of an image are kept, the newest, besides those of runs
/// still going.
const LOGS_KEPT: usize = 5;

/// What names this run's logs: when it started, in UTC to the second, then
/// its process, so that runs at once never share a log and the logs of an
/// image sort by time.
fn run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{}-{}", utc(now), std::process::id())
}

/// `yyyymmddThhmmss` for seconds since the epoch (the civil calendar from
/// a day count, as in Howard Hinnant's `civil_from_days`).
fn utc(seconds: u64) -> String {
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_based + 2) / 5 + 1;
    let month = if march_based < 10 { march_based + 3 } else { march_based - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}", time / 3_600, time % 3_600 / 60, time % 60)
}

/// The image and the run of a run's log, `<image>.<yyyymmddThhmmss>-<pid>.log`.
fn run_log(file: &str) -> Option<(&str, &str, i32)> {
    let (image, run) = file.strip_suffix(".log")?.rsplit_once('.')?;
    let (time, pid) = run.split_once('-')?;
    let (date, clock) = time.split_once('T')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(date, 8) && digits(clock, 6)) {
        return None;
    }
    Some((image, run, pid.parse().ok()?))
}

/// Whether process `pid` is still running.
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let asked = unsafe { libc::kill(pid, 0) };
    asked == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes what a run that was killed left beside the logs: the image-ID
/// and metadata files its builds wrote, the Dockerfiles it wrote for them
/// and a link it was making, named after its process, when that process is
/// gone. Of the logs of each image it keeps the newest [`LOGS_KEPT`], those
/// of runs still going and the one `<image>.log` links to.
fn remove_left_behind(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut logs: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((image, run, pid)) = run_log(name) {
            logs.entry(image.to_owned()).or_default().push((run.to_owned(), pid));
            continue;
        }
        let Some(stem) =
            [".iid", ".metadata.json", ".bake.json", ".Dockerfile", ".link"].iter().find_map(|s| name.strip_suffix(s))
        else {
            continue;
        };
        let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if !alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (image, mut runs) in logs {
        runs.sort_by(|a, b| b.0.cmp(&a.0));
        let latest = std::fs::read_link(dir.join(format!("{image}.log"))).ok();
        for (run, pid) in runs.into_iter().skip(LOGS_KEPT) {
            let file = format!("{image}.{run}.log");
            if latest.as_deref() != Some(std::path::Path::new(&file)) && !alive(pid) {
                let _ = std::fs::remove_file(dir.join(file));
            }
        }
    }
}

/// The requested images that fall to one shard; see [`crate::catalog::shard`].
fn shard_of(
    catalog: &Catalog,
    settings: &Settings,
    requested: &[ImageIndex],
    shard: Shard,
    reporter: &Reporter,
) -> Result<Vec<ImageIndex>> {
    let mine = shard::select(catalog, settings, requested, shard)?;
    reporter.note(&format!("shard {}/{}: {} of {} images", shard.index, shard.count, mine.len(), requested.len()));
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_is_the_civil_date_and_time() {
        assert_eq!(utc(0), "19700101T000000");
        assert_eq!(utc(951_782_400 + 3_600 + 120 + 3), "20000229T010203");
        assert_eq!(utc(1_735_689_599), "20241231T235959");
    }

    #[test]
    fn run_logs_are_told_from_other_files() {
        assert_eq!(run_log("a_b.20240102T030405-77.log"), Some(("a_b", "20240102T030405-77", 77)));
        for other in ["a.log", "a.20240102T030405-77.12.iid", "a.log.12.link", "a.2024T0304-77.log", "a.x-77.log"] {
            assert_eq!(run_log(other), None, "{other}");
        }
    }

    #[test]
    fn the_newest_logs_are_kept_with_those_of_live_runs_and_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        // No process has so high an ID: those runs are over.
        let over = 999_999_999;
        let me = std::process::id();
        let mut files: Vec<String> = (1..=8).map(|day| format!("a.202401{day:02}T000000-{over}.log")).collect();
        files.push(format!("a.20231231T000000-{me}.log"));
        files.push(format!("a.20231230T000000-{over}.log"));
        files.push(format!("b.20240101T000000-{over}.log"));
        files.push("a.20240101T000000-1.log.txt".into());
        for file in &files {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        // The latest is one a run still going wrote after newer runs began.
        let latest = format!("a.20230101T000000-{over}.log");
        std::fs::write(dir.path().join(&latest), "").unwrap();
        std::os::unix::fs::symlink(&latest, dir.path().join("a.log")).unwrap();

        remove_left_behind(dir.path());

        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut expected: Vec<String> = (4..=8).map(|day| format!("a.202401{day:02}T000000-{over}.log")).collect();
        expected.extend([
            latest,
            format!("a.20231231T000000-{me}.log"),
            "a.20240101T000000-1.log.txt".into(),
            "a.log".into(),
            format!("b.20240101T000000-{over}.log"),
        ]);
        expected.sort();
        assert_eq!(left, expected);
    }
}
