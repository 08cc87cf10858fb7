//! Running `verify`: the images chosen, the engine checked once, and each
//! image in turn built twice from nothing with its source date, compared,
//! and reported as it is done.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use super::compare::{compare, Comparison};
use super::json::Document;
use super::pair::{build_twice, left_behind, names, Pair};
use super::select::{choose, Selection};
use super::text::{count_line, image_text};
use super::timestamps::{rewrite, Rewrite};
use crate::catalog::discovery::Catalog;
use crate::catalog::tagging;
use crate::config::Settings;
use crate::engine::{cross, BuildSpec, Engine, EngineCli};
use crate::git::{SourceDate, SourceDates};
use crate::model::{ImageIndex, ImageInfo, ImageRef, EXIT_FAILURE, EXIT_INTERRUPTED};
use crate::report::Reporter;

/// What `verify` is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    pub selection: Selection,
    /// Paths shown per kind of difference in a layer.
    pub max_paths: usize,
    pub json: bool,
    pub verbose: bool,
    /// When an image cannot be verified, go on with the others.
    pub keep_going: bool,
}

/// One image's verification.
pub struct Verified {
    pub image: ImageInfo,
    pub date: SourceDate,
    /// What the builds made, or why they could not be compared.
    pub result: std::result::Result<Checked, String>,
}

/// Two builds, compared.
pub struct Checked {
    /// Both builds made one image, to the byte.
    pub identical: bool,
    pub comparison: Comparison,
    /// What rewriting file times would do, when they differ.
    pub rewrite: Option<Rewrite>,
}

impl Verified {
    pub fn reproducible(&self) -> Option<bool> {
        self.result.as_ref().ok().map(|c| c.comparison.reproducible())
    }
}

/// Runs `verify`; returns the exit status.
pub fn run(settings: &Settings, opts: &VerifyOptions) -> Result<i32> {
    let chosen = choose(settings, &opts.selection)?;
    let catalog = &chosen.catalog;
    let bases: HashMap<ImageIndex, Vec<ImageIndex>> = chosen
        .images
        .iter()
        .map(|&i| Ok((i, tagging::local_bases(catalog, settings, i)?.to_vec())))
        .collect::<Result<_>>()?;
    let mut wanted = chosen.images.clone();
    wanted.extend(bases.values().flatten());
    let tags = tagging::tags(catalog, settings, &wanted)?;

    let reporter = Reporter::new(false);
    let mut engine = EngineCli::new(settings.engine);
    if opts.verbose {
        engine = engine.echoing(Arc::new(reporter.clone()));
    }
    engine.check()?;
    // What killed runs left behind goes while the images build.
    let sweeping = {
        let (engine, prefix) = (engine.for_cleanup(), settings.local_prefix.clone());
        std::thread::spawn(move || sweep(&engine, &prefix))
    };
    if !chosen.images.is_empty() {
        cross::register(settings.arch)?;
        eprintln!("verifying with {}", engine.builder().describe());
    }
    engine.processes().stop_all_on_signals();
    let logs = settings.logs.join(settings.arch.as_str());
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create log directory {}", logs.display()))?;

    let mut dates = SourceDates::read(&settings.images_dir);
    let work = Work { settings, catalog, engine: &engine, logs };
    let mut done: Vec<Verified> = Vec::new();
    for &i in &chosen.images {
        if engine.interrupted() {
            break;
        }
        let image = &catalog[i];
        let names = ImageRef::new(settings, &image.path, &tags[&i]);
        let info = ImageInfo::named(&image.name, &image.path, settings.arch, &names, image.is_test(settings));
        let date = dates.of(&image.path);
        eprintln!("verifying {}: SOURCE_DATE_EPOCH={} ({})", image.name, date.seconds, date.describe(&image.path));
        let result = work.verify(i, &bases[&i], &tags, &date).map_err(|e| format!("{e:#}"));
        let verified = Verified { image: info, date, result };
        let text = image_text(&verified, opts.max_paths);
        if opts.json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
        let failed = verified.result.is_err();
        done.push(verified);
        if failed && !opts.keep_going {
            break;
        }
    }

    if opts.json {
        crate::report::print_json(&Document::new(settings.arch, engine.builder().kind(), &done, opts.max_paths))?;
    }
    if let Err(e) = sweeping.join().unwrap_or_else(|_| Err(anyhow!("it panicked"))) {
        eprintln!("warning: cannot remove what earlier verifications left behind: {e:#}");
    }
    eprintln!("{}", count_line(&done, chosen.images.len()));
    for v in &done {
        if let Err(e) = &v.result {
            eprintln!("error: {}: {e}", v.image.name);
        }
    }
    for reason in &chosen.invalid {
        eprintln!("error: {reason}");
    }
    if engine.interrupted() {
        eprintln!("interrupted: the verification images were removed");
        return Ok(EXIT_INTERRUPTED);
    }
    let all_reproducible = done.len() == chosen.images.len() && done.iter().all(|v| v.reproducible() == Some(true));
    Ok(if all_reproducible && chosen.invalid.is_empty() { 0 } else { EXIT_FAILURE })
}

/// Removes the verification names that killed runs left behind.
fn sweep(engine: &EngineCli, local_prefix: &str) -> Result<()> {
    let stale = left_behind(&engine.image_names()?, local_prefix);
    if !stale.is_empty() {
        engine.remove_names(&stale)?;
    }
    Ok(())
}

/// What verifying one image works with.
struct Work<'a> {
    settings: &'a Settings,
    catalog: &'a Catalog,
    engine: &'a EngineCli,
    /// Where the builds' logs go.
    logs: PathBuf,
}

impl Work<'_> {
    /// Builds image `i` twice with `date` and compares the builds.
    fn verify(
        &self,
        i: ImageIndex,
        bases: &[ImageIndex],
        tags: &HashMap<ImageIndex, String>,
        date: &SourceDate,
    ) -> Result<Checked> {
        let (settings, catalog) = (self.settings, self.catalog);
        // A build starts from the local image of each catalog base, as a
        // build of `load` does: it must be there, at its current tag.
        let refs: Vec<ImageRef> = bases.iter().map(|&b| ImageRef::new(settings, &catalog[b].path, &tags[&b])).collect();
        let asked: Vec<String> = refs.iter().flat_map(|r| [r.local_tagged(), r.local_latest()]).collect();
        let present = if asked.is_empty() {
            HashMap::new()
        } else {
            self.engine.images(&asked.iter().map(String::as_str).collect::<Vec<_>>())?
        };
        for (&b, base) in bases.iter().zip(&refs) {
            let current = present.get(&base.local_tagged()).map(|d| &d.id);
            if current.is_none() || present.get(&base.local_latest()).map(|d| &d.id) != current {
                return Err(anyhow!(
                    "it is built on {}, which is not present at its current tag ({}): verify builds on the local \
                     image, as a build does; run `cargo xtask load {}` first",
                    catalog[b].name,
                    base.local_tagged(),
                    catalog[b].name
                ));
            }
        }
        let image = &catalog[i];
        let epoch = date.seconds.to_string();
        let engine = self.engine.clone().with_env("SOURCE_DATE_EPOCH", &epoch);
        let mut args = settings.build_args.clone();
        args.extend(["--build-arg".to_string(), format!("SOURCE_DATE_EPOCH={epoch}")]);
        let dir = image.dir(&catalog.root);
        let spec = BuildSpec {
            dir: &dir,
            dockerfile: &image.dockerfile,
            arch: settings.arch,
            args: &args,
            labels: &[],
            text: None,
        };
        let log = self.logs.join(format!("{}.verify.log", image.name));
        std::fs::write(&log, "").with_context(|| format!("cannot write log {}", log.display()))?;
        let names = names(&ImageRef::local_repository(settings, &image.path));
        let (identical, comparison) = match build_twice(&engine, &spec, &names, &log)? {
            Pair::Identical => (true, Comparison::default()),
            Pair::Two(both) => (false, compare(&both.0, &both.1)),
        };
        let builder = self.engine.builder();
        let rewrite = rewrite(&comparison, builder, self.engine.buildkit_version(), date.seconds);
        Ok(Checked { identical, comparison, rewrite })
    }
}
