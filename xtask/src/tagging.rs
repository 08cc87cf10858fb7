//! Tagging: the tag each image gets from its inputs, under either scheme.
//! Images are tagged in parallel, and each image's files are hashed in
//! parallel too; only the images being worked on are held in memory, so
//! memory stays bounded however large the tree.

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

use crate::config::{Settings, TagScheme};
use crate::discovery::{walk_error, Catalog, Image};
use crate::dockerfile;
use crate::dockerignore::DockerIgnore;

/// Mixed into every `content` tag: changing it changes every tag.
pub const CONTENT_SCHEME_VERSION: &str = "xtask-content-v2";

pub const TAG_LEN: usize = 16;

/// Tags for `wanted` (catalog indexes), and for the local images they are
/// built `FROM`, since a base's tag is part of the tags built on it.
pub fn tags(catalog: &Catalog, settings: &Settings, wanted: &[usize]) -> Result<HashMap<usize, String>> {
    match settings.tag_scheme {
        TagScheme::Gvisor => gvisor_tags(catalog, wanted),
        TagScheme::Content => content_tags(catalog, settings, wanted),
    }
}

// ---- gvisor: the legacy pipeline, bit for bit -------------------------------

fn gvisor_tags(catalog: &Catalog, wanted: &[usize]) -> Result<HashMap<usize, String>> {
    wanted
        .par_iter()
        .map(|&i| {
            let files = gvisor_files(&catalog.root, &catalog.images[i])?;
            let digests = hash_files(files.iter().map(|(_, abs)| abs.as_path()))?;
            let mut h = Sha256::new();
            for ((rel, _), digest) in files.iter().zip(&digests) {
                h.update(sha256sum_line(digest, rel));
            }
            Ok((i, short(&h.finalize())))
        })
        .collect()
}

/// `find <path> -type f | sort -f -d`, from the images root: regular files
/// only, symlinks neither counted nor followed.
fn gvisor_files(root: &Path, image: &Image) -> Result<Vec<(Vec<u8>, PathBuf)>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(image.dir(root)).follow_links(false) {
        let entry = entry.map_err(walk_error)?;
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root).expect("walk stays under the root");
            files.push((rel.as_os_str().as_bytes().to_vec(), entry.into_path()));
        }
    }
    files.sort_by_cached_key(|(rel, _)| (sort_fd_key(rel), rel.clone()));
    Ok(files)
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

/// An image's own inputs, hashed, and the images it is built on, whose
/// tags complete its own.
struct Own {
    digest: [u8; 32],
    bases: Vec<usize>,
}

fn content_tags(catalog: &Catalog, settings: &Settings, wanted: &[usize]) -> Result<HashMap<usize, String>> {
    // The wanted images and, transitively, their bases: each hashed once.
    let mut own: HashMap<usize, Own> = HashMap::new();
    let mut needed: Vec<usize> = wanted.to_vec();
    while !needed.is_empty() {
        let batch: Vec<(usize, Own)> =
            needed.par_iter().map(|&i| Ok((i, own_digest(catalog, settings, i)?))).collect::<Result<_>>()?;
        needed = batch.iter().flat_map(|(_, o)| o.bases.iter().copied()).collect();
        own.extend(batch);
        needed.sort_unstable();
        needed.dedup();
        needed.retain(|i| !own.contains_key(i));
    }
    let mut tags: HashMap<usize, String> = HashMap::new();
    for &i in wanted {
        content_tag(catalog, i, &own, &mut tags, &mut Vec::new())?;
    }
    Ok(tags)
}

/// The tag: the image's own digest and its bases' tags.
fn content_tag(
    catalog: &Catalog,
    i: usize,
    own: &HashMap<usize, Own>,
    tags: &mut HashMap<usize, String>,
    chain: &mut Vec<usize>,
) -> Result<String> {
    if let Some(tag) = tags.get(&i) {
        return Ok(tag.clone());
    }
    if chain.contains(&i) {
        let names: Vec<&str> = chain.iter().chain([&i]).map(|&j| catalog.images[j].name.as_str()).collect();
        bail!("images are built FROM each other in a cycle: {}", names.join(" -> "));
    }
    chain.push(i);
    let mut h = Sha256::new();
    field(&mut h, "scheme", CONTENT_SCHEME_VERSION.as_bytes());
    field(&mut h, "own", &own[&i].digest);
    for &base in &own[&i].bases {
        let tag = content_tag(catalog, base, own, tags, chain)?;
        field(&mut h, "from", catalog.images[base].name.as_bytes());
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

enum Kind {
    Dir,
    File { exec: bool, abs: PathBuf },
    Symlink(Vec<u8>),
}

/// Everything that goes into an image's build but its bases.
fn own_digest(catalog: &Catalog, settings: &Settings, i: usize) -> Result<Own> {
    let image = &catalog.images[i];
    let entries = build_context(&image.dir(&catalog.root))?;
    let dockerfile = image.dir(&catalog.root).join(&image.dockerfile);
    let files =
        entries.iter().filter_map(|(_, k)| if let Kind::File { abs, .. } = k { Some(abs.as_path()) } else { None });
    let digests = hash_files(std::iter::once(dockerfile.as_path()).chain(files))?;
    let mut digests = digests.iter();
    let mut h = Sha256::new();
    field(&mut h, "arch", settings.arch.as_str().as_bytes());
    field(&mut h, "dockerfile", image.dockerfile.as_bytes());
    field(&mut h, "dockerfile-content", digests.next().expect("the Dockerfile is hashed"));
    for arg in &settings.build_args {
        field(&mut h, "build-arg", arg.as_bytes());
    }
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
    Ok(Own { digest: h.finalize().into(), bases: local_bases(catalog, settings, image)? })
}

/// The build context as the engine sees it: the image directory, less what
/// `.dockerignore` excludes, symlinks recorded and not followed.
fn build_context(dir: &Path) -> Result<Vec<(Vec<u8>, Kind)>> {
    let ignore = DockerIgnore::load(dir)?;
    let mut entries = Vec::new();
    let mut walk = walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name().min_depth(1).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(walk_error)?;
        let rel = entry.path().strip_prefix(dir).expect("walk stays in the image").to_path_buf();
        let ft = entry.file_type();
        if !ignore.is_empty() && ignore.excluded(&rel) {
            if ft.is_dir() && ignore.prunes() {
                walk.skip_current_dir();
            }
            continue;
        }
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())
                .with_context(|| format!("cannot read symlink {}", entry.path().display()))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            let meta = entry.metadata().map_err(walk_error)?;
            Kind::File { exec: meta.permissions().mode() & 0o111 != 0, abs: entry.into_path() }
        } else {
            bail!(
                "{} is not a regular file, directory or symlink: a build context cannot hold it; remove it or list it in .dockerignore",
                entry.path().display()
            );
        };
        entries.push((rel.as_os_str().as_bytes().to_vec(), kind));
    }
    Ok(entries)
}

/// The images of this catalog that `image`'s Dockerfile is built `FROM`, by
/// their local name (`<LOCAL_IMAGE_PREFIX>/<path>[:tag]`).
pub fn local_bases(catalog: &Catalog, settings: &Settings, image: &Image) -> Result<Vec<usize>> {
    let file = image.dir(&catalog.root).join(&image.dockerfile);
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let prefix = format!("{}/", settings.local_prefix);
    let mut bases = Vec::new();
    for reference in from_references(&text, &settings.build_args) {
        let Some(rest) = reference.strip_prefix(&prefix) else { continue };
        let path = strip_tag(rest);
        match catalog.by_path(path) {
            Some(base) => bases.push(base),
            None => bail!(
                "{} is built FROM {reference}, which is not an image for {}: add {}/{path} or fix the FROM line",
                image.name,
                catalog.arch,
                catalog.root.display()
            ),
        }
    }
    bases.sort_unstable();
    bases.dedup();
    Ok(bases)
}

/// The image references of a Dockerfile's `FROM` instructions, global
/// `ARG`s substituted (see [`dockerfile::from_references`]).
fn from_references(text: &str, build_args: &[String]) -> Vec<String> {
    let file = dockerfile::parse(text);
    dockerfile::from_references(&file, &dockerfile::build_args(build_args))
}

fn strip_tag(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rfind(':') {
        Some(colon) if !reference[colon..].contains('/') => &reference[..colon],
        _ => reference,
    }
}

// ---- shared ------------------------------------------------------------------

/// SHA-256 of each file, in order, on all cores, streaming (no file is read
/// into memory whole).
fn hash_files<'a>(paths: impl Iterator<Item = &'a Path>) -> Result<Vec<[u8; 32]>> {
    let paths: Vec<&Path> = paths.collect();
    paths.par_iter().map(|p| hash_file(p)).collect()
}

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
    read().with_context(|| format!("cannot read {}", path.display()))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn short(digest: &[u8]) -> String {
    hex(digest)[..TAG_LEN].to_string()
}

/// The tag of a multi-architecture index: its members' tags, hashed. With
/// the `gvisor` scheme every architecture has the same tag, which is then the
/// index's tag too.
pub fn index_tag(members: &[(crate::config::Arch, String)]) -> String {
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
        assert_eq!(from_references(text, &[]), vec!["gvisor.dev/images/basic/busybox:latest", "scratch"]);
        assert_eq!(strip_tag("localhost:5000/a/b:t"), "localhost:5000/a/b");
        assert_eq!(strip_tag("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(strip_tag("a/b@sha256:00"), "a/b");
    }
}
