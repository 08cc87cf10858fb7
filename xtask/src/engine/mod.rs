//! Engine: what the commands ask of a container engine ([`Engine`]), and
//! how docker or podman is asked ([`EngineCli`]). Every call goes through
//! `cmd!` and the run's [`Processes`](crate::process::Processes), which
//! track the child so an interrupt can stop it; failures become one-line
//! errors that say what to do.

mod api;
mod bake;
mod build;
mod client;
pub mod cross;
#[cfg(test)]
pub mod fake;
mod inspect;
mod service;
mod store;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use crate::model::{Arch, Platform};

pub use bake::{BatchBuild, BATCH_LIMIT};
pub use build::{BuildCache, BuildSpec, Builder, Built};
pub use client::EngineCli;
pub use inspect::{Container, ImageDetails, ImageFacts, Removed};

/// What the commands ask of a container engine. [`EngineCli`] asks docker or
/// podman; unit tests put the fake of `fake` in its place.
pub trait Engine: Sync {
    /// The builder `build` uses, found out once: podman's own; for docker,
    /// `DOCKER_BUILDKIT` when set, else BuildKit whenever the client has it
    /// (buildx from 23.0 on, the daemon's own before), else the classic one.
    fn builder(&self) -> &Builder;

    /// Checked once, up front: the engine is there and answers.
    fn check(&self) -> Result<()>;

    /// Every local image, `repository:tag` -> image ID, in one call.
    fn local_images(&self) -> Result<HashMap<String, String>>;

    /// Every name of a local image as the engine lists it, `repository:tag`,
    /// with the image's ID, in one call.
    fn image_names(&self) -> Result<Vec<(String, String)>>;

    /// Every container, running or not, with the image it was created
    /// from, in one call. `listed` is every local name and its image, as
    /// [`Engine::image_names`] gives them: an engine that shows a
    /// container's image by name finds its ID there.
    fn containers(&self, listed: &[(String, String)]) -> Result<Vec<Container>>;

    /// What each of the local images `ids` is (platform, size and layers),
    /// by ID. An image that vanished meanwhile is left out.
    fn image_facts(&self, ids: &[&str]) -> Result<HashMap<String, ImageFacts>>;

    /// Removes local names, without force: the engine keeps an image that
    /// a container uses. An image goes when its last name does.
    fn remove_names(&self, references: &[String]) -> Result<Removed>;

    /// The platform each of the local images `ids` (or names) was built
    /// for. An image that vanished meanwhile is left out.
    fn platforms(&self, ids: &[&str]) -> Result<HashMap<String, Platform>>;

    /// What one local image is.
    fn image(&self, image: &str) -> Result<ImageDetails>;

    /// What each of the local images `ids` (or names) is, in one call where
    /// the engine allows; one that vanished meanwhile is left out.
    fn images(&self, ids: &[&str]) -> Result<HashMap<String, ImageDetails>> {
        Ok(ids.iter().filter_map(|id| Some((id.to_string(), self.image(id).ok()?))).collect())
    }

    /// The platform of one local image.
    fn platform(&self, image: &str) -> Result<Platform> {
        self.image(image).map(|d| d.platform)
    }

    /// Removes one local name; the image stays if other names keep it.
    fn untag(&self, reference: &str) -> Result<()>;

    /// Pulls `reference` for `arch`. `quick`: give up sooner on a failing
    /// registry (the caller can build).
    fn pull(&self, reference: &str, arch: Arch, quick: bool, log: &Path) -> Result<()>;

    /// Builds the image and returns its ID, and how many steps came from
    /// the cache when the builder says. It gets no name here: the caller
    /// names it once it has checked what was built.
    fn build(&self, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path) -> Result<Built>;

    /// Builds several images in one call, when the builder can: their IDs,
    /// in order, each build's own output appended to its log. `None` when it
    /// cannot (then each is built on its own); an error when the call
    /// failed, which may have built some of them.
    fn build_batch(&self, builds: &[BatchBuild<'_>], work: &Path) -> Option<Result<Vec<Built>>> {
        let _ = (builds, work);
        None
    }

    /// Whether [`Engine::build_batch`] may build a batch at all.
    fn batches_builds(&self) -> bool {
        false
    }

    /// With a buildx builder that has no local image store: builds and
    /// pushes the image to `repository` by digest alone (no tag, no round
    /// trip through the daemon), and returns its manifest digest. The caller
    /// checks it in the registry before giving it a tag.
    fn build_push(&self, spec: &BuildSpec<'_>, cache: &BuildCache, repository: &str, log: &Path) -> Result<String>;

    /// Whether builds go straight to the registry when pushing: buildx with
    /// a builder that has no local image store.
    fn pushes_from_builder(&self) -> bool {
        matches!(self.builder(), Builder::Buildx { driver } if driver != "docker")
    }

    /// Gives the local image `source` the name `target`.
    fn tag(&self, source: &str, target: &str) -> Result<()>;

    /// Gives the local image `source` each of the names `targets`, in order.
    fn tag_all(&self, source: &str, targets: &[&str]) -> Result<()> {
        targets.iter().try_for_each(|target| self.tag(source, target))
    }

    /// Pushes the local name `reference` to its registry.
    fn push(&self, reference: &str, log: &Path) -> Result<()>;

    /// Whether the run was interrupted (Ctrl-C, SIGTERM): start nothing more.
    fn interrupted(&self) -> bool;

    /// The same engine, for the calls of one image's job: one that echoes
    /// its calls says they are for `image`. `None`: this one will do.
    fn for_image(&self, image: &str) -> Option<Box<dyn Engine + '_>> {
        let _ = image;
        None
    }
}
