//! One exchange with a registry: a request sent to it, its authentication
//! challenge answered once; the caller judges the status.

use std::sync::Arc;

use anyhow::Result;

use super::auth::parse_challenge;
use super::client::{Registry, ACCEPT};
use super::failure::{refused, transport_error};
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
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, path: &'a str, access: Access) -> Call<'a> {
        Call { method, path, access, extra_scopes: &[], headers: &[], body: None }
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

impl Registry {
    /// Sends a request, answering the registry's authentication challenge
    /// once; the caller judges the status.
    pub(super) fn send(&self, r: &Reference, call: Call<'_>) -> Result<ureq::Response> {
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
    pub(super) fn send_to(
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
}
