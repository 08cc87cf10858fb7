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

    let mut engine = EngineCli::new(settings.engine).telling_retries(Arc::new(reporter.clone()));
    if args.verbose {
        engine = engine.echoing(Arc::new(reporter.clone()));
    }
    engine.check()?;
    let registry = Registry::of(settings).retrying(engine.retry().clone());
    let asking = observe::Asking { registry: &registry, parallel: args.parallelism(), events: &reporter };
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
        // A job that runs only if a build needs it is counted when it does.
        let total = jobs.iter().filter(|j| j.runs_anyway()).count() + chosen.skipped.len();
        let progress = Progress::new(self.reporter, total, settings.interactive, verbosity(args));
        let ctx = execute::Context {
            engine,
            images_root: &chosen.catalog.root,
            arch: settings.arch,
            build_args: &settings.build_args,
            log_dir: &log_dir,
            idle,
            registry: self.registry,
            registry_down: &AtomicBool::new(registry_down),
            fresh_builds,
            no_cache: args.no_cache,
            cache_to: mode == Mode::Push && settings.cache_from,
            direct_push: mode == Mode::Push && may_build && engine.pushes_from_builder(),
            provenance: &provenance,
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
        let mut outcomes = execute::execute(&ctx, jobs, args.parallelism(), args.keep_going);
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

/// Removes what a run that was killed left beside the logs: the image-ID
/// and metadata files its builds wrote, and the Dockerfiles it wrote for them, named after its process, when that
/// process is gone.
fn remove_left_behind(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) =
            [".iid", ".metadata.json", ".bake.json", ".Dockerfile"].iter().find_map(|s| name.strip_suffix(s))
        else {
            continue;
        };
        let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: kill(2) with signal 0 only asks whether the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_file(entry.path());
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
