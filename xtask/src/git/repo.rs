//! Git's objects, read through `git cat-file --batch` processes rather than
//! a checkout: object names, trees (kept while they are few enough), blobs
//! and their digests, commits and the revisions that name them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

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

    pub(super) fn from_hex(hex: &str) -> Option<Oid> {
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
pub(super) struct TreeEntry {
    pub(super) mode: u32,
    pub(super) name: Vec<u8>,
    pub(super) oid: Oid,
}

const TREE: u32 = 0o040000;
const SYMLINK: u32 = 0o120000;
const GITLINK: u32 = 0o160000;

impl TreeEntry {
    pub(super) fn is_tree(&self) -> bool {
        self.mode == TREE
    }
    pub(super) fn is_symlink(&self) -> bool {
        self.mode == SYMLINK
    }
    /// A submodule: an empty directory in a checkout that does not fetch it.
    pub(super) fn is_gitlink(&self) -> bool {
        self.mode == GITLINK
    }
    pub(super) fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// The entry of a tree (sorted by name) with this name.
pub(super) fn find<'t>(entries: &'t [TreeEntry], name: &[u8]) -> Option<&'t TreeEntry> {
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
    pub(super) top: PathBuf,
    /// The images root, relative to the top of the work tree.
    pub(super) prefix: Vec<Vec<u8>>,
    hash_len: usize,
    pool: Mutex<Vec<CatFile>>,
    trees: Mutex<TreeCache>,
}

/// Trees read lately, and how many entries they hold in all.
#[derive(Default)]
struct TreeCache {
    trees: HashMap<Oid, Arc<Vec<TreeEntry>>>,
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
    pub(super) fn tree(&self, oid: &Oid) -> Result<Arc<Vec<TreeEntry>>> {
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
            entries.push(TreeEntry { mode, name, oid: Oid::from_raw(raw) });
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

    pub(super) fn blob(&self, oid: &Oid) -> Result<Vec<u8>> {
        self.with_cat(|cat| cat.object(oid, "blob"))
    }

    /// SHA-256 of each blob, asked for all at once.
    pub(super) fn blob_digests(&self, oids: &[&Oid]) -> Result<Vec<[u8; 32]>> {
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
    pub(super) fn commit_tree(&self, commit: &Oid) -> Result<Oid> {
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn object_names() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(Oid::from_hex(sha1).unwrap().hex(), sha1);
        let sha256 = "ab".repeat(32);
        assert_eq!(Oid::from_hex(&format!("{sha256}\n")).unwrap().hex(), sha256);
        assert_ne!(Oid::from_hex(&"0".repeat(40)), Oid::from_hex(&"0".repeat(64)));
        for bad in ["".to_string(), "0123".into(), "g".repeat(40), "0".repeat(41)] {
            assert_eq!(Oid::from_hex(&bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_of_cat_file() {
        let name = "1".repeat(40);
        let oid = Oid::from_hex(&name).unwrap();
        let mut out = Cursor::new(format!("{name} blob 5\nhello\n{name} missing\n").into_bytes());
        assert_eq!(header(&mut out, &oid).unwrap(), ("blob".to_string(), 5));
        assert_eq!(hash_body(&mut out, 5).unwrap(), <[u8; 32]>::from(Sha256::digest(b"hello")));
        let missing = header(&mut out, &oid).unwrap_err();
        assert_eq!(format!("{missing:#}"), format!("git object {name} is missing from the repository"));
        let ended = header(&mut out, &oid).unwrap_err();
        assert_eq!(format!("{ended:#}"), format!("git cat-file stopped before answering about {name}"));
        let mut cut = Cursor::new(b"hel".to_vec());
        assert_eq!(
            format!("{:#}", hash_body(&mut cut, 5).unwrap_err()),
            "git cat-file stopped in the middle of an object"
        );
    }
}
