//! The engine commands: discover, tag, observe, plan, then execute or print.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cli::RunArgs;
use crate::config::Settings;
use crate::discovery::{discover, Catalog};
use crate::engine::Engine;
use crate::execute::{self, Action};
use crate::listing::{is_test, local_name, remote_name};
use crate::planning::{self, Mode, Observed, Options, Target};
use crate::reporting::{self, Progress};
use crate::tagging;

/// Exit status when Ctrl-C or SIGTERM stopped the work.
pub const EXIT_INTERRUPTED: i32 = 130;

pub enum Selection {
    Names(Vec<String>),
    All,
    AllTests,
}

/// Runs one engine command; returns the process exit status.
pub fn run(settings: &Settings, mode: Mode, selection: Selection, args: &RunArgs) -> Result<i32> {
    let catalog = discover(&settings.images_dir, settings.arch)?;
    let requested = match &selection {
        Selection::Names(names) => catalog.select(names)?,
        Selection::All => (0..catalog.images.len()).collect(),
        Selection::AllTests => (0..catalog.images.len()).filter(|&i| is_test(settings, &catalog.images[i])).collect(),
    };
    if !matches!(selection, Selection::Names(_)) {
        for other in &catalog.other_arch {
            reporting::note(&format!("skipped {}: not available for {}", other.name, settings.arch));
        }
    }
    let targets = targets(&catalog, settings, &requested)?;

    let engine = Engine::new(settings.engine);
    engine.check()?;
    let mut seen = Observed { local: engine.local_images()?, remote: HashMap::new() };
    if mode.needs_remote() {
        seen.remote = remote_lookups(&engine, &targets, &requested, parallelism(args))?;
    }
    let options = Options { mode, skip_load: args.skip_image_load, push_latest: args.push_as_latest };
    let jobs = planning::plan(&targets, &requested, &seen, options);

    if args.dry_run {
        if args.json {
            reporting::print_json(&jobs)?;
        } else {
            print!("{}", reporting::plan_text(&jobs));
        }
        return Ok(0);
    }

    let log_dir = log_dir(settings)?;
    let paths: Vec<(String, String)> = catalog.images.iter().map(|i| (i.path.clone(), i.dockerfile.clone())).collect();
    let idle = if matches!(mode, Mode::Test | Mode::Push) { Action::Skipped } else { Action::Present };
    let ctx = execute::Context {
        engine: &engine,
        images_root: &catalog.root,
        paths: &paths,
        arch: settings.arch,
        build_args: &settings.build_args,
        log_dir: &log_dir,
        idle,
    };
    crate::engine::install_interrupt_handler();
    let progress = Progress::new(jobs.len());
    let outcomes = execute::execute(&ctx, &jobs, parallelism(args), args.keep_going, &progress);
    progress.finish();
    if args.json {
        reporting::print_json(&outcomes)?;
    }
    if outcomes.iter().any(|o| o.action != Action::Present) || outcomes.len() <= 20 {
        eprint!("{}", reporting::summary_text(&outcomes));
    } else {
        eprintln!("{} images present", outcomes.len());
    }
    if let Some(o) = outcomes.iter().find(|o| o.log.is_some() && o.action == Action::Failed) {
        eprintln!("build logs: {}", o.log.as_ref().unwrap().parent().unwrap_or(&log_dir).display());
    }
    if crate::engine::interrupted() {
        eprintln!("interrupted: no tag was applied to unfinished images");
        return Ok(EXIT_INTERRUPTED);
    }
    let failures = outcomes.iter().filter(|o| matches!(o.action, Action::Failed | Action::NotStarted)).count();
    Ok(if failures > 0 { crate::EXIT_FAILURE } else { 0 })
}

/// The requested images and, transitively, the local images they are built on.
fn targets(catalog: &Catalog, settings: &Settings, requested: &[usize]) -> Result<HashMap<usize, Target>> {
    let mut bases: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut stack = requested.to_vec();
    while let Some(i) = stack.pop() {
        if bases.contains_key(&i) {
            continue;
        }
        let own = tagging::local_bases(catalog, settings, &catalog.images[i])?;
        stack.extend(&own);
        bases.insert(i, own);
    }
    let all: Vec<usize> = bases.keys().copied().collect();
    let tags = tagging::tags(catalog, settings, &all)?;
    Ok(bases
        .into_iter()
        .map(|(i, bases)| {
            let image = &catalog.images[i];
            let target = Target {
                image: i,
                name: image.name.clone(),
                tag: tags[&i].clone(),
                local: local_name(settings, image),
                remote: remote_name(settings, image),
                bases,
            };
            (i, target)
        })
        .collect())
}

/// Which requested tags the registry has, asked in parallel. A look-up that
/// fails is an error, never taken as "absent".
fn remote_lookups(
    engine: &Engine,
    targets: &HashMap<usize, Target>,
    requested: &[usize],
    parallel: usize,
) -> Result<HashMap<usize, bool>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(usize, Result<bool>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(4).min(requested.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&i) = requested.get(k) else { return };
                let t = &targets[&i];
                let found = engine.remote_exists(&format!("{}:{}", t.remote, t.tag));
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
            Err(e) => bail!("cannot check the registry for {}: {e:#}", targets[&i].name),
        }
    }
    Ok(out)
}

fn parallelism(args: &RunArgs) -> usize {
    args.jobs.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn log_dir(settings: &Settings) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let dir = target.join("xtask-logs").join(settings.arch.as_str());
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    Ok(dir)
}
