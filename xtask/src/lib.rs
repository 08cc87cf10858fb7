//! `cargo xtask`: keeps a project's test container images.
//!
//! One folder per layer; each layer uses those below it, never one above
//! or beside it (the README's "Where the code lives" draws the map, and
//! the `tidy` test keeps it):
//!
//! - entry: [`cli`] (the command line) and [`run`] here, which resolves
//!   [`config::Settings`] once and hands each command to [`commands`];
//! - [`commands`]: one module per command, none using another;
//! - work: [`planning`] (pure: what each image needs, as data),
//!   [`execute`] (the scheduler, over any [`engine::Engine`]) and
//!   [`report`] (what people and machines see, from events);
//! - the outside world: [`engine`], [`registry`], [`git`], [`process`];
//! - inputs: [`config`] and [`catalog`] (pure: the images and their tags);
//! - [`model`]: the plain types and events all of them share.

pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod execute;
pub mod git;
pub mod model;
pub mod planning;
pub mod process;
pub mod registry;
pub mod report;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{Cli, Command, RunOptions};
use crate::config::{FileConfig, Settings};

pub use model::EXIT_FAILURE;

/// The workspace this run is for. `cargo xtask` tells the binary, at run
/// time, which checkout's `xtask` it ran (`CARGO_MANIFEST_DIR`): checkouts
/// that share one target directory share one binary, so the directory it was
/// compiled in may be another checkout's.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let manifest = run.as_deref().filter(|dir| dir.join("Cargo.toml").is_file()).unwrap_or(compiled);
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn settings(cli: &Cli) -> Result<Settings> {
    let workspace = workspace_root();
    let file = match &cli.global.config {
        Some(path) => FileConfig::load(path)?,
        None => {
            let path = workspace.join("xtask/images.toml");
            if path.exists() {
                FileConfig::load(&path)?
            } else {
                FileConfig::default()
            }
        }
    };
    let cwd = std::env::current_dir()?;
    let mut settings = Settings::resolve(file, cli.global.overrides.clone(), &workspace, &cwd)?;
    use std::io::IsTerminal;
    settings.interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none_or(|v| v.is_empty());
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        settings.logs = cwd.join(target).join("xtask-logs");
    }
    Ok(settings)
}

/// Output cut short by a closed pipe (`… | head`) is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>().and_then(|j| j.io_error_kind()) == Some(BrokenPipe)
    })
}

/// Runs a command; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    use commands::images::Selection::{All, AllTests, Names};
    use planning::Mode;
    if let Command::Init(args) = &cli.command {
        // Before the settings are resolved: the file it writes may not exist yet.
        let (workspace, cwd) = (workspace_root(), std::env::current_dir()?);
        let to = cli.global.config.as_ref().map_or_else(|| workspace.join("xtask/images.toml"), |c| cwd.join(c));
        return commands::init::run(&args.from_makefile, &to, args.force, &workspace, &cwd).map(|()| 0);
    }
    let settings = settings(&cli)?;
    let arch_given = cli.global.overrides.arch.is_some();
    let changed_since = cli.command.changed_since().map(String::from);
    let changed_since = changed_since.as_deref();
    let (mode, selection, args) = match cli.command {
        Command::Init(_) => unreachable!("init runs before the settings are resolved"),
        Command::ListAllImages(a) => {
            return commands::listing::list(&settings, false, a.json, a.shard, changed_since).map(|()| 0)
        }
        Command::ListAllTestImages(a) => {
            return commands::listing::list(&settings, true, a.json, a.shard, changed_since).map(|()| 0)
        }
        Command::LocalImage { print, images } => {
            return commands::listing::local_image(&settings, &images, print).map(|()| 0)
        }
        Command::Settings { names } => {
            return commands::listing::print_settings(&settings, &std::env::current_dir()?, &names).map(|()| 0)
        }
        Command::RegisterCross => return commands::register_cross::run(&settings).map(|()| 0),
        Command::PushManifest(s) => return commands::manifest::run(&settings, &s.images, &s.opts.run_args()),
        Command::Check(a) => return commands::check::run(&settings, &a.images, a.json, a.deny_warnings),
        Command::Pin(a) => {
            use commands::pin::PinMode;
            let mode = if a.check {
                PinMode::Check
            } else if a.update {
                PinMode::Update
            } else {
                PinMode::Pin
            };
            return commands::pin::run(&settings, &a.images, mode, a.json);
        }
        Command::Prune(a) => {
            let opts = commands::prune::PruneOptions {
                scope: arch_given.then_some(settings.arch),
                dry_run: a.dry_run,
                json: a.json,
                work_tree_only: a.work_tree_only,
                other_prefixes: a.other_prefixes,
            };
            return commands::prune::run(&settings, &opts);
        }
        Command::Gc(a) => {
            let opts = commands::gc::GcOptions {
                keep: a.keep,
                keep_since: a.keep_since,
                delete: a.delete,
                json: a.json,
                jobs: a.jobs.map_or(8, usize::from),
            };
            return commands::gc::run(&settings, &opts);
        }
        Command::Verify(a) => {
            let opts = commands::verify::VerifyOptions {
                selection: commands::verify::Selection {
                    names: a.images,
                    tests_only: a.test_images,
                    changed_since: a.changed_since,
                    shard: a.shard,
                },
                max_paths: usize::from(a.max_paths),
                json: a.json,
                verbose: a.verbose,
                keep_going: a.keep_going,
            };
            return commands::verify::run(&settings, &opts);
        }
        Command::Status(a) => {
            return commands::status::run(&settings, &a.images, a.local, a.bases, a.json, a.markdown.as_deref())
        }
        Command::Load(s) => (Mode::Load, Names(s.images), s.opts.run_args()),
        Command::Pull(s) => (Mode::Pull, Names(s.images), s.opts.run_args()),
        Command::Rebuild(s) => (Mode::Rebuild, Names(s.images), s.opts.run_args()),
        Command::Tag(s) => (Mode::Tag, Names(s.images), s.opts.run_args()),
        Command::Test(s) => (Mode::Test, Names(s.images), s.opts.run_args()),
        Command::Push(s) => (Mode::Push, Names(s.images), s.opts.run_args()),
        Command::LoadAllImages(a) => (Mode::Load, All(a.shard), a.opts.run_args()),
        Command::LoadAllTestImages(a) => (Mode::Load, AllTests(a.shard), a.opts.run_args()),
        Command::BuildAllImages(a) => (Mode::Rebuild, All(a.shard), a.opts.run_args()),
        Command::PushAllImages(a) => (Mode::Push, All(a.shard), a.opts.run_args()),
        Command::PushAllTestImages(a) => (Mode::Push, AllTests(a.shard), a.opts.run_args()),
        Command::TestAllTestImages(a) => (Mode::Test, AllTests(a.shard), a.opts.run_args()),
    };
    commands::images::run(&settings, mode, selection, &args, changed_since)
}
