//! The engine commands: discover, tag, observe, plan, then execute or print.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::catalog::discovery::{discover, discover_lenient, Catalog};
use crate::catalog::shard::{self, Shard};
use crate::catalog::tagging;
use crate::config::Settings;
use crate::engine::cross::{self, Registered};
use crate::engine::{Engine, EngineCli};
use crate::execute;
use crate::git::history;
use crate::git::provenance::{GitState, Provenance};
use crate::model::Arch;
use crate::model::{Action, Outcome};
use crate::model::{ImageIndex, ImageInfo, ImageRef};
use crate::planning::{self, Mode, Observed, Options, Target};
use crate::process::Interrupt;
use crate::registry::{Registry, Retry};
use crate::report::{self, Progress, Reporter, Verbosity};

/// Every engine command's options, as the commands read them; those a
/// command does not take are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    pub jobs: Option<u16>,
    pub keep_going: bool,
    pub dry_run: bool,
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub skip_image_load: bool,
    pub no_cache: bool,
    pub push_as_latest: bool,
}

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
    let verbosity = if args.quiet { Verbosity::Quiet } else { Verbosity::Normal };
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
    // Images without a Dockerfile for ARCH are reported as skipped, with the rest.
    let (requested, shard, unavailable) = match &selection {
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
        Some(shard) => shard_of(&catalog, settings, &requested, shard, &reporter)?,
        None => requested,
    };
    let targets = targets(&catalog, settings, &requested)?;

    let mut engine = EngineCli::new(settings.engine).telling_retries(Arc::new(reporter.clone()));
    if args.verbose {
        engine = engine.echoing(Arc::new(reporter.clone()));
    }
    engine.check()?;
    let local = engine.local_images()?;
    let platforms = local_platforms(&engine, &local, &targets)?;
    let mut seen = Observed { local, platforms, ..Observed::default() };
    let registry = Registry::of(settings).retrying(engine.retry().clone());
    let mut registry_down = false;
    if mode.needs_remote() {
        match remote_lookups(&registry, &targets, &requested, parallelism(args), false) {
            Ok(found) => seen.remote = found,
            // What the registry lacks is built, and a registry that cannot
            // be asked lacks everything: the legacy `test` targets built then.
            Err(e) if mode == Mode::Test => {
                reporter.note(&format!("warning: {e:#}; building every image as if the registry lacked it"))
            }
            // Every image fails, naming the registry; the summary still says
            // what each image is.
            Err(e) => {
                let error = format!("{e:#}");
                let mut outcomes: Vec<Outcome> = requested
                    .iter()
                    .map(|i| {
                        let mut o = Outcome::new(targets[i].info(settings.arch), Action::Failed, None);
                        o.error = Some(error.clone());
                        o
                    })
                    .collect();
                outcomes.sort_by(|a, b| a.name().cmp(b.name()));
                if args.json {
                    let document =
                        report::OutcomeDocument { mode, arch: settings.arch, builder: None, images: &outcomes };
                    report::print_json(&document)?;
                }
                eprint!("{}", report::summary_text(&outcomes, verbosity));
                return Ok(crate::model::EXIT_FAILURE);
            }
        }
    } else if mode == Mode::Load && !args.skip_image_load {
        // Pull only what the registry has; what it lacks goes straight to
        // the build. A registry that cannot be asked is not waited on.
        let missing: Vec<ImageIndex> = {
            let mut m: Vec<ImageIndex> = targets
                .values()
                .filter(|t| {
                    [t.names.local_tagged(), t.names.remote_tagged()]
                        .iter()
                        .all(|r| seen.present(r, settings.arch).is_none())
                })
                .map(|t| t.image)
                .collect();
            m.sort_unstable();
            m
        };
        if !missing.is_empty() {
            match remote_lookups(&registry, &targets, &missing, parallelism(args), true) {
                Ok(found) => seen.remote = found,
                Err(e) => {
                    reporter.note(&format!("warning: {e:#}; building what is not present"));
                    registry_down = true;
                    seen.registry_down = true;
                }
            }
        }
    }
    let options = Options {
        mode,
        arch: settings.arch,
        cache: settings.cache_from && !args.no_cache,
        skip_load: args.skip_image_load,
        push_latest: args.push_as_latest,
    };
    let mut jobs = planning::plan(&targets, &requested, &seen, options);
    // What builds may start from: the registry's `:latest`, asked only for
    // images that will build and have no local `:latest` for ARCH.
    let asked = if options.cache && !registry_down {
        planning::wants_remote_latest(&jobs, &seen, settings.arch)
    } else {
        vec![]
    };
    if !asked.is_empty() {
        let latest: HashMap<ImageIndex, Target> = asked
            .iter()
            .map(|i| {
                let t = &targets[i];
                (*i, Target { names: ImageRef { tag: "latest".into(), ..t.names.clone() }, ..t.clone() })
            })
            .collect();
        if let Ok(found) = remote_lookups(&registry, &latest, &asked, parallelism(args), true) {
            seen.remote_latest = found;
            jobs = planning::plan(&targets, &requested, &seen, options);
        }
    }

    if args.dry_run {
        if args.json {
            report::print_json(&report::PlanDocument::new(mode, settings.arch, &jobs, &skipped))?;
        } else {
            print!("{}", report::plan_text(&jobs, &skipped));
        }
        return Ok(invalid_failure(&invalid).unwrap_or(0));
    }

    let log_dir = log_dir(settings)?;
    let idle = if matches!(mode, Mode::Test | Mode::Push) { Action::Skipped } else { Action::Present };
    let may_build = jobs.iter().any(|j| j.may_build());
    // Builders that match cached layers whatever their platform would hand a
    // foreign build the host's layers: such builds go without the cache.
    let fresh_builds = may_build && settings.arch != Arch::host()? && engine.builder().shares_cache_across_platforms();
    if may_build && !args.quiet {
        let builder = engine.builder();
        let how = if fresh_builds {
            let remedy = match builder {
                crate::engine::Builder::Podman => "",
                _ => " (BuildKit keeps them apart: install docker's buildx plugin)",
            };
            format!(
                ", without the layer cache for {} images: it would reuse layers cached for another architecture{remedy}",
                settings.arch
            )
        } else {
            String::new()
        };
        reporter.note(&format!("building with {}{how}", builder.describe()));
    }
    // What built images are labelled with: git is asked only when something may build.
    let git = if may_build { GitState::read(&settings.images_dir) } else { None };
    let provenance = Provenance::new(settings, git);
    let progress = Progress::new(&reporter, jobs.len(), settings.interactive, verbosity);
    let ctx = execute::Context {
        engine: &engine,
        images_root: &catalog.root,
        arch: settings.arch,
        build_args: &settings.build_args,
        log_dir: &log_dir,
        idle,
        registry: &registry,
        registry_down: &std::sync::atomic::AtomicBool::new(registry_down),
        fresh_builds,
        no_cache: args.no_cache,
        cache_to: mode == Mode::Push && settings.cache_from,
        direct_push: mode == Mode::Push && may_build && engine.pushes_from_builder(),
        provenance: &provenance,
        prebuilt: &Default::default(),
        events: &progress,
    };
    if may_build {
        cross::register(settings.arch)?;
    }
    engine.processes().stop_all_on_signals();
    for o in &skipped {
        progress.finished(o);
    }
    let mut outcomes = execute::execute(&ctx, &jobs, parallelism(args), args.keep_going);
    progress.finish();
    // Again at the end: a build of a run that was killed may write its
    // image-ID file after this run began.
    remove_left_behind(&log_dir);
    outcomes.extend(skipped);
    outcomes.sort_by(|a, b| a.name().cmp(b.name()));
    if args.json {
        let builder = may_build.then(|| engine.builder().kind());
        report::print_json(&report::OutcomeDocument { mode, arch: settings.arch, builder, images: &outcomes })?;
    }
    eprint!("{}", report::summary_text(&outcomes, verbosity));
    if engine.interrupted() {
        eprintln!("interrupted: no tag was applied to unfinished images");
        return Ok(crate::model::EXIT_INTERRUPTED);
    }
    let failures = outcomes.iter().filter(|o| o.action.is_failure()).count();
    let invalid = invalid_failure(&invalid);
    Ok(if failures > 0 { crate::model::EXIT_FAILURE } else { invalid.unwrap_or(0) })
}

/// Says why each invalid image directory was left out, once the rest is
/// done; the run then fails.
fn invalid_failure(reasons: &[String]) -> Option<i32> {
    for reason in reasons {
        eprintln!("error: {reason}");
    }
    (!reasons.is_empty()).then_some(crate::model::EXIT_FAILURE)
}

/// The requested images and, transitively, the local images they are built on.
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
    Ok(bases
        .into_iter()
        .map(|(i, bases)| {
            let image = &catalog[i];
            let target = Target {
                image: i,
                name: image.name.clone(),
                path: image.path.clone(),
                dockerfile: image.dockerfile.clone(),
                test: image.is_test(settings),
                names: ImageRef::new(settings, &image.path, &tags[&i]),
                bases,
            };
            (i, target)
        })
        .collect())
}

/// The platform of each local image the plan may use: those named as one
/// of the targets' local or remote references. One engine call.
fn local_platforms(
    engine: &dyn Engine,
    local: &HashMap<String, String>,
    targets: &HashMap<ImageIndex, Target>,
) -> Result<HashMap<String, crate::model::Platform>> {
    let mut ids: Vec<&str> =
        targets.values().flat_map(|t| t.names.plan_names()).filter_map(|r| local.get(&r).map(String::as_str)).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    engine.platforms(&ids)
}

/// Which requested tags the registry has, asked in parallel. A look-up that
/// fails is an error, never taken as "absent".
fn remote_lookups(
    registry: &Registry,
    targets: &HashMap<ImageIndex, Target>,
    asked: &[ImageIndex],
    parallel: usize,
    quick: bool,
) -> Result<HashMap<ImageIndex, bool>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(ImageIndex, Result<bool>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(8).min(asked.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&i) = asked.get(k) else { return };
                let t = &targets[&i];
                let found = registry.exists(&t.names.remote_tagged(), quick);
                let failed = found.is_err();
                results.lock().unwrap().push((i, found));
                if failed {
                    return;
                }
            });
        }
    });
    let mut out = HashMap::new();
    for (i, found) in results.into_inner().unwrap() {
        match found {
            Ok(found) => {
                out.insert(i, found);
            }
            Err(e) => bail!("cannot check the registry: {e:#}"),
        }
    }
    Ok(out)
}

fn parallelism(args: &RunArgs) -> usize {
    args.jobs.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
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

pub fn register_cross(settings: &Settings) -> Result<()> {
    match cross::register(settings.arch)? {
        Registered::NotNeeded => eprintln!("{} is this host's architecture: nothing to register", settings.arch),
        Registered::AlreadyThere => eprintln!("{} binaries already run here through qemu", settings.arch),
        Registered::Registered(from) => {
            eprintln!("{} binaries now run here through qemu (from {})", settings.arch, from.display())
        }
    }
    Ok(())
}

/// A multi-architecture index: `reference` over one image per architecture.
#[derive(Debug, Clone)]
struct Index {
    name: String,
    reference: String,
    members: Vec<(Arch, String)>,
}

/// Publishes `<REMOTE_IMAGE_PREFIX>/<path>:<tag>` as an index over the
/// per-architecture images the registry has, each by its own tag.
pub fn push_manifest(settings: &Settings, names: &[String], args: &RunArgs) -> Result<i32> {
    // Per architecture: the catalog, and each requested image's tag there.
    let mut per_arch: Vec<(Arch, Catalog)> = Vec::new();
    for arch in Arch::ALL {
        let mut s = settings.clone();
        s.arch = arch;
        per_arch.push((arch, discover(&s.images_dir, arch)?));
    }
    let mut wanted: Vec<String> = Vec::new();
    for (_, catalog) in &per_arch {
        if let Ok((chosen, _)) = catalog.select_available(names) {
            wanted.extend(chosen.iter().map(|&i| catalog[i].name.clone()));
        }
    }
    if wanted.is_empty() {
        // Let the host's catalog say what is wrong with the names.
        discover(&settings.images_dir, settings.arch)?.select(names)?;
    }
    wanted.sort_unstable();
    wanted.dedup();

    let mut indexes: Vec<Index> = Vec::new();
    for name in &wanted {
        let mut members = Vec::new();
        let mut path = String::new();
        for (arch, catalog) in &per_arch {
            let Some(i) = catalog.index_of(name) else { continue };
            let mut s = settings.clone();
            s.arch = *arch;
            let tag = tagging::tags(catalog, &s, &[i])?[&i].clone();
            members.push((*arch, ImageRef::new(&s, &catalog[i].path, &tag).remote_tagged()));
            path = catalog[i].path.clone();
        }
        let tag = tagging::index_tag(&members);
        indexes.push(Index { name: name.clone(), reference: ImageRef::index(settings, &path, &tag), members });
    }

    // Each member is what its name says, by the config the registry holds.
    let events = Arc::new(Reporter::new(args.quiet));
    let registry = Registry::of(settings).retrying(Retry::new(Interrupt::default(), Some(events)));
    let mut read: Vec<Vec<crate::registry::Member>> = Vec::new();
    for index in &indexes {
        let mut members = Vec::new();
        for (arch, member) in &index.members {
            match registry.member(member)? {
                None => bail!(
                    "{} for {arch} is not in the registry ({member}): push it first with `ARCH={arch} cargo xtask push {}`",
                    index.name,
                    index.name
                ),
                Some(m) if !m.platform.is(*arch) => bail!(
                    "{} for {arch} in the registry ({member}) is a {} image, not {}: no index was published; \
                     it was built for the wrong architecture, delete it from the registry and push it again with \
                     `ARCH={arch} cargo xtask push {}`",
                    index.name,
                    m.platform,
                    arch.platform(),
                    index.name
                ),
                Some(m) => members.push(m),
            }
        }
        read.push(members);
    }
    if args.dry_run || args.json {
        if args.json {
            #[derive(serde::Serialize)]
            struct Member<'a> {
                arch: Arch,
                reference: &'a str,
            }
            #[derive(serde::Serialize)]
            struct Shown<'a> {
                name: &'a str,
                reference: &'a str,
                members: Vec<Member<'a>>,
            }
            let shown: Vec<Shown> = indexes
                .iter()
                .map(|i| Shown {
                    name: &i.name,
                    reference: &i.reference,
                    members: i.members.iter().map(|(arch, reference)| Member { arch: *arch, reference }).collect(),
                })
                .collect();
            report::print_json(&serde_json::json!({ "indexes": shown }))?;
        }
        if args.dry_run {
            for index in &indexes {
                let members: Vec<String> = index.members.iter().map(|(a, r)| format!("{a}={r}")).collect();
                println!("{}  {}  publish index over {}", index.name, index.reference, members.join(" "));
            }
            return Ok(0);
        }
    }
    for (index, members) in indexes.iter().zip(&read) {
        registry.push_index(&index.reference, members).map_err(|e| anyhow::anyhow!("{}: {e:#}", index.name))?;
        eprintln!("pushed index {} over {}", index.reference, index.members.len());
    }
    Ok(0)
}
