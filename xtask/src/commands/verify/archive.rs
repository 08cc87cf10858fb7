//! Archive summary: an image as the engine streams it (`docker save`, a
//! docker-archive: a tar holding the image's config, each layer as a plain
//! tar, and `manifest.json`, in whatever order the engine writes them), read
//! once, front to back. Of each layer it keeps every entry's metadata and
//! the sha256 of its content, never the content itself; nothing goes to
//! disk. The layers are put in order once `manifest.json`, which may come
//! last, says it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use tar::EntryType;

/// Entries of all the layers of one image, at most: each costs memory
/// (its path and metadata) until the comparison.
pub const MAX_ENTRIES: usize = 1_000_000;
/// The most a JSON document of the archive (config, manifest) may hold.
const MAX_JSON: u64 = 16 << 20;
/// The most a PAX or GNU long-name header may hold: they are read whole.
const MAX_HEADER: u64 = 1 << 20;

/// What an entry of a layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Hardlink,
    Device,
    Fifo,
    Other,
}

/// One entry of a layer, as far as comparing builds goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// sha256 of a file's content.
    pub digest: Option<[u8; 32]>,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Where a link points; a device's numbers (`major,minor`).
    pub link: Option<String>,
    /// Seconds since the epoch, with a fraction when a PAX header gives one.
    pub mtime: String,
}

/// A layer: its entries by path (`/etc/hosts`; `/` for the root).
pub type Layer = BTreeMap<String, Entry>;

/// An image as one build made it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub config: serde_json::Value,
    /// In the image's order, the base's first.
    pub layers: Vec<Layer>,
}

/// Reads a docker-archive to its end: the image's config and its layers'
/// entries.
pub fn summarize(reader: &mut dyn Read) -> Result<Summary> {
    let mut budget = MAX_ENTRIES;
    let mut documents: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tars: HashMap<String, Layer> = HashMap::new();
    let mut compressed: Vec<String> = Vec::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut archive = tar::Archive::new(reader);
    each_member(&mut archive, &mut |member, content| {
        let path = member.path.trim_start_matches('/').to_string();
        match member.kind {
            // podman links each `<id>/layer.tar` to the layer's file.
            Kind::Symlink | Kind::Hardlink => {
                if let Some(target) = member.link {
                    let target = if member.kind == Kind::Symlink { beside(&path, &target) } else { target };
                    links.insert(path, target.trim_start_matches('/').to_string());
                }
                return Ok(());
            }
            Kind::File => {}
            _ => return Ok(()),
        }
        let mut head = Vec::with_capacity(512);
        content.take(512).read_to_end(&mut head).with_context(|| format!("cannot read {path} in the archive"))?;
        let mut whole = std::io::Cursor::new(&head).chain(content);
        if is_tar(&head) {
            let layer = summarize_layer(&mut whole, &mut budget).with_context(|| format!("layer {path}"))?;
            tars.insert(path, layer);
        } else if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            compressed.push(path);
        } else if head.first().is_some_and(|b| matches!(b, b'{' | b'[')) {
            let mut text = Vec::new();
            whole.take(MAX_JSON + 1).read_to_end(&mut text)?;
            if text.len() as u64 > MAX_JSON {
                bail!("{path} in the archive holds more than {} MiB of JSON", MAX_JSON >> 20);
            }
            documents.insert(path, text);
        }
        Ok(())
    })?;
    let resolve = |path: &str| -> String {
        let mut path = path.trim_start_matches('/').to_string();
        for _ in 0..8 {
            match links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    };
    let manifest = documents
        .get("manifest.json")
        .ok_or_else(|| anyhow!("the archive has no manifest.json: the engine did not write a docker-archive"))?;
    let manifest: Vec<ManifestEntry> = serde_json::from_slice(manifest).context("manifest.json is not a manifest")?;
    let [image] = manifest.as_slice() else { bail!("manifest.json describes {} images, not one", manifest.len()) };
    let config = documents
        .get(&resolve(&image.config))
        .ok_or_else(|| anyhow!("the archive lacks the image's config {}", image.config))?;
    let config = serde_json::from_slice(config).with_context(|| format!("the config {} is not JSON", image.config))?;
    let mut layers = Vec::with_capacity(image.layers.len());
    for name in &image.layers {
        let path = resolve(name);
        match tars.get(&path) {
            Some(layer) => layers.push(layer.clone()),
            None if compressed.contains(&path) => bail!(
                "layer {name} is compressed in the archive: verify reads the uncompressed layers docker's own image \
                 store saves (docker's containerd image store compresses them)"
            ),
            None => bail!("the archive lacks the layer {name}, or it is no tar"),
        }
    }
    Ok(Summary { config, layers })
}

/// One image of `manifest.json`.
#[derive(serde::Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A symlink's target, as a path of the archive: relative to the link's directory.
fn beside(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> =
        if target.starts_with('/') { Vec::new() } else { link.split('/').rev().skip(1).collect::<Vec<_>>() };
    parts.reverse();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Whether a member's first block is a tar header (ustar or GNU), or the
/// zero block that ends an empty tar.
fn is_tar(head: &[u8]) -> bool {
    head.len() == 512 && (head[257..262] == *b"ustar" || head.iter().all(|&b| b == 0))
}

/// The entries of one layer's tar.
fn summarize_layer(reader: &mut dyn Read, budget: &mut usize) -> Result<Layer> {
    let mut layer = Layer::new();
    let mut archive = tar::Archive::new(reader);
    each_member(&mut archive, &mut |mut member, content| {
        *budget = budget.checked_sub(1).ok_or_else(|| {
            anyhow!("the image has more than {MAX_ENTRIES} entries in its layers, more than verify compares")
        })?;
        if member.kind == Kind::File {
            member.entry.digest = Some(sha256(content).with_context(|| format!("cannot read {}", member.path))?);
        }
        member.entry.link = member.link;
        layer.insert(member.path, member.entry);
        Ok(())
    })?;
    Ok(layer)
}

fn sha256(content: &mut dyn Read) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match content.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A member of a tar with what the PAX and GNU headers before it said.
struct Member {
    /// `/` and the path, without `./` or a trailing `/`.
    path: String,
    kind: Kind,
    link: Option<String>,
    entry: Entry,
}

/// Calls `each` with every member of a tar and a reader of its content, in
/// order. PAX and GNU long-name headers are read here, bounded, rather than
/// by the tar crate, which reads them whole whatever their size.
fn each_member<R: Read>(
    archive: &mut tar::Archive<R>,
    each: &mut dyn FnMut(Member, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut pax: Option<Vec<u8>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_pax_local_extensions() {
            pax = Some(bounded(&mut entry, "a PAX header")?);
            continue;
        }
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            let mut text = bounded(&mut entry, "a GNU long name")?;
            while text.last() == Some(&0) {
                text.pop();
            }
            *(if kind.is_gnu_longname() { &mut long_name } else { &mut long_link }) = Some(text);
            continue;
        }
        if kind.is_pax_global_extensions() {
            continue;
        }
        let mut path = long_name.take().unwrap_or_else(|| header.path_bytes().into_owned());
        let mut link = long_link.take().or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let mut mtime = header.mtime()?.to_string();
        let (mut uid, mut gid) = (header.uid()?, header.gid()?);
        if let Some(records) = pax.take() {
            for record in tar::PaxExtensions::new(&records) {
                let record = record?;
                let value = record.value_bytes();
                let number = || std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
                match record.key_bytes() {
                    b"path" => path = value.to_vec(),
                    b"linkpath" => link = Some(value.to_vec()),
                    b"mtime" => mtime = String::from_utf8_lossy(value).into_owned(),
                    b"uid" => uid = number().unwrap_or(uid),
                    b"gid" => gid = number().unwrap_or(gid),
                    // Read raw, the member is as long as its header says:
                    // a size only the PAX header can hold would be misread.
                    b"size" if number() != Some(header.size()?) => {
                        bail!("{} is larger than a tar header can say: verify cannot read it", shown(&path))
                    }
                    _ => {}
                }
            }
        }
        let kind = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
            EntryType::Directory => Kind::Directory,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::Hardlink,
            EntryType::Char | EntryType::Block => Kind::Device,
            EntryType::Fifo => Kind::Fifo,
            _ => Kind::Other,
        };
        if kind == Kind::Device {
            let numbers = (header.device_major()?, header.device_minor()?);
            link = numbers.0.zip(numbers.1).map(|(major, minor)| format!("{major},{minor}").into_bytes());
        }
        let path = shown(&path);
        let link = link.map(|l| String::from_utf8_lossy(&l).into_owned());
        let mode = header.mode()? & 0o7777;
        let entry_fields = Entry { kind, digest: None, mode, uid, gid, link: None, mtime };
        each(Member { path, kind, link, entry: entry_fields }, &mut entry)?;
    }
    Ok(())
}

/// A member's content read whole, when it is at most [`MAX_HEADER`] bytes.
fn bounded(content: &mut dyn Read, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    content.take(MAX_HEADER + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_HEADER {
        bail!("{what} of more than {} KiB", MAX_HEADER >> 10);
    }
    Ok(bytes)
}

/// A member's path as the comparison names it: `/` then the path, without
/// `./` or a trailing `/`.
fn shown(path: &[u8]) -> String {
    let text = String::from_utf8_lossy(path);
    let trimmed = text.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/');
    format!("/{}", if trimmed == "." { "" } else { trimmed })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A tar of `(path, kind, content or link, mode, mtime)` members.
    pub(in super::super) fn tar_of(members: &[(&str, EntryType, &[u8], u32, u64)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, mode, mtime) in members {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_mtime(*mtime);
            header.set_uid(0);
            header.set_gid(0);
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                header.set_size(0);
                builder.append_link(&mut header, path, std::str::from_utf8(data).unwrap()).unwrap();
            } else {
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    /// A docker-archive: each `(path, bytes)` member in order.
    pub(in super::super) fn archive_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let members: Vec<(&str, EntryType, &[u8], u32, u64)> =
            members.iter().map(|(p, b)| (*p, EntryType::Regular, b.as_slice(), 0o644, 0)).collect();
        tar_of(&members)
    }

    fn file(content: &[u8], mode: u32, mtime: &str) -> Entry {
        Entry {
            kind: Kind::File,
            digest: Some(Sha256::digest(content).into()),
            mode,
            uid: 0,
            gid: 0,
            link: None,
            mtime: mtime.into(),
        }
    }

    #[test]
    fn layers_in_the_manifests_order_whatever_the_archives() {
        let base = tar_of(&[
            ("bin/", EntryType::Directory, b"", 0o755, 5),
            ("bin/sh", EntryType::Regular, b"shell", 0o755, 5),
            ("bin/ash", EntryType::Symlink, b"/bin/sh", 0o777, 5),
        ]);
        let top = tar_of(&[("./stamp", EntryType::Regular, b"1\n", 0o644, 9)]);
        let config = br#"{"architecture":"amd64","history":[]}"#.to_vec();
        let manifest = br#"[{"Config":"c.json","Layers":["b/layer.tar","t/layer.tar"]}]"#.to_vec();
        // The top layer first, the manifest last: read as they come.
        let bytes = archive_of(&[
            ("t/layer.tar", top),
            ("c.json", config),
            ("b/VERSION", b"1.0".to_vec()),
            ("b/layer.tar", base),
            ("manifest.json", manifest),
        ]);
        let summary = summarize(&mut bytes.as_slice()).unwrap();
        assert_eq!(summary.config["architecture"], "amd64");
        let dir =
            Entry { kind: Kind::Directory, digest: None, mode: 0o755, uid: 0, gid: 0, link: None, mtime: "5".into() };
        let link = Entry { kind: Kind::Symlink, mode: 0o777, link: Some("/bin/sh".into()), ..dir.clone() };
        let base = Layer::from([
            ("/bin".to_string(), dir),
            ("/bin/ash".to_string(), link),
            ("/bin/sh".to_string(), file(b"shell", 0o755, "5")),
        ]);
        let top = Layer::from([("/stamp".to_string(), file(b"1\n", 0o644, "9"))]);
        assert_eq!(summary.layers, [base, top]);
    }

    #[test]
    fn podman_links_its_layers_and_an_empty_layer_is_a_tar() {
        let layer = tar_of(&[("x", EntryType::Regular, b"x", 0o600, 1)]);
        let mut empty = vec![0u8; 1024];
        empty.truncate(1024);
        let manifest = br#"[{"Config":"c.json","Layers":["id/layer.tar","e.tar"]}]"#.to_vec();
        let mut bytes = tar_of(&[
            ("d1.tar", EntryType::Regular, &layer, 0o444, 0),
            ("e.tar", EntryType::Regular, &empty, 0o444, 0),
            ("id/layer.tar", EntryType::Symlink, b"../d1.tar", 0o777, 0),
            ("c.json", EntryType::Regular, b"{}", 0o444, 0),
            ("manifest.json", EntryType::Regular, &manifest, 0o444, 0),
        ]);
        let summary = summarize(&mut bytes.as_slice()).unwrap();
        assert_eq!(summary.layers, [Layer::from([("/x".to_string(), file(b"x", 0o600, "1"))]), Layer::new()]);
        // Cut short: an error, not a summary of what came.
        bytes.truncate(700);
        assert!(summarize(&mut bytes.as_slice()).is_err());
    }

    #[test]
    fn pax_headers_and_long_names() {
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_pax_extensions([("mtime", b"12.5".as_slice()), ("uid", b"1000")]).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(3);
        let long = format!("{}/file", "d".repeat(200));
        builder.append_data(&mut header, &long, b"z".as_slice()).unwrap();
        let layer = builder.into_inner().unwrap();
        let manifest = br#"[{"Config":"c.json","Layers":["l.tar"]}]"#.to_vec();
        let bytes = archive_of(&[("l.tar", layer), ("c.json", b"{}".to_vec()), ("manifest.json", manifest)]);
        let summary = summarize(&mut bytes.as_slice()).unwrap();
        let entry = &summary.layers[0][&format!("/{long}")];
        assert_eq!((entry.mtime.as_str(), entry.uid), ("12.5", 1000));
    }

    #[test]
    fn what_is_not_a_docker_archive() {
        let no_manifest = archive_of(&[("c.json", b"{}".to_vec())]);
        assert_eq!(
            format!("{:#}", summarize(&mut no_manifest.as_slice()).unwrap_err()),
            "the archive has no manifest.json: the engine did not write a docker-archive"
        );
        let gzip = archive_of(&[
            ("l.tar.gz", vec![0x1f, 0x8b, 8, 0]),
            ("c.json", b"{}".to_vec()),
            ("manifest.json", br#"[{"Config":"c.json","Layers":["l.tar.gz"]}]"#.to_vec()),
        ]);
        let e = format!("{:#}", summarize(&mut gzip.as_slice()).unwrap_err());
        assert!(e.starts_with("layer l.tar.gz is compressed in the archive"), "{e}");
        assert_eq!(beside("a/b/layer.tar", "../c.tar"), "a/c.tar");
        assert_eq!(beside("id/layer.tar", "../../x"), "x");
        assert_eq!(shown(b"./"), "/");
        assert_eq!(shown(b"etc/"), "/etc");
    }
}
