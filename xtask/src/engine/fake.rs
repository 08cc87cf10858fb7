//! A fake engine for unit tests: local names, images and containers kept
//! in memory, builds that follow a script of their own per image, and a
//! record, in order, of the builds, batches, pushes and removals it was
//! asked for.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::{BatchBuild, BuildCache, BuildSpec, Builder, Built, Container, Engine, ImageDetails, ImageFacts, Removed};
use crate::model::{Arch, Platform};

/// How the fake builds one image (by name): whether it fails, what
/// platform it gives, whether it interrupts the run.
#[derive(Clone, Default)]
pub struct Script {
    /// The build fails, saying this.
    pub fails: Option<&'static str>,
    /// The architecture of the image built; `amd64` when not given.
    pub architecture: Option<&'static str>,
    /// Interrupt the run once this build has started.
    pub interrupts: bool,
}

/// An engine that keeps names and images in memory and records what it
/// was asked, in order. A build takes a moment, so that builds overlap.
pub struct Fake {
    builder: Builder,
    scripts: HashMap<String, Script>,
    /// Local names -> image ID.
    pub names: Mutex<BTreeMap<String, String>>,
    images: Mutex<HashMap<String, ImageDetails>>,
    /// Each container as the engine lists it, with the image it uses.
    containers: Vec<(Container, String)>,
    events: Mutex<Vec<String>>,
    running: AtomicUsize,
    /// The most builds that were under way at once.
    pub most_at_once: AtomicUsize,
    interrupted: AtomicBool,
    /// Builds ready at once are built in one call, as buildx's bake does.
    batches: bool,
}

impl Fake {
    /// docker's classic builder, with `scripts` for some images.
    pub fn with(scripts: &[(&str, Script)]) -> Fake {
        Fake {
            builder: Builder::Classic,
            scripts: scripts.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
            names: Mutex::default(),
            images: Mutex::default(),
            containers: Vec::new(),
            events: Mutex::default(),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            interrupted: AtomicBool::new(false),
            batches: false,
        }
    }

    /// Like [`Fake::with`], building in batches.
    pub fn batching(scripts: &[(&str, Script)]) -> Fake {
        Fake { batches: true, ..Fake::with(scripts) }
    }

    /// With the local image `details` under `names`.
    pub fn holding(self, names: &[&str], details: ImageDetails) -> Fake {
        self.names.lock().unwrap().extend(names.iter().map(|n| (n.to_string(), details.id.clone())));
        self.images.lock().unwrap().insert(details.id.clone(), details);
        self
    }

    /// With a container `name` created from the image `id`.
    pub fn with_container(mut self, name: &str, id: &str) -> Fake {
        let container = Container { id: format!("c-{name}"), name: name.into(), image: Some(id.into()) };
        self.containers.push((container, id.into()));
        self
    }

    /// With a container `name` created from the image `id`, listed without
    /// its image, as docker lists one created by a name that has since
    /// moved to another image.
    pub fn with_hidden_container(mut self, name: &str, id: &str) -> Fake {
        let container = Container { id: format!("c-{name}"), name: name.into(), image: None };
        self.containers.push((container, id.into()));
        self
    }

    /// What it was asked, in order: `start <image>` and `end <image>` of
    /// each build, `batch <images>`, `push <reference>`, `remove <references>`.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Where `event` is in [`Fake::events`]; panics when it is not there.
    pub fn position(&self, event: &str) -> usize {
        self.events().iter().position(|e| e == event).unwrap_or_else(|| panic!("no {event:?} in {:?}", self.events()))
    }
}

/// A local image `id` for `architecture`: 1000 bytes in one layer, no labels.
pub fn details(id: &str, architecture: &str) -> ImageDetails {
    ImageDetails {
        id: id.into(),
        platform: Platform { os: "linux".into(), architecture: architecture.into(), variant: String::new() },
        size: 1000,
        layers: 1,
        created: String::new(),
        labels: BTreeMap::new(),
        repo_digests: Vec::new(),
    }
}

/// The image a call is about: its log is `<name>.<run>.log`.
fn image_of(log: &Path) -> String {
    let file = log.file_name().unwrap().to_string_lossy();
    file.split('.').next().unwrap_or_default().to_owned()
}

impl Engine for Fake {
    fn builder(&self) -> &Builder {
        &self.builder
    }
    fn check(&self) -> Result<()> {
        Ok(())
    }
    fn local_images(&self) -> Result<HashMap<String, String>> {
        Ok(self.image_names()?.into_iter().collect())
    }
    /// In the order of the names.
    fn image_names(&self) -> Result<Vec<(String, String)>> {
        Ok(self.names.lock().unwrap().iter().map(|(n, id)| (n.clone(), id.clone())).collect())
    }
    fn containers(&self, _: &[(String, String)]) -> Result<Vec<Container>> {
        Ok(self.containers.iter().map(|(c, _)| c.clone()).collect())
    }
    /// An image of `n` layers has `n` of its own, none shared.
    fn image_facts(&self, ids: &[&str]) -> Result<HashMap<String, ImageFacts>> {
        let images = self.images.lock().unwrap();
        let facts = |d: &ImageDetails| ImageFacts {
            platform: d.platform.clone(),
            size: d.size,
            layers: (0..d.layers).map(|k| format!("{}/{k}", d.id)).collect(),
        };
        Ok(ids.iter().filter_map(|id| images.get(*id)).map(|d| (d.id.clone(), facts(d))).collect())
    }
    /// As docker does: the last name of an image a container uses stays,
    /// and the image goes with its last name.
    fn remove_names(&self, references: &[String]) -> Result<Removed> {
        self.events.lock().unwrap().push(format!("remove {}", references.join(" ")));
        let mut names = self.names.lock().unwrap();
        let mut removed = Removed::default();
        for reference in references {
            let Some(id) = names.get(reference).cloned() else {
                removed.refused.push(format!("Error response from daemon: No such image: {reference}"));
                continue;
            };
            let last = names.values().filter(|i| **i == id).count() == 1;
            if let Some((user, _)) = self.containers.iter().find(|(_, image)| last && *image == id) {
                removed.refused.push(format!(
                    "Error response from daemon: conflict: unable to remove repository reference \"{reference}\" \
                     (must force) - container {} is using its referenced image {id}",
                    user.id
                ));
                continue;
            }
            names.remove(reference);
            if last {
                self.images.lock().unwrap().remove(&id);
                removed.deleted.insert(id);
            }
        }
        Ok(removed)
    }
    fn platforms(&self, ids: &[&str]) -> Result<HashMap<String, Platform>> {
        Ok(ids.iter().filter_map(|id| self.image(id).ok().map(|d| (id.to_string(), d.platform))).collect())
    }
    fn image(&self, image: &str) -> Result<ImageDetails> {
        let id = self.names.lock().unwrap().get(image).cloned().unwrap_or_else(|| image.to_string());
        self.images.lock().unwrap().get(&id).cloned().ok_or_else(|| anyhow!("no image {image}"))
    }
    fn untag(&self, reference: &str) -> Result<()> {
        self.names.lock().unwrap().remove(reference);
        Ok(())
    }
    fn pull(&self, reference: &str, _: Arch, _: bool, _: &Path) -> Result<()> {
        bail!("{reference}: not found")
    }
    fn build(&self, _: &BuildSpec<'_>, _: &BuildCache, log: &Path) -> Result<Built> {
        let name = image_of(log);
        let script = self.scripts.get(&name).cloned().unwrap_or_default();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.events.lock().unwrap().push(format!("start {name}"));
        if script.interrupts {
            self.interrupted.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(30));
        self.events.lock().unwrap().push(format!("end {name}"));
        self.running.fetch_sub(1, Ordering::SeqCst);
        if let Some(error) = script.fails {
            bail!("build failed: {error}; log: {}", log.display());
        }
        let id = format!("sha256:{name}");
        self.images.lock().unwrap().insert(id.clone(), details(&id, script.architecture.unwrap_or("amd64")));
        Ok(Built { id, steps_reused: None })
    }
    fn batches_builds(&self) -> bool {
        self.batches
    }
    fn build_batch(&self, builds: &[BatchBuild<'_>], _: &Path) -> Option<Result<Vec<Built>>> {
        if !self.batches {
            return None;
        }
        let names: Vec<&str> = builds.iter().map(|b| b.name).collect();
        self.events.lock().unwrap().push(format!("batch {}", names.join(" ")));
        if let Some(failing) = names.iter().find(|n| self.scripts.get(**n).is_some_and(|s| s.fails.is_some())) {
            return Some(Err(anyhow!("{failing} failed")));
        }
        Some(builds.iter().map(|b| self.build(&b.spec, &b.cache, b.log)).collect())
    }
    fn build_push(&self, _: &BuildSpec<'_>, _: &BuildCache, _: &str, _: &Path) -> Result<String> {
        bail!("the fake builds into its own store")
    }
    fn tag(&self, source: &str, target: &str) -> Result<()> {
        let id = self.names.lock().unwrap().get(source).cloned().unwrap_or_else(|| source.to_string());
        if !self.images.lock().unwrap().contains_key(&id) {
            bail!("no image {source}");
        }
        self.names.lock().unwrap().insert(target.to_string(), id);
        Ok(())
    }
    fn push(&self, reference: &str, _: &Path) -> Result<()> {
        self.events.lock().unwrap().push(format!("push {reference}"));
        Ok(())
    }
    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}
