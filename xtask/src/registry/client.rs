//! The client: the OCI distribution API, spoken directly, one connection
//! pool per registry: manifests (existence, platforms, retags, indexes,
//! deletes), blobs mounted or copied for an index, and the listings of
//! repositories and tags, page after page.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{parse_challenge, Challenge, Credentials};
use super::failure::{failure, refused, status_error, transport_error, Retry, QUICK_RETRY_DELAYS, RETRY_DELAYS};
use super::transport::Transport;
use crate::config::Settings;
use crate::model::{hex, Platform, Reference};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest type asked for, so the registry never converts one.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
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

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: String,
}

/// One member of an index to publish: an image already in the registry.
pub struct Member {
    pub reference: Reference,
    pub manifest: Manifest,
    pub platform: Platform,
}

/// One registry host: its connection pool, its scheme and what it wants.
pub(super) struct Host {
    pub(super) name: String,
    base: String,
    pub(super) agent: ureq::Agent,
    challenge: Mutex<Option<Arc<Challenge>>>,
    /// Bearer tokens by scope.
    pub(super) tokens: Mutex<HashMap<String, String>>,
}

/// The client: one per run, shared by every thread.
pub struct Registry {
    credentials: Credentials,
    transport: Transport,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    retry: Retry,
}

/// One request to a repository: `path` is below `/v2/<repository>/`.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    access: Access,
    /// Scopes besides the repository's own (another repository to mount from).
    extra_scopes: &'a [String],
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a [u8]>,
}

impl<'a> Call<'a> {
    fn new(method: &'a str, path: &'a str, access: Access) -> Call<'a> {
        Call { method, path, access, extra_scopes: &[], headers: &[], body: None }
    }

    fn manifest(method: &'a str, path: &'a str) -> Call<'a> {
        Call { headers: &[("Accept", ACCEPT)], ..Call::new(method, path, Access::Pull) }
    }
}

/// How a request reads or writes the repository, for the token's scope.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Pull,
    Push,
    Delete,
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

    fn host(&self, name: &str) -> Result<Arc<Host>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(host) = hosts.get(name) {
            return Ok(host.clone());
        }
        let host = Arc::new(Host {
            name: name.to_string(),
            base: self.transport.base(name),
            agent: self.transport.agent(name)?,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        });
        hosts.insert(name.to_string(), host.clone());
        Ok(host)
    }

    /// Sends a request, answering the registry's authentication challenge
    /// once; the caller judges the status.
    fn send(&self, r: &Reference, call: Call<'_>) -> Result<ureq::Response> {
        let action = match call.access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
            Access::Delete => "delete",
        };
        let mut scopes = vec![format!("repository:{}:{action}", r.repository)];
        scopes.extend(call.extra_scopes.iter().cloned());
        let path = format!("/v2/{}/{}", r.repository, call.path);
        self.send_to(&r.host, &path, &scopes, r, call)
    }

    /// Sends a request for `path` (from `/v2/` on) to `host`, with a token
    /// for `scopes` where the registry wants one; `what` names it in errors.
    fn send_to(
        &self,
        host_name: &str,
        path: &str,
        scopes: &[String],
        what: &dyn std::fmt::Display,
        call: Call<'_>,
    ) -> Result<ureq::Response> {
        let Call { method, headers, body, .. } = call;
        let host = self.host(host_name)?;
        let url = format!("{}{path}", host.base);
        let scope_key = scopes.join(" ");
        let mut answered = false;
        loop {
            let mut request = host.agent.request(method, &url);
            for (name, value) in headers {
                request = request.set(name, value);
            }
            let challenge = host.challenge.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(challenge) = &challenge {
                if let Some(auth) = self.credentials.authorization(&host, challenge, scopes, &scope_key, answered)? {
                    request = request.set("Authorization", &auth);
                }
            }
            let sent = match body {
                Some(bytes) => request.send_bytes(bytes),
                None => request.call(),
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(401, response)) if !answered => {
                    let header = response.header("www-authenticate").unwrap_or_default().to_string();
                    let Some(challenge) = parse_challenge(&header) else {
                        return Err(refused(host_name, what, "it asks for an authentication this tool does not speak"));
                    };
                    *host.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(challenge));
                    host.tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(&scope_key);
                    answered = true;
                }
                Err(ureq::Error::Status(_, response)) => return Ok(response),
                Err(ureq::Error::Transport(t)) => return Err(transport_error(host_name, &t)),
            }
        }
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
        let next = std::sync::atomic::AtomicUsize::new(0);
        let answers: Mutex<Vec<Option<Result<bool>>>> = Mutex::new(references.iter().map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..parallel.max(1).min(references.len()) {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(reference) = references.get(k) else { return };
                    let found = self.exists(reference, quick);
                    answers.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(found);
                });
            }
        });
        let answers = answers.into_inner().unwrap_or_else(|e| e.into_inner());
        answers.into_iter().map(|a| a.unwrap_or_else(|| Err(anyhow!("not asked")))).collect()
    }

    /// The manifest `reference` names, or `None` when the registry lacks it.
    pub fn manifest(&self, reference: &str) -> Result<Option<Manifest>> {
        let r = Reference::parse(reference)?;
        self.retry.run(|| self.manifest_of(&r))
    }

    fn manifest_of(&self, r: &Reference) -> Result<Option<Manifest>> {
        let response = self.send(r, Call::manifest("GET", &format!("manifests/{}", r.object)))?;
        match response.status() {
            200..=299 => {}
            404 => return Ok(None),
            code => return Err(status_error(r, code, &response)),
        }
        let header_type = response.content_type().to_string();
        let header_digest = response.header("docker-content-digest").map(String::from);
        let bytes = read_body(response, r)?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(String::from))
            .unwrap_or(header_type);
        let digest = header_digest.unwrap_or_else(|| digest_of(&bytes));
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

    fn platform_of(&self, r: &Reference, manifest: &Manifest) -> Result<Platform> {
        if manifest.is_index() {
            bail!("{r} is a multi-architecture index in the registry, not one image");
        }
        let image: ImageManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| anyhow!("the registry's manifest of {r} is not an image manifest: {e}"))?;
        let response = self.send(r, Call::new("GET", &format!("blobs/{}", image.config.digest), Access::Pull))?;
        if !(200..300).contains(&response.status()) {
            return Err(status_error(r, response.status(), &response));
        }
        let config: ImageConfig = serde_json::from_slice(&read_body(response, r)?)
            .map_err(|e| anyhow!("the registry's config of {r} cannot be read: {e}"))?;
        if config.os.is_empty() || config.architecture.is_empty() {
            bail!("the registry's config of {r} does not say which platform it is for");
        }
        Ok(Platform { os: config.os, architecture: config.architecture, variant: config.variant })
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

    /// Every repository of the registry at `host`, from its `_catalog`,
    /// page after page.
    pub fn repositories(&self, host: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let scopes = ["registry:catalog:*".to_string()];
        let what = format!("{host}/v2/_catalog");
        let mut out = Vec::new();
        let mut path = format!("/v2/_catalog?n={PAGE}");
        loop {
            let (page, next) = self.retry.run(|| {
                let response = self.send_to(host, &path, &scopes, &what, Call::new("GET", "", Access::Pull))?;
                match response.status() {
                    200 => {}
                    404 => bail!("registry {host} does not list its repositories (no _catalog endpoint)"),
                    code => return Err(status_error(&Reference::parse(&format!("{host}/_catalog"))?, code, &response)),
                }
                let next = next_page(&response);
                let body = read_body(response, &Reference::parse(&format!("{host}/_catalog"))?)?;
                let page: Page = serde_json::from_slice(&body)
                    .map_err(|e| anyhow!("registry {host}: its repository list cannot be read: {e}"))?;
                Ok((page, next))
            })?;
            out.extend(page.repositories.unwrap_or_default());
            match next {
                Some(next) if next != path => path = next,
                _ => return Ok(out),
            }
        }
    }

    /// Every tag of a repository (`host/repository`), page after page;
    /// none when the registry has no such repository.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let r = Reference::parse(repository)?;
        let mut out = Vec::new();
        let mut path = format!("tags/list?n={PAGE}");
        loop {
            let (page, next) = self.retry.run(|| {
                let response = self.send(&r, Call::new("GET", &path, Access::Pull))?;
                match response.status() {
                    200 => {}
                    404 => return Ok((Page { tags: None }, None)),
                    code => return Err(status_error(&r, code, &response)),
                }
                let next = next_page(&response);
                let body = read_body(response, &r)?;
                let page: Page = serde_json::from_slice(&body).map_err(|e| {
                    anyhow!("registry {}: the tag list of {} cannot be read: {e}", r.host, r.repository)
                })?;
                Ok((page, next))
            })?;
            out.extend(page.tags.unwrap_or_default());
            // The next page's link is absolute from `/v2/`; `send` wants it
            // below the repository.
            let below = format!("/v2/{}/", r.repository);
            match next.as_deref().and_then(|n| n.strip_prefix(&below)) {
                Some(next) if next != path => path = next.to_string(),
                _ => return Ok(out),
            }
        }
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
                    self.mount(&t, &member.reference, &blob.digest)?;
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

    /// Makes blob `digest` of `from` present in `to`'s repository: already
    /// there, mounted across repositories, or else copied.
    fn mount(&self, to: &Reference, from: &Reference, digest: &str) -> Result<()> {
        let head = self.send(to, Call::new("HEAD", &format!("blobs/{digest}"), Access::Push))?;
        if head.status() == 200 {
            return Ok(());
        }
        let from_scope = [format!("repository:{}:pull", from.repository)];
        let path = format!("blobs/uploads/?mount={digest}&from={}", from.repository);
        let started = self
            .send(to, Call { extra_scopes: &from_scope, body: Some(&[]), ..Call::new("POST", &path, Access::Push) })?;
        match started.status() {
            201 => Ok(()),
            202 => {
                // The registry would not mount: copy the blob through.
                let location = started.header("location").unwrap_or_default().to_string();
                let blob = self.send(from, Call::new("GET", &format!("blobs/{digest}"), Access::Pull))?;
                if blob.status() != 200 {
                    return Err(status_error(from, blob.status(), &blob));
                }
                let bytes = read_body(blob, from)?;
                let host = self.host(&to.host)?;
                let url = if location.starts_with("http") { location } else { format!("{}{location}", host.base) };
                let sep = if url.contains('?') { '&' } else { '?' };
                let mut request = host.agent.put(&format!("{url}{sep}digest={digest}"));
                if let Some(challenge) = host.challenge.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    let scopes = [format!("repository:{}:pull,push", to.repository)];
                    if let Some(auth) = self.credentials.authorization(&host, &challenge, &scopes, &scopes[0], false)? {
                        request = request.set("Authorization", &auth);
                    }
                }
                match request.set("Content-Type", "application/octet-stream").send_bytes(&bytes) {
                    Ok(_) => Ok(()),
                    Err(ureq::Error::Status(code, response)) => Err(status_error(to, code, &response)),
                    Err(ureq::Error::Transport(t)) => Err(transport_error(&to.host, &t)),
                }
            }
            code => Err(status_error(to, code, &started)),
        }
    }
}

/// Entries asked for per page of a listing.
const PAGE: usize = 1000;

/// The path of the next page of a listing, from its `Link` header
/// (`</v2/…?last=x&n=1000>; rel="next"`).
fn next_page(response: &ureq::Response) -> Option<String> {
    let link = response.header("link")?;
    let start = link.find('<')? + 1;
    let end = start + link[start..].find('>')?;
    let target = &link[start..end];
    // Relative, as docker-registry writes it, or a whole URL.
    let path = target.find("/v2/").map_or(target, |at| &target[at..]);
    link[end..].contains("next").then(|| path.to_string())
}

fn read_body(response: ureq::Response, r: &Reference) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(64 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| failure(format!("registry {} broke off its answer about {r}: {e}", r.host), true))?;
    Ok(bytes)
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}
