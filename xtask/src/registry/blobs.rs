//! Blobs: an image's blobs made present in another repository of the same
//! registry for an index, mounted across repositories or else copied
//! through the tool.

use anyhow::Result;

use super::client::{read_body, Registry};
use super::exchange::{Access, Call};
use super::failure::{status_error, transport_error};
use crate::model::Reference;

impl Registry {
    /// Makes blob `digest` of `from` present in `to`'s repository: already
    /// there, mounted across repositories, or else copied.
    pub(super) fn mount(&self, to: &Reference, from: &Reference, digest: &str) -> Result<()> {
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
