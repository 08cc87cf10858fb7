//! Tagging: the tag each image gets from its inputs, under either scheme.
//! Images are tagged in parallel, and each image's files are hashed in
//! parallel too; only the images being worked on are held in memory, so
//! memory stays bounded however large the tree.
//!
//! The inputs are read through a [`Source`]: the images root on disk
//! ([`Fs`]), or the tree of a git revision (`crate::git::history`), so that a
//! revision's tags are computed from its objects exactly as a checkout of it
//! would be tagged.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::catalog::by_arch;
use crate::catalog::context::{self, ContextEntry, Inclusion};
use crate::catalog::discovery::{walk_error, Catalog, Image};
use crate::catalog::dockerfile;
use crate::catalog::dockerignore::DockerIgnore;
use crate::catalog::image_files;
use crate::config::{Settings, TagScheme};
use crate::model::Arch;
use crate::model::{escape, excerpt, hex, ImageIndex, Parts};

/// Mixed into every `content` tag: changing it changes every tag.
pub const CONTENT_SCHEME_VERSION: &str = "xtask-content-v2";

pub const TAG_LEN: usize = 16;

/// Where an images root is read from. Paths are relative to the images
/// root, `/`-separated; the image directories given are those discovery
/// found.
pub trait Source: Sync {
    /// A file to hash: a path on disk, a blob in git.
    type File: Send + Sync;

    /// `find <dir> -type f`: the regular files under the image directory
    /// `dir`, as paths relative to the root, in any order; symlinks are
    /// neither counted nor followed.
    fn regular_files(&self, dir: &str) -> Result<Vec<(Vec<u8>, Self::File)>>;

    /// The build context of the image at `dir` as the engine sees it: every
    /// path below it (relative to it) less what `ignore` excludes, in the
    /// order of a walk by file name; symlinks recorded, not followed.
    fn context(&self, dir: &str, ignore: &DockerIgnore) -> Result<BuildContext<Self::File>>;

    /// The content of an image's own file (`<image>/<name>`: a Dockerfile,
    /// a `.dockerignore`), following symlinks; on disk, only to a regular
    /// file in the image directory, no larger than [`image_files::MAX_BYTES`].
    fn read(&self, path: &str) -> Result<Vec<u8>>;

    /// Like [`Source::read`]; `None` when there is none.
    fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// A file to hash, following symlinks.
    fn file(&self, path: &str) -> Result<Self::File>;

    /// SHA-256 of each file's content, in order.
    fn digests(&self, files: &[&Self::File]) -> Result<Vec<[u8; 32]>>;

    /// A path as messages show it.
    fn shown(&self, path: &str) -> String;
}

/// A build context: each path, relative to the image directory, and what is there.
pub type BuildContext<F> = Vec<(Vec<u8>, Kind<F>)>;

/// The local images a Dockerfile is built `FROM`: each reference as written,
/// and the image path it names.
pub type Bases = Vec<(String, String)>;

/// What a path of a build context is.
pub enum Kind<F> {
    Dir,
    File { exec: bool, file: F },
    Symlink(Vec<u8>),
}

/// The images root on disk.
pub struct Fs<'a> {
    pub root: &'a Path,
}

impl Source for Fs<'_> {
    type File = PathBuf;

    fn regular_files(&self, dir: &str) -> Result<Vec<(Vec<u8>, PathBuf)>> {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(self.root.join(dir)).follow_links(false) {
            let entry = entry.map_err(walk_error)?;
            if entry.file_type().is_file() {
                let rel = entry.path().strip_prefix(self.root).expect("walk stays under the root");
                files.push((rel.as_os_str().as_bytes().to_vec(), entry.into_path()));
            }
        }
        Ok(files)
    }

    fn context(&self, dir: &str, ignore: &DockerIgnore) -> Result<BuildContext<PathBuf>> {
        let mut entries = Vec::new();
        for walked in context::walk(&self.root.join(dir), ignore) {
            let ContextEntry { rel, entry, inclusion } = walked?;
            if inclusion != Inclusion::Included {
                continue;
            }
            let ft = entry.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                let target = std::fs::read_link(entry.path())
                    .with_context(|| format!("cannot read symlink {}", escape(&entry.path().display().to_string())))?;
                Kind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else if ft.is_file() {
                let meta = entry.metadata().map_err(walk_error)?;
                Kind::File { exec: meta.permissions().mode() & 0o111 != 0, file: entry.into_path() }
            } else {
                bail!(
                    "{} is not a regular file, directory or symlink: a build context cannot hold it; remove it or list it in .dockerignore",
                    escape(&entry.path().display().to_string())
                );
            };
            entries.push((rel.as_os_str().as_bytes().to_vec(), kind));
        }
        Ok(entries)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_if_present(path)?
            .with_context(|| format!("cannot read {}: No such file or directory", self.shown(path)))
    }

    fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        image_files::read(&self.root.join(dir), name)
    }

    fn file(&self, path: &str) -> Result<PathBuf> {
        Ok(self.root.join(path))
    }

    fn digests(&self, files: &[&PathBuf]) -> Result<Vec<[u8; 32]>> {
        files.par_iter().map(|p| hash_file(p)).collect()
    }

    fn shown(&self, path: &str) -> String {
        escape(&self.root.join(path).display().to_string())
    }
}

/// Tags for `wanted` (catalog indexes), and for the local images they are
/// built `FROM`, since a base's tag is part of the tags built on it.
pub fn tags(catalog: &Catalog, settings: &Settings, wanted: &[ImageIndex]) -> Result<HashMap<ImageIndex, String>> {
    let src = Fs { root: &catalog.root };
    match settings.tag_scheme {
        TagScheme::Gvisor => gvisor_tags(&src, catalog, wanted),
        TagScheme::Content => content_tags(&src, catalog, settings, wanted),
    }
}

/// Every image's tag in each of several catalogs of one images root (one
/// per architecture), each image directory read and hashed once whatever
/// the number of architectures it is an image for; the first failure fails
/// them all.
pub fn tags_by_arch(settings: &Settings, catalogs: &[&Catalog]) -> Result<Vec<HashMap<ImageIndex, String>>> {
    let Some(first) = catalogs.first() else { return Ok(Vec::new()) };
    let src = Fs { root: &first.root };
    let by_arch::Tags { tags, first_failure } = by_arch::tags(
        settings.tag_scheme,
        catalogs,
        |dir| gvisor_tag(&src, dir),
        |dir, wants| {
            let own = own_inputs(&src, settings, dir, wants)?;
            Ok(wants.iter().zip(own).map(|((a, _), o)| (*a, o.map_err(|e| format!("{e:#}")))).collect())
        },
    );
    if let Some(e) = first_failure {
        return Err(anyhow::anyhow!(e));
    }
    Ok(tags.into_iter().map(|t| t.into_iter().map(|(i, tag)| (i, tag.expect("no image failed"))).collect()).collect())
}

// ---- gvisor: the legacy pipeline, bit for bit -------------------------------

fn gvisor_tags<S: Source>(src: &S, catalog: &Catalog, wanted: &[ImageIndex]) -> Result<HashMap<ImageIndex, String>> {
    wanted.par_iter().map(|&i| Ok((i, gvisor_tag(src, &catalog[i].path)?))).collect()
}

/// The legacy tag of the image at `path`: `find <path> -type f | sort -f -d
/// | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16`, from the images root.
pub fn gvisor_tag<S: Source>(src: &S, path: &str) -> Result<String> {
    let mut files = src.regular_files(path)?;
    files.sort_by_cached_key(|(rel, _)| (sort_fd_key(rel), rel.clone()));
    let handles: Vec<&S::File> = files.iter().map(|(_, f)| f).collect();
    let digests = src.digests(&handles)?;
    let mut h = Sha256::new();
    for ((rel, _), digest) in files.iter().zip(&digests) {
        h.update(sha256sum_line(digest, rel));
    }
    Ok(short(&h.finalize()))
}

/// GNU `sort -f -d` in the C locale: compare only letters, digits and blanks,
/// folded to upper case; equal keys fall back to comparing whole lines bytewise.
pub fn sort_fd(a: &[u8], b: &[u8]) -> Ordering {
    sort_fd_key(a).cmp(&sort_fd_key(b)).then_with(|| a.cmp(b))
}

/// The part of a line `sort -f -d` compares first.
fn sort_fd_key(line: &[u8]) -> Vec<u8> {
    line.iter()
        .filter(|c| c.is_ascii_alphanumeric() || **c == b' ' || **c == b'\t')
        .map(u8::to_ascii_uppercase)
        .collect()
}

/// One line of `sha256sum` output, escaped as GNU coreutils does for names
/// holding a backslash or a newline.
fn sha256sum_line(digest: &[u8; 32], name: &[u8]) -> Vec<u8> {
    let escape = name.iter().any(|c| *c == b'\\' || *c == b'\n');
    let mut line = Vec::with_capacity(name.len() + 68);
    if escape {
        line.push(b'\\');
    }
    line.extend_from_slice(hex(digest).as_bytes());
    line.extend_from_slice(b"  ");
    for &c in name {
        match c {
            b'\\' if escape => line.extend_from_slice(b"\\\\"),
            b'\n' if escape => line.extend_from_slice(b"\\n"),
            c => line.push(c),
        }
    }
    line.push(b'\n');
    line
}

// ---- content: the build context, the build's settings, and its bases --------

/// An image's own inputs for one architecture, hashed, and the local
/// images its Dockerfile is built `FROM`: each as written and by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Own {
    pub digest: [u8; 32],
    pub bases: Bases,
}

/// [`Own`] with the bases found in a catalog (indexes, sorted): what the
/// tag is made of.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub digest: [u8; 32],
    pub bases: Vec<ImageIndex>,
}

fn content_tags<S: Source>(
    src: &S,
    catalog: &Catalog,
    settings: &Settings,
    wanted: &[ImageIndex],
) -> Result<HashMap<ImageIndex, String>> {
    // The wanted images and, transitively, their bases: each hashed once.
    let mut own: HashMap<ImageIndex, Resolved> = HashMap::new();
    let mut needed: Vec<ImageIndex> = wanted.to_vec();
    while !needed.is_empty() {
        let batch: Vec<(ImageIndex, Resolved)> = needed
            .par_iter()
            .map(|&i| {
                let image = &catalog[i];
                let mut o = own_inputs(src, settings, &image.path, &[(settings.arch, &image.dockerfile)])?;
                let o = o.pop().expect("one architecture asked for")?;
                let bases = resolve_bases(catalog, image, &o.bases)?;
                catalog.knows_bases(i, &bases);
                Ok((i, Resolved { digest: o.digest, bases }))
            })
            .collect::<Result<_>>()?;
        needed = batch.iter().flat_map(|(_, o)| o.bases.iter().copied()).collect();
        own.extend(batch);
        needed.sort_unstable();
        needed.dedup();
        needed.retain(|i| !own.contains_key(i));
    }
    let mut tags: HashMap<ImageIndex, String> = HashMap::new();
    for &i in wanted {
        content_tag(catalog, i, &own, &mut tags, &mut Vec::new())?;
    }
    Ok(tags)
}

/// The tag: the image's own digest and its bases' tags.
pub fn content_tag(
    catalog: &Catalog,
    i: ImageIndex,
    own: &HashMap<ImageIndex, Resolved>,
    tags: &mut HashMap<ImageIndex, String>,
    chain: &mut Vec<ImageIndex>,
) -> Result<String> {
    if let Some(tag) = tags.get(&i) {
        return Ok(tag.clone());
    }
    if chain.contains(&i) {
        let names: Vec<&str> = chain.iter().chain([&i]).map(|&j| catalog[j].name.as_str()).collect();
        bail!("images are built FROM each other in a cycle: {}", names.join(" -> "));
    }
    let Some(resolved) = own.get(&i) else {
        bail!("the inputs of {} could not be read", catalog[i].name);
    };
    chain.push(i);
    let mut h = Sha256::new();
    field(&mut h, "scheme", CONTENT_SCHEME_VERSION.as_bytes());
    field(&mut h, "own", &resolved.digest);
    for &base in &resolved.bases {
        let tag = content_tag(catalog, base, own, tags, chain)?;
        field(&mut h, "from", catalog[base].name.as_bytes());
        field(&mut h, "from-tag", tag.as_bytes());
    }
    chain.pop();
    let tag = short(&h.finalize());
    tags.insert(i, tag.clone());
    Ok(tag)
}

/// A named, length-prefixed value: no two sequences of fields hash alike.
fn field(h: &mut Sha256, name: &str, value: &[u8]) {
    h.update(name.as_bytes());
    h.update([0]);
    h.update((value.len() as u64).to_le_bytes());
    h.update(value);
}

/// Everything that goes into the build of the image at `path` but its
/// bases, for each (architecture, Dockerfile) asked for: the build context
/// is read and hashed once for all of them. A Dockerfile that cannot be
/// read fails only what asked for it.
pub fn own_inputs<S: Source>(
    src: &S,
    settings: &Settings,
    path: &str,
    wants: &[(Arch, &str)],
) -> Result<Vec<Result<Own>>> {
    let ignore_file = format!("{path}/.dockerignore");
    let ignore = match src.read_if_present(&ignore_file)? {
        Some(bytes) => {
            image_files::within_limit(&bytes, &src.shown(&ignore_file))?;
            DockerIgnore::parse(&String::from_utf8_lossy(&bytes))
                .with_context(|| format!("invalid pattern in {}", src.shown(&ignore_file)))?
        }
        None => DockerIgnore::default(),
    };
    let entries = src.context(path, &ignore)?;
    let mut dockerfiles: Vec<&str> = wants.iter().map(|(_, d)| *d).collect();
    dockerfiles.sort_unstable();
    dockerfiles.dedup();
    // Each Dockerfile: its file and the bases it names, or why not.
    let read: Vec<Result<(S::File, Bases)>> = dockerfiles
        .iter()
        .map(|d| {
            let file = format!("{path}/{d}");
            let bases = from_bases(&src.read(&file)?, &src.shown(&file), settings)?;
            Ok((src.file(&file)?, bases))
        })
        .collect();
    let files = entries.iter().filter_map(|(_, k)| if let Kind::File { file, .. } = k { Some(file) } else { None });
    let readable: Vec<&S::File> = read.iter().filter_map(|r| r.as_ref().ok().map(|(f, _)| f)).collect();
    let all: Vec<&S::File> = readable.iter().copied().chain(files).collect();
    let digests = src.digests(&all)?;
    let (dockerfile_digests, file_digests) = digests.split_at(readable.len());
    let mut dockerfile_digests = dockerfile_digests.iter();
    let read: Vec<Result<([u8; 32], &Bases), String>> = read
        .iter()
        .map(|r| match r {
            Ok((_, bases)) => Ok((*dockerfile_digests.next().expect("hashed"), bases)),
            Err(e) => Err(format!("{e:#}")),
        })
        .collect();
    let mut out = Vec::with_capacity(wants.len());
    for (arch, dockerfile) in wants {
        let d = dockerfiles.iter().position(|x| x == dockerfile).expect("listed above");
        let (dockerfile_digest, bases) = match &read[d] {
            Ok(r) => *r,
            Err(e) => {
                out.push(Err(anyhow::anyhow!("{e}")));
                continue;
            }
        };
        let mut h = Sha256::new();
        field(&mut h, "arch", arch.as_str().as_bytes());
        field(&mut h, "dockerfile", dockerfile.as_bytes());
        field(&mut h, "dockerfile-content", &dockerfile_digest);
        for arg in &settings.build_args {
            field(&mut h, "build-arg", arg.as_bytes());
        }
        let mut digests = file_digests.iter();
        for (rel, kind) in &entries {
            match kind {
                Kind::Dir => field(&mut h, "dir", rel),
                Kind::File { exec, .. } => {
                    field(&mut h, if *exec { "exec" } else { "file" }, rel);
                    field(&mut h, "content", digests.next().expect("every file is hashed"));
                }
                Kind::Symlink(target) => {
                    field(&mut h, "symlink", rel);
                    field(&mut h, "target", target);
                }
            }
        }
        out.push(Ok(Own { digest: h.finalize().into(), bases: bases.clone() }));
    }
    Ok(out)
}

/// The images of this catalog that `image`'s Dockerfile is built `FROM`, by
/// their local name (`<LOCAL_IMAGE_PREFIX>/<path>[:tag]`).
/// Read from the Dockerfile only when the catalog does not know them yet
/// (computing a tag reads it too, and tells the catalog).
pub fn local_bases<'c>(catalog: &'c Catalog, settings: &Settings, i: ImageIndex) -> Result<&'c [ImageIndex]> {
    catalog.bases(i, || {
        let image = &catalog[i];
        let src = Fs { root: &catalog.root };
        let file = format!("{}/{}", image.path, image.dockerfile);
        let bases = from_bases(&src.read(&file)?, &src.shown(&file), settings)?;
        resolve_bases(catalog, image, &bases)
    })
}

/// The `FROM` references of a Dockerfile (`shown` in messages) that name a
/// local image (`<LOCAL_IMAGE_PREFIX>/<path>[:tag]`), each with the path it
/// names.
fn from_bases(bytes: &[u8], shown: &str, settings: &Settings) -> Result<Bases> {
    image_files::within_limit(bytes, shown)?;
    let text = String::from_utf8_lossy(bytes);
    let prefix = format!("{}/", settings.local_prefix);
    let references = from_references(&text, &settings.build_args)
        .map_err(|problem| anyhow::anyhow!("{shown}:{}: {}", problem.line, problem.message))?;
    Ok(references
        .into_iter()
        .filter_map(|reference| {
            let rest = reference.strip_prefix(&prefix)?;
            Some((reference.to_string(), Parts::of(rest).name.to_string()))
        })
        .collect())
}

/// The catalog indexes of the bases of `image`, sorted; a base that is not
/// an image of the catalog is an error.
pub fn resolve_bases(catalog: &Catalog, image: &Image, bases: &Bases) -> Result<Vec<ImageIndex>> {
    let mut found = Vec::new();
    for (reference, path) in bases {
        match catalog.by_path(path) {
            Some(base) => found.push(base),
            None => bail!(
                "{} is built FROM {}, which is not an image for {}: add {}/{} or fix the FROM line",
                image.name,
                excerpt(reference),
                catalog.arch,
                escape(&catalog.root.display().to_string()),
                excerpt(path)
            ),
        }
    }
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

/// The image references of a Dockerfile's `FROM` instructions, global
/// `ARG`s substituted (see [`dockerfile::from_references`]).
fn from_references(text: &str, build_args: &[String]) -> Result<Vec<String>, dockerfile::Problem> {
    let file = dockerfile::parse(text);
    dockerfile::from_references(&file, &dockerfile::build_args(build_args))
}

// ---- shared ------------------------------------------------------------------

/// SHA-256 of a file, streaming (no file is read into memory whole).
pub fn hash_file(path: &Path) -> Result<[u8; 32]> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 * 1024]);
    }
    let read = || -> std::io::Result<[u8; 32]> {
        let mut file = File::open(path)?;
        let mut h = Sha256::new();
        BUF.with_borrow_mut(|buf| loop {
            match file.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        })?;
        Ok(h.finalize().into())
    };
    read().with_context(|| format!("cannot read {}", escape(&path.display().to_string())))
}

fn short(digest: &[u8]) -> String {
    hex(digest)[..TAG_LEN].to_string()
}

/// The tag of a multi-architecture index: its members' tags, hashed. With
/// the `gvisor` scheme every architecture has the same tag, which is then the
/// index's tag too.
pub fn index_tag(members: &[(crate::model::Arch, String)]) -> String {
    let tags: Vec<&str> = members.iter().map(|(_, r)| r.rsplit(':').next().unwrap_or(r)).collect();
    if tags.windows(2).all(|w| w[0] == w[1]) && !tags.is_empty() {
        return tags[0].to_string();
    }
    let mut h = Sha256::new();
    h.update(b"xtask-index-v1");
    for (arch, reference) in members {
        h.update([0]);
        h.update(arch.as_str());
        h.update([0]);
        h.update(reference.rsplit(':').next().unwrap_or(reference));
    }
    hex(&h.finalize())[..TAG_LEN].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_fd_folds_and_ignores_punctuation() {
        let mut names: Vec<&[u8]> = vec![b"b", b"_a", b"A", b"a", b".c", b"a.b", b"ab", b"a b"];
        names.sort_by(|a, b| sort_fd(a, b));
        let want: Vec<&[u8]> = vec![b"A", b"_a", b"a", b"a b", b"a.b", b"ab", b"b", b".c"];
        assert_eq!(names, want);
    }

    #[test]
    fn escaped_sha256sum_lines() {
        let d = [0u8; 32];
        assert_eq!(sha256sum_line(&d, b"a/b"), format!("{}  a/b\n", "0".repeat(64)).into_bytes());
        assert_eq!(sha256sum_line(&d, b"a\\b\nc"), format!("\\{}  a\\\\b\\nc\n", "0".repeat(64)).into_bytes());
    }

    #[test]
    fn references() {
        let text = "ARG X\nFROM --platform=linux/amd64 gvisor.dev/images/basic/busybox:latest AS b\n from scratch\nRUN from x\n";
        assert_eq!(from_references(text, &[]).unwrap(), vec!["gvisor.dev/images/basic/busybox:latest", "scratch"]);
        assert_eq!(Parts::of("localhost:5000/a/b:t").name, "localhost:5000/a/b");
        assert_eq!(Parts::of("localhost:5000/a/b").name, "localhost:5000/a/b");
        assert_eq!(Parts::of("a/b@sha256:00").name, "a/b");
    }
}
