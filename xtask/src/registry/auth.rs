//! Credentials: the logins the engine itself uses (docker's `config.json`,
//! podman's auth files, credential helpers), read once per registry and
//! run; the challenges registries make, basic or bearer; where a login may
//! go (a token service over HTTPS, or on loopback for a registry on
//! loopback); and the token a token service gives for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::failure::{failure, refused, stalled, transport_error};
use super::limits::{read_limited, MAX_DOCUMENT_BYTES};
use super::transport::{is_loopback, Origin};
use crate::config::EngineKind;
use crate::model::excerpt;

/// Where credentials come from: the engine's own files and helpers.
#[derive(Clone)]
pub struct Credentials {
    /// Auth files, most preferred first (podman's, then docker's `config.json`).
    files: Vec<PathBuf>,
    /// The login found for each registry, or why none could be read: a
    /// credential helper runs once per registry and run.
    logins: Arc<Mutex<HashMap<String, Found>>>,
}

/// A registry's login, or why it could not be read.
type Found = Result<Option<Login>, String>;

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("files", &self.files).finish_non_exhaustive()
    }
}

/// A user name and its secret, never printed.
#[derive(Clone)]
pub(super) struct Login {
    user: String,
    secret: String,
}

impl Login {
    /// `Basic <base64(user:secret)>`
    pub(super) fn basic(&self) -> String {
        format!("Basic {}", base64_encode(format!("{}:{}", self.user, self.secret).as_bytes()))
    }
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

/// Where docker keeps the login for Docker Hub, whatever the image calls it.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

/// The keys a login for `host` may be stored under, as docker writes them;
/// the first is the name a credential helper is asked for.
fn keys(host: &str) -> Vec<String> {
    if is_docker_hub(host) {
        return [DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io", "https://index.docker.io"]
            .map(String::from)
            .to_vec();
    }
    vec![host.to_string(), format!("https://{host}"), format!("http://{host}"), format!("https://{host}/v1/")]
}

/// The host a key of `auths` names, as docker reads it: less its scheme
/// and path.
fn key_host(key: &str) -> &str {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key)
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
        Credentials::from_files(files)
    }

    /// The logins of these auth files only, most preferred first.
    pub fn from_files(files: Vec<PathBuf>) -> Credentials {
        Credentials { files, logins: Arc::default() }
    }

    /// The login for `host`, if any file or helper has one: looked up once
    /// per registry, however many requests and threads ask.
    pub(super) fn login(&self, host: &str) -> Result<Option<Login>> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        let found =
            logins.entry(host.to_string()).or_insert_with(|| self.read_login(host).map_err(|e| format!("{e:#}")));
        found.clone().map_err(|e| anyhow!(e))
    }

    fn read_login(&self, host: &str) -> Result<Option<Login>> {
        let keys = keys(host);
        for file in &self.files {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => bail!(
                    "cannot read credentials file {}: {e}: make it readable, or remove it to go without its logins",
                    file.display()
                ),
            };
            let auth: AuthFile = serde_json::from_str(&text)
                .with_context(|| format!("cannot read credentials file {}", file.display()))?;
            if let Some(helper) = keys.iter().find_map(|k| auth.cred_helpers.get(k)) {
                return helper_login(helper, &keys[0]);
            }
            let entry = keys
                .iter()
                .find_map(|k| auth.auths.get(k))
                .or_else(|| auth.auths.iter().find(|(k, _)| key_host(k) == host).map(|(_, e)| e));
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
                return helper_login(store, &keys[0]);
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
        bail!(
            "credential helper {program} failed for {host}: {}",
            excerpt(stdout.lines().next().unwrap_or("no output"))
        );
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

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

pub(super) fn parse_challenge(header: &str) -> Option<Challenge> {
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

/// Whether the login for `registry` may go to the token service at
/// `realm`: over HTTPS, or over plain HTTP on loopback for a registry on
/// loopback (where nothing leaves the machine).
pub(super) fn may_send_login(registry: &str, realm: &Origin) -> bool {
    realm.scheme == "https" || (realm.is_loopback() && is_loopback(registry))
}

/// What a token request is for: the registry's name, the challenge's
/// `realm` and `service`, and the scopes.
pub(super) struct TokenRequest<'a> {
    pub registry: &'a str,
    pub realm: &'a str,
    pub service: Option<&'a str>,
    pub scopes: &'a [String],
}

/// A bearer token from the token service: with the login when there is
/// one, which [`may_send_login`] must allow; anonymous otherwise.
pub(super) fn fetch_token(
    agent: &ureq::Agent,
    asked: &TokenRequest<'_>,
    login: Option<&Login>,
    deadline: (Instant, std::time::Duration),
) -> Result<String> {
    let registry = asked.registry;
    let timeout = deadline.0.saturating_duration_since(Instant::now());
    let mut request = agent.get(asked.realm).timeout(timeout);
    if let Some(service) = asked.service {
        request = request.query("service", service);
    }
    for scope in asked.scopes {
        request = request.query("scope", scope);
    }
    if let Some(login) = login {
        request = request.set("Authorization", &login.basic());
    }
    let what = format!("a token from {}", asked.realm);
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(401 | 403, _)) => {
            return Err(refused(registry, &registry, "its token service refused the login"));
        }
        Err(ureq::Error::Status(code, _)) => {
            return Err(failure(
                format!("registry {registry}: its token service answered {code}"),
                code == 429 || code >= 500,
            ));
        }
        Err(ureq::Error::Transport(_)) if Instant::now() >= deadline.0 => {
            return Err(stalled(registry, &what, deadline.1));
        }
        Err(ureq::Error::Transport(t)) => return Err(transport_error(registry, &t, false)),
    };
    #[derive(Deserialize)]
    struct Token {
        token: Option<String>,
        access_token: Option<String>,
    }
    let body = read_limited(response, registry, &what, MAX_DOCUMENT_BYTES, deadline)?;
    let token: Token = serde_json::from_slice(&body)
        .map_err(|e| anyhow!("registry {registry}: its token service gave no token: {e}"))?;
    token.token.or(token.access_token).ok_or_else(|| anyhow!("registry {registry}: its token service gave no token"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let docker_only = Credentials::from_files(vec![docker.clone()]);
        let login = docker_only.login("r.example:5000").unwrap().unwrap();
        assert_eq!((login.user.as_str(), login.secret.as_str()), ("me", "s3cret"));
        assert_eq!(docker_only.login("other.example").unwrap().unwrap().user, "me");
        assert!(docker_only.login("nobody.example").unwrap().is_none());
        let both = Credentials::from_files(vec![podman, docker]);
        assert_eq!(both.login("r.example:5000").unwrap().unwrap().user, "pod");
        assert_eq!(both.login("other.example").unwrap().unwrap().user, "me");
        let missing = Credentials::from_files(vec![dir.path().join("none.json")]);
        assert!(missing.login("r.example:5000").unwrap().is_none());
    }

    #[test]
    fn docker_hub_logins_are_found_where_docker_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let auth = base64_encode(b"hubber:pw");
        std::fs::write(&file, format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#)).unwrap();
        let credentials = Credentials::from_files(vec![file]);
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(credentials.login(host).unwrap().unwrap().user, "hubber", "{host}");
        }
        assert!(credentials.login("quay.io").unwrap().is_none());
        assert_eq!(keys("docker.io")[0], DOCKER_HUB_KEY, "what a credential helper is asked for");
    }

    #[test]
    fn logins_under_a_url_are_found_by_its_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"auths":{"https://r.example:5000/v2/":{"username":"u","password":"p"}}}"#).unwrap();
        let credentials = Credentials::from_files(vec![file]);
        assert_eq!(credentials.login("r.example:5000").unwrap().unwrap().user, "u");
        assert!(credentials.login("r.example").unwrap().is_none());
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory: unreadable whoever runs the test.
        let file = dir.path().join("config.json");
        std::fs::create_dir(&file).unwrap();
        let credentials = Credentials::from_files(vec![dir.path().join("missing.json"), file.clone()]);
        let e = credentials.login("r.example").err().unwrap().to_string();
        assert!(e.starts_with(&format!("cannot read credentials file {}: ", file.display())), "{e}");
        assert!(e.ends_with("make it readable, or remove it to go without its logins"), "{e}");
        // Asked again, the same answer, without reading again.
        std::fs::remove_dir(&file).unwrap();
        assert_eq!(credentials.login("r.example").err().unwrap().to_string(), e);
    }

    #[test]
    fn logins_go_to_a_token_service_over_https_or_on_loopback() {
        let realm = |url: &str| Origin::of(url).unwrap();
        assert!(may_send_login("r.example", &realm("https://auth.example/token")));
        assert!(may_send_login("127.0.0.1:5000", &realm("https://auth.example/token")));
        assert!(may_send_login("127.0.0.1:5000", &realm("http://127.0.0.2:6000/token")));
        assert!(may_send_login("localhost:5000", &realm("http://[::1]:6000/token")));
        assert!(!may_send_login("r.example", &realm("http://auth.example/token")));
        assert!(!may_send_login("r.example", &realm("http://127.0.0.1/token")));
        assert!(!may_send_login("127.0.0.1:5000", &realm("http://auth.example/token")));
        assert!(!may_send_login("127.attacker.example", &realm("http://127.0.0.1/token")));
    }
}
