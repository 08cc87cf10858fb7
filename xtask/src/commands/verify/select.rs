//! Which images `verify` works on, chosen as the engine commands choose
//! theirs: those named (images, groups, directories of images), or every
//! one as the `*-all-*` commands do (the test images alone with
//! `--test-images`); then only those whose tag changed since
//! `--changed-since`, and only one shard's with `--shard`.

use anyhow::Result;

use crate::catalog::discovery::{discover_lenient, Catalog};
use crate::catalog::shard::{self, Shard};
use crate::config::Settings;
use crate::git::history;
use crate::model::ImageIndex;

/// How the images are chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Names, groups or directories of images; none: every image.
    pub names: Vec<String>,
    /// Only the test images.
    pub tests_only: bool,
    /// Only images whose tag differs from their tag at this git revision.
    pub changed_since: Option<String>,
    pub shard: Option<Shard>,
}

/// The images chosen, with the catalog they are of.
pub struct Chosen {
    pub catalog: Catalog,
    pub images: Vec<ImageIndex>,
    /// Why each directory that cannot make an image name was left out of a
    /// run over every image: the run fails once the rest is done.
    pub invalid: Vec<String>,
}

/// The images `selection` chooses; says on stderr which were left out and why.
pub fn choose(settings: &Settings, selection: &Selection) -> Result<Chosen> {
    let catalog = discover_lenient(&settings.images_dir, settings.arch)?;
    let every = selection.names.is_empty();
    let invalid: Vec<String> =
        if every { catalog.invalid.iter().map(|bad| bad.reason.clone()).collect() } else { Vec::new() };
    for reason in &invalid {
        eprintln!("warning: skipped: {reason}");
    }
    let (mut images, unavailable) = if every {
        (catalog.indices().collect::<Vec<_>>(), catalog.other_arch.iter().collect::<Vec<_>>())
    } else {
        catalog.select_available(&selection.names)?
    };
    for other in unavailable.iter().filter(|i| !selection.tests_only || i.is_test(settings)) {
        eprintln!("skipped {}: not available for {}", other.name, settings.arch);
    }
    if selection.tests_only {
        images.retain(|&i| catalog[i].is_test(settings));
    }
    if let Some(rev) = &selection.changed_since {
        let changed = history::changed_since(settings, &catalog, &images, rev)?;
        eprintln!("changed since {rev}: {} of {} images", changed.len(), images.len());
        images = changed;
    }
    if let Some(shard) = selection.shard {
        let mine = shard::select(&catalog, settings, &images, shard)?;
        eprintln!("shard {}/{}: {} of {} images", shard.index, shard.count, mine.len(), images.len());
        images = mine;
    }
    Ok(Chosen { catalog, images, invalid })
}
