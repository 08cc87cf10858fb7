//! `push-manifest`: publishes an index over an image's per-architecture
//! versions that the registry has, each checked to be what its name says.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::RunArgs;
use crate::catalog::discovery::{discover, Catalog};
use crate::catalog::tagging;
use crate::config::Settings;
use crate::model::{Arch, ImageRef};
use crate::process::Interrupt;
use crate::registry::{Registry, Retry};
use crate::report::{self, Reporter};

/// A multi-architecture index: `reference` over one image per architecture.
#[derive(Debug, Clone)]
struct Index {
    name: String,
    reference: String,
    members: Vec<(Arch, String)>,
}

/// Publishes `<REMOTE_IMAGE_PREFIX>/<path>:<tag>` as an index over the
/// per-architecture images the registry has, each by its own tag.
pub fn run(settings: &Settings, names: &[String], args: &RunArgs) -> Result<i32> {
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
            struct ShownMember<'a> {
                arch: Arch,
                reference: &'a str,
            }
            #[derive(serde::Serialize)]
            struct Shown<'a> {
                name: &'a str,
                reference: &'a str,
                members: Vec<ShownMember<'a>>,
            }
            let shown: Vec<Shown> = indexes
                .iter()
                .map(|i| Shown {
                    name: &i.name,
                    reference: &i.reference,
                    members: i.members.iter().map(|(arch, reference)| ShownMember { arch: *arch, reference }).collect(),
                })
                .collect();
            report::print_list("indexes", &shown)?;
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
