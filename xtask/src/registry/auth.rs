//! Credentials: the logins the engine itself uses (docker's `config.json`,
//! podman's auth files, credential helpers), and how they answer a
//! registry's challenge, basic or bearer.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::client::Host;
use super::failure::{failure, refused, transport_error};
use crate::config::EngineKind;

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

impl Credentials {
    /// The `Authorization` header for a challenge: basic with the login, or a
    /// bearer token for the scopes, fetched once (again when `fresh`).
    pub(super) fn authorization(
        &self,
        host: &Host,
        challenge: &Challenge,
        scopes: &[String],
        scope_key: &str,
        fresh: bool,
    ) -> Result<Option<String>> {
        match challenge {
            Challenge::Basic => Ok(self
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
                let login = self.login(&host.name)?;
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
