//! Shared by the catalog and make tests: temporary image trees, the library
//! with settings as the binary would resolve them, a seeded generator of
//! trees full of awkward names, the legacy shell pipelines as oracles, and
//! the binary (from `support`'s environment) set up for a tree.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::bare_xtask;
use xtask::catalog::discovery::discover;
use xtask::config::{FileConfig, Overrides, Settings};

// ---- temporary trees ---------------------------------------------------------

/// A temporary directory holding an images root at `<base>/images`, and room
/// beside it for settings files and copies.
pub struct Tree {
    dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        fs::create_dir(&root).unwrap();
        Tree { dir, root }
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a file under the root (mode 0644), creating its parents.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> &Tree {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        self
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) -> &Tree {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn mkdir(&self, rel: impl AsRef<Path>) -> &Tree {
        fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    /// `ln -s target <root>/rel`
    pub fn symlink(&self, target: impl AsRef<Path>, rel: impl AsRef<Path>) -> &Tree {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
        self
    }

    pub fn remove(&self, rel: impl AsRef<Path>) -> &Tree {
        let path = self.path(rel);
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
        self
    }

    pub fn mkfifo(&self, rel: impl AsRef<Path>) -> &Tree {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
        self
    }

    /// A settings file beside the root; returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.base().join("images.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

/// `cp -a` of a tree's images root into a fresh temporary tree.
pub fn copy_tree(tree: &Tree) -> Tree {
    let copy = Tree::new();
    fs::remove_dir(&copy.root).unwrap();
    let status = Command::new("cp").arg("-a").arg(&tree.root).arg(&copy.root).status().unwrap();
    assert!(status.success());
    copy
}

// ---- the library, with settings as the binary would resolve them -------------

pub fn overrides(root: &Path, arch: &str, scheme: &str) -> Overrides {
    Overrides {
        images_dir: Some(root.to_path_buf()),
        arch: Some(arch.parse().unwrap()),
        tag_scheme: Some(scheme.parse().unwrap()),
        ..Overrides::default()
    }
}

pub fn resolve(root: &Path, o: Overrides) -> Settings {
    Settings::resolve(FileConfig::default(), o, root, root).unwrap()
}

pub fn settings(root: &Path, arch: &str, scheme: &str) -> Settings {
    resolve(root, overrides(root, arch, scheme))
}

/// Name -> tag of every image.
pub fn all_tags(settings: &Settings) -> BTreeMap<String, String> {
    let catalog = discover(&settings.images_dir, settings.arch).unwrap();
    let wanted: Vec<_> = catalog.indices().collect();
    let tags = xtask::catalog::tagging::tags(&catalog, settings, &wanted).unwrap();
    wanted.iter().map(|i| (catalog[*i].name.clone(), tags[i].clone())).collect()
}

/// The `content` tag of one image, for `arch`.
pub fn content_tag(root: &Path, arch: &str, name: &str) -> String {
    tag_with(root, overrides(root, arch, "content"), name)
}

/// The tag of one image, computing no other tag than those of its bases (an
/// invalid directory elsewhere in the tree does not stop it).
pub fn tag_with(root: &Path, o: Overrides, name: &str) -> String {
    let settings = resolve(root, o);
    let catalog = xtask::catalog::discovery::discover_lenient(&settings.images_dir, settings.arch).unwrap();
    let i = catalog.index_of(name).unwrap_or_else(|| panic!("no image {name} in {:?}", catalog.images));
    xtask::catalog::tagging::tags(&catalog, &settings, &[i]).unwrap()[&i].clone()
}

pub fn names(root: &Path, arch: &str) -> Vec<String> {
    let catalog = discover(root, arch.parse().unwrap()).unwrap();
    catalog.images.iter().map(|i| i.name.clone()).collect()
}

pub fn assert_tag_format(tag: &str) {
    assert!(
        tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "tag {tag:?} is not 16 lower-case hex digits"
    );
}

// ---- the legacy pipelines ------------------------------------------------------

/// The legacy Makefile's tag of each image path, computed by its own shell
/// pipeline from inside the images root in the C locale. Keyed by image name.
pub fn legacy_tags(root: &Path, paths: &[String]) -> BTreeMap<String, String> {
    const SCRIPT: &str = r#"
set -euo pipefail
cd "$1"
shift
for p in "$@"; do
    printf '%s %s\n' "$p" "$(find "$p" -type f | sort -f -d | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16)"
done
"#;
    let out = bash(SCRIPT, root, paths);
    let tags: BTreeMap<String, String> = out
        .lines()
        .map(|line| {
            let (path, tag) = line.split_once(' ').unwrap();
            (path.replace('/', "_"), tag.to_string())
        })
        .collect();
    assert_eq!(tags.len(), paths.len(), "{out}");
    tags
}

/// The legacy discovery: image paths for `arch`, sorted and without repeats.
pub fn legacy_paths(root: &Path, arch: &str) -> Vec<String> {
    const SCRIPT: &str = r#"
set -euo pipefail
cd "$1"
find . -name Dockerfile -o -name "Dockerfile.$2" | xargs -n 1 dirname | sed 's|^\./||' | sort -u
"#;
    bash(SCRIPT, root, &[arch.to_string()]).lines().map(String::from).collect()
}

fn bash(script: &str, root: &Path, args: &[String]) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("oracle")
        .arg(root)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "legacy pipeline failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

// ---- the binary ------------------------------------------------------------------

/// The binary ([`bare_xtask`]) with a settings file that sets nothing, so
/// built-in defaults apply, and the tree's images root.
pub fn xtask(tree: &Tree) -> Command {
    let mut cmd = bare_xtask();
    let empty = tree.base().join("empty.toml");
    fs::write(&empty, "").unwrap();
    cmd.env("IMAGES_CONFIG", empty).env("IMAGES_DIR", &tree.root);
    cmd
}

// ---- seeded generator of awkward trees ----------------------------------------------

pub use crate::rng::Rng;

/// Punctuation that the legacy pipeline passes through intact: no blanks,
/// quotes or backslashes, which `xargs` would split or interpret.
const PUNCT: &[&str] = &[
    "!", "#", "$", "%", "&", "(", ")", "*", "+", ",", "-", ".", ":", ";", "<", "=", ">", "?", "@", "[", "]", "^", "_",
    "{", "|", "}", "~", "`",
];
const NON_ASCII: &[&str] = &["é", "É", "ß", "Ω", "日本", "ü", "ñ", "Ä", "ø", "ﬁ"];
const PREFIXES: &[&str] = &["", "", "", "", "_", "__", ".", "._", "-", "~"];

/// Which Dockerfiles an image directory holds.
#[derive(Clone, Copy, Debug)]
pub enum Dockerfiles {
    Plain,
    PlainAndX86,
    PlainAndArm,
    X86Only,
    ArmOnly,
    BothArches,
    PlainAndForeignSuffix,
    /// `Dockerfile` is a symlink to `Dockerfile.real`.
    PlainSymlink,
}

const DOCKERFILE_KINDS: &[Dockerfiles] = &[
    Dockerfiles::Plain,
    Dockerfiles::Plain,
    Dockerfiles::Plain,
    Dockerfiles::PlainAndX86,
    Dockerfiles::PlainAndArm,
    Dockerfiles::X86Only,
    Dockerfiles::ArmOnly,
    Dockerfiles::BothArches,
    Dockerfiles::PlainAndForeignSuffix,
    Dockerfiles::PlainSymlink,
];

/// What a generated tree holds, for tests to check that it is not trivial.
#[derive(Debug, Default)]
pub struct Shape {
    pub image_paths: Vec<String>,
    pub files: usize,
    pub symlinks: usize,
}

/// A tree of images full of awkward file names, symlinks, executables, empty
/// files, nested directories and nested images, for `seed`. With `fifo`, one
/// image also holds a FIFO (which only the gvisor scheme tolerates).
pub fn awkward_tree(seed: u64, fifo: bool) -> (Tree, Shape) {
    let tree = Tree::new();
    let mut rng = Rng::new(seed);
    let mut shape = Shape::default();
    let mut used: BTreeSet<String> = BTreeSet::new();

    // Image directories: groups that may or may not be images themselves,
    // images in them, images nested in images, and top-level images.
    let mut image_paths: Vec<String> = Vec::new();
    for _ in 0..rng.range(2, 3) {
        let group = fresh_segment(&mut rng, &mut used);
        if rng.percent(30) {
            image_paths.push(group.clone());
        }
        for _ in 0..rng.range(1, 3) {
            let image = format!("{group}/{}", fresh_segment(&mut rng, &mut used));
            image_paths.push(image.clone());
            if rng.percent(40) {
                image_paths.push(format!("{image}/{}", fresh_segment(&mut rng, &mut used)));
            }
        }
    }
    for _ in 0..rng.range(1, 2) {
        image_paths.push(fresh_segment(&mut rng, &mut used));
    }
    // Always at least one image per architecture only, one with a symlinked
    // Dockerfile, and one nested image.
    let nested = format!("{}/{}", image_paths[0], fresh_segment(&mut rng, &mut used));
    image_paths.push(nested);

    let llama = format!("{}/{}", image_paths[0], fresh_segment(&mut rng, &mut used));
    // Made first, so that the awkward names filled in later never take them.
    for path in image_paths.iter().chain([&llama]) {
        tree.mkdir(path);
    }

    let forced = [Dockerfiles::X86Only, Dockerfiles::ArmOnly, Dockerfiles::PlainSymlink, Dockerfiles::Plain];
    let fifo_at = rng.below(image_paths.len());
    for (n, path) in image_paths.iter().enumerate() {
        let kind = forced.get(n).copied().unwrap_or_else(|| *rng.pick(DOCKERFILE_KINDS));
        write_dockerfiles(&tree, path, kind, &mut rng, &mut shape);
        fill(&tree, Path::new(path), 0, &mut rng, &mut shape);
        if fifo && n == fifo_at {
            tree.mkfifo(format!("{path}/fifo"));
        }
    }

    // Not images: a directory with only a Dockerfile of a foreign suffix, and
    // one with only a `Dockerfile.*` look-alike, each with files of their own.
    tree.write(format!("{llama}/Dockerfile.llama-2-7b"), "FROM scratch\n");
    fill(&tree, Path::new(&llama), 1, &mut rng, &mut shape);
    let lookalike = fresh_segment(&mut rng, &mut used);
    tree.write(format!("{lookalike}/Dockerfile.bak"), "FROM scratch\n");
    tree.write(format!("{lookalike}/dockerfile"), "FROM scratch\n");

    image_paths.sort();
    shape.image_paths = image_paths;
    (tree, shape)
}

fn write_dockerfiles(tree: &Tree, path: &str, kind: Dockerfiles, rng: &mut Rng, shape: &mut Shape) {
    let body = |rng: &mut Rng| format!("FROM scratch\nCOPY . /{}\n", rng.next());
    let files: &[&str] = match kind {
        Dockerfiles::Plain => &["Dockerfile"],
        Dockerfiles::PlainAndX86 => &["Dockerfile", "Dockerfile.x86_64"],
        Dockerfiles::PlainAndArm => &["Dockerfile", "Dockerfile.aarch64"],
        Dockerfiles::X86Only => &["Dockerfile.x86_64"],
        Dockerfiles::ArmOnly => &["Dockerfile.aarch64"],
        Dockerfiles::BothArches => &["Dockerfile.x86_64", "Dockerfile.aarch64"],
        Dockerfiles::PlainAndForeignSuffix => &["Dockerfile", "Dockerfile.llama-2-7b"],
        Dockerfiles::PlainSymlink => {
            tree.write(format!("{path}/Dockerfile.real"), body(rng));
            tree.symlink("Dockerfile.real", format!("{path}/Dockerfile"));
            shape.files += 1;
            shape.symlinks += 1;
            return;
        }
    };
    for file in files {
        tree.write(format!("{path}/{file}"), body(rng));
        shape.files += 1;
    }
}

/// A valid image directory name not used before in this tree.
fn fresh_segment(rng: &mut Rng, used: &mut BTreeSet<String>) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    loop {
        let mut s = String::new();
        for part in 0..rng.range(1, 3) {
            if part > 0 {
                s.push_str(rng.pick::<&str>(&[".", "-", "--"]));
            }
            for _ in 0..rng.range(1, 5) {
                s.push(*rng.pick(ALNUM) as char);
            }
        }
        if used.insert(s.clone()) {
            return s;
        }
    }
}

fn awkward_name(rng: &mut Rng) -> String {
    loop {
        let mut s = rng.pick(PREFIXES).to_string();
        for _ in 0..rng.range(1, 8) {
            match rng.below(20) {
                0..=9 => {
                    let c = (b'a' + rng.below(26) as u8) as char;
                    s.push(if rng.percent(40) { c.to_ascii_uppercase() } else { c });
                }
                10..=12 => s.push((b'0' + rng.below(10) as u8) as char),
                13..=16 => s.push_str(rng.pick::<&str>(PUNCT)),
                _ => s.push_str(rng.pick::<&str>(NON_ASCII)),
            }
        }
        if s != "." && s != ".." && !s.starts_with("Dockerfile") {
            return s;
        }
    }
}

/// A name close to `name` under `sort -f -d`: same letters in another case,
/// or punctuation added, so that sort keys tie and whole-line order decides.
fn twin(rng: &mut Rng, name: &str) -> String {
    match rng.below(4) {
        0 => name
            .chars()
            .map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect(),
        1 => format!("_{name}"),
        2 => format!("{name}{}", rng.pick(PUNCT)),
        _ => {
            let cut = name.char_indices().map(|(i, _)| i).nth(rng.below(name.chars().count())).unwrap_or(0);
            format!("{}{}{}", &name[..cut], rng.pick(&[".", "-", "_", ","]), &name[cut..])
        }
    }
}

/// Fills directory `dir` (relative to the root) with awkward entries.
fn fill(tree: &Tree, dir: &Path, depth: usize, rng: &mut Rng, shape: &mut Shape) {
    let abs = tree.path(dir);
    fs::create_dir_all(&abs).unwrap();
    let mut names: Vec<String> = Vec::new();
    let fresh = |rng: &mut Rng, names: &mut Vec<String>| loop {
        let name = if !names.is_empty() && rng.percent(35) {
            let base = rng.pick(names).clone();
            twin(rng, &base)
        } else {
            awkward_name(rng)
        };
        if !names.contains(&name) && fs::symlink_metadata(abs.join(&name)).is_err() {
            names.push(name.clone());
            return name;
        }
    };

    let mut files: Vec<String> = Vec::new();
    for _ in 0..rng.range(2, 7) {
        let name = fresh(rng, &mut names);
        let len = if rng.percent(20) { 0 } else { rng.range(1, 3000) };
        let contents = rng.bytes(len);
        tree.write(dir.join(&name), contents);
        if rng.percent(30) {
            tree.chmod(dir.join(&name), 0o755);
        }
        files.push(name);
        shape.files += 1;
    }
    if rng.percent(15) {
        // Not UTF-8: the legacy pipeline hashes the bytes as they are.
        let name = OsStr::from_bytes(b"raw\xff\xfe-\xe9t\xe9");
        if fs::symlink_metadata(abs.join(name)).is_err() {
            fs::write(abs.join(name), rng.bytes(100)).unwrap();
            shape.files += 1;
        }
    }
    for _ in 0..rng.range(1, 3) {
        let name = fresh(rng, &mut names);
        let target = match rng.below(5) {
            0 | 1 => rng.pick(&files).clone(),
            2 => "..".to_string(),
            3 => "/nonexistent/target".to_string(),
            _ => name.clone(), // a loop
        };
        tree.symlink(target, dir.join(&name));
        shape.symlinks += 1;
    }
    if depth < 3 {
        for _ in 0..rng.range(0, 2) {
            let name = fresh(rng, &mut names);
            fill(tree, &dir.join(name), depth + 1, rng, shape);
        }
    }
}
