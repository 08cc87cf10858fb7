//! Discovery: which images exist under the images root for one architecture,
//! their names, groups and Dockerfiles, and how command-line names select them.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Result};

use crate::config::Settings;
use crate::model::Arch;
use crate::model::{escape, excerpt, ImageIndex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `basic_alpine`: the path with `/` replaced by `_`.
    pub name: String,
    /// `basic/alpine`: relative to the images root, `/`-separated.
    pub path: String,
    /// `Dockerfile` or `Dockerfile.<arch>`, inside the image directory.
    pub dockerfile: String,
}

impl Image {
    /// Whether tests use it: no entry of the non-test list occurs in its
    /// name or path.
    pub fn is_test(&self, settings: &Settings) -> bool {
        !settings.non_test.iter().any(|p| self.name.contains(p.as_str()) || self.path.contains(p.as_str()))
    }

    pub fn group(&self) -> &str {
        self.path.split('/').next().unwrap_or(&self.path)
    }

    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.path)
    }
}

/// Every image under one images root for one architecture, sorted by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub root: PathBuf,
    pub arch: Arch,
    pub images: Vec<Image>,
    /// Image directories that only have a Dockerfile for another architecture.
    pub other_arch: Vec<Image>,
    /// Directories with a Dockerfile whose path cannot make an image name,
    /// set apart by [`discover_lenient`] (always empty from [`discover`]).
    pub invalid: Vec<Invalid>,
    /// The `FROM` graph: for each image, once its Dockerfile was read, the
    /// images of the catalog it is built on (see [`Catalog::bases`]).
    from: Vec<OnceLock<Vec<ImageIndex>>>,
}

/// A directory with a Dockerfile whose path cannot make an image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The path relative to the images root, `/`-separated (lossy if not UTF-8).
    pub path: String,
    /// What is wrong and what to do, on one line.
    pub reason: String,
}

impl Invalid {
    /// The name a command line would give it: `bad_name` for `bad_name`,
    /// `basic_Hello` for `basic/Hello`.
    pub fn name(&self) -> String {
        self.path.replace('/', "_")
    }

    pub fn group(&self) -> &str {
        self.path.split('/').next().unwrap_or(&self.path)
    }
}

/// Walks the images root. Symlinks are not followed: a linked directory is not
/// part of the tree, as for the legacy `find`. A directory whose name cannot
/// make an image name is an error.
pub fn discover(root: &Path, arch: Arch) -> Result<Catalog> {
    let catalog = discover_lenient(root, arch)?;
    if let Some(bad) = catalog.invalid.first() {
        bail!("{}", bad.reason);
    }
    Ok(catalog)
}

/// Like [`discover`], but a directory whose name cannot make an image name is
/// set apart in [`Catalog::invalid`] instead: the other images stay usable,
/// and a command that names it fails (see [`Catalog::select`]).
pub fn discover_lenient(root: &Path, arch: Arch) -> Result<Catalog> {
    check_root(root)?;
    let dirs = dockerfile_dirs(root)?;
    catalog_of(root, arch, dirs)
}

/// The images root exists and is a directory.
fn check_root(root: &Path) -> Result<()> {
    let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "images directory {} does not exist: set IMAGES_DIR or images_dir in xtask/images.toml",
            root.display()
        ),
        _ => anyhow::anyhow!("cannot read images directory {}: {e}", root.display()),
    })?;
    if !meta.is_dir() {
        bail!("images directory {} is not a directory", root.display());
    }
    Ok(())
}

/// [`discover_lenient`] for every architecture, in the order of
/// [`Arch::ALL`], from one walk of the tree.
pub fn discover_every_arch(root: &Path) -> Result<Vec<Catalog>> {
    check_root(root)?;
    let dirs = dockerfile_dirs(root)?;
    Arch::ALL.iter().map(|arch| catalog_of(root, *arch, dirs.clone())).collect()
}

/// Which Dockerfiles a directory holds: `Dockerfile`, and
/// `Dockerfile.<arch>` for each architecture (in the order of [`Arch::ALL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dockerfiles {
    pub plain: bool,
    pub per_arch: [bool; 2],
}

impl Dockerfiles {
    /// Notes a file of the directory; false when its name is none of them.
    pub fn note(&mut self, file: &[u8]) -> bool {
        if file == b"Dockerfile" {
            self.plain = true;
            return true;
        }
        let Some(suffix) = file.strip_prefix(b"Dockerfile.") else { return false };
        match Arch::ALL.iter().position(|a| a.as_str().as_bytes() == suffix) {
            Some(k) => {
                self.per_arch[k] = true;
                true
            }
            None => false,
        }
    }

    pub fn merge(&mut self, other: Dockerfiles) {
        self.plain |= other.plain;
        for (mine, theirs) in self.per_arch.iter_mut().zip(other.per_arch) {
            *mine |= theirs;
        }
    }

    fn has(&self, arch: Arch) -> bool {
        Arch::ALL.iter().zip(self.per_arch).any(|(a, has)| *a == arch && has)
    }

    fn has_other(&self, arch: Arch) -> bool {
        Arch::ALL.iter().zip(self.per_arch).any(|(a, has)| *a != arch && has)
    }
}

/// Every directory under `root` holding a Dockerfile of some architecture
/// (relative to `root`), in the order a walk by file name first meets one.
fn dockerfile_dirs(root: &Path) -> Result<Vec<(PathBuf, Dockerfiles)>> {
    let mut found: Vec<(PathBuf, Dockerfiles)> = Vec::new();
    let mut slots: HashMap<PathBuf, usize> = HashMap::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(walk_error)?;
        if entry.file_type().is_dir() {
            continue;
        }
        let mut which = Dockerfiles::default();
        if !which.note(entry.file_name().as_bytes()) {
            continue;
        }
        let dir = entry.path().parent().unwrap_or(root).strip_prefix(root).unwrap_or(Path::new("")).to_path_buf();
        let slot = *slots.entry(dir.clone()).or_insert_with(|| {
            found.push((dir, Dockerfiles::default()));
            found.len() - 1
        });
        found[slot].1.merge(which);
    }
    Ok(found)
}

/// The catalog for `arch` from the directories holding Dockerfiles
/// (relative to `root`, in the order a walk by file name meets them),
/// however they were found: on disk, or in a git tree.
pub fn catalog_of(root: &Path, arch: Arch, dirs: Vec<(PathBuf, Dockerfiles)>) -> Result<Catalog> {
    let own = format!("Dockerfile.{arch}");
    let found: Vec<(PathBuf, bool, bool, bool)> =
        dirs.into_iter().map(|(dir, d)| (dir, d.plain, d.has(arch), d.has_other(arch))).collect();

    let mut images = Vec::new();
    let mut other_arch = Vec::new();
    let mut invalid = Vec::new();
    for (dir, plain, native, other) in found {
        if !(plain || native || other) {
            continue;
        }
        if dir.as_os_str().is_empty() {
            bail!("{} holds a Dockerfile itself: put each image in a directory of its own", root.display());
        }
        let path = match image_path(root, &dir) {
            Ok(path) => path,
            Err(reason) => {
                let path = dir.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/");
                invalid.push(Invalid { path, reason });
                continue;
            }
        };
        let dockerfile = if native { own.clone() } else { "Dockerfile".to_string() };
        let image = Image { name: path.replace('/', "_"), path, dockerfile };
        if plain || native {
            images.push(image);
        } else {
            other_arch.push(image);
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    other_arch.sort_by(|a, b| a.name.cmp(&b.name));
    let from = images.iter().map(|_| OnceLock::new()).collect();
    Ok(Catalog { root: root.to_path_buf(), arch, images, other_arch, invalid, from })
}

/// A walk's failure as one line naming the path.
pub fn walk_error(e: walkdir::Error) -> anyhow::Error {
    let path = e.path().map(|p| escape(&p.display().to_string())).unwrap_or_default();
    if e.loop_ancestor().is_some() {
        return anyhow::anyhow!("symlink loop at {path}");
    }
    match e.io_error() {
        Some(io) => anyhow::anyhow!("cannot read {path}: {io}"),
        None => anyhow::anyhow!("cannot read {path}: {e}"),
    }
}

/// The image's `/`-separated path, or why its directory names cannot be an
/// image reference or would make two images' names collide.
fn image_path(root: &Path, dir: &Path) -> std::result::Result<String, String> {
    let mut segments = Vec::new();
    // Only a failure shows it: worth not making for every image.
    let shown = || escape(&root.join(dir).display().to_string());
    for part in dir.iter() {
        let Some(seg) = part.to_str() else {
            return Err(format!("image directory {} has a name that is not UTF-8: rename it", shown()));
        };
        if seg.contains('_') {
            return Err(format!(
                "image directory {} has `_` in its name `{}`: image names join directories with `_`, so names would be ambiguous; use `-` instead",
                shown(),
                excerpt(seg)
            ));
        }
        if !valid_segment(seg) {
            return Err(format!(
                "image directory {} is not a valid image name (`{}`): use lower case letters, digits, and `.` or `-` between them",
                shown(),
                excerpt(seg)
            ));
        }
        segments.push(seg);
    }
    Ok(segments.join("/"))
}

/// Whether `path` (`/`-separated) is one an image directory may have.
pub fn is_image_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(valid_segment)
}

/// A path component of an image reference, less `_` (see [`image_path`]):
/// alphanumerics, separated by single dots or runs of dashes.
fn valid_segment(seg: &str) -> bool {
    let b = seg.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    b.windows(2).all(|w| match (w[0], w[1]) {
        (b'.', c) => alnum(c),
        (b'-', c) => alnum(c) || c == b'-',
        (c, _) => alnum(c),
    })
}

impl std::ops::Index<ImageIndex> for Catalog {
    type Output = Image;
    fn index(&self, i: ImageIndex) -> &Image {
        &self.images[i.0]
    }
}

impl Catalog {
    /// The images image `i` is built `FROM`, as known: `find` gives them
    /// the first time (it reads the Dockerfile); later calls do not.
    pub fn bases(&self, i: ImageIndex, find: impl FnOnce() -> Result<Vec<ImageIndex>>) -> Result<&[ImageIndex]> {
        if let Some(known) = self.from[i.0].get() {
            return Ok(known);
        }
        let found = find()?;
        Ok(self.from[i.0].get_or_init(|| found))
    }

    /// Records what image `i` is built `FROM`, found while reading its
    /// Dockerfile for another purpose.
    pub fn knows_bases(&self, i: ImageIndex, bases: &[ImageIndex]) {
        let _ = self.from[i.0].set(bases.to_vec());
    }

    /// Every image's index, in the catalog's order (by name).
    pub fn indices(&self) -> impl Iterator<Item = ImageIndex> {
        (0..self.images.len()).map(ImageIndex)
    }

    /// Every image with its index, in the catalog's order (by name).
    pub fn indexed(&self) -> impl Iterator<Item = (ImageIndex, &Image)> {
        self.images.iter().enumerate().map(|(i, image)| (ImageIndex(i), image))
    }

    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.binary_search_by(|i| i.name.as_str().cmp(name)).ok().map(|i| &self.images[i])
    }

    pub fn index_of(&self, name: &str) -> Option<ImageIndex> {
        self.images.binary_search_by(|i| i.name.as_str().cmp(name)).ok().map(ImageIndex)
    }

    pub fn by_path(&self, path: &str) -> Option<ImageIndex> {
        self.images.iter().position(|i| i.path == path).map(ImageIndex)
    }

    /// Each argument is an image name or a group (the first path segment); an
    /// exact image name wins. Returns indexes, sorted, without repeats.
    pub fn select(&self, args: &[String]) -> Result<Vec<ImageIndex>> {
        let (chosen, unavailable) = self.select_available(args)?;
        if let Some(other) = unavailable.first() {
            bail!("{}", self.unavailable(other));
        }
        Ok(chosen)
    }

    /// Like [`Catalog::select`], but names of images that only exist for
    /// another architecture are returned apart instead of failing. Naming a
    /// directory set apart as invalid, or a group holding one, fails.
    pub fn select_available<'a>(&'a self, args: &[String]) -> Result<(Vec<ImageIndex>, Vec<&'a Image>)> {
        let mut unavailable = Vec::new();
        let mut out = Vec::new();
        for arg in args {
            let name = arg.trim_end_matches('/').replace('/', "_");
            if let Some(i) = self.index_of(&name) {
                out.push(i);
                continue;
            }
            if let Some(bad) = self.invalid.iter().find(|bad| bad.name() == name || bad.group() == name) {
                bail!("{}", bad.reason);
            }
            // A group, or any directory of images (`compatibility_gitea`
            // for the images under compatibility/gitea/): directory names
            // hold no `_`, so the name gives the path back.
            let path = name.replace('_', "/");
            let under = |image: &Image| image.path == path || image.path.starts_with(&format!("{path}/"));
            if let Some(bad) = self.invalid.iter().find(|bad| bad.path.starts_with(&format!("{path}/"))) {
                bail!("{}", bad.reason);
            }
            let group: Vec<ImageIndex> = self.indexed().filter(|(_, image)| under(image)).map(|(i, _)| i).collect();
            if !group.is_empty() {
                out.extend(group);
                continue;
            }
            let others: Vec<&Image> = self.other_arch.iter().filter(|i| under(i)).collect();
            if others.is_empty() {
                bail!("{}", self.unknown(&name));
            }
            unavailable.extend(others);
        }
        out.sort_unstable();
        out.dedup();
        Ok((out, unavailable))
    }

    /// Why an image of another architecture is not selected.
    pub fn unavailable(&self, image: &Image) -> String {
        format!(
            "image `{}` is not available for {}: {} has no Dockerfile or Dockerfile.{}",
            image.name,
            self.arch,
            escape(&self.root.join(&image.path).display().to_string()),
            self.arch
        )
    }

    /// Bytes of regular files in an image's directory (nested images
    /// included, as in its build context): a measure of its work.
    pub fn context_bytes(&self, i: ImageIndex) -> u64 {
        walkdir::WalkDir::new(self[i].dir(&self.root))
            .follow_links(false)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    fn unknown(&self, name: &str) -> String {
        let mut candidates: Vec<&str> = self.images.iter().map(|i| i.name.as_str()).collect();
        let groups: Vec<&str> = self.images.iter().map(|i| i.group()).collect();
        candidates.extend(groups);
        candidates.sort_unstable();
        candidates.dedup();
        let mut scored: Vec<(f64, &str)> =
            candidates.iter().map(|c| (strsim::jaro_winkler(name, c), *c)).filter(|(s, _)| *s > 0.7).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let close: Vec<&str> = scored.iter().take(3).map(|(_, c)| *c).collect();
        let name = excerpt(name);
        if close.is_empty() {
            format!("unknown image or group `{name}`: run `cargo xtask list-all-images` to see them")
        } else {
            format!("unknown image or group `{name}`: did you mean {}?", close.join(", "))
        }
    }
}

/// The paths of the images `names` select in any of `catalogs` (one per
/// architecture); an error only when they select none.
pub fn paths_selected(catalogs: &[Catalog], names: &[String]) -> Result<HashSet<String>> {
    let mut paths = HashSet::new();
    let mut first_error = None;
    for catalog in catalogs {
        match catalog.select_available(names) {
            Ok((chosen, _)) => paths.extend(chosen.iter().map(|&i| catalog[i].path.clone())),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) if paths.is_empty() => Err(e),
        _ => Ok(paths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_graph_is_found_once_per_image() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        let catalog = discover(dir.path(), Arch::X86_64).unwrap();
        let (a, b) = (ImageIndex(0), ImageIndex(1));
        assert_eq!(catalog.bases(b, || Ok(vec![a])).unwrap(), [a]);
        assert_eq!(catalog.bases(b, || panic!("found a second time")).unwrap(), [a]);
        catalog.knows_bases(a, &[]);
        assert!(catalog.bases(a, || panic!("told already")).unwrap().is_empty());
        // What is told after the first finding does not change it.
        catalog.knows_bases(b, &[]);
        assert_eq!(catalog.bases(b, || panic!("found a second time")).unwrap(), [a]);
        assert!(catalog.bases(b, || Ok(vec![])).is_ok());
        assert!(format!("{:?}", catalog.bases(a, || bail!("unused"))).contains("[]"));
    }

    #[test]
    fn segments() {
        for ok in ["a", "alpine", "a.b", "a-b", "a--b", "x86", "3.12"] {
            assert!(valid_segment(ok), "{ok}");
        }
        for bad in ["", "A", "a.", ".a", "-a", "a-", "a..b", "a b", "é", "a.-b"] {
            assert!(!valid_segment(bad), "{bad}");
        }
    }

    #[test]
    fn names_in_messages_stay_on_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("new\nline\u{1b}[31m");
        std::fs::create_dir(&bad).unwrap();
        std::fs::write(bad.join("Dockerfile"), "FROM scratch\n").unwrap();
        let catalog = discover_lenient(tmp.path(), Arch::X86_64).unwrap();
        assert_eq!(
            catalog.invalid[0].reason,
            format!(
                "image directory {}/new\\nline\\u{{1b}}[31m is not a valid image name (`new\\nline\\u{{1b}}[31m`): use \
                 lower case letters, digits, and `.` or `-` between them",
                tmp.path().display()
            )
        );
    }
}
