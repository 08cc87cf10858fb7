//! What is there before a plan is made: the local images and their
//! platforms, and what the registry has (each tag, and `:latest` for builds
//! to start from). Asked once per run, in as few calls as the engine and
//! the registry allow; a look-up that fails is never taken as "absent".

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::engine::Engine;
use crate::model::{Arch, Event, ImageIndex, ImageRef, Observer};
use crate::planning::{self, Job, Mode, Observed, Options, Target};
use crate::registry::Registry;

/// How the registry is asked, and who hears of what it could not answer.
pub struct Asking<'a> {
    pub registry: &'a Registry,
    /// Look-ups at once.
    pub parallel: usize,
    pub events: &'a dyn Observer,
}

/// What the run will do, as far as what it must observe goes.
#[derive(Clone, Copy)]
pub struct Wanted {
    pub mode: Mode,
    pub arch: Arch,
    /// `--skip-image-load`: nothing is pulled, so the registry is not asked.
    pub skip_load: bool,
}

/// The local images, their platforms, and what the registry has of the
/// requested images and those they are built on, as far as the mode needs
/// it. `Ok(Err(e))`: the
/// registry could not be asked and the mode cannot do without it.
pub fn observe(
    engine: &dyn Engine,
    asking: &Asking<'_>,
    want: Wanted,
    targets: &HashMap<ImageIndex, Target>,
) -> Result<std::result::Result<Observed, anyhow::Error>> {
    let local = engine.local_images()?;
    let platforms = local_platforms(engine, &local, targets)?;
    let mut seen = Observed { local, platforms, ..Observed::default() };
    if want.mode.needs_remote() {
        // The images they are built on too: a base is pushed with what is
        // built on it, and brought for a build the way the registry allows.
        let mut asked: Vec<ImageIndex> = targets.keys().copied().collect();
        asked.sort_unstable();
        match remote_lookups(asking, targets, &asked, false) {
            Ok(found) => seen.remote = found,
            // What the registry lacks is built, and a registry that cannot
            // be asked lacks everything: the legacy `test` targets built then.
            Err(e) if want.mode == Mode::Test => {
                asking
                    .events
                    .event(Event::Note(format!("warning: {e:#}; building every image as if the registry lacked it")));
                seen.registry_down = true;
            }
            Err(e) => return Ok(Err(e)),
        }
    } else if want.mode == Mode::Load && !want.skip_load {
        // Pull only what the registry has; what it lacks goes straight to
        // the build. A registry that cannot be asked is not waited on.
        let mut missing: Vec<ImageIndex> = targets
            .values()
            .filter(|t| {
                [t.names.local_tagged(), t.names.remote_tagged()].iter().all(|r| seen.present(r, want.arch).is_none())
            })
            .map(|t| t.image)
            .collect();
        missing.sort_unstable();
        if !missing.is_empty() {
            match remote_lookups(asking, targets, &missing, true) {
                Ok(found) => seen.remote = found,
                Err(e) => {
                    asking.events.event(Event::Note(format!("warning: {e:#}; building what is not present")));
                    seen.registry_down = true;
                }
            }
        }
    }
    Ok(Ok(seen))
}

/// The plan. With the layer cache on, what builds may start from is then
/// asked too: the registry's `:latest`, only for images that will build and
/// have no local `:latest` for the architecture; the plan is made again
/// with what it said.
pub fn plan(
    asking: &Asking<'_>,
    targets: &HashMap<ImageIndex, Target>,
    requested: &[ImageIndex],
    seen: &mut Observed,
    options: Options,
) -> Vec<Job> {
    let jobs = planning::plan(targets, requested, seen, options);
    let asked = if options.cache && !seen.registry_down {
        planning::wants_remote_latest(&jobs, seen, options.arch)
    } else {
        vec![]
    };
    if asked.is_empty() {
        return jobs;
    }
    let latest: HashMap<ImageIndex, Target> = asked
        .iter()
        .map(|i| {
            let t = &targets[i];
            (*i, Target { names: ImageRef { tag: "latest".into(), ..t.names.clone() }, ..t.clone() })
        })
        .collect();
    match remote_lookups(asking, &latest, &asked, true) {
        Ok(found) => {
            seen.remote_latest = found;
            planning::plan(targets, requested, seen, options)
        }
        Err(_) => jobs,
    }
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

/// Which of the `asked` images' tags the registry has, asked in parallel. A
/// look-up that fails is an error, never taken as "absent".
fn remote_lookups(
    asking: &Asking<'_>,
    targets: &HashMap<ImageIndex, Target>,
    asked: &[ImageIndex],
    quick: bool,
) -> Result<HashMap<ImageIndex, bool>> {
    let (registry, parallel) = (asking.registry, asking.parallel);
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
