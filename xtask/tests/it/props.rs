//! Properties of tagging checked on random input: the `gvisor` scheme's order
//! against coreutils `sort -f -d` itself, and the `content` scheme's tags
//! against an independent fingerprint of the build context across long runs
//! of random edits. No container engine is needed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use xtask::catalog::discovery::discover;
use xtask::catalog::tagging::{sort_fd, tags};
use xtask::config::{FileConfig, Overrides, Settings};
use xtask::model::ImageIndex;

/// Failures are reported with their shrunk input; nothing is written beside
/// the sources.
fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---- gvisor: sort_fd is `LC_ALL=C sort -f -d` ------------------------------------

/// Bytes weighted towards what decides `sort -f -d`: letters of both cases
/// (few, so keys tie often), digits, blanks, punctuation the key skips,
/// other whitespace and control bytes (skipped too: not blanks in C), and
/// bytes >= 0x80 (not letters in C).
fn name_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"aAbBzZ".to_vec()),
        2 => prop::sample::select(b"019".to_vec()),
        2 => prop::sample::select(b" \t".to_vec()),
        3 => prop::sample::select(b"_./-~!#*[]\\'\"".to_vec()),
        1 => prop::sample::select(b"\r\x0b\x0c\x01\x7f".to_vec()),
        1 => prop::sample::select(vec![0x80u8, 0xa0, 0xc3, 0xe9, 0xff]),
        1 => (1u8..=255).prop_filter("no newline", |b| *b != b'\n'),
    ]
}

fn names() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(name_byte(), 0..10), 0..50)
}

fn coreutils_sort(names: &[Vec<u8>]) -> Vec<u8> {
    let mut child = Command::new("sort")
        .args(["-f", "-d"])
        .env_clear()
        .env("LC_ALL", "C")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("coreutils sort is needed: install coreutils");
    let mut input = Vec::new();
    for name in names {
        input.extend_from_slice(name);
        input.push(b'\n');
    }
    // Small inputs: the pipe holds them all, so writing before reading cannot block.
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sort -f -d failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Lines shown as escaped text, so a failure says which bytes differ.
fn shown(lines: &[u8]) -> Vec<String> {
    lines.split(|b| *b == b'\n').map(|l| l.escape_ascii().to_string()).collect()
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn sort_fd_agrees_with_coreutils_sort(names in names()) {
        let mut ours = names.clone();
        ours.sort_by(|a, b| sort_fd(a, b));
        let mut ours_text = Vec::new();
        for name in &ours {
            ours_text.extend_from_slice(name);
            ours_text.push(b'\n');
        }
        let theirs = coreutils_sort(&names);
        prop_assert_eq!(shown(&ours_text), shown(&theirs));
    }
}

// ---- content: one tag per build context ------------------------------------------

/// Paths of the image directory that edits pick from. Any of them may become
/// a file, a directory or a symlink.
const PATHS: &[&str] = &[
    "Dockerfile",
    "f1",
    "f2",
    ".hidden",
    "x.tmp",
    "y.log",
    "a b",
    "d1",
    "d1/keep",
    "d1/a",
    "d1/x.tmp",
    "d2",
    "d2/b",
    "d2/sub",
    "d2/sub/c",
    "d2/sub/y.log",
    "d3",
];

/// Few contents, so that edits often return a file to an earlier state.
const CONTENTS: &[&[u8]] = &[b"", b"a", b"b", b"ab", b"FROM scratch\n", b"\x00\xff"];

const TARGETS: &[&str] = &["f1", "d1", "missing", "../img", "d2/sub", "/nonexistent-target", "a b", "x.tmp"];

/// `.dockerignore` lines, written in this order when chosen. Each is simple
/// enough to evaluate here without a glob library: `*.<ext>` matches a
/// top-level name, anything else one exact path.
const IGNORES: &[&str] = &["*.tmp", "*.log", "d1", "!d1/keep", "d2/sub", "f2"];

#[derive(Clone, Debug)]
enum Edit {
    Write {
        path: &'static str,
        content: &'static [u8],
    },
    Append {
        path: &'static str,
        byte: u8,
    },
    Delete {
        path: &'static str,
    },
    Chmod {
        path: &'static str,
        exec: bool,
    },
    Symlink {
        path: &'static str,
        target: &'static str,
    },
    Mkdir {
        path: &'static str,
    },
    Rename {
        from: &'static str,
        to: &'static str,
    },
    /// A bit per line of [`IGNORES`]; `None` removes the file; `true` puts
    /// the re-inclusion first, where a later exclusion overrides it.
    Ignore {
        lines: Option<u8>,
        exception_first: bool,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = prop::sample::select(PATHS);
    prop_oneof![
        4 => (path.clone(), prop::sample::select(CONTENTS)).prop_map(|(path, content)| Edit::Write { path, content }),
        2 => (path.clone(), prop::sample::select(b"a\n\x00\xff".to_vec())).prop_map(|(path, byte)| Edit::Append { path, byte }),
        3 => path.clone().prop_map(|path| Edit::Delete { path }),
        3 => (path.clone(), any::<bool>()).prop_map(|(path, exec)| Edit::Chmod { path, exec }),
        2 => (path.clone(), prop::sample::select(TARGETS)).prop_map(|(path, target)| Edit::Symlink { path, target }),
        2 => path.clone().prop_map(|path| Edit::Mkdir { path }),
        2 => (path.clone(), path).prop_map(|(from, to)| Edit::Rename { from, to }),
        2 => (prop::option::weighted(0.85, 0u8..(1 << IGNORES.len())), any::<bool>())
            .prop_map(|(lines, exception_first)| Edit::Ignore { lines, exception_first }),
    ]
}

/// What is at a path, without following a symlink.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Missing,
    File,
    Dir,
    Link,
}

fn node(path: &Path) -> Node {
    match fs::symlink_metadata(path) {
        Err(_) => Node::Missing,
        Ok(m) if m.file_type().is_symlink() => Node::Link,
        Ok(m) if m.is_dir() => Node::Dir,
        Ok(_) => Node::File,
    }
}

/// True when every directory above `rel` is a real directory, so that an
/// edit at `rel` stays inside the tree and never writes through a symlink.
fn parents_are_dirs(image: &Path, rel: &str) -> bool {
    parents(image, rel).iter().all(|p| node(p) == Node::Dir)
}

/// Like [`parents_are_dirs`], but missing directories are made first.
fn make_parents(image: &Path, rel: &str) -> bool {
    let parents = parents(image, rel);
    if !parents.iter().all(|p| matches!(node(p), Node::Dir | Node::Missing)) {
        return false;
    }
    for p in parents.iter().filter(|p| node(p) == Node::Missing) {
        fs::create_dir(p).unwrap();
    }
    true
}

fn parents(image: &Path, rel: &str) -> Vec<std::path::PathBuf> {
    let parts: Vec<&str> = rel.split('/').collect();
    (1..parts.len()).map(|n| image.join(parts[..n].join("/"))).collect()
}

fn remove(path: &Path) {
    match node(path) {
        Node::Dir => fs::remove_dir_all(path).unwrap(),
        Node::File | Node::Link => fs::remove_file(path).unwrap(),
        Node::Missing => {}
    }
}

/// Applies one edit; false when it does not apply to the tree as it is (the
/// image must keep its Dockerfile, as text, and nothing is written through a
/// symlink).
fn apply(image: &Path, edit: &Edit) -> bool {
    let at = |rel: &str| image.join(rel);
    let keep = |rel: &str| rel == "Dockerfile";
    match *edit {
        Edit::Write { path, content } => {
            if keep(path) && std::str::from_utf8(content).is_err() {
                return false;
            }
            if !make_parents(image, path) || node(&at(path)) == Node::Dir {
                return false;
            }
            if node(&at(path)) == Node::Link {
                fs::remove_file(at(path)).unwrap();
            }
            fs::write(at(path), content).unwrap();
        }
        Edit::Append { path, byte } => {
            if !parents_are_dirs(image, path) || node(&at(path)) != Node::File {
                return false;
            }
            if keep(path) && !byte.is_ascii() {
                return false;
            }
            fs::OpenOptions::new().append(true).open(at(path)).unwrap().write_all(&[byte]).unwrap();
        }
        Edit::Delete { path } => {
            if keep(path) || !parents_are_dirs(image, path) || node(&at(path)) == Node::Missing {
                return false;
            }
            remove(&at(path));
        }
        Edit::Chmod { path, exec } => {
            if !parents_are_dirs(image, path) || node(&at(path)) != Node::File {
                return false;
            }
            fs::set_permissions(at(path), fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).unwrap();
        }
        Edit::Symlink { path, target } => {
            if keep(path) || !make_parents(image, path) || node(&at(path)) == Node::Dir {
                return false;
            }
            remove(&at(path));
            symlink(target, at(path)).unwrap();
        }
        Edit::Mkdir { path } => {
            if keep(path) || !make_parents(image, path) || node(&at(path)) != Node::Missing {
                return false;
            }
            fs::create_dir(at(path)).unwrap();
        }
        Edit::Rename { from, to } => {
            let moves_into_itself = to == from || to.starts_with(&format!("{from}/"));
            if keep(from) || keep(to) || moves_into_itself {
                return false;
            }
            if !parents_are_dirs(image, from) {
                return false;
            }
            let (src, dst) = (node(&at(from)), node(&at(to)));
            // A file or link replaces a file or link; a directory moves only to a free name.
            let fits = match src {
                Node::Missing => false,
                Node::File | Node::Link => dst != Node::Dir,
                Node::Dir => dst == Node::Missing,
            };
            if !fits || !make_parents(image, to) {
                return false;
            }
            fs::rename(at(from), at(to)).unwrap();
        }
        Edit::Ignore { lines, exception_first } => {
            let file = image.join(".dockerignore");
            match lines {
                None => {
                    if node(&file) == Node::Missing {
                        return false;
                    }
                    fs::remove_file(file).unwrap();
                }
                Some(bits) => {
                    let mut chosen: Vec<&str> =
                        (0..IGNORES.len()).filter(|i| bits & (1 << i) != 0).map(|i| IGNORES[i]).collect();
                    if exception_first {
                        chosen.sort_by_key(|l| !l.starts_with('!'));
                    }
                    let mut text = chosen.join("\n");
                    text.push('\n');
                    fs::write(file, text).unwrap();
                }
            }
        }
    }
    true
}

/// `.dockerignore` rules as this test writes them: (pattern, excludes).
fn ignore_rules(image: &Path) -> Vec<(String, bool)> {
    let Ok(text) = fs::read_to_string(image.join(".dockerignore")) else { return Vec::new() };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (p.to_string(), false),
            None => (l.to_string(), true),
        })
        .collect()
}

/// The engine's rule: a path is excluded when the last pattern that matches
/// it or one of its parent directories is not a `!` pattern.
fn excluded(rules: &[(String, bool)], rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let ancestors: Vec<String> = (1..=parts.len()).map(|n| parts[..n].join("/")).collect();
    let matches = |pattern: &str, path: &str| match pattern.strip_prefix('*') {
        Some(suffix) => !path.contains('/') && path.ends_with(suffix),
        None => path == pattern,
    };
    let mut out = false;
    for (pattern, excludes) in rules {
        if ancestors.iter().any(|a| matches(pattern, a)) {
            out = *excludes;
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Dir,
    File { exec: bool, content: Vec<u8> },
    Link(Vec<u8>),
}

/// The build context as the engine would send it: every path not excluded,
/// with its kind, executable bit, content or symlink target.
type Fingerprint = BTreeMap<Vec<u8>, Entry>;

fn fingerprint(image: &Path) -> Fingerprint {
    fn walk(dir: &Path, rel: &str, rules: &[(String, bool)], out: &mut Fingerprint) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().expect("the test only makes UTF-8 names");
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = if meta.file_type().is_symlink() {
                Entry::Link(fs::read_link(&path).unwrap().as_os_str().as_bytes().to_vec())
            } else if meta.is_dir() {
                walk(&path, &rel, rules, out);
                Entry::Dir
            } else {
                Entry::File { exec: meta.permissions().mode() & 0o111 != 0, content: fs::read(&path).unwrap() }
            };
            if !excluded(rules, &rel) {
                out.insert(rel.into_bytes(), kind);
            }
        }
    }
    let mut out = Fingerprint::new();
    walk(image, "", &ignore_rules(image), &mut out);
    out
}

fn content_tag(root: &Path) -> String {
    let overrides = Overrides {
        images_dir: Some(root.to_path_buf()),
        arch: Some(xtask::model::Arch::X86_64),
        tag_scheme: Some(xtask::config::TagScheme::Content),
        ..Overrides::default()
    };
    let settings = Settings::resolve(FileConfig::default(), overrides, root, root).unwrap();
    let catalog = discover(root, settings.arch).unwrap();
    let names: Vec<&str> = catalog.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["img"], "the edits must leave exactly one image");
    tags(&catalog, &settings, &[ImageIndex(0)]).unwrap().remove(&ImageIndex(0)).unwrap()
}

fn shown_tree(fp: &Fingerprint) -> String {
    fp.iter().map(|(p, e)| format!("\n  {} {e:?}", p.escape_ascii())).collect()
}

#[derive(Default)]
struct Seen {
    tag_of: HashMap<Fingerprint, String>,
    tree_of: HashMap<String, Fingerprint>,
    edits: usize,
    applied: usize,
    states: usize,
}

impl Seen {
    /// Equal trees have equal tags, and different trees different tags.
    fn record(&mut self, fp: Fingerprint, tag: String, after: &[Edit]) -> Result<(), TestCaseError> {
        self.states += 1;
        if let Some(earlier) = self.tag_of.get(&fp) {
            prop_assert_eq!(earlier, &tag, "one tree, two tags, after {:?}:{}", after, shown_tree(&fp));
        }
        if let Some(earlier) = self.tree_of.get(&tag) {
            prop_assert!(
                *earlier == fp,
                "tag {} for two trees, after {:?}:\nthis tree:{}\nearlier tree:{}",
                tag,
                after,
                shown_tree(&fp),
                shown_tree(earlier)
            );
        }
        self.tag_of.insert(fp.clone(), tag.clone());
        self.tree_of.insert(tag, fp);
        Ok(())
    }
}

#[test]
fn content_tags_match_build_contexts_across_random_edits() {
    const CASES: u32 = 40;
    const EDITS: usize = 180;
    // Trees are compared across cases too: a tag does not depend on where the
    // images root is.
    let seen = RefCell::new(Seen::default());
    let mut runner = TestRunner::new(config(CASES));
    let result = runner.run(&prop::collection::vec(edit(), EDITS), |edits| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        let image = root.join("img");
        fs::create_dir_all(image.join("d1")).unwrap();
        fs::write(image.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
        fs::write(image.join("f1"), "a").unwrap();
        fs::write(image.join("d1/keep"), "b").unwrap();
        symlink("f1", image.join("d3")).unwrap();

        let mut seen = seen.borrow_mut();
        seen.record(fingerprint(&image), content_tag(&root), &[])?;
        for (n, edit) in edits.iter().enumerate() {
            seen.edits += 1;
            if !apply(&image, edit) {
                continue;
            }
            seen.applied += 1;
            seen.record(fingerprint(&image), content_tag(&root), &edits[..=n])?;
        }
        Ok(())
    });
    let seen = seen.into_inner();
    if let Err(e) = result {
        panic!("{e}");
    }
    let distinct = seen.tag_of.len();
    eprintln!(
        "content tags: {} edits tried, {} applied, {} states, {} distinct trees, {} distinct tags, 0 collisions",
        seen.edits,
        seen.applied,
        seen.states,
        distinct,
        seen.tree_of.len()
    );
    // The run must have been long enough to mean something, in both directions.
    assert!(seen.applied >= 3000, "only {} edits applied", seen.applied);
    assert!(distinct >= 1000, "only {distinct} distinct trees");
    assert!(seen.states - distinct >= 500, "trees were seldom seen again: {} states, {distinct} trees", seen.states);
    assert_eq!(seen.tree_of.len(), distinct);
}
