//! The command: gather the bases of every Dockerfile an image is built
//! from (for each architecture), ask the registries where their tags point
//! (once per distinct reference), decide each line's fate, then write every
//! changed file or none, and report.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use super::resolve;
use super::rewrite;
use crate::catalog::bases::{self, apply, followed, Base, Catalogued, Edit};
use crate::catalog::discovery::{discover_every_arch, paths_selected};
use crate::config::Settings;
use crate::model::{Arch, Parts, Platform, EXIT_FAILURE};
use crate::registry::{Manifest, Registry};

/// What `pin` does to the bases it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinMode {
    /// Pin the unpinned; leave the pinned as they are.
    Pin,
    /// Pin the unpinned, and move the pinned whose tag points elsewhere now.
    Update,
    /// Change nothing; fail when a base is unpinned or drifted.
    Check,
}

/// Where a base stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseState {
    /// No digest.
    Unpinned,
    /// A digest: where its tag points (or not asked, by a plain `pin`).
    Pinned,
    /// A digest, and its tag points elsewhere now.
    Drifted,
}

/// One base, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub path: String,
    pub line: usize,
    /// As written.
    pub reference: String,
    pub state: BaseState,
    /// The digest written, if any.
    pub digest: Option<String>,
    /// Where its tag points now; `null` when not asked.
    pub current: Option<String>,
}

/// A Dockerfile the tool builds from, with the architectures it serves.
struct File {
    /// `<root>/<path>/<Dockerfile…>`, as shown.
    shown: String,
    path: std::path::PathBuf,
    arches: Vec<Arch>,
    text: String,
    bases: Vec<Base>,
}

/// Runs `pin`; returns the exit status.
pub fn run(settings: &Settings, names: &[String], mode: PinMode, json: bool) -> Result<i32> {
    let files = gather(settings, names)?;
    let registry = Registry::of(settings);

    // What to ask: a plain pin asks only about the unpinned.
    let asked: BTreeSet<String> = every_base(&files)
        .filter(|(_, b)| mode != PinMode::Pin || Parts::of(&b.reference).digest.is_none())
        .filter_map(|(_, b)| followed(&b.reference))
        .collect();
    let asked: Vec<String> = asked.into_iter().collect();
    let answers = crate::registry::each(&asked, resolve::PARALLEL, |r| resolve::manifest(&registry, r));
    let mut current: HashMap<&str, Manifest> = HashMap::new();
    let mut failed = Vec::new();
    for (reference, answer) in asked.iter().zip(answers) {
        match answer {
            Ok(manifest) => {
                current.insert(reference, manifest);
            }
            Err(e) => failed.push(unresolved(&files, reference, &e)),
        }
    }
    if !failed.is_empty() {
        return Err(fail(failed, mode));
    }

    let entries = decide(&files, &current, mode);
    platform_warnings(&registry, &entries, &current);

    // Write every changed file, or none.
    let mut staged = Vec::new();
    for file in &files {
        let edits: Vec<Edit> = entries
            .iter()
            .filter(|e| std::ptr::eq(e.file, file))
            .filter_map(|e| Some(Edit { at: e.base.at, old: e.base.reference.clone(), new: e.new.clone()? }))
            .collect();
        if edits.is_empty() {
            continue;
        }
        let text = apply(&file.text, &edits).with_context(|| format!("cannot pin {}", file.shown))?;
        staged.push(rewrite::stage(&file.path, text.as_bytes())?);
    }
    for file in staged {
        file.commit()?;
    }

    report(&files, &entries, mode, json)
}

/// One base, where it stands, and what it becomes.
struct BaseEntry<'a> {
    file: &'a File,
    base: &'a Base,
    row: Row,
    /// The reference written in its place, when it changes.
    new: Option<String>,
}

/// Where each base stands, given where the tags asked about point now, and
/// what `mode` makes of it.
fn decide<'a>(files: &'a [File], current: &HashMap<&str, Manifest>, mode: PinMode) -> Vec<BaseEntry<'a>> {
    let mut entries = Vec::new();
    for (file, base) in every_base(files) {
        let parts = Parts::of(&base.reference);
        let followed = followed(&base.reference);
        let now = followed.as_deref().and_then(|f| current.get(f)).map(|m| m.digest.clone());
        let state = match (parts.digest, &now) {
            (None, _) => BaseState::Unpinned,
            (Some(d), Some(now)) if d != now => BaseState::Drifted,
            (Some(_), _) => BaseState::Pinned,
        };
        let writes = match state {
            BaseState::Unpinned => mode != PinMode::Check,
            BaseState::Drifted => mode == PinMode::Update,
            BaseState::Pinned => false,
        };
        let new = match (writes, &followed, &now) {
            (true, Some(followed), Some(now)) => Some(format!("{followed}@{now}")),
            _ => None,
        };
        let row = Row {
            path: file.shown.clone(),
            line: base.line,
            reference: base.reference.clone(),
            state,
            digest: parts.digest.map(String::from),
            current: now,
        };
        entries.push(BaseEntry { file, base, row, new });
    }
    entries
}

/// Why `reference` could not be resolved, at the first line that uses it.
fn unresolved(files: &[File], reference: &str, e: &anyhow::Error) -> String {
    let uses: Vec<String> = every_base(files)
        .filter(|(_, b)| followed(&b.reference).as_deref() == Some(reference))
        .map(|(f, b)| format!("{}:{}: {} {}", f.shown, b.line, b.site, b.reference))
        .collect();
    let more = match uses.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    format!("{}{more}: {e:#}", uses.first().map_or(reference, String::as_str))
}

/// Every base of every file, with its file.
fn every_base(files: &[File]) -> impl Iterator<Item = (&File, &Base)> {
    files.iter().flat_map(|f| f.bases.iter().map(move |b| (f, b)))
}

/// The error of a run that found `lines` wrong: each printed, then counted.
fn fail(mut lines: Vec<String>, mode: PinMode) -> anyhow::Error {
    let nothing = if mode == PinMode::Check { "" } else { "; nothing was written" };
    if lines.len() == 1 {
        return anyhow!("{}{nothing}", lines.remove(0));
    }
    for line in &lines {
        eprintln!("error: {line}");
    }
    anyhow!("{} bases cannot be pinned (above){nothing}", lines.len())
}

/// The Dockerfiles of the images `names` select (every image when none),
/// for every architecture, read, with their bases.
fn gather(settings: &Settings, names: &[String]) -> Result<Vec<File>> {
    let catalogs = discover_every_arch(&settings.images_dir)?;
    for reason in catalogs.iter().flat_map(|c| &c.invalid).map(|i| &i.reason).collect::<BTreeSet<_>>() {
        eprintln!("warning: skipped: {reason}");
    }
    let selected = if names.is_empty() { None } else { Some(paths_selected(&catalogs, names)?) };
    let mut dockerfiles: BTreeMap<(String, String), Vec<Arch>> = BTreeMap::new();
    for catalog in &catalogs {
        for image in catalog.images.iter().filter(|i| selected.as_ref().is_none_or(|s| s.contains(&i.path))) {
            dockerfiles.entry((image.path.clone(), image.dockerfile.clone())).or_default().push(catalog.arch);
        }
    }
    let paths: HashSet<String> = catalogs.iter().flat_map(|c| c.images.iter().map(|i| i.path.clone())).collect();
    let own =
        Catalogued { local_prefix: &settings.local_prefix, remote_prefix: &settings.remote_prefix, paths: &paths };
    let root = crate::commands::shown_root(settings)?;
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for ((dir, name), arches) in dockerfiles {
        let path = settings.images_dir.join(&dir).join(&name);
        let shown = format!("{root}/{dir}/{name}");
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{shown} is not UTF-8: pin reads UTF-8 only"))?;
        let found = bases::find(&text, &own);
        for note in &found.warnings {
            eprintln!("warning: {shown}:{}: {}", note.line, note.message);
        }
        errors.extend(found.errors.iter().map(|note| format!("{shown}:{}: {}", note.line, note.message)));
        files.push(File { shown, path, arches, text, bases: found.bases });
    }
    if !errors.is_empty() {
        return Err(fail(errors, PinMode::Check));
    }
    Ok(files)
}

/// Warns of each base written whose new digest has no image for an
/// architecture its Dockerfile is built for (or its `--platform` names).
fn platform_warnings(registry: &Registry, entries: &[BaseEntry], current: &HashMap<&str, Manifest>) {
    let written: BTreeSet<String> =
        entries.iter().filter(|e| e.new.is_some()).filter_map(|e| followed(&e.base.reference)).collect();
    let written: Vec<String> = written.into_iter().collect();
    let platforms = crate::registry::each(&written, resolve::PARALLEL, |r| {
        let manifest = current.get(r.as_str()).ok_or_else(|| anyhow!("{r} was not asked"))?;
        resolve::platforms(registry, r, manifest)
    });
    let platforms: HashMap<&str, Result<Vec<Platform>>> = written.iter().map(String::as_str).zip(platforms).collect();
    for entry in entries.iter().filter(|e| e.new.is_some()) {
        let (file, base) = (entry.file, entry.base);
        let Some(followed) = followed(&base.reference) else { continue };
        let at = format!("{}:{}", file.shown, base.line);
        let have = match platforms.get(followed.as_str()) {
            Some(Ok(have)) => have,
            Some(Err(e)) => {
                eprintln!("warning: {at}: cannot tell which platforms {followed} is for: {e:#}");
                continue;
            }
            None => continue,
        };
        let needs: Vec<Arch> = match &base.platform {
            None => file.arches.clone(),
            Some(p) => Arch::ALL.into_iter().filter(|a| a.platform() == p).collect(),
        };
        for arch in needs.into_iter().filter(|&a| !have.iter().any(|p| p.is(a))) {
            let list: Vec<String> = have.iter().map(Platform::to_string).collect();
            eprintln!(
                "warning: {at}: {followed} has no image for {} (it has {}), which this Dockerfile is built for",
                arch.platform(),
                if list.is_empty() { "none".to_string() } else { list.join(", ") }
            );
        }
    }
}

/// Prints what was found and done: a line per base that is not as it
/// should be (`--check`) or that was written, then a count; or `--json`.
fn report(files: &[File], entries: &[BaseEntry], mode: PinMode, json: bool) -> Result<i32> {
    let count = |state: BaseState| entries.iter().filter(|e| e.row.state == state).count();
    let (unpinned, drifted) = (count(BaseState::Unpinned), count(BaseState::Drifted));
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<&Row> = entries.iter().map(|e| &e.row).collect();
        crate::report::print_list("bases", &rows)?;
    }
    for BaseEntry { file, base, row, new } in entries.iter().filter(|_| !json) {
        let (at, site, reference) = (format!("{}:{}", file.shown, base.line), &base.site, &base.reference);
        match (mode, row.state, new, &row.current) {
            (PinMode::Check, BaseState::Unpinned, _, _) => writeln!(out, "{at}: unpinned {site} {reference}")?,
            (PinMode::Check, BaseState::Drifted, _, Some(now)) => {
                let followed = followed(reference).unwrap_or_default();
                writeln!(out, "{at}: drifted {site} {reference}: {followed} now points at {now}")?
            }
            (_, _, Some(new), _) => writeln!(out, "{at}: {reference} → {new}")?,
            _ => {}
        }
    }
    out.flush()?;
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let counted = format!("{} in {}", plural(entries.len(), "base"), plural(files.len(), "Dockerfile"));
    if mode == PinMode::Check {
        if unpinned + drifted == 0 {
            eprintln!("checked {counted}: every one pinned where its tag points");
            return Ok(0);
        }
        eprintln!("checked {counted}: {unpinned} unpinned, {drifted} drifted: run `cargo xtask pin --update`");
        return Ok(EXIT_FAILURE);
    }
    let written = entries.iter().filter(|e| e.new.is_some()).count();
    let moved = entries.iter().filter(|e| e.new.is_some() && e.row.state == BaseState::Drifted).count();
    eprintln!("{counted}: {} pinned, {moved} moved, {} unchanged", written - moved, entries.len() - written);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> File {
        let paths = HashSet::new();
        let own = Catalogued { local_prefix: "l.example/images", remote_prefix: "r.example/cache", paths: &paths };
        let bases = bases::find(text, &own).bases;
        File {
            shown: "images/a/Dockerfile".into(),
            path: "a/Dockerfile".into(),
            arches: Arch::ALL.to_vec(),
            text: text.into(),
            bases,
        }
    }

    fn manifest(digest: &str) -> Manifest {
        Manifest { media_type: "application/vnd.oci.image.index.v1+json".into(), digest: digest.into(), bytes: vec![] }
    }

    /// (line, state, digest, current, new) of each base.
    type Fate = (usize, BaseState, Option<String>, Option<String>, Option<String>);

    fn fates(files: &[File], current: &[(&'static str, &str)], mode: PinMode) -> Vec<Fate> {
        let current: HashMap<&str, Manifest> = current.iter().map(|(r, d)| (*r, manifest(d))).collect();
        decide(files, &current, mode)
            .into_iter()
            .map(|e| (e.row.line, e.row.state, e.row.digest, e.row.current, e.new))
            .collect()
    }

    #[test]
    fn each_state_in_each_mode() {
        let files = [file(
            "FROM x.example/a:1\nFROM x.example/b:2@sha256:old\nFROM x.example/c:3@sha256:c3\n\
                           FROM x.example/d@sha256:d\nFROM x.example/e\n",
        )];
        let s = |t: &str| Some(t.to_string());
        let now = [
            ("x.example/a:1", "sha256:a1"),
            ("x.example/b:2", "sha256:b2"),
            ("x.example/c:3", "sha256:c3"),
            ("x.example/e:latest", "sha256:e"),
        ];
        let (unpinned, pinned, drifted) = (BaseState::Unpinned, BaseState::Pinned, BaseState::Drifted);
        assert_eq!(
            fates(&files, &now, PinMode::Update),
            vec![
                (1, unpinned, None, s("sha256:a1"), s("x.example/a:1@sha256:a1")),
                (2, drifted, s("sha256:old"), s("sha256:b2"), s("x.example/b:2@sha256:b2")),
                (3, pinned, s("sha256:c3"), s("sha256:c3"), None),
                (4, pinned, s("sha256:d"), None, None),
                (5, unpinned, None, s("sha256:e"), s("x.example/e:latest@sha256:e")),
            ]
        );
        assert_eq!(
            fates(&files, &now, PinMode::Check),
            vec![
                (1, unpinned, None, s("sha256:a1"), None),
                (2, drifted, s("sha256:old"), s("sha256:b2"), None),
                (3, pinned, s("sha256:c3"), s("sha256:c3"), None),
                (4, pinned, s("sha256:d"), None, None),
                (5, unpinned, None, s("sha256:e"), None),
            ]
        );
        // A plain pin asks about the unpinned alone.
        let asked = [now[0], now[3]];
        assert_eq!(
            fates(&files, &asked, PinMode::Pin),
            vec![
                (1, unpinned, None, s("sha256:a1"), s("x.example/a:1@sha256:a1")),
                (2, pinned, s("sha256:old"), None, None),
                (3, pinned, s("sha256:c3"), None, None),
                (4, pinned, s("sha256:d"), None, None),
                (5, unpinned, None, s("sha256:e"), s("x.example/e:latest@sha256:e")),
            ]
        );
    }
}
