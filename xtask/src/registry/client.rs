//! The client: the OCI distribution API, spoken directly, one connection
//! pool per registry: manifests (existence, platforms and labels from
//! configs, retags, indexes, deletes), each read bounded and checked
//! against its digest. Listings are in `listing`, blobs in `blobs`, and how
//! a request is sent in `exchange`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{Challenge, Credentials};
use super::exchange::{Access, Call};
use super::failure::{failure, status_error, Retry, QUICK_RETRY_DELAYS, RETRY_DELAYS};
use super::limits::{MAX_DOCUMENT_BYTES, MAX_MANIFEST_BYTES};
use super::transport::{Origin, Transport};
use crate::config::Settings;
use crate::model::{hex, Platform, Reference};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest type asked for, so the registry never converts one.
pub(super) const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// A manifest as the registry holds it: the bytes are what its digest is of.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type == DOCKER_LIST || self.media_type == OCI_INDEX
    }
}

#[derive(Deserialize)]
struct ImageManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// A blob an image manifest names: by its digest, and its size.
#[derive(Deserialize)]
pub(super) struct Descriptor {
    pub digest: String,
    #[serde(default)]
    pub size: u64,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: String,
    #[serde(default)]
    config: Option<RunConfig>,
}

/// What an image's config says of the containers it runs: its labels.
#[derive(Deserialize, Default)]
struct RunConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// One member of an index to publish: an image already in the registry.
pub struct Member {
    pub reference: Reference,
    pub manifest: Manifest,
    pub platform: Platform,
}

/// One registry host: its connection pool, its scheme and what it wants.
pub(super) struct Host {
    pub name: String,
    /// `scheme://host[:port]` of its API.
    pub base: String,
    /// The origin of `base`: the only one its credentials go to.
    pub origin: Origin,
    pub agent: ureq::Agent,
    pub challenge: Mutex<Option<Arc<Challenge>>>,
    /// Bearer tokens by scope.
    pub tokens: Mutex<HashMap<String, String>>,
}

/// The client: one per run, shared by every thread.
pub struct Registry {
    pub(super) credentials: Credentials,
    pub(super) transport: Transport,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    pub(super) retry: Retry,
}

impl Registry {
    pub fn new(credentials: Credentials, transport: Transport) -> Registry {
        Registry { credentials, transport, hosts: Mutex::new(HashMap::new()), retry: Retry::default() }
    }

    /// The client for `settings`: the engine's credentials, docker's rules
    /// for plain HTTP and CA files, and the settings' insecure registries.
    pub fn of(settings: &Settings) -> Registry {
        Registry::new(Credentials::of(settings.engine), Transport::system(&settings.insecure_registries))
    }

    /// Tries failed calls again the way `retry` says.
    pub fn retrying(mut self, retry: Retry) -> Registry {
        self.retry = retry;
        self
    }

    /// The host `name` (`host[:port]`): a registry, or where one sent a
    /// request.
    pub(super) fn host(&self, name: &str) -> Result<Arc<Host>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(host) = hosts.get(name) {
            return Ok(host.clone());
        }
        let base = self.transport.base(name);
        let host = Arc::new(Host {
            name: name.to_string(),
            origin: Origin::of(&base).map_err(|e| anyhow!("registry {name} cannot be reached: {e}"))?,
            base,
            agent: self.transport.agent(name)?,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        });
        hosts.insert(name.to_string(), host.clone());
        Ok(host)
    }

    /// Whether the registry has `reference`: a `HEAD` on its manifest.
    /// `quick`: give up sooner on a failing registry (the caller can build).
    pub fn exists(&self, reference: &str, quick: bool) -> Result<bool> {
        let r = Reference::parse(reference)?;
        self.retry.run_with(if quick { &QUICK_RETRY_DELAYS } else { &RETRY_DELAYS }, || {
            let response = self.send(&r, Call::manifest("HEAD", &format!("manifests/{}", r.object)))?;
            match response.status() {
                200..=299 => Ok(true),
                404 => Ok(false),
                code => Err(status_error(&r, code, &response)),
            }
        })
    }

    /// Whether the registry has each of `references`, asked `parallel` at a
    /// time on kept-alive connections; each answer, or failure, on its own.
    pub fn exist_all(&self, references: &[String], parallel: usize, quick: bool) -> Vec<Result<bool>> {
        super::each(references, parallel, |reference| self.exists(reference, quick))
    }

    /// The manifest `reference` names, or `None` when the registry lacks it.
    pub fn manifest(&self, reference: &str) -> Result<Option<Manifest>> {
        let r = Reference::parse(reference)?;
        self.retry.run(|| self.manifest_of(&r))
    }

    /// The manifest `r` names, checked against its digest: the one asked
    /// for, and the one the registry tells (`Docker-Content-Digest`).
    fn manifest_of(&self, r: &Reference) -> Result<Option<Manifest>> {
        let reply = self.send(r, Call::manifest("GET", &format!("manifests/{}", r.object)))?;
        match reply.status() {
            200..=299 => {}
            404 => return Ok(None),
            code => return Err(status_error(r, code, &reply)),
        }
        let header_type = reply.content_type().to_string();
        let told = reply.header("docker-content-digest").map(String::from);
        let bytes = reply.body(&format_args!("the manifest of {r}"), MAX_MANIFEST_BYTES)?;
        let digest = digest_of(&bytes);
        let asked = r.object.contains(':').then_some(r.object.as_str());
        if asked.is_some_and(|d| !d.starts_with("sha256:")) {
            bail!("{r} is named by a digest this tool cannot check: name it by its sha256 digest or a tag");
        }
        // A registry that tells another algorithm's digest is taken at the
        // bytes' own, which is what the tool calls the manifest by.
        for expected in asked.into_iter().chain(told.as_deref()).filter(|d| d.starts_with("sha256:")) {
            if expected != digest {
                return Err(failure(
                    format!(
                        "registry {}: the manifest of {r} is not what its digest {expected} names (its bytes are \
                         {digest}): it was not used",
                        r.host
                    ),
                    false,
                ));
            }
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(String::from))
            .unwrap_or(header_type);
        Ok(Some(Manifest { media_type, digest, bytes }))
    }

    /// The platform of the image `reference` names, from its config blob in
    /// the registry; `None` when the registry lacks it.
    pub fn platform(&self, reference: &str) -> Result<Option<Platform>> {
        let r = Reference::parse(reference)?;
        self.retry.run(|| {
            let Some(manifest) = self.manifest_of(&r)? else { return Ok(None) };
            self.platform_of(&r, &manifest).map(Some)
        })
    }

    /// The platform of `manifest`, the image manifest `reference` names,
    /// from its config blob: the manifest is not read again.
    pub fn platform_in(&self, reference: &str, manifest: &Manifest) -> Result<Platform> {
        let r = Reference::parse(reference)?;
        self.retry.run(|| self.platform_of(&r, manifest))
    }

    fn platform_of(&self, r: &Reference, manifest: &Manifest) -> Result<Platform> {
        let config = self.config_of(r, manifest, "its platform")?;
        if config.os.is_empty() || config.architecture.is_empty() {
            bail!("the registry's config of {r} does not say which platform it is for");
        }
        Ok(Platform { os: config.os, architecture: config.architecture, variant: config.variant })
    }

    /// The labels of the image `reference` names, from its config blob in
    /// the registry; `None` when the registry lacks it.
    pub fn labels(&self, reference: &str) -> Result<Option<BTreeMap<String, String>>> {
        let r = Reference::parse(reference)?;
        self.retry.run(|| {
            let Some(manifest) = self.manifest_of(&r)? else { return Ok(None) };
            let config = self.config_of(&r, &manifest, "its labels")?;
            Ok(Some(config.config.and_then(|c| c.labels).unwrap_or_default()))
        })
    }

    /// The config blob of `manifest`, the image manifest `r` names, checked
    /// against its digest before `what` is read from it.
    fn config_of(&self, r: &Reference, manifest: &Manifest, what: &str) -> Result<ImageConfig> {
        if manifest.is_index() {
            bail!("{r} is a multi-architecture index in the registry, not one image");
        }
        let image: ImageManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| anyhow!("the registry's manifest of {r} is not an image manifest: {e}"))?;
        let expected = &image.config.digest;
        if !expected.starts_with("sha256:") {
            bail!("the config of {r} is named by {expected}, a digest this tool cannot check");
        }
        let reply = self.send(r, Call::new("GET", &format!("blobs/{expected}"), Access::Pull))?;
        if !(200..300).contains(&reply.status()) {
            return Err(status_error(r, reply.status(), &reply));
        }
        let bytes = reply.body(&format_args!("the config of {r}"), MAX_DOCUMENT_BYTES)?;
        let digest = digest_of(&bytes);
        if &digest != expected {
            return Err(failure(
                format!(
                    "registry {}: the config of {r} is not what its digest {expected} names (its bytes are {digest}): \
                     {what} was not read",
                    r.host
                ),
                false,
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("the registry's config of {r} cannot be read: {e}"))
    }

    /// Stores `manifest` under `target` (a tag or its digest).
    fn put_manifest(&self, target: &Reference, manifest: &Manifest) -> Result<()> {
        let path = format!("manifests/{}", target.object);
        let headers = [("Content-Type", manifest.media_type.as_str())];
        let call = Call { headers: &headers, body: Some(&manifest.bytes), ..Call::new("PUT", &path, Access::Push) };
        let response = self.send(target, call)?;
        match response.status() {
            200..=299 => Ok(()),
            code => Err(status_error(target, code, &response)),
        }
    }

    /// Points `target` (a tag in the same repository) at the manifest
    /// `source` names, byte for byte: same digest, same media type, and no
    /// blob moves. Writes only when `target` differs; says whether it wrote.
    pub fn retag(&self, source: &str, target: &str) -> Result<bool> {
        let (s, t) = (Reference::parse(source)?, Reference::parse(target)?);
        self.retry.run(|| {
            let manifest = self.manifest_of(&s)?.ok_or_else(|| anyhow!("the registry has no {s}"))?;
            let current = self.send(&t, Call::manifest("HEAD", &format!("manifests/{}", t.object)))?;
            if current.status() == 200 && current.header("docker-content-digest") == Some(manifest.digest.as_str()) {
                return Ok(false);
            }
            self.put_manifest(&t, &manifest)?;
            Ok(true)
        })
    }

    /// Deletes a manifest by digest (`host/repository@sha256:…`), and with
    /// it every tag that names it. Already gone is done.
    pub fn delete_manifest(&self, reference: &str) -> Result<()> {
        let r = Reference::parse(reference)?;
        if !r.object.starts_with("sha256:") {
            bail!("{reference} does not name a manifest by digest");
        }
        self.retry.run(|| {
            let response = self.send(&r, Call::new("DELETE", &format!("manifests/{}", r.object), Access::Delete))?;
            match response.status() {
                200..=299 | 404 => Ok(()),
                405 => Err(failure(
                    format!(
                        "registry {} does not allow deletes (405 Method Not Allowed): enable them in its \
                         configuration (storage: delete: enabled: true) and restart it",
                        r.host
                    ),
                    false,
                )),
                code => Err(status_error(&r, code, &response)),
            }
        })
    }

    /// Reads an index member: its manifest and, from its config, its platform.
    pub fn member(&self, reference: &str) -> Result<Option<Member>> {
        let r = Reference::parse(reference)?;
        self.retry.run(|| {
            let Some(manifest) = self.manifest_of(&r)? else { return Ok(None) };
            let platform = self.platform_of(&r, &manifest)?;
            Ok(Some(Member { reference: r.clone(), manifest, platform }))
        })
    }

    /// Publishes `target` as an index over `members`, images in other
    /// repositories of the same registry: their blobs are mounted into the
    /// target's repository and their manifests stored there by digest, as
    /// an index may only point at manifests of its own repository.
    pub fn push_index(&self, target: &str, members: &[Member]) -> Result<String> {
        let t = Reference::parse(target)?;
        self.retry.run(|| {
            for member in members {
                if member.reference.host != t.host {
                    bail!("{} is on another registry than {t}", member.reference);
                }
                let image: ImageManifest = serde_json::from_slice(&member.manifest.bytes)
                    .map_err(|e| anyhow!("{} is not an image manifest: {e}", member.reference))?;
                for blob in std::iter::once(&image.config).chain(&image.layers) {
                    self.mount(&t, &member.reference, blob)?;
                }
                self.put_manifest(&t.with_object(&member.manifest.digest), &member.manifest)?;
            }
            let docker = members.iter().all(|m| m.manifest.media_type == DOCKER_MANIFEST);
            let (media_type, entries) = (if docker { DOCKER_LIST } else { OCI_INDEX }, members);
            let manifests: Vec<serde_json::Value> = entries
                .iter()
                .map(|m| {
                    let mut platform =
                        serde_json::json!({ "architecture": m.platform.architecture, "os": m.platform.os });
                    if !m.platform.variant.is_empty() {
                        platform["variant"] = m.platform.variant.clone().into();
                    }
                    serde_json::json!({
                        "mediaType": m.manifest.media_type,
                        "digest": m.manifest.digest,
                        "size": m.manifest.bytes.len(),
                        "platform": platform,
                    })
                })
                .collect();
            let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
            let bytes = serde_json::to_vec_pretty(&index)?;
            let manifest = Manifest { media_type: media_type.to_string(), digest: digest_of(&bytes), bytes };
            self.put_manifest(&t, &manifest)?;
            Ok(manifest.digest)
        })
    }
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}
