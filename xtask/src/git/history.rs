//! History: the images root at git revisions, read from git's objects
//! (`git cat-file --batch`), never from a checkout: which commits a list of
//! revisions and ranges names, each commit's catalog, and each image's tag
//! there under either scheme, exactly as a checkout of that commit would be
//! tagged (blobs, modes and symlinks as git records them).
//!
//! Work is shared across revisions: a directory's tree object names its
//! content, so the images found below a tree and the inputs of an image
//! directory are computed once per tree, however many revisions hold it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::catalog::discovery::{catalog_of, Catalog, Dockerfiles};
use crate::catalog::dockerignore::DockerIgnore;
use crate::catalog::tagging::{self, Kind, Own, Resolved, Source};
use crate::config::{Settings, TagScheme};
use crate::model::Arch;
use crate::model::ImageIndex;
use crate::process::first_line;

/// A git object name: 20 bytes (SHA-1) or 32 (SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Oid {
    bytes: [u8; 32],
    len: u8,
}

impl Oid {
    fn from_raw(raw: &[u8]) -> Oid {
        let mut bytes = [0; 32];
        bytes[..raw.len()].copy_from_slice(raw);
        Oid { bytes, len: raw.len() as u8 }
    }

    fn from_hex(hex: &str) -> Option<Oid> {
        let hex = hex.trim();
        if !(hex.len() == 40 || hex.len() == 64) {
            return None;
        }
        let mut raw = Vec::with_capacity(hex.len() / 2);
        for pair in hex.as_bytes().chunks(2) {
            raw.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
        }
        Some(Oid::from_raw(&raw))
    }

    pub fn hex(&self) -> String {
        crate::model::hex(&self.bytes[..self.len as usize])
    }
}

impl std::fmt::Debug for Oid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// One entry of a tree object.
#[derive(Clone, Debug)]
struct Entry {
    mode: u32,
    name: Vec<u8>,
    oid: Oid,
}

const TREE: u32 = 0o040000;
const SYMLINK: u32 = 0o120000;
const GITLINK: u32 = 0o160000;

impl Entry {
    fn is_tree(&self) -> bool {
        self.mode == TREE
    }
    fn is_symlink(&self) -> bool {
        self.mode == SYMLINK
    }
    /// A submodule: an empty directory in a checkout that does not fetch it.
    fn is_gitlink(&self) -> bool {
        self.mode == GITLINK
    }
    fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// The entry of a tree (sorted by name) with this name.
fn find<'t>(entries: &'t [Entry], name: &[u8]) -> Option<&'t Entry> {
    entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|k| &entries[k])
}

/// A `git cat-file --batch` process: objects by name, one after another.
struct CatFile {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    fn spawn(top: &Path) -> Result<CatFile> {
        let sh = Shell::new()?;
        let mut command: Command = cmd!(sh, "git -C {top} cat-file --batch").into();
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = command.spawn().context("cannot run git: install it (apt-get install git)")?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = BufReader::with_capacity(256 * 1024, child.stdout.take().expect("piped"));
        Ok(CatFile { child, stdin, stdout })
    }

    fn ask(&mut self, oid: &Oid) -> Result<()> {
        writeln!(self.stdin, "{}", oid.hex()).context("git cat-file stopped")
    }

    fn flush(&mut self) -> Result<()> {
        self.stdin.flush().context("git cat-file stopped")
    }

    fn object(&mut self, oid: &Oid, want: &str) -> Result<Vec<u8>> {
        self.ask(oid)?;
        self.flush()?;
        let (kind, size) = header(&mut self.stdout, oid)?;
        let mut body = vec![0; size + 1];
        self.stdout.read_exact(&mut body).context("git cat-file stopped")?;
        body.pop();
        if kind != want {
            bail!("git object {} is a {kind}, not a {want}", oid.hex());
        }
        Ok(body)
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Trees read lately, kept while they hold fewer than this many entries in all.
const TREE_CACHE_ENTRIES: usize = 200_000;

/// A git repository holding the images root, read through `git cat-file`
/// processes (one per thread that needs one).
pub struct Repo {
    top: PathBuf,
    /// The images root, relative to the top of the work tree.
    prefix: Vec<Vec<u8>>,
    hash_len: usize,
    pool: Mutex<Vec<CatFile>>,
    trees: Mutex<TreeCache>,
}

/// Trees read lately, and how many entries they hold in all.
#[derive(Default)]
struct TreeCache {
    trees: HashMap<Oid, Arc<Vec<Entry>>>,
    entries: usize,
}

impl Repo {
    /// The repository whose work tree holds `images_dir`.
    pub fn open(images_dir: &Path) -> Result<Repo> {
        let sh = Shell::new()?;
        let out = cmd!(sh, "git -C {images_dir} rev-parse --show-toplevel --show-prefix --show-object-format")
            .quiet()
            .ignore_status()
            .output()
            .context("cannot run git: install it (apt-get install git)")?;
        if !out.status.success() {
            bail!(
                "the images directory {} is not in a git work tree, so its history cannot be read: {}",
                images_dir.display(),
                first_line(&String::from_utf8_lossy(&out.stderr))
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let top = PathBuf::from(lines.next().unwrap_or_default());
        let prefix = lines.next().unwrap_or_default();
        let hash_len = if lines.next() == Some("sha256") { 32 } else { 20 };
        let prefix = prefix.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect();
        Ok(Repo { top, prefix, hash_len, pool: Mutex::new(Vec::new()), trees: Mutex::default() })
    }

    /// Runs `f` with a `git cat-file` process of its own.
    fn with_cat<T>(&self, f: impl FnOnce(&mut CatFile) -> Result<T>) -> Result<T> {
        let taken = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut cat = match taken {
            Some(cat) => cat,
            None => CatFile::spawn(&self.top)?,
        };
        let result = f(&mut cat);
        // A process that failed may be out of step: let it go.
        if result.is_ok() {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(cat);
        }
        result
    }

    /// A tree's entries, sorted by name as a directory walk by file name
    /// meets them (git sorts a directory as if its name ended in `/`).
    fn tree(&self, oid: &Oid) -> Result<Arc<Vec<Entry>>> {
        if let Some(t) = self.trees.lock().unwrap_or_else(|e| e.into_inner()).trees.get(oid) {
            return Ok(t.clone());
        }
        let body = self.with_cat(|cat| cat.object(oid, "tree"))?;
        let mut entries = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let bad = || anyhow!("git tree {} cannot be read", oid.hex());
            let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
            let mode =
                u32::from_str_radix(std::str::from_utf8(&rest[..space]).map_err(|_| bad())?, 8).map_err(|_| bad())?;
            let nul = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
            let name = rest[space + 1..nul].to_vec();
            let raw = rest.get(nul + 1..nul + 1 + self.hash_len).ok_or_else(bad)?;
            entries.push(Entry { mode, name, oid: Oid::from_raw(raw) });
            rest = &rest[nul + 1 + self.hash_len..];
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = Arc::new(entries);
        let mut cache = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        if cache.entries + tree.len() > TREE_CACHE_ENTRIES {
            cache.trees.clear();
            cache.entries = 0;
        }
        cache.entries += tree.len();
        cache.trees.insert(*oid, tree.clone());
        Ok(tree)
    }

    fn blob(&self, oid: &Oid) -> Result<Vec<u8>> {
        self.with_cat(|cat| cat.object(oid, "blob"))
    }

    /// SHA-256 of each blob, asked for all at once.
    fn blob_digests(&self, oids: &[&Oid]) -> Result<Vec<[u8; 32]>> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        self.with_cat(|cat| {
            let CatFile { stdin, stdout, .. } = cat;
            std::thread::scope(|scope| {
                let writer = scope.spawn(move || -> Result<()> {
                    for oid in oids {
                        writeln!(stdin, "{}", oid.hex()).context("git cat-file stopped")?;
                    }
                    stdin.flush().context("git cat-file stopped")
                });
                let digests: Result<Vec<[u8; 32]>> = oids
                    .iter()
                    .map(|oid| {
                        let (kind, size) = header(stdout, oid)?;
                        if kind != "blob" {
                            bail!("git object {} is a {kind}, not a blob", oid.hex());
                        }
                        hash_body(stdout, size)
                    })
                    .collect();
                let written = writer.join().unwrap_or_else(|_| Err(anyhow!("git cat-file writer failed")));
                let digests = digests?;
                written?;
                Ok(digests)
            })
        })
    }

    /// The commit a revision names.
    pub fn commit(&self, rev: &str) -> Result<Oid> {
        let sh = Shell::new()?;
        let top = &self.top;
        let asked = format!("{rev}^{{commit}}");
        let out = cmd!(sh, "git -C {top} rev-parse --verify --quiet --end-of-options {asked}")
            .quiet()
            .ignore_status()
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        match Oid::from_hex(text.trim()) {
            Some(oid) if out.status.success() => Ok(oid),
            _ => bail!(
                "`{rev}` is not a commit of the repository at {}: fetch it first (a shallow clone may lack it)",
                self.top.display()
            ),
        }
    }

    /// The commits `git rev-list` lists for its arguments, newest first.
    fn rev_list(&self, args: &[String]) -> Result<Vec<Oid>> {
        let sh = Shell::new()?;
        let top = &self.top;
        let out = cmd!(sh, "git -C {top} rev-list {args...}").quiet().ignore_status().output()?;
        if !out.status.success() {
            bail!("git rev-list {} failed: {}", args.join(" "), first_line(&String::from_utf8_lossy(&out.stderr)));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| Oid::from_hex(l).ok_or_else(|| anyhow!("git rev-list printed `{l}`")))
            .collect()
    }

    /// The commits that revisions and ranges name: `REV` is one commit;
    /// `A..B`, `A...B`, `REV^!`, `REV^@` and `^REV` are what `git rev-list`
    /// lists for them. In the order given, without repeats.
    pub fn commits(&self, revs: &[String]) -> Result<Vec<Oid>> {
        let mut out: Vec<Oid> = Vec::new();
        for rev in revs {
            let range = rev.contains("..") || rev.starts_with('^') || ["^!", "^@"].iter().any(|s| rev.ends_with(s));
            let found =
                if range { self.rev_list(&["--end-of-options".into(), rev.clone()])? } else { vec![self.commit(rev)?] };
            for oid in found {
                if !out.contains(&oid) {
                    out.push(oid);
                }
            }
        }
        Ok(out)
    }

    /// The first-parent commits of HEAD committed in the last `seconds`.
    pub fn first_parents_since(&self, seconds: u64) -> Result<Vec<Oid>> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let since = now.saturating_sub(seconds);
        self.rev_list(&["--first-parent".into(), format!("--max-age={since}"), "HEAD".into()])
    }

    /// The tree of the work tree's top at a commit.
    fn commit_tree(&self, commit: &Oid) -> Result<Oid> {
        let body = self.with_cat(|cat| cat.object(commit, "commit"))?;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .next()
            .and_then(|l| l.strip_prefix("tree "))
            .and_then(Oid::from_hex)
            .ok_or_else(|| anyhow!("git commit {} has no tree", commit.hex()))
    }
}

/// The next answer's type and size.
fn header(stdout: &mut impl BufRead, oid: &Oid) -> Result<(String, usize)> {
    let mut line = String::new();
    stdout.read_line(&mut line).context("git cat-file stopped")?;
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(_), Some(kind), Some(size)) => {
            Ok((kind.to_string(), size.parse().map_err(|_| anyhow!("git cat-file said `{}`", line.trim()))?))
        }
        (_, Some("missing"), None) => bail!("git object {} is missing from the repository", oid.hex()),
        _ => bail!("git cat-file stopped before answering about {}", oid.hex()),
    }
}

/// SHA-256 of an answer's body (its header read), streamed; and its closing newline.
fn hash_body(stdout: &mut impl BufRead, size: usize) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let buf = stdout.fill_buf().context("git cat-file stopped")?;
        if buf.is_empty() {
            bail!("git cat-file stopped in the middle of an object");
        }
        let n = buf.len().min(left);
        h.update(&buf[..n]);
        stdout.consume(n);
        left -= n;
    }
    let mut newline = [0u8; 1];
    stdout.read_exact(&mut newline).context("git cat-file stopped")?;
    Ok(h.finalize().into())
}

/// A directory holding Dockerfiles, below some tree: its path relative to
/// that tree (empty for the tree itself), which Dockerfiles, and its tree.
type Found = (Vec<u8>, Dockerfiles, Oid);

/// The images root's history: its repository, and what was computed from
/// each tree, for every revision that holds it.
pub struct History {
    pub repo: Repo,
    /// Shown in messages as the images root.
    root: PathBuf,
    found: Mutex<HashMap<Oid, Arc<Vec<Found>>>>,
    /// By image tree, architecture, and whether the Dockerfile is the
    /// architecture's own (`Dockerfile.<arch>`) or the plain one.
    own: Mutex<HashMap<(Oid, Arch, bool), Own>>,
    gvisor: Mutex<HashMap<(String, Oid), String>>,
}

impl History {
    pub fn open(images_dir: &Path) -> Result<History> {
        Ok(History {
            repo: Repo::open(images_dir)?,
            root: images_dir.to_path_buf(),
            found: Mutex::new(HashMap::new()),
            own: Mutex::new(HashMap::new()),
            gvisor: Mutex::new(HashMap::new()),
        })
    }

    /// The images root as it is at a commit.
    pub fn at(&self, commit: &Oid) -> Result<Snapshot<'_>> {
        let top = self.repo.commit_tree(commit)?;
        let mut images = Some(top);
        for part in &self.repo.prefix {
            let Some(tree) = images else { break };
            images = find(&self.repo.tree(&tree)?, part).filter(|e| e.is_tree()).map(|e| e.oid);
        }
        let found = match images {
            Some(tree) => self.found_below(&tree, false)?.to_vec(),
            None => Vec::new(),
        };
        let dirs = found.iter().map(|(rel, _, oid)| (String::from_utf8_lossy(rel).into_owned(), *oid)).collect();
        Ok(Snapshot { history: self, top, found, dirs })
    }

    /// The directories holding Dockerfiles below a tree, in the order a
    /// walk by file name meets them, as [`crate::catalog::discovery`] finds them on
    /// disk: symlinks and submodules are not entered.
    fn found_below(&self, tree: &Oid, remember: bool) -> Result<Arc<Vec<Found>>> {
        if let Some(found) = self.found.lock().unwrap_or_else(|e| e.into_inner()).get(tree) {
            return Ok(found.clone());
        }
        let entries = self.repo.tree(tree)?;
        let mut out: Vec<Found> = Vec::new();
        let mut own = Dockerfiles::default();
        let mut own_at = None;
        for e in entries.iter() {
            if e.is_tree() {
                for (rel, d, oid) in self.found_below(&e.oid, true)?.iter() {
                    let mut path = e.name.clone();
                    if !rel.is_empty() {
                        path.push(b'/');
                        path.extend_from_slice(rel);
                    }
                    out.push((path, *d, *oid));
                }
            } else if !e.is_gitlink() && own.note(&e.name) && own_at.is_none() {
                own_at = Some(out.len());
            }
        }
        if let Some(at) = own_at {
            out.insert(at, (Vec::new(), own, *tree));
        }
        let out = Arc::new(out);
        // The root's own list changes with every revision: not worth keeping.
        if remember {
            self.found.lock().unwrap_or_else(|e| e.into_inner()).insert(*tree, out.clone());
        }
        Ok(out)
    }
}

/// The images root at one commit.
pub struct Snapshot<'h> {
    history: &'h History,
    /// The tree of the work tree's top.
    top: Oid,
    found: Vec<Found>,
    /// Each directory holding Dockerfiles (relative to the images root) and its tree.
    dirs: HashMap<String, Oid>,
}

impl Snapshot<'_> {
    /// The catalog for one architecture, as discovery would find it in a checkout.
    pub fn catalog(&self, arch: Arch) -> Result<Catalog> {
        let dirs = self.found.iter().map(|(rel, d, _)| (PathBuf::from(OsStr::from_bytes(rel)), *d)).collect();
        catalog_of(&self.history.root, arch, dirs)
    }

    /// Every image's tag in each catalog (of this snapshot, one per
    /// architecture), or why it cannot be computed. Each image directory's
    /// inputs are read once for every architecture, and not at all when an
    /// earlier revision had the same tree.
    pub fn tags(&self, settings: &Settings, catalogs: &[&Catalog]) -> Vec<HashMap<ImageIndex, Result<String, String>>> {
        let src = Git { snapshot: self };
        let mut paths: Vec<&str> = catalogs.iter().flat_map(|c| c.images.iter().map(|i| i.path.as_str())).collect();
        paths.sort_unstable();
        paths.dedup();
        match settings.tag_scheme {
            TagScheme::Gvisor => {
                let by_path: HashMap<&str, Result<String, String>> =
                    paths.par_iter().map(|&p| (p, self.gvisor_tag(&src, p).map_err(|e| format!("{e:#}")))).collect();
                catalogs
                    .iter()
                    .map(|c| c.indexed().map(|(i, image)| (i, by_path[image.path.as_str()].clone())).collect())
                    .collect()
            }
            TagScheme::Content => {
                let index: Vec<HashMap<&str, ImageIndex>> =
                    catalogs.iter().map(|c| c.indexed().map(|(i, image)| (image.path.as_str(), i)).collect()).collect();
                let own: HashMap<&str, PerArch> = paths
                    .par_iter()
                    .map(|&p| {
                        let wants: Vec<(Arch, &str)> = catalogs
                            .iter()
                            .zip(&index)
                            .filter_map(|(c, idx)| idx.get(p).map(|&i| (c.arch, c[i].dockerfile.as_str())))
                            .collect();
                        (p, self.own_inputs(&src, settings, p, &wants).map_err(|e| format!("{e:#}")))
                    })
                    .collect();
                catalogs
                    .iter()
                    .map(|c| {
                        let mut resolved: HashMap<ImageIndex, Resolved> = HashMap::new();
                        let mut failed: HashMap<ImageIndex, String> = HashMap::new();
                        for (i, image) in c.indexed() {
                            let mine = own[image.path.as_str()]
                                .as_ref()
                                .map_err(String::clone)
                                .and_then(|all| all.iter().find(|(a, _)| *a == c.arch).expect("asked for").1.clone())
                                .and_then(|o| {
                                    let bases =
                                        tagging::resolve_bases(c, image, &o.bases).map_err(|e| format!("{e:#}"))?;
                                    Ok(Resolved { digest: o.digest, bases })
                                });
                            match mine {
                                Ok(r) => {
                                    resolved.insert(i, r);
                                }
                                Err(e) => {
                                    failed.insert(i, e);
                                }
                            }
                        }
                        let mut tags = HashMap::new();
                        c.indices()
                            .map(|i| {
                                let tag = match failed.get(&i) {
                                    Some(e) => Err(e.clone()),
                                    None => tagging::content_tag(c, i, &resolved, &mut tags, &mut Vec::new())
                                        .map_err(|e| format!("{e:#}")),
                                };
                                (i, tag)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    fn gvisor_tag(&self, src: &Git<'_>, path: &str) -> Result<String> {
        let tree = self.dirs[path];
        let key = (path.to_string(), tree);
        if let Some(tag) = self.history.gvisor.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(tag.clone());
        }
        let tag = tagging::gvisor_tag(src, path)?;
        self.history.gvisor.lock().unwrap_or_else(|e| e.into_inner()).insert(key, tag.clone());
        Ok(tag)
    }

    /// [`tagging::own_inputs`], remembered by the image's tree when nothing
    /// outside it counts: its Dockerfiles and `.dockerignore` are no symlinks.
    fn own_inputs(&self, src: &Git<'_>, settings: &Settings, path: &str, wants: &[(Arch, &str)]) -> Result<OwnByArch> {
        let tree = self.dirs[path];
        let key = |(arch, dockerfile): &(Arch, &str)| (tree, *arch, *dockerfile != "Dockerfile");
        let mut out = Vec::with_capacity(wants.len());
        let mut missing = Vec::new();
        {
            // Only what depends on the tree alone is remembered: a hit needs
            // no look at the tree.
            let memo = self.history.own.lock().unwrap_or_else(|e| e.into_inner());
            for want in wants {
                match memo.get(&key(want)) {
                    Some(o) => out.push((want.0, Ok(o.clone()))),
                    None => missing.push(*want),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let entries = self.history.repo.tree(&tree)?;
        let linked = |name: &str| entries.iter().any(|e| e.name == name.as_bytes() && !e.is_file());
        let own_tree = !linked(".dockerignore") && missing.iter().all(|(_, d)| !linked(d));
        let computed = tagging::own_inputs(src, settings, path, &missing)?;
        let mut memo = self.history.own.lock().unwrap_or_else(|e| e.into_inner());
        for (want, o) in missing.iter().zip(computed) {
            if let (true, Ok(o)) = (own_tree, &o) {
                memo.insert(key(want), o.clone());
            }
            out.push((want.0, o.map_err(|e| format!("{e:#}"))));
        }
        Ok(out)
    }

    /// The entry at a path under the work tree's top (components), following
    /// symlinks on the way and, when `follow`, at the end; `None` when
    /// nothing is there.
    fn lookup(&self, path: Vec<Vec<u8>>, follow: bool, shown: &str) -> Result<Option<Entry>> {
        let repo = &self.history.repo;
        let mut pending: Vec<Vec<u8>> = path.into_iter().rev().collect();
        let mut trail: Vec<Oid> = vec![self.top];
        let mut at: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        let mut last: Option<Entry> = None;
        while let Some(part) = pending.pop() {
            if part.is_empty() || part == b"." {
                continue;
            }
            if part == b".." {
                if at.pop().is_none() {
                    bail!("{shown} leads outside the repository: a checkout would read what is outside it");
                }
                trail.pop();
                last = None;
                continue;
            }
            let dir = *trail.last().expect("the top is always there");
            let Some(entry) = find(&repo.tree(&dir)?, &part).cloned() else { return Ok(None) };
            if entry.is_symlink() && (follow || !pending.is_empty()) {
                hops += 1;
                if hops > 40 {
                    bail!("{shown}: too many levels of symbolic links");
                }
                let target = repo.blob(&entry.oid)?;
                if target.starts_with(b"/") {
                    bail!(
                        "{shown} is a symlink to an absolute path, which a checkout would read outside the repository"
                    );
                }
                for c in target.split(|&b| b == b'/').rev() {
                    pending.push(c.to_vec());
                }
                last = None;
                continue;
            }
            if !pending.is_empty() {
                if !entry.is_tree() {
                    return Ok(None);
                }
                trail.push(entry.oid);
            }
            at.push(part);
            last = Some(entry);
        }
        Ok(last)
    }

    /// A path relative to the images root, as components from the top.
    fn components(&self, path: &str) -> Vec<Vec<u8>> {
        let mut out = self.history.repo.prefix.clone();
        out.extend(path.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()));
        out
    }

    /// The tree of an image directory.
    fn dir_tree(&self, dir: &str) -> Result<Oid> {
        match self.dirs.get(dir) {
            Some(oid) => Ok(*oid),
            None => match self.lookup(self.components(dir), false, dir)? {
                Some(e) if e.is_tree() => Ok(e.oid),
                _ => bail!("{dir} is not a directory at this revision"),
            },
        }
    }
}

/// An image directory's own inputs for each architecture asked for, or why
/// they cannot be read (for all, or for one).
type PerArch = Result<OwnByArch, String>;
type OwnByArch = Vec<(Arch, Result<Own, String>)>;

/// A snapshot as a [`Source`] for tagging.
struct Git<'s> {
    snapshot: &'s Snapshot<'s>,
}

impl Git<'_> {
    fn repo(&self) -> &Repo {
        &self.snapshot.history.repo
    }

    /// Walks a tree depth first, children by name; `visit` returns whether
    /// to enter a directory.
    fn walk(&self, tree: &Oid, rel: &mut Vec<u8>, visit: &mut dyn FnMut(&[u8], &Entry) -> Result<bool>) -> Result<()> {
        for e in self.repo().tree(tree)?.iter() {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&e.name);
            if visit(rel, e)? && e.is_tree() {
                self.walk(&e.oid, rel, visit)?;
            }
            rel.truncate(len);
        }
        Ok(())
    }

    fn resolved_blob(&self, path: &str) -> Result<Option<Oid>> {
        // A file right in an image directory (its Dockerfile, its
        // .dockerignore) is found in that directory's tree, unless it is a
        // symlink, which may lead anywhere.
        if let Some(tree) = path.rsplit_once('/').and_then(|(dir, _)| self.snapshot.dirs.get(dir)) {
            let name = path.rsplit('/').next().unwrap_or(path).as_bytes();
            match find(&self.repo().tree(tree)?, name) {
                None => return Ok(None),
                Some(e) if e.is_file() => return Ok(Some(e.oid)),
                Some(_) => {}
            }
        }
        let shown = self.shown(path);
        match self.snapshot.lookup(self.snapshot.components(path), true, &shown)? {
            None => Ok(None),
            Some(e) if e.is_file() => Ok(Some(e.oid)),
            Some(_) => bail!("cannot read {shown}: Is a directory"),
        }
    }
}

impl Source for Git<'_> {
    type File = Oid;

    fn regular_files(&self, dir: &str) -> Result<Vec<(Vec<u8>, Oid)>> {
        let tree = self.snapshot.dir_tree(dir)?;
        let mut files = Vec::new();
        let mut rel = dir.as_bytes().to_vec();
        self.walk(&tree, &mut rel, &mut |path, e| {
            if e.is_file() {
                files.push((path.to_vec(), e.oid));
            }
            Ok(true)
        })?;
        Ok(files)
    }

    fn context(&self, dir: &str, ignore: &DockerIgnore) -> Result<tagging::BuildContext<Oid>> {
        let tree = self.snapshot.dir_tree(dir)?;
        let mut entries = Vec::new();
        self.walk(&tree, &mut Vec::new(), &mut |rel, e| {
            if !ignore.is_empty() && ignore.excluded(Path::new(OsStr::from_bytes(rel))) {
                return Ok(!(e.is_tree() && ignore.prunes()));
            }
            let kind = if e.is_tree() || e.is_gitlink() {
                Kind::Dir
            } else if e.is_symlink() {
                Kind::Symlink(self.repo().blob(&e.oid)?)
            } else {
                Kind::File { exec: e.mode & 0o111 != 0, file: e.oid }
            };
            entries.push((rel.to_vec(), kind));
            Ok(true)
        })?;
        Ok(entries)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        match self.resolved_blob(path)? {
            Some(oid) => self.repo().blob(&oid),
            None => bail!("cannot read {}: No such file or directory", self.shown(path)),
        }
    }

    fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.resolved_blob(path)?.map(|oid| self.repo().blob(&oid)).transpose()
    }

    fn file(&self, path: &str) -> Result<Oid> {
        self.resolved_blob(path)?.ok_or_else(|| anyhow!("cannot read {}: No such file or directory", self.shown(path)))
    }

    fn digests(&self, files: &[&Oid]) -> Result<Vec<[u8; 32]>> {
        self.repo().blob_digests(files)
    }

    fn shown(&self, path: &str) -> String {
        self.snapshot.history.root.join(path).display().to_string()
    }
}

/// The images among `requested` (indexes into `catalog`, the images root
/// as it is now) whose tag differs from their tag at `rev`, or that were no
/// image at `rev`, in order.
pub fn changed_since(
    settings: &Settings,
    catalog: &Catalog,
    requested: &[ImageIndex],
    rev: &str,
) -> Result<Vec<ImageIndex>> {
    let now = tagging::tags(catalog, settings, requested)?;
    let history = History::open(&settings.images_dir)?;
    let commit = history.repo.commit(rev)?;
    let snapshot = history.at(&commit)?;
    let then_catalog = snapshot.catalog(settings.arch)?;
    let then_tags = snapshot.tags(settings, &[&then_catalog]).pop().unwrap_or_default();
    let then: HashMap<&str, &str> = then_catalog
        .indexed()
        .filter_map(|(i, image)| Some((image.name.as_str(), then_tags.get(&i)?.as_deref().ok()?)))
        .collect();
    Ok(requested.iter().copied().filter(|i| then.get(catalog[*i].name.as_str()) != Some(&now[i].as_str())).collect())
}
