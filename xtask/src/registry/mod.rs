//! Registry: the OCI distribution API, spoken directly, for everything that
//! reads or writes manifests (existence, platforms, retags, indexes), with
//! the engine's own credentials; and how registry failures are told apart
//! and retried, for these calls and the engine's pulls and pushes alike.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{EngineKind, Settings};
use crate::model::Platform;
use crate::model::{Event, Observer, Reference};
use crate::process::{first_line, Interrupt};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest type asked for, so the registry never converts one.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A manifest is small: a registry silent this long is stalled.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alive connections kept open per registry; as many as requests run at once.
const IDLE_PER_HOST: usize = 16;

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

/// A registry call that failed: `transient` failures are worth another try
/// (after `retry_after`, when the registry said); `refused` means nothing
/// listens at the address, which is worth a few seconds only.
#[derive(Debug)]
pub struct RegistryError {
    message: String,
    pub transient: bool,
    pub refused: bool,
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RegistryError {}

fn failure(message: String, transient: bool) -> anyhow::Error {
    anyhow::Error::new(RegistryError { message, transient, refused: false, retry_after: None })
}

/// Where credentials come from: the engine's own files and helpers.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Auth files, most preferred first (podman's, then docker's `config.json`).
    files: Vec<PathBuf>,
}

/// A user name and its secret, never printed.
#[derive(Clone)]
struct Login {
    user: String,
    secret: String,
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// The files the engine reads: docker's `$DOCKER_CONFIG/config.json`
    /// (else `~/.docker/config.json`); podman's `REGISTRY_AUTH_FILE`, else
    /// `$XDG_RUNTIME_DIR/containers/auth.json` and `~/.config/containers/auth.json`,
    /// then docker's, as podman falls back to it.
    pub fn of(engine: EngineKind) -> Credentials {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME");
        let docker = var("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| home.as_ref().map(|h| h.join(".docker/config.json")));
        let mut files = Vec::new();
        if engine == EngineKind::Podman {
            if let Some(file) = var("REGISTRY_AUTH_FILE") {
                files.push(file);
            } else {
                files.extend(var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
                files.extend(home.as_ref().map(|h| h.join(".config/containers/auth.json")));
            }
        }
        files.extend(docker);
        Credentials { files }
    }

    /// The login for `host`, if any file or helper has one.
    fn login(&self, host: &str) -> Result<Option<Login>> {
        for file in &self.files {
            let Ok(text) = std::fs::read_to_string(file) else { continue };
            let auth: AuthFile = serde_json::from_str(&text)
                .with_context(|| format!("cannot read credentials file {}", file.display()))?;
            if let Some(helper) = auth.cred_helpers.get(host) {
                return helper_login(helper, host);
            }
            let keys =
                [host.to_string(), format!("https://{host}"), format!("http://{host}"), format!("https://{host}/v1/")];
            let entry = keys.iter().find_map(|k| auth.auths.get(k));
            if let Some(entry) = entry {
                if let (Some(user), Some(secret)) = (&entry.username, &entry.password) {
                    return Ok(Some(Login { user: user.clone(), secret: secret.clone() }));
                }
                if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                    let decoded = base64_decode(encoded)
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| anyhow!("the login for {host} in {} is not valid base64", file.display()))?;
                    let (user, secret) = decoded
                        .split_once(':')
                        .ok_or_else(|| anyhow!("the login for {host} in {} has no `user:password`", file.display()))?;
                    return Ok(Some(Login { user: user.into(), secret: secret.into() }));
                }
            }
            if let Some(store) = &auth.creds_store {
                return helper_login(store, host);
            }
        }
        Ok(None)
    }
}

/// `docker-credential-<helper> get`, given the registry on stdin.
fn helper_login(helper: &str, host: &str) -> Result<Option<Login>> {
    let sh = xshell::Shell::new()?;
    let program = format!("docker-credential-{helper}");
    let out = xshell::cmd!(sh, "{program} get").stdin(host).quiet().ignore_status().secret().output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Helpers say so on stdout when they have nothing for the registry.
        if stdout.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        bail!("credential helper {program} failed for {host}: {}", stdout.lines().next().unwrap_or("no output"));
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        user: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer =
        serde_json::from_str(&stdout).with_context(|| format!("{program} gave no login for {host}"))?;
    Ok(Some(Login { user: answer.user, secret: answer.secret }))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How plain-HTTP registries and CA files are found.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// Registries (`host[:port]`) or IP ranges (`10.0.0.0/8`) spoken to over
    /// plain HTTP, as docker's `insecure-registries`.
    pub insecure: Vec<String>,
    /// Where per-registry CA files live: `<dir>/<host[:port]>/*.crt`.
    pub certs_dirs: Vec<PathBuf>,
}

impl Transport {
    /// docker's rules: loopback and the daemon's `insecure-registries`
    /// (`/etc/docker/daemon.json`) are plain HTTP, on top of `extra`; CA
    /// files come from `/etc/docker/certs.d` and `/etc/containers/certs.d`.
    pub fn system(extra: &[String]) -> Transport {
        let mut insecure = extra.to_vec();
        if let Ok(text) = std::fs::read_to_string("/etc/docker/daemon.json") {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(list) = value["insecure-registries"].as_array() {
                    insecure.extend(list.iter().filter_map(|v| v.as_str()).map(String::from));
                }
            }
        }
        Transport { insecure, certs_dirs: vec!["/etc/docker/certs.d".into(), "/etc/containers/certs.d".into()] }
    }

    pub fn is_plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.insecure.iter().any(|entry| matches_insecure(entry, host))
    }

    /// The CA certificates for `host` besides the system's, as DER.
    fn ca_files(&self, host: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in &self.certs_dirs {
            let Ok(entries) = std::fs::read_dir(dir.join(host)) else { continue };
            let mut found: Vec<PathBuf> =
                entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "crt")).collect();
            found.sort();
            files.extend(found);
        }
        files
    }
}

/// Whether an `insecure-registries` entry covers `host`: the same
/// `host[:port]`, or a CIDR range holding its IP address.
fn matches_insecure(entry: &str, host: &str) -> bool {
    let entry = entry.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    if entry == host {
        return true;
    }
    let Some((net, bits)) = entry.split_once('/') else { return false };
    let ip = host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    match (net.parse::<std::net::Ipv4Addr>(), ip.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) {
        (Ok(net), Ok(ip), Ok(bits)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        _ => false,
    }
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields = HashMap::new();
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        fields.insert(key, value.to_string());
        rest = next;
    }
    Some(Challenge::Bearer { realm: fields.remove("realm")?, service: fields.remove("service") })
}

/// One registry host: its connection pool, its scheme and what it wants.
struct Host {
    name: String,
    base: String,
    agent: ureq::Agent,
    challenge: Mutex<Option<Arc<Challenge>>>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
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
        let api = if name == "docker.io" { "registry-1.docker.io" } else { name };
        let plain = self.transport.is_plain_http(name);
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .timeout_write(READ_TIMEOUT)
            .max_idle_connections_per_host(IDLE_PER_HOST)
            .redirects(5)
            .user_agent(concat!("cargo-xtask-images/", env!("CARGO_PKG_VERSION")));
        if !plain {
            builder = builder.tls_config(Arc::new(self.tls_config(name)?));
        }
        let host = Arc::new(Host {
            name: name.to_string(),
            base: format!("{}://{api}", if plain { "http" } else { "https" }),
            agent: builder.build(),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        });
        hosts.insert(name.to_string(), host.clone());
        Ok(host)
    }

    /// The system's roots, and the registry's own CA files.
    fn tls_config(&self, host: &str) -> Result<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().unwrap_or_default() {
            let _ = roots.add(cert);
        }
        for file in self.transport.ca_files(host) {
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&file)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| anyhow!("cannot read CA file {}: {e}", file.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| anyhow!("CA file {} holds an unusable certificate: {e}", file.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth())
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
                if let Some(auth) = self.authorization(&host, challenge, scopes, &scope_key, answered)? {
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

    /// The `Authorization` header for a challenge: basic with the login, or a
    /// bearer token for the scopes, fetched once (again when `fresh`).
    fn authorization(
        &self,
        host: &Host,
        challenge: &Challenge,
        scopes: &[String],
        scope_key: &str,
        fresh: bool,
    ) -> Result<Option<String>> {
        match challenge {
            Challenge::Basic => Ok(self
                .credentials
                .login(&host.name)?
                .map(|l| format!("Basic {}", base64_encode(format!("{}:{}", l.user, l.secret).as_bytes())))),
            Challenge::Bearer { realm, service } => {
                if !fresh {
                    if let Some(token) = host.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(scope_key) {
                        return Ok(Some(format!("Bearer {token}")));
                    }
                }
                let mut request = host.agent.get(realm);
                if let Some(service) = service {
                    request = request.query("service", service);
                }
                for scope in scopes {
                    request = request.query("scope", scope);
                }
                let login = self.credentials.login(&host.name)?;
                if let Some(l) = &login {
                    let basic = base64_encode(format!("{}:{}", l.user, l.secret).as_bytes());
                    request = request.set("Authorization", &format!("Basic {basic}"));
                }
                let response = match request.call() {
                    Ok(response) => response,
                    Err(ureq::Error::Status(401 | 403, _)) => {
                        return Err(refused(&host.name, &host.name, "its token service refused the login"));
                    }
                    Err(ureq::Error::Status(code, _)) => {
                        return Err(failure(
                            format!("registry {}: its token service answered {code}", host.name),
                            code == 429 || code >= 500,
                        ));
                    }
                    Err(ureq::Error::Transport(t)) => return Err(transport_error(&host.name, &t)),
                };
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = response.into_string().unwrap_or_default();
                let token: Token = serde_json::from_str(&body)
                    .map_err(|e| anyhow!("registry {}: its token service gave no token: {e}", host.name))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| anyhow!("registry {}: its token service gave no token", host.name))?;
                host.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(scope_key.to_string(), token.clone());
                Ok(Some(format!("Bearer {token}")))
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
                    if let Some(auth) = self.authorization(&host, &challenge, &scopes, &scopes[0], false)? {
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
    format!("sha256:{}", crate::catalog::tagging::hex(&Sha256::digest(bytes)))
}

fn refused(registry: &str, what: &dyn std::fmt::Display, why: &str) -> anyhow::Error {
    failure(
        format!("registry {registry} refused the credentials for {what} ({why}): run `docker login {registry}`"),
        false,
    )
}

/// A status the caller did not expect, told by its code alone.
fn status_error(r: &Reference, code: u16, response: &ureq::Response) -> anyhow::Error {
    let registry = &r.host;
    match code {
        401 => refused(registry, r, "401 Unauthorized"),
        403 => failure(
            format!(
                "registry {registry} refused access to {r} (403 Forbidden): the login lacks permission for {}",
                r.repository
            ),
            false,
        ),
        429 | 500..=599 => {
            let retry_after =
                response.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
            anyhow::Error::new(RegistryError {
                message: format!("registry {registry} failed: {code} {} for {r}", response.status_text()),
                transient: true,
                refused: false,
                retry_after,
            })
        }
        _ => failure(format!("registry {registry} answered {code} {} for {r}", response.status_text()), false),
    }
}

fn transport_error(registry: &str, t: &ureq::Transport) -> anyhow::Error {
    use ureq::ErrorKind::*;
    let said = t.to_string();
    let lower = said.to_lowercase();
    let refused = t.kind() == ConnectionFailed && lower.contains("refused");
    let (message, transient) = match t.kind() {
        Dns => (format!("registry {registry} is not reachable: no such host ({said})"), false),
        InvalidUrl | UnknownScheme => (format!("registry {registry}: {said}"), false),
        _ if lower.contains("certificate") || lower.contains("tls") => (
            format!(
                "registry {registry}: TLS failed ({said}): put its CA in /etc/docker/certs.d/{registry}/ca.crt, or \
                 list it in insecure_registries if it speaks plain HTTP"
            ),
            false,
        ),
        _ => (format!("registry {registry} is not reachable: {said}"), true),
    };
    anyhow::Error::new(RegistryError { message, transient, refused, retry_after: None })
}

/// Turns what an engine CLI said about a failed registry call into a
/// [`RegistryError`] (the engine's pulls and pushes only speak text).
pub fn cli_error(reference: &str, stderr: &str) -> anyhow::Error {
    let registry = registry_of(reference);
    let lower = stderr.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let (message, transient) = if has(&["manifest unknown", "not found", "no such manifest"]) {
        (format!("the registry has no {reference}"), false)
    } else if has(&[
        "connection refused",
        "i/o timeout",
        "connection reset",
        "eof",
        "broken pipe",
        "timeout",
        "use of closed network connection",
    ]) {
        (format!("registry {registry} is not reachable: {}", first_line(stderr)), true)
    } else if has(&["no such host"]) {
        (format!("registry {registry} is not reachable: {}", first_line(stderr)), false)
    } else if has(&["unauthorized", "authentication required", "denied", "no basic auth credentials"]) {
        (format!("registry {registry} refused the credentials for {reference}: run `docker login {registry}`"), false)
    } else if has(&[
        "toomanyrequests",
        "429 too many",
        "500 internal",
        "502 bad",
        "503 service",
        "504 gateway",
        "status: 5",
        "status code 5",
    ]) {
        (format!("registry {registry} failed: {}", first_line(stderr)), true)
    } else if has(&["blob unknown", "blob upload unknown"]) {
        // Another push of the same layers, from this engine or another, was
        // under way: the next try finds them there.
        (format!("registry {registry} lost a layer of a push under way: {}", first_line(stderr)), true)
    } else {
        (format!("{reference}: {}", first_line(stderr)), false)
    };
    let refused = transient && lower.contains("connection refused");
    anyhow::Error::new(RegistryError { message, transient, refused, retry_after: None })
}

pub fn registry_of(reference: &str) -> &str {
    reference.split('/').next().unwrap_or(reference)
}

/// Waits between tries of a registry call that failed transiently: about
/// twenty seconds in all, so that a push gets through a registry that fails
/// one connection in five; then the last failure is reported.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(4),
    Duration::from_secs(4),
    Duration::from_secs(4),
];

/// For a pull that has a build to fall back on: waiting long is worse than building.
pub const QUICK_RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];

/// How long a registry that refuses connections is waited for.
const REFUSED_BUDGET: Duration = Duration::from_millis(1500);

/// The longest `Retry-After` honoured between two tries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Whether an error is a registry failure worth another try.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<RegistryError>().is_some_and(|r| r.transient)
}

fn is_refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<RegistryError>().is_some_and(|r| r.refused)
}

/// How failed registry calls are tried again: within a budget of waits,
/// never once the run is interrupted, each retry told to `events` as
/// [`Event::Retrying`].
#[derive(Clone, Default)]
pub struct Retry {
    interrupt: Interrupt,
    events: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("interrupt", &self.interrupt).field("tells", &self.events.is_some()).finish()
    }
}

impl Retry {
    pub fn new(interrupt: Interrupt, events: Option<Arc<dyn Observer>>) -> Retry {
        Retry { interrupt, events }
    }

    /// Runs `call`, again after each transient failure, waiting
    /// [`RETRY_DELAYS`] in turn.
    pub fn run<T>(&self, call: impl FnMut() -> Result<T>) -> Result<T> {
        self.run_with(&RETRY_DELAYS, call)
    }

    /// [`Retry::run`] with waits of its own.
    pub fn run_with<T>(&self, delays: &[Duration], mut call: impl FnMut() -> Result<T>) -> Result<T> {
        let mut waited_refused = Duration::ZERO;
        for (attempt, &delay) in delays.iter().enumerate() {
            match call() {
                Err(e) if is_refused(&e) && waited_refused >= REFUSED_BUDGET => return Err(e),
                Err(e) if is_transient(&e) && !self.interrupt.is_set() => {
                    if is_refused(&e) {
                        waited_refused += delay;
                    }
                    let asked = e.downcast_ref::<RegistryError>().and_then(|r| r.retry_after).unwrap_or_default();
                    let wait = delay.max(asked.min(MAX_RETRY_AFTER));
                    if let Some(events) = &self.events {
                        events.event(Event::Retrying(format!(
                            "{e}; try {} in {:.1}s",
                            attempt + 2,
                            wait.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(wait);
                }
                done => return done,
            }
        }
        call()
    }
}

/// The daemon talks plain HTTP to registries on loopback; the CLI's own
/// registry calls must be told so.
pub fn is_loopback(reference: &str) -> bool {
    let host = reference.split('/').next().unwrap_or("");
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let parse = |s: &str| {
            let r = Reference::parse(s).unwrap();
            (r.host, r.repository, r.object)
        };
        let own = |h: &str, r: &str, o: &str| (h.to_string(), r.to_string(), o.to_string());
        assert_eq!(parse("127.0.0.1:5000/images/a_x86_64:abc"), own("127.0.0.1:5000", "images/a_x86_64", "abc"));
        assert_eq!(parse("localhost/x"), own("localhost", "x", "latest"));
        assert_eq!(parse("r.example/a/b@sha256:00"), own("r.example", "a/b", "sha256:00"));
        assert_eq!(parse("busybox"), own("docker.io", "library/busybox", "latest"));
        assert_eq!(parse("gvisor/x:1"), own("docker.io", "gvisor/x", "1"));
        assert_eq!(Reference::parse("r.example:5000/a:t").unwrap().to_string(), "r.example:5000/a:t");
        assert_eq!(Reference::parse("r.example/a@sha256:0").unwrap().to_string(), "r.example/a@sha256:0");
    }

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"Registry Realm\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a:pull\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://t:1/token"),
            Some(Challenge::Bearer { realm: "http://t:1/token".into(), service: None })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }

    #[test]
    fn insecure_entries() {
        assert!(matches_insecure("r.example:5000", "r.example:5000"));
        assert!(matches_insecure("http://r.example:5000/", "r.example:5000"));
        assert!(!matches_insecure("r.example", "r.example:5000"));
        assert!(matches_insecure("10.0.0.0/8", "10.1.2.3:5000"));
        assert!(matches_insecure("10.1.2.3/32", "10.1.2.3"));
        assert!(!matches_insecure("10.0.0.0/8", "11.1.2.3:5000"));
        assert!(!matches_insecure("10.0.0.0/8", "r.example"));
        let t = Transport { insecure: vec!["build.lan:5000".into()], certs_dirs: vec![] };
        assert!(
            t.is_plain_http("127.0.0.1:5000") && t.is_plain_http("localhost:1") && t.is_plain_http("build.lan:5000")
        );
        assert!(!t.is_plain_http("r.example"));
    }

    #[test]
    fn logins_from_auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let auth = base64_encode(b"me:s3cret");
        std::fs::write(
            &docker,
            format!(r#"{{"auths":{{"r.example:5000":{{"auth":"{auth}"}},"https://other.example/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let podman = dir.path().join("auth.json");
        std::fs::write(&podman, r#"{"auths":{"r.example:5000":{"username":"pod","password":"pw"}}}"#).unwrap();
        let docker_only = Credentials { files: vec![docker.clone()] };
        let login = docker_only.login("r.example:5000").unwrap().unwrap();
        assert_eq!((login.user.as_str(), login.secret.as_str()), ("me", "s3cret"));
        assert_eq!(docker_only.login("other.example").unwrap().unwrap().user, "me");
        assert!(docker_only.login("nobody.example").unwrap().is_none());
        let both = Credentials { files: vec![podman, docker] };
        assert_eq!(both.login("r.example:5000").unwrap().unwrap().user, "pod");
        assert_eq!(both.login("other.example").unwrap().unwrap().user, "me");
        let missing = Credentials { files: vec![dir.path().join("none.json")] };
        assert!(missing.login("r.example:5000").unwrap().is_none());
    }
}
