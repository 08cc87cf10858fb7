//! Limits: how much of a registry's answers the tool reads and how long it
//! waits for them, so that no registry, broken or hostile, can hold a run
//! or its memory. Each is generous for real registries; one that is hit is
//! an error naming the registry and the limit, never a silent cut.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::failure::{failure, stalled};

/// The largest manifest read: docker's registry refuses larger ones.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest other document read: an image config, a page of a listing,
/// a token service's answer.
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;
/// Pages of one listing (`_catalog`, `tags/list`) followed.
pub const MAX_PAGES: usize = 10_000;
/// Entries of one listing kept, over all its pages.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// How long one request may take, its answer read to the end: a manifest
/// or a page of a listing is small; a registry that has not sent it by
/// then is stalled, or sends it a byte at a time.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// The slowest a blob may come or go, in bytes a second: a blob's request
/// gets [`REQUEST_DEADLINE`] and its size at this rate.
pub const MIN_BLOB_RATE: u64 = 1 << 20;

/// For tests only: the request deadline in milliseconds, instead of
/// [`REQUEST_DEADLINE`], so that a test of a stalling registry ends in seconds.
pub const DEADLINE_VARIABLE: &str = "XTASK_TEST_REGISTRY_DEADLINE_MS";

/// [`REQUEST_DEADLINE`], or the one a test set in [`DEADLINE_VARIABLE`].
pub fn request_deadline() -> Duration {
    std::env::var(DEADLINE_VARIABLE)
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(REQUEST_DEADLINE, Duration::from_millis)
}

/// The deadline of a request moving a blob of `size` bytes.
pub fn blob_deadline(base: Duration, size: u64) -> Duration {
    base + Duration::from_secs(size / MIN_BLOB_RATE)
}

/// `4 MiB`, `16 MiB`: a limit as people read it.
pub fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Seconds as a deadline is told: `30s`, `1.5s`.
pub fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Reads an answer's body whole, when it is at most `limit` bytes and comes
/// before `deadline`; `what` names it in errors (`the manifest of …`).
pub(super) fn read_limited(
    response: ureq::Response,
    registry: &str,
    what: &dyn std::fmt::Display,
    limit: u64,
    deadline: (Instant, Duration),
) -> Result<Vec<u8>> {
    let too_large =
        || failure(format!("registry {registry}: {what} is larger than {}, the most read", mib(limit)), false);
    let length = response.header("content-length").and_then(|l| l.trim().parse::<u64>().ok());
    if length.is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    let read = response.into_reader().take(limit + 1).read_to_end(&mut bytes);
    match read {
        Err(_) if Instant::now() >= deadline.0 => Err(stalled(registry, what, deadline.1)),
        Err(e) => Err(failure(format!("registry {registry} broke off its answer about {what}: {e}"), true)),
        Ok(_) if bytes.len() as u64 > limit => Err(too_large()),
        Ok(_) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str, length: Option<&str>) -> ureq::Response {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        if let Some(length) = length {
            text.push_str(&format!("Content-Length: {length}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(body);
        text.parse().unwrap()
    }

    #[test]
    fn bodies_are_read_up_to_their_limit() {
        let later = (Instant::now() + Duration::from_secs(60), Duration::from_secs(60));
        let read = |body: &str, length, limit| read_limited(answer(body, length), "r.example", &"x", limit, later);
        assert_eq!(read("12345", Some("5"), 5).unwrap(), b"12345");
        assert_eq!(read("12345", None, 5).unwrap(), b"12345");
        let said = |e: anyhow::Error| e.to_string();
        assert_eq!(
            said(read("123456", None, 5).unwrap_err()),
            "registry r.example: x is larger than 5 bytes, the most read"
        );
        // Told up front: refused before a byte is read.
        let e = read_limited(answer("", Some("5000000")), "r.example", &"its manifest", MAX_MANIFEST_BYTES, later);
        assert_eq!(said(e.unwrap_err()), "registry r.example: its manifest is larger than 4 MiB, the most read");
    }

    #[test]
    fn deadlines() {
        assert_eq!(blob_deadline(REQUEST_DEADLINE, 0), REQUEST_DEADLINE);
        assert_eq!(blob_deadline(REQUEST_DEADLINE, 300 << 20), Duration::from_secs(330));
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(REQUEST_DEADLINE), "30s");
    }
}
