//! One exchange with a registry: a request sent to it, its challenge
//! answered, its redirects followed, all within one deadline. Here are the
//! rules of where credentials go, as docker and containerd keep them: a
//! challenge counts only from the registry's own origin (scheme, host and
//! port), `Authorization` goes only to that origin, and a redirect
//! elsewhere (blob storage behind signed URLs) is followed without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::auth::{fetch_token, may_send_login, parse_challenge, Challenge, TokenRequest};
use super::client::{Host, Registry, ACCEPT};
use super::failure::{failure, refused, stalled, transport_error};
use super::limits::{read_limited, MAX_REDIRECTS};
use super::transport::{resolve, Origin};
use crate::model::Reference;

/// One request to a repository: `path` is below `/v2/<repository>/`.
pub(super) struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub access: Access,
    /// Scopes besides the repository's own (another repository to mount from).
    pub extra_scopes: &'a [String],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    /// Its deadline, when longer than a request's (a blob's).
    pub deadline: Option<Duration>,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, path: &'a str, access: Access) -> Call<'a> {
        Call { method, path, access, extra_scopes: &[], headers: &[], body: None, deadline: None }
    }

    pub fn manifest(method: &'a str, path: &'a str) -> Call<'a> {
        Call { headers: &[("Accept", ACCEPT)], ..Call::new(method, path, Access::Pull) }
    }
}

/// How a request reads or writes the repository, for the token's scope.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Pull,
    Push,
    Delete,
}

/// A registry's answer, with the deadline its body must come by.
pub(super) struct Reply {
    pub response: ureq::Response,
    pub registry: String,
    /// When it must be read by, and how long that was.
    pub deadline: (Instant, Duration),
}

impl std::ops::Deref for Reply {
    type Target = ureq::Response;

    fn deref(&self) -> &ureq::Response {
        &self.response
    }
}

impl Reply {
    /// Its body whole, when at most `limit` bytes.
    pub fn body(self, what: &dyn std::fmt::Display, limit: u64) -> Result<Vec<u8>> {
        read_limited(self.response, &self.registry, what, limit, self.deadline)
    }
}

impl Registry {
    /// Sends a request to a repository, with a token for its scope where
    /// the registry wants one; the caller judges the status.
    pub(super) fn send(&self, r: &Reference, call: Call<'_>) -> Result<Reply> {
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

    /// Sends a request for `path` (from `/v2/` on) to `host`, answering its
    /// challenge once and following its redirects (of a `GET` or `HEAD`);
    /// `what` names it in errors.
    pub(super) fn send_to(
        &self,
        host_name: &str,
        path: &str,
        scopes: &[String],
        what: &dyn std::fmt::Display,
        call: Call<'_>,
    ) -> Result<Reply> {
        let host = self.host(host_name)?;
        let limit = call.deadline.unwrap_or(self.transport.deadline);
        let deadline = (Instant::now() + limit, limit);
        let scope_key = scopes.join(" ");
        let follows = matches!(call.method, "GET" | "HEAD");
        let mut answered = false;
        'challenged: loop {
            let mut url = format!("{}{path}", host.base);
            for _ in 0..=MAX_REDIRECTS {
                let origin = Origin::of(&url).map_err(|e| {
                    failure(format!("registry {host_name} sent the request for {what} where it cannot go: {e}"), false)
                })?;
                let own = origin == host.origin;
                let agent = if own { host.agent.clone() } else { self.host(&origin.authority())?.agent.clone() };
                let timeout = deadline.0.checked_duration_since(Instant::now());
                let timeout = timeout.ok_or_else(|| stalled(host_name, what, limit))?;
                let mut request = agent.request(call.method, &url).timeout(timeout);
                for (name, value) in call.headers {
                    request = request.set(name, value);
                }
                if own {
                    if let Some(auth) = self.authorization(&host, scopes, &scope_key, answered, deadline)? {
                        request = request.set("Authorization", &auth);
                    }
                }
                let sent = match call.body {
                    Some(bytes) => request.send_bytes(bytes),
                    None => request.call(),
                };
                let response = match sent {
                    Ok(response) | Err(ureq::Error::Status(_, response)) => response,
                    Err(ureq::Error::Transport(_)) if Instant::now() >= deadline.0 => {
                        return Err(stalled(host_name, what, limit));
                    }
                    Err(ureq::Error::Transport(t)) => return Err(transport_error(host_name, &t, own)),
                };
                let status = response.status();
                if follows && matches!(status, 301 | 302 | 303 | 307 | 308) {
                    if let Some(location) = response.header("location") {
                        url = resolve(&url, location)?;
                        continue;
                    }
                }
                if status == 401 && !own {
                    return Err(failure(
                        format!(
                            "registry {host_name}: its answer about {what} was redirected to {}://{}, which asks for \
                             credentials: they go only to the registry itself",
                            origin.scheme,
                            origin.authority()
                        ),
                        false,
                    ));
                }
                if status == 401 && !answered {
                    let header = response.header("www-authenticate").unwrap_or_default().to_string();
                    let Some(challenge) = parse_challenge(&header) else {
                        return Err(refused(host_name, what, "it asks for an authentication this tool does not speak"));
                    };
                    *host.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(challenge));
                    host.tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(&scope_key);
                    answered = true;
                    continue 'challenged;
                }
                return Ok(Reply { response, registry: host_name.to_string(), deadline });
            }
            return Err(failure(
                format!("registry {host_name} redirected the request for {what} more than {MAX_REDIRECTS} times"),
                false,
            ));
        }
    }

    /// The `Authorization` header for a request to `host`'s own origin:
    /// what its challenge asks for, basic with the login or a bearer token
    /// for the scopes, fetched once (again when `fresh`). None before any
    /// challenge.
    pub(super) fn authorization(
        &self,
        host: &Host,
        scopes: &[String],
        scope_key: &str,
        fresh: bool,
        deadline: (Instant, Duration),
    ) -> Result<Option<String>> {
        let challenge = host.challenge.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(challenge) = challenge else { return Ok(None) };
        let (realm, service) = match &*challenge {
            Challenge::Basic => return Ok(self.credentials.login(&host.name)?.map(|l| l.basic())),
            Challenge::Bearer { realm, service } => (realm, service),
        };
        if !fresh {
            if let Some(token) = host.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(scope_key) {
                return Ok(Some(format!("Bearer {token}")));
            }
        }
        let name = &host.name;
        let origin = Origin::of(realm)
            .map_err(|e| failure(format!("registry {name}: its token service cannot be reached: {e}"), false))?;
        let login = self.credentials.login(name)?;
        if login.is_some() && !may_send_login(name, &origin) {
            return Err(failure(
                format!(
                    "registry {name}: its token service {realm} is not HTTPS, and a login goes to a token service \
                     only over HTTPS (or on loopback, for a registry on loopback): serve it over HTTPS"
                ),
                false,
            ));
        }
        let agent =
            if origin == host.origin { host.agent.clone() } else { self.host(&origin.authority())?.agent.clone() };
        let asked = TokenRequest { registry: name, realm, service: service.as_deref(), scopes };
        let token = fetch_token(&agent, &asked, login.as_ref(), deadline)?;
        host.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(scope_key.to_string(), token.clone());
        Ok(Some(format!("Bearer {token}")))
    }
}
