//! `status`: where each image stands for ARCH: its tag, whether the image
//! with that tag is present locally and in the registry, and what the local
//! image is (size, layers, architecture, when and from which revision it
//! was built); with `--bases`, whether the bases it was built on moved
//! (`drift`). One engine call lists the local images and one reads them;
//! the registry gets one request per image, in parallel.

mod drift;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::catalog::discovery::{discover_lenient, Catalog};
use crate::catalog::tagging;
use crate::config::Settings;
use crate::engine::{Engine, EngineCli, ImageDetails};
use crate::git::provenance;
use crate::model::Arch;
use crate::model::{ImageIndex, ImageInfo, ImageRef, Parts};
use crate::registry::Registry;
use crate::report::human_bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalState {
    /// The image with the current tag is present, for ARCH.
    Current,
    /// Only another image is: an older tag, or one for another architecture.
    Stale,
    /// Nothing under the local name.
    Absent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryState {
    HasTag,
    LacksTag,
    Unknown,
}

/// One image's status, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The image object every JSON document shows.
    #[serde(flatten)]
    pub image: ImageInfo,
    #[serde(rename = "local_state")]
    pub local: Local,
    #[serde(rename = "registry_state")]
    pub registry: RegistryStatus,
    /// With `--bases`: whether the bases it was built on moved.
    #[serde(rename = "bases_state", skip_serializing_if = "Option::is_none")]
    pub bases: Option<drift::BasesStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Local {
    pub state: LocalState,
    /// The local image described: the current one, else the stale one
    /// (`:latest` first, else the newest).
    #[serde(flatten)]
    pub image: Option<LocalImage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalImage {
    pub reference: String,
    pub id: String,
    pub size: u64,
    pub layers: usize,
    pub platform: String,
    /// When it was built, as the engine says (RFC 3339).
    pub created: String,
    /// The git commit it was built from (`org.opencontainers.image.revision`).
    pub revision: Option<String>,
    pub source: Option<String>,
    /// Every label, for what `--bases` reads.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegistryStatus {
    pub state: RegistryState,
    /// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>:<tag>`
    pub reference: String,
    /// Why the state is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `--local` puts in the registry column.
const NOT_ASKED: &str = "not asked: --local";

/// Runs `status`; returns the exit status. `bases`: also tell whether the
/// bases each image was built on moved, asking their registries.
pub fn run(
    settings: &Settings,
    names: &[String],
    local_only: bool,
    bases: bool,
    json: bool,
    markdown: Option<&Path>,
) -> Result<i32> {
    let catalog = discover_lenient(&settings.images_dir, settings.arch)?;
    let chosen = choose(settings, &catalog, names)?;
    let tags = tagging::tags(&catalog, settings, &chosen)?;
    let refs: Vec<ImageRef> = chosen.iter().map(|&i| ImageRef::new(settings, &catalog[i].path, &tags[&i])).collect();

    let locals = local_statuses(&EngineCli::new(settings.engine), &refs, settings.arch)?;
    let registry = Registry::of(settings);
    let remotes = registry_statuses(&registry, &refs, local_only);
    let mut rows: Vec<Status> = chosen
        .iter()
        .zip(&refs)
        .zip(locals.into_iter().zip(remotes))
        .map(|((&i, names), (local, registry))| {
            let image = &catalog[i];
            let info = ImageInfo::named(&image.name, &image.path, settings.arch, names, image.is_test(settings));
            Status { image: info, local, registry, bases: None }
        })
        .collect();

    warn_registry_failures(&rows);
    if bases {
        drift::check(&mut rows, &registry, &settings.local_prefix);
    }
    let mut out = std::io::stdout().lock();
    if json {
        crate::report::print_list("images", &rows)?;
    } else {
        write!(out, "{}", table(&rows))?;
    }
    out.flush()?;
    if let Some(file) = markdown {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        f.write_all(markdown_table(&rows, settings.arch).as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(0)
}

/// The images `names` names, or every one; says which are left out.
fn choose(settings: &Settings, catalog: &Catalog, names: &[String]) -> Result<Vec<ImageIndex>> {
    if names.is_empty() {
        for bad in &catalog.invalid {
            eprintln!("warning: skipped: {}", bad.reason);
        }
        for other in &catalog.other_arch {
            eprintln!("skipped {}: not available for {}", other.name, settings.arch);
        }
        return Ok(catalog.indices().collect());
    }
    let (chosen, unavailable) = catalog.select_available(names)?;
    for other in unavailable {
        eprintln!("skipped: {}", catalog.unavailable(other));
    }
    Ok(chosen)
}

/// Whether the registry has each image's tag, asked in parallel; with
/// `local_only`, not asked at all.
fn registry_statuses(registry: &Registry, refs: &[ImageRef], local_only: bool) -> Vec<RegistryStatus> {
    let remotes: Vec<String> = refs.iter().map(ImageRef::remote_tagged).collect();
    let answers: Vec<Result<bool>> = if local_only {
        remotes.iter().map(|_| Err(anyhow::anyhow!(NOT_ASKED))).collect()
    } else {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).max(8);
        registry.exist_all(&remotes, parallel, true)
    };
    remotes
        .into_iter()
        .zip(answers)
        .map(|(reference, answer)| match answer {
            Ok(true) => RegistryStatus { state: RegistryState::HasTag, reference, reason: None },
            Ok(false) => RegistryStatus { state: RegistryState::LacksTag, reference, reason: None },
            Err(e) => RegistryStatus { state: RegistryState::Unknown, reference, reason: Some(format!("{e:#}")) },
        })
        .collect()
}

/// Why the registry could not tell: said once (each image's reason is in `--json`).
fn warn_registry_failures(rows: &[Status]) {
    let failed: Vec<&Status> =
        rows.iter().filter(|r| r.registry.reason.as_deref().is_some_and(|r| r != NOT_ASKED)).collect();
    if let Some(first) = failed.first() {
        let names: Vec<&str> = failed.iter().map(|r| r.image.name.as_str()).collect();
        let reason = first.registry.reason.as_deref().unwrap_or_default();
        let what = if failed.len() == 1 { "" } else { "; the first error" };
        eprintln!("warning: cannot ask the registry about {}{what}: {reason}", names.join(", "));
    }
}

/// Where each of the images `names` stands locally for `arch`: one engine
/// call lists the local images, one more reads those of these repositories.
pub fn local_statuses(engine: &dyn Engine, names: &[ImageRef], arch: Arch) -> Result<Vec<Local>> {
    let listing = match engine.local_images() {
        Ok(listing) => listing,
        // Say why the engine cannot answer, when its check can tell.
        Err(e) => {
            engine.check()?;
            return Err(e);
        }
    };
    let repositories: HashSet<&str> = names.iter().map(|n| n.local.as_str()).collect();
    let mut ids: Vec<&str> = listing
        .iter()
        .filter(|(reference, _)| Parts::of(reference).tag.is_some() && repositories.contains(Parts::of(reference).name))
        .map(|(_, id)| id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let details = if ids.is_empty() { HashMap::new() } else { engine.images(&ids)? };
    Ok(names.iter().map(|n| local_status(&n.local, &n.tag, arch, &listing, &details)).collect())
}

/// Where the local repository `repo` stands for `tag` on `arch`, from the
/// engine's listing (`repository:tag` -> ID) and what it said of those IDs.
pub fn local_status(
    repo: &str,
    tag: &str,
    arch: Arch,
    listing: &HashMap<String, String>,
    details: &HashMap<String, ImageDetails>,
) -> Local {
    let image = |reference: &str| -> Option<(LocalImage, &ImageDetails)> {
        let d = details.get(listing.get(reference)?)?;
        let label = |key: &str| d.labels.get(key).cloned();
        let image = LocalImage {
            reference: reference.to_string(),
            id: d.id.clone(),
            size: d.size,
            layers: d.layers,
            platform: d.platform.to_string(),
            created: d.created.clone(),
            revision: label(provenance::REVISION),
            source: label(provenance::SOURCE),
            labels: d.labels.clone(),
        };
        Some((image, d))
    };
    let current = format!("{repo}:{tag}");
    if let Some((image, _)) = image(&current).filter(|(_, d)| d.platform.is(arch)) {
        return Local { state: LocalState::Current, image: Some(image) };
    }
    let mut others: Vec<&str> = listing
        .keys()
        .filter(|r| r.strip_prefix(repo).is_some_and(|t| t.starts_with(':')))
        .map(String::as_str)
        .collect();
    if others.is_empty() {
        return Local { state: LocalState::Absent, image: None };
    }
    // `:latest` first, then this tag for another architecture, then the newest.
    let latest = format!("{repo}:latest");
    others.sort_by_key(|r| {
        let created = listing.get(*r).and_then(|id| details.get(id)).map(|d| d.created.clone()).unwrap_or_default();
        (*r != latest, *r != current, std::cmp::Reverse(created), r.to_string())
    });
    Local { state: LocalState::Stale, image: others.iter().find_map(|r| image(r)).map(|(image, _)| image) }
}

/// The human table, one line per image; a BASES column last when `--bases`
/// asked about them.
pub fn table(rows: &[Status]) -> String {
    let with_bases = rows.iter().any(|r| r.bases.is_some());
    let mut header = vec!["IMAGE", "TAG", "LOCAL", "REGISTRY", "SIZE", "LAYERS", "ARCH", "BUILT"];
    header.extend(with_bases.then_some("BASES"));
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut line = cells(row).to_vec();
            line.extend(with_bases.then(|| row.bases.as_ref().map_or(String::new(), drift::cell)));
            line
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[&str]| {
        let mut line = String::new();
        for (k, (cell, &width)) in cells.iter().zip(&widths).enumerate() {
            if k + 1 == cells.len() {
                line.push_str(cell);
            } else if matches!(k, 4 | 5) {
                line.push_str(&format!("{cell:>width$}  "));
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(&header);
    for line in &lines {
        push(&line.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// A Markdown summary a CI job can publish: the table, with each image's
/// revision, and its bases when `--bases` asked about them.
pub fn markdown_table(rows: &[Status], arch: Arch) -> String {
    let with_bases = rows.iter().any(|r| r.bases.is_some());
    let (bases_head, bases_rule) = if with_bases { (" Bases |", " --- |") } else { ("", "") };
    let mut out = format!(
        "### Images for {arch}\n\n\
         | Image | Tag | Local | Registry | Size | Layers | Arch | Built | Revision |{bases_head}\n\
         | --- | --- | --- | --- | ---: | ---: | --- | --- | --- |{bases_rule}\n"
    );
    for row in rows {
        let [name, tag, local, registry, size, layers, arch, built] = cells(row);
        let revision = row.local.image.as_ref().and_then(|i| i.revision.as_deref()).map_or("-".to_string(), |r| {
            let (commit, dirty) = r.split_once('-').map_or((r, ""), |(c, _)| (c, "-dirty"));
            format!("`{}{dirty}`", &commit[..commit.len().min(12)])
        });
        let mut cells = vec![name, format!("`{tag}`"), local, registry, size, layers, arch, built, revision];
        cells.extend(with_bases.then(|| row.bases.as_ref().map_or(String::new(), drift::cell)));
        let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push('\n');
    out
}

fn cells(row: &Status) -> [String; 8] {
    let local = match row.local.state {
        LocalState::Current => "current",
        LocalState::Stale => "stale",
        LocalState::Absent => "absent",
    };
    let registry = match (row.registry.state, row.registry.reason.as_deref()) {
        (RegistryState::HasTag, _) => "has tag",
        (RegistryState::LacksTag, _) => "lacks tag",
        (RegistryState::Unknown, Some(NOT_ASKED)) => "unknown (--local)",
        (RegistryState::Unknown, _) => "unknown (error)",
    };
    let image = row.local.image.as_ref();
    let or_dash = |f: &dyn Fn(&LocalImage) -> String| image.map_or("-".to_string(), f);
    [
        row.image.name.clone(),
        row.image.tag.clone().unwrap_or_default(),
        local.to_string(),
        registry.to_string(),
        or_dash(&|i| human_bytes(i.size)),
        or_dash(&|i| i.layers.to_string()),
        or_dash(&|i| i.platform.strip_prefix("linux/").unwrap_or(&i.platform).to_string()),
        or_dash(&|i| built(&i.created)),
    ]
}

/// An engine's creation time to the second: `2025-11-27T00:31:02Z`.
fn built(created: &str) -> String {
    let Some(seconds) = created.get(..19).filter(|s| s.as_bytes().get(10) == Some(&b'T')) else {
        return created.to_string();
    };
    let zone = created[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    format!("{seconds}{zone}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{self, Fake};
    use crate::model::Platform;

    fn details(id: &str, arch: &str, created: &str, revision: Option<&str>) -> ImageDetails {
        ImageDetails {
            id: id.into(),
            platform: Platform { os: "linux".into(), architecture: arch.into(), variant: String::new() },
            size: 2_048,
            layers: 2,
            created: created.into(),
            labels: revision.map(|r| (provenance::REVISION.to_string(), r.to_string())).into_iter().collect(),
            repo_digests: Vec::new(),
        }
    }

    fn world(entries: &[(&str, ImageDetails)]) -> (HashMap<String, String>, HashMap<String, ImageDetails>) {
        let listing = entries.iter().map(|(r, d)| (r.to_string(), d.id.clone())).collect();
        let details = entries.iter().map(|(_, d)| (d.id.clone(), d.clone())).collect();
        (listing, details)
    }

    fn state(entries: &[(&str, ImageDetails)]) -> (LocalState, Option<String>) {
        let (listing, details) = world(entries);
        let local = local_status("l/x", "t2", Arch::X86_64, &listing, &details);
        (local.state, local.image.map(|i| i.reference))
    }

    #[test]
    fn local_states() {
        let old = details("sha256:1", "amd64", "2025-01-01T00:00:00Z", None);
        let new = details("sha256:2", "amd64", "2025-02-01T00:00:00Z", Some("abc"));
        let arm = details("sha256:3", "arm64", "2025-03-01T00:00:00Z", None);
        assert_eq!(state(&[]), (LocalState::Absent, None));
        assert_eq!(state(&[("l/xy:t2", new.clone())]), (LocalState::Absent, None));
        assert_eq!(
            state(&[("l/x:t2", new.clone()), ("l/x:latest", new.clone())]),
            (LocalState::Current, Some("l/x:t2".into()))
        );
        assert_eq!(
            state(&[("l/x:t1", old.clone()), ("l/x:latest", old.clone())]),
            (LocalState::Stale, Some("l/x:latest".into()))
        );
        assert_eq!(
            state(&[("l/x:t0", old.clone()), ("l/x:t1", new.clone())]),
            (LocalState::Stale, Some("l/x:t1".into()))
        );
        // The current tag for another architecture is not current.
        assert_eq!(
            state(&[("l/x:t2", arm.clone()), ("l/x:t1", new.clone())]),
            (LocalState::Stale, Some("l/x:t2".into()))
        );
    }

    #[test]
    fn table_and_markdown() {
        let (listing, details) = world(&[(
            "l/x:t2",
            details("sha256:2", "amd64", "2025-02-01T10:11:12.123456789Z", Some("0123456789abcdef-dirty")),
        )]);
        let row = |name: &str, tag: &str, local: Local, state: RegistryState, reason: Option<&str>| Status {
            image: ImageInfo {
                name: name.into(),
                path: name.into(),
                arch: Arch::X86_64,
                tag: Some(tag.into()),
                local: Some(format!("l/{name}:{tag}")),
                remote: Some(format!("r/{name}_x86_64:{tag}")),
                test: true,
            },
            local,
            registry: RegistryStatus {
                state,
                reference: format!("r/{name}_x86_64:{tag}"),
                reason: reason.map(String::from),
            },
            bases: None,
        };
        let rows = [
            row("x", "t2", local_status("l/x", "t2", Arch::X86_64, &listing, &details), RegistryState::HasTag, None),
            row(
                "long_name",
                "t3",
                local_status("l/y", "t3", Arch::X86_64, &listing, &details),
                RegistryState::Unknown,
                Some(NOT_ASKED),
            ),
            row(
                "z",
                "t4",
                Local { state: LocalState::Absent, image: None },
                RegistryState::Unknown,
                Some("refused | closed"),
            ),
        ];
        assert_eq!(
            table(&rows),
            "IMAGE      TAG  LOCAL    REGISTRY              SIZE  LAYERS  ARCH   BUILT\n\
             x          t2   current  has tag            2.05 kB       2  amd64  2025-02-01T10:11:12Z\n\
             long_name  t3   absent   unknown (--local)        -       -  -      -\n\
             z          t4   absent   unknown (error)          -       -  -      -\n"
        );
        assert_eq!(
            markdown_table(&rows, Arch::X86_64),
            "### Images for x86_64\n\n\
             | Image | Tag | Local | Registry | Size | Layers | Arch | Built | Revision |\n\
             | --- | --- | --- | --- | ---: | ---: | --- | --- | --- |\n\
             | x | `t2` | current | has tag | 2.05 kB | 2 | amd64 | 2025-02-01T10:11:12Z | `0123456789ab-dirty` |\n\
             | long_name | `t3` | absent | unknown (--local) | - | - | - | - | - |\n\
             | z | `t4` | absent | unknown (error) | - | - | - | - | - |\n\n"
        );
        assert_eq!(built("2025-02-01T10:11:12+02:00"), "2025-02-01T10:11:12+02:00");
        assert_eq!(built("garbage"), "garbage");
    }

    #[test]
    fn local_statuses_from_the_engine() {
        let labelled = ImageDetails {
            created: "2025-02-01T10:11:12Z".into(),
            labels: [(provenance::REVISION, "abc"), (provenance::SOURCE, "https://example.com/a.git")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..fake::details("sha256:1", "amd64")
        };
        let engine = Fake::with(&[])
            .holding(&["l/present:t1", "l/present:latest"], labelled.clone())
            .holding(&["l/arm:t3"], fake::details("sha256:3", "arm64"))
            .holding(&["l/old:t0", "l/oldish:t5"], fake::details("sha256:4", "amd64"));
        let names: Vec<ImageRef> = [("present", "t1"), ("absent", "t2"), ("arm", "t3"), ("old", "t5")]
            .iter()
            .map(|(path, tag)| ImageRef {
                tag: tag.to_string(),
                local: format!("l/{path}"),
                remote: format!("r/{path}"),
            })
            .collect();
        let image = |reference: &str, id: &str, platform: &str| LocalImage {
            reference: reference.into(),
            id: id.into(),
            size: 1000,
            layers: 1,
            platform: platform.into(),
            created: String::new(),
            revision: None,
            source: None,
            labels: BTreeMap::new(),
        };
        let present = LocalImage {
            created: "2025-02-01T10:11:12Z".into(),
            revision: Some("abc".into()),
            source: Some("https://example.com/a.git".into()),
            labels: labelled.labels.clone(),
            ..image("l/present:t1", "sha256:1", "linux/amd64")
        };
        assert_eq!(
            local_statuses(&engine, &names, Arch::X86_64).unwrap(),
            vec![
                Local { state: LocalState::Current, image: Some(present) },
                Local { state: LocalState::Absent, image: None },
                // The current tag, for another architecture.
                Local { state: LocalState::Stale, image: Some(image("l/arm:t3", "sha256:3", "linux/arm64")) },
                Local { state: LocalState::Stale, image: Some(image("l/old:t0", "sha256:4", "linux/amd64")) },
            ]
        );
        // For arm64, the arm64 image is the current one, and no other is.
        let states: Vec<LocalState> =
            local_statuses(&engine, &names, Arch::Aarch64).unwrap().into_iter().map(|l| l.state).collect();
        assert_eq!(states, [LocalState::Stale, LocalState::Absent, LocalState::Current, LocalState::Stale]);
    }
}
