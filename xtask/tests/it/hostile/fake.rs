//! A fake registry for `push-manifest`: it holds image `a` for both
//! architectures (a config and one layer each, under any tag) and takes the
//! index and whatever is uploaded; how it answers, and where it sends
//! downloads and uploads, each test chooses. A second server, on another
//! loopback address, is "another host": blob storage behind a redirect, or
//! where an upload's `Location` points.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::server::{digest, pattern_digest, Answer, Body, Request, Server};
use crate::support::base64;

/// How the fake registry behaves.
#[derive(Clone, Default)]
pub struct Setup {
    /// `user:password` it wants, with a Basic challenge.
    pub login: Option<String>,
    /// The size of each image's layer; made as sent when over a MiB.
    pub layer: u64,
    /// Whether a cross-repository mount is refused (`202`), so that blobs
    /// are copied through the tool.
    pub refuse_mounts: bool,
    /// Uploads go to the other host (an absolute `Location`).
    pub upload_elsewhere: bool,
    /// Blob downloads are redirected to the other host.
    pub blobs_elsewhere: bool,
    /// Its `Docker-Content-Digest` for a manifest is another's.
    pub lie_about_manifests: bool,
    /// The config blob it serves is not the one its digest names.
    pub lie_about_configs: bool,
    /// Spaces added to each manifest (still valid JSON).
    pub manifest_padding: usize,
}

/// One architecture's image.
struct Image {
    arch: &'static str,
    config: Vec<u8>,
    layer_digest: String,
    manifest: Vec<u8>,
}

pub struct Fake {
    setup: Setup,
    images: Vec<Image>,
    /// Blobs uploaded (or mounted) into the index's repository.
    present: Mutex<HashSet<String>>,
}

/// The registry (`registry`) and the other host (`other`).
pub struct Started {
    pub fake: Arc<Fake>,
    pub registry: Server,
    pub other: Server,
}

const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

impl Fake {
    pub fn start(setup: Setup) -> Started {
        let images = ["amd64", "arm64"].into_iter().map(|arch| Image::new(arch, &setup)).collect();
        let fake = Arc::new(Fake { setup, images, present: Mutex::new(HashSet::new()) });
        let for_other = fake.clone();
        let other = Server::start("127.0.0.2", move |_, r| for_other.other_host(r));
        let (for_registry, other_addr) = (fake.clone(), other.addr.clone());
        let registry = Server::start("127.0.0.1", move |own, r| for_registry.registry(own, &other_addr, r));
        Started { fake, registry, other }
    }

    pub fn layer_digest(&self) -> &str {
        &self.images[0].layer_digest
    }

    fn image(&self, repository: &str) -> Option<&Image> {
        let arch = if repository.ends_with("_x86_64") {
            "amd64"
        } else if repository.ends_with("_aarch64") {
            "arm64"
        } else {
            return None;
        };
        self.images.iter().find(|i| i.arch == arch)
    }

    /// The bytes of blob `digest`, as served.
    fn blob(&self, digest_: &str) -> Option<Body> {
        for image in &self.images {
            if digest(&image.config) == digest_ {
                let mut config = image.config.clone();
                if self.setup.lie_about_configs {
                    config.extend_from_slice(b" ");
                }
                return Some(Body::Bytes(config));
            }
            if image.layer_digest == digest_ {
                return Some(layer_body(image.arch, self.setup.layer));
            }
        }
        None
    }

    fn registry(&self, own: &str, other: &str, r: &Request) -> Answer {
        if let Some(login) = &self.setup.login {
            if r.header("authorization") != Some(&format!("Basic {}", base64(login.as_bytes()))) {
                return Answer::new(401).header("WWW-Authenticate", "Basic realm=\"fake\"");
            }
        }
        let path = r.path().strip_prefix("/v2/").unwrap_or("");
        if let Some((repository, reference)) = path.split_once("/manifests/") {
            if r.method == "PUT" {
                return Answer::new(201).header("Docker-Content-Digest", r.body_digest.clone());
            }
            let Some(image) = self.image(repository) else { return Answer::new(404) };
            let mut bytes = image.manifest.clone();
            bytes.extend(std::iter::repeat_n(b' ', self.setup.manifest_padding));
            let told = if self.setup.lie_about_manifests { digest(b"another") } else { digest(&bytes) };
            if reference.starts_with("sha256:") && reference != digest(&bytes) {
                return Answer::new(404);
            }
            return Answer::new(200)
                .header("Content-Type", MANIFEST)
                .header("Docker-Content-Digest", told)
                .bytes(bytes);
        }
        if let Some((repository, rest)) = path.split_once("/blobs/") {
            if rest.starts_with("uploads/") {
                return self.upload(own, other, repository, r);
            }
            if r.method == "HEAD" {
                let present = self.present.lock().unwrap().contains(rest);
                return Answer::new(if present { 200 } else { 404 });
            }
            if self.setup.blobs_elsewhere {
                return Answer::new(307).header("Location", format!("http://{other}/storage/{rest}"));
            }
            return match self.blob(rest) {
                Some(body) => Answer::new(200).body(body),
                None => Answer::new(404),
            };
        }
        Answer::new(404)
    }

    fn upload(&self, own: &str, other: &str, repository: &str, r: &Request) -> Answer {
        match r.method.as_str() {
            "POST" => {
                let digest = r.query("mount").unwrap_or_default().replace("%3A", ":");
                if !self.setup.refuse_mounts {
                    self.present.lock().unwrap().insert(digest);
                    return Answer::new(201);
                }
                let host = if self.setup.upload_elsewhere { other } else { own };
                let location = format!("http://{host}/v2/{repository}/blobs/uploads/u-{}", r.body_len);
                Answer::new(202).header("Location", location)
            }
            "PUT" => self.received(r),
            _ => Answer::new(405),
        }
    }

    /// An upload's end: taken when its bytes are what its digest names.
    fn received(&self, r: &Request) -> Answer {
        let want = r.query("digest").unwrap_or_default().replace("%3A", ":");
        if want != r.body_digest {
            return Answer::new(400);
        }
        self.present.lock().unwrap().insert(want);
        Answer::new(201)
    }

    fn other_host(&self, r: &Request) -> Answer {
        if let Some(digest) = r.path().strip_prefix("/storage/") {
            return match self.blob(digest) {
                Some(body) => Answer::new(200).body(body),
                None => Answer::new(404),
            };
        }
        if r.method == "PUT" && r.path().contains("/blobs/uploads/") {
            return self.received(r);
        }
        Answer::new(404)
    }
}

impl Image {
    fn new(arch: &'static str, setup: &Setup) -> Image {
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
        }))
        .unwrap();
        let layer_digest = match layer_body(arch, setup.layer) {
            Body::Bytes(bytes) => digest(&bytes),
            _ => pattern_digest(setup.layer),
        };
        let manifest: Value = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": digest(&config),
            },
            "layers": [{
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": setup.layer,
                "digest": layer_digest,
            }],
        });
        Image { arch, config, layer_digest, manifest: serde_json::to_vec_pretty(&manifest).unwrap() }
    }
}

/// A layer: small ones differ by architecture; one over a MiB is the same
/// pattern for both, made as it is sent.
fn layer_body(arch: &str, size: u64) -> Body {
    if size > 1 << 20 {
        return Body::Pattern(size);
    }
    let mut bytes: Vec<u8> = format!("layer of {arch} ").into_bytes().into_iter().cycle().take(size as usize).collect();
    bytes.truncate(size as usize);
    Body::Bytes(bytes)
}
