//! Blobs: an image's blobs made present in another repository of the same
//! registry for an index, mounted across repositories or else copied
//! through the tool: streamed from the one to the other, never held whole,
//! and checked against their size and digest on the way. An upload's
//! `Location` on another host gets no credentials.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::client::{Descriptor, Registry};
use super::exchange::{Access, Call};
use super::failure::{failure, stalled, status_error, transport_error};
use super::limits::blob_deadline;
use super::transport::{resolve, Origin};
use crate::model::{hex, Reference};

impl Registry {
    /// Makes `blob` of `from` present in `to`'s repository: already there,
    /// mounted across repositories, or else copied.
    pub(super) fn mount(&self, to: &Reference, from: &Reference, blob: &Descriptor) -> Result<()> {
        let digest = &blob.digest;
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
            // The registry would not mount: copy the blob through.
            202 => {
                let location = started.header("location").unwrap_or_default().to_string();
                self.copy(to, from, blob, &location)
            }
            code => Err(status_error(to, code, &started)),
        }
    }

    /// Streams `blob` from `from` to the upload that `location` names,
    /// with the registry's credentials only when it is on the registry's
    /// own origin.
    fn copy(&self, to: &Reference, from: &Reference, blob: &Descriptor, location: &str) -> Result<()> {
        let digest = &blob.digest;
        if !digest.starts_with("sha256:") {
            return Err(failure(format!("{from}: blob {digest} has a digest this tool cannot check"), false));
        }
        let limit = blob_deadline(self.transport.deadline, blob.size);
        let source = self
            .send(from, Call { deadline: Some(limit), ..Call::new("GET", &format!("blobs/{digest}"), Access::Pull) })?;
        if source.status() != 200 {
            return Err(status_error(from, source.status(), &source));
        }
        let told = source.header("content-length").and_then(|l| l.trim().parse::<u64>().ok());
        if told.is_some_and(|l| l != blob.size) {
            return Err(failure(
                format!(
                    "registry {}: blob {digest} of {from} is {} bytes, not the {} its manifest says",
                    from.host,
                    told.unwrap_or_default(),
                    blob.size
                ),
                false,
            ));
        }
        let host = self.host(&to.host)?;
        if location.is_empty() {
            return Err(failure(
                format!("registry {}: it started an upload to {to} without a Location", to.host),
                false,
            ));
        }
        let url = resolve(&format!("{}/v2/{}/blobs/uploads/", host.base, to.repository), location)?;
        let url = format!("{url}{}digest={digest}", if url.contains('?') { '&' } else { '?' });
        let origin = Origin::of(&url).map_err(|e| {
            failure(format!("registry {}: its upload to {to} cannot go where it says: {e}", to.host), false)
        })?;
        let own = origin == host.origin;
        let agent = if own { host.agent.clone() } else { self.host(&origin.authority())?.agent.clone() };
        let deadline = (Instant::now() + limit, limit);
        let mut request = agent
            .put(&url)
            .timeout(limit)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &blob.size.to_string());
        if own {
            let scopes = [format!("repository:{}:pull,push", to.repository)];
            if let Some(auth) = self.authorization(&host, &scopes, &scopes[0], false, deadline)? {
                request = request.set("Authorization", &auth);
            }
        }
        let problem = Arc::new(Mutex::new(None));
        let reader = Checked {
            inner: source.response.into_reader(),
            hasher: Some(Sha256::new()),
            seen: 0,
            blob,
            from,
            deadline: source.deadline,
            problem: problem.clone(),
        };
        let sent = request.send(reader);
        if let Some(e) = problem.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(e);
        }
        match sent {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, response)) => Err(status_error(to, code, &response)),
            Err(ureq::Error::Transport(_)) if Instant::now() >= deadline.0 => Err(stalled(&to.host, to, limit)),
            Err(ureq::Error::Transport(t)) => Err(transport_error(&to.host, &t, own)),
        }
    }
}

/// A blob as it comes from the registry, checked on the way: no more and
/// no fewer bytes than its size, and its digest at the end. What went
/// wrong is left in `problem` for the upload's error to tell.
struct Checked<'a, R> {
    inner: R,
    /// Until the end is checked.
    hasher: Option<Sha256>,
    seen: u64,
    blob: &'a Descriptor,
    from: &'a Reference,
    deadline: (Instant, Duration),
    problem: Arc<Mutex<Option<anyhow::Error>>>,
}

impl<R: Read> Checked<'_, R> {
    fn fail(&self, e: anyhow::Error) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        io
    }

    fn unlike(&self, how: String) -> std::io::Error {
        let (from, digest) = (self.from, &self.blob.digest);
        self.fail(failure(format!("registry {}: blob {digest} of {from} {how}: it was not copied", from.host), false))
    }
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.hasher.is_none() {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(_) if Instant::now() >= self.deadline.0 => {
                return Err(self.fail(stalled(&self.from.host, &self.blob.digest, self.deadline.1)));
            }
            Err(e) => {
                let (host, digest) = (&self.from.host, &self.blob.digest);
                return Err(self.fail(failure(format!("registry {host} broke off blob {digest}: {e}"), true)));
            }
        };
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.seen += n as u64;
        if self.seen > self.blob.size {
            return Err(self.unlike(format!("is larger than the {} bytes its manifest says", self.blob.size)));
        }
        if n == 0 {
            let got = format!("sha256:{}", hex(&self.hasher.take().unwrap_or_default().finalize()));
            if self.seen < self.blob.size {
                return Err(self.unlike(format!("ended after {} of its {} bytes", self.seen, self.blob.size)));
            }
            if got != self.blob.digest {
                return Err(self.unlike(format!("is not what its digest names (its bytes are {got})")));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(bytes: &[u8], size: u64, digest: &str) -> std::result::Result<Vec<u8>, String> {
        let blob = Descriptor { digest: digest.into(), size };
        let from = Reference::parse("r.example/a:t").unwrap();
        let problem = Arc::new(Mutex::new(None));
        let later = Instant::now() + Duration::from_secs(60);
        let mut reader = Checked {
            inner: bytes,
            hasher: Some(Sha256::new()),
            seen: 0,
            blob: &blob,
            from: &from,
            deadline: (later, Duration::from_secs(60)),
            problem: problem.clone(),
        };
        let mut out = Vec::new();
        let read = std::io::copy(&mut reader, &mut out);
        let told = problem.lock().unwrap().take().map(|e| e.to_string());
        match read {
            Ok(_) => Ok(out),
            Err(e) => Err(told.unwrap_or_else(|| format!("no problem told: {e}"))),
        }
    }

    #[test]
    fn blobs_are_checked_on_the_way() {
        let digest = crate::registry::digest_of(b"blob");
        assert_eq!(checked(b"blob", 4, &digest).unwrap(), b"blob");
        let at = format!("registry r.example: blob {digest} of r.example/a:t");
        assert_eq!(
            checked(b"blo", 4, &digest).unwrap_err(),
            format!("{at} ended after 3 of its 4 bytes: it was not copied")
        );
        assert_eq!(
            checked(b"blobs", 4, &digest).unwrap_err(),
            format!("{at} is larger than the 4 bytes its manifest says: it was not copied")
        );
        let other = crate::registry::digest_of(b"bolb");
        assert_eq!(
            checked(b"bolb", 4, &digest).unwrap_err(),
            format!("{at} is not what its digest names (its bytes are {other}): it was not copied")
        );
    }
}
