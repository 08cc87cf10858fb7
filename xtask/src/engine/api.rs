//! A hand-written HTTP client for an engine's API socket (docker's daemon,
//! or the podman service the tool starts: `service.rs`): one request per
//! connection, for the calls that would otherwise each cost a CLI process
//! (tagging, inspecting what a build made, removing a few names), and the
//! check that the socket is the CLI's daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::config::EngineKind;
use crate::model::Parts;

/// The unix socket docker's CLI would reach its daemon at, when that is
/// plain to see: docker, no `DOCKER_CONTEXT` and no current context other
/// than `default` in its config, `DOCKER_HOST` unset or `unix://`.
pub(super) fn local_docker_socket(kind: EngineKind) -> Option<PathBuf> {
    if kind != EngineKind::Docker || std::env::var_os("DOCKER_CONTEXT").is_some_and(|c| !c.is_empty()) {
        return None;
    }
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    if let Ok(text) = std::fs::read_to_string(config.join("config.json")) {
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        if value["currentContext"].as_str().is_some_and(|c| !c.is_empty() && c != "default") {
            return None;
        }
    }
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => PathBuf::from(host.strip_prefix("unix://")?),
        _ => PathBuf::from("/var/run/docker.sock"),
    };
    socket.exists().then_some(socket)
}

/// An engine's API: its socket, and the dialect its paths are in.
pub(super) struct Api {
    socket: PathBuf,
    /// Before every path: nothing for docker's API, podman's own (libpod)
    /// prefix for podman's, whose names and answers are those of its CLI
    /// (`localhost/` before a name without a domain, not `docker.io/`).
    base: &'static str,
}

impl Api {
    pub(super) fn docker(socket: PathBuf) -> Api {
        Api { socket, base: "" }
    }

    pub(super) fn podman(socket: PathBuf) -> Api {
        Api { socket, base: "/v4.0.0/libpod" }
    }

    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }
}

pub(super) enum ApiError {
    /// The daemon answered no; what it said.
    Refused(String),
    /// No usable answer.
    Unreachable(String),
}

/// One request to an engine's API socket, `Connection: close`: the status
/// and the body (a chunked one put back together).
fn api_call(api: &Api, method: &str, path: &str) -> std::result::Result<(u16, String), ApiError> {
    let (status, mut body) = api_request(api, method, path)?;
    let mut whole = Vec::new();
    body.read_to_end(&mut whole).map_err(|e| ApiError::Unreachable(format!("HTTP {status}: {e}")))?;
    Ok((status, String::from_utf8_lossy(&whole).into_owned()))
}

/// One request to an engine's API socket, `Connection: close`: the status,
/// once the head of the answer is read, and its body as it comes (a chunked
/// one put back together as it is read).
fn api_request(api: &Api, method: &str, path: &str) -> std::result::Result<(u16, Box<dyn Read + Send>), ApiError> {
    use std::os::unix::net::UnixStream;
    let unreachable = |e: std::io::Error| ApiError::Unreachable(e.to_string());
    let base = api.base;
    let request =
        format!("{method} {base}{path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let mut stream = UnixStream::connect(&api.socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(unreachable)?;
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut answer = BufReader::new(stream);
    let mut first = String::new();
    answer.read_line(&mut first).map_err(unreachable)?;
    let first = first.trim_end().to_string();
    let Some(status) = first.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) else {
        return Err(ApiError::Unreachable(first));
    };
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if answer.read_line(&mut line).map_err(unreachable)? == 0 {
            return Err(ApiError::Unreachable(format!("{first}: the answer ends in its head")));
        }
        if line.trim_end().is_empty() {
            break;
        }
        chunked |= line.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        });
    }
    let body: Box<dyn Read + Send> =
        if chunked { Box::new(Chunked { inner: answer, left: 0, done: false }) } else { Box::new(answer) };
    Ok((status, body))
}

/// A chunked body's data, read as it comes; an error where it does not add
/// up.
struct Chunked<R> {
    inner: R,
    /// What is left of the chunk being read.
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let broken =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a broken chunked body: {what}"));
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            self.left = usize::from_str_radix(size, 16).map_err(|_| broken(&format!("chunk size {size:?}")))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let wanted = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..wanted])?;
        if n == 0 {
            return Err(broken("it ends inside a chunk"));
        }
        self.left -= n;
        if self.left == 0 {
            let mut end = [0u8; 2];
            self.inner.read_exact(&mut end)?;
            if &end != b"\r\n" {
                return Err(broken("a chunk runs past its size"));
            }
        }
        Ok(n)
    }
}

/// What an answer other than success means: the daemon's refusal, in its
/// own words, for a 4xx; no usable answer otherwise.
fn failure(status: u16, body: &str) -> ApiError {
    if !(400..=499).contains(&status) {
        return ApiError::Unreachable(format!("HTTP {status}"));
    }
    let message = api_json(body).and_then(|v| v["message"].as_str().map(String::from));
    ApiError::Refused(message.unwrap_or_else(|| body.trim().to_string()))
}

/// The first JSON object of an API answer's body, chunked or not.
fn api_json(body: &str) -> Option<serde_json::Value> {
    body.lines().find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok().filter(|v| v.is_object()))
}

/// `s` as one segment of a URL: every byte but the unreserved ones escaped.
fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST /images/{source}/tag?repo=…&tag=…`.
pub(super) fn api_tag(api: &Api, source: &str, target: &str) -> std::result::Result<(), ApiError> {
    // `repo:tag`, the tag after the last `/`; docker's default tag otherwise.
    let parts = Parts::of(target);
    let (repo, tag) = (parts.name, parts.tag.unwrap_or("latest"));
    let path = format!("/images/{}/tag?repo={}&tag={}", encoded(source), encoded(repo), encoded(tag));
    match api_call(api, "POST", &path)? {
        (200..=299, _) => Ok(()),
        (status, body) => Err(failure(status, &body)),
    }
}

/// `GET /images/{reference}/json`: the image as `image inspect` describes
/// it (one object, not a list), or `None` when the daemon has no such image.
pub(super) fn api_inspect(api: &Api, reference: &str) -> std::result::Result<Option<String>, ApiError> {
    let path = format!("/images/{}/json", encoded(reference));
    match api_call(api, "GET", &path)? {
        (200, body) => Ok(Some(body)),
        (404, _) => Ok(None),
        (status, _) => Err(ApiError::Unreachable(format!("HTTP {status}"))),
    }
}

/// `DELETE /images/{reference}`: the name removed, and with it the image
/// when no other name holds it; the IDs of the images deleted, from
/// docker's list of what was done (`[{"Untagged": …}, {"Deleted": …}]`) or
/// podman's report (`{"Deleted": […], "Untagged": […]}`).
pub(super) fn api_remove(api: &Api, reference: &str) -> std::result::Result<Vec<String>, ApiError> {
    let path = format!("/images/{}", encoded(reference));
    match api_call(api, "DELETE", &path)? {
        (200, body) => {
            let answer: serde_json::Value = serde_json::from_str(body.trim())
                .map_err(|e| ApiError::Unreachable(format!("the answer to removing {reference}: {e}")))?;
            let deleted: Vec<&serde_json::Value> = match &answer {
                serde_json::Value::Array(entries) => entries.iter().map(|entry| &entry["Deleted"]).collect(),
                report => report["Deleted"].as_array().map(|ids| ids.iter().collect()).unwrap_or_default(),
            };
            Ok(deleted.into_iter().filter_map(|id| id.as_str().map(String::from)).collect())
        }
        (status, body) => Err(failure(status, &body)),
    }
}

/// `GET /images/{reference}/get`: the image as `docker save` writes it (a
/// docker-archive, which podman is asked for by name), as it streams; the
/// engine's refusal (no such image) before anything of it.
pub(super) fn api_save(api: &Api, reference: &str) -> std::result::Result<Box<dyn Read + Send>, ApiError> {
    let format = if api.base.is_empty() { "" } else { "?format=docker-archive" };
    let path = format!("/images/{}/get{format}", encoded(reference));
    match api_request(api, "GET", &path)? {
        (200, body) => Ok(body),
        (status, body) => {
            let mut text = String::new();
            let _ = body.take(64 * 1024).read_to_string(&mut text);
            Err(failure(status, &text))
        }
    }
}

/// The daemon's ID (`GET /info`), to make sure the socket is the daemon
/// the CLI talks to.
pub(super) fn api_daemon_id(api: &Api) -> Option<String> {
    match api_call(api, "GET", "/info").ok()? {
        (200, body) => api_json(&body)?["ID"].as_str().map(String::from),
        _ => None,
    }
}

/// Whether the socket answers as an engine's API does (`GET /_ping`).
pub(super) fn api_answers(api: &Api) -> bool {
    matches!(api_call(api, "GET", "/_ping"), Ok((200, _)))
}

#[cfg(test)]
mod api_tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    use super::{api_answers, api_daemon_id, api_inspect, api_remove, api_save, api_tag, Api, ApiError, Chunked};

    /// A socket of its own that answers one request with `answer`, as
    /// docker's API; the thread gives the request line it got.
    fn serve_once(answer: &'static str) -> (tempfile::TempDir, Api, JoinHandle<String>) {
        let (dir, socket, server) = serve_once_at(answer);
        (dir, Api::docker(socket), server)
    }

    /// The same as podman's.
    fn serve_podman_once(answer: &'static str) -> (tempfile::TempDir, Api, JoinHandle<String>) {
        let (dir, socket, server) = serve_once_at(answer);
        (dir, Api::podman(socket), server)
    }

    fn serve_once_at(answer: &'static str) -> (tempfile::TempDir, PathBuf, JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(request).unwrap().lines().next().unwrap().to_string()
        });
        (dir, socket, server)
    }

    /// What `api_tag` made of `answer`, and the request line it sent.
    fn exchange(answer: &'static str, source: &str, target: &str) -> (Result<(), String>, String) {
        let (_dir, socket, server) = serve_once(answer);
        let result = api_tag(&socket, source, target).map_err(|e| match e {
            ApiError::Refused(m) => format!("refused: {m}"),
            ApiError::Unreachable(m) => format!("unreachable: {m}"),
        });
        (result, server.join().unwrap())
    }

    #[test]
    fn tags_through_the_api() {
        let (result, line) =
            exchange("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", "sha256:ab", "127.0.0.1:5000/a/b_x86_64:t1");
        assert_eq!(result, Ok(()));
        assert_eq!(line, "POST /images/sha256%3Aab/tag?repo=127.0.0.1%3A5000%2Fa%2Fb_x86_64&tag=t1 HTTP/1.1");
        let (_, line) = exchange("HTTP/1.1 201 Created\r\n\r\n", "l/a:t", "localhost:5000/x");
        assert!(line.contains("repo=localhost%3A5000%2Fx&tag=latest "), "{line}");
    }

    #[test]
    fn a_refusal_says_what_the_daemon_said() {
        let answer = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n27\r\n{\"message\":\"No such image: sha256:ab\"}\n\r\n0\r\n\r\n";
        assert_eq!(exchange(answer, "sha256:ab", "l/a:t").0, Err("refused: No such image: sha256:ab".into()));
    }

    #[test]
    fn anything_else_is_unreachable() {
        assert_eq!(exchange("HTTP/1.1 500 Oops\r\n\r\n", "a", "b:c").0, Err("unreachable: HTTP 500".into()));
        assert_eq!(exchange("garbage", "a", "b:c").0, Err("unreachable: garbage".into()));
        let missing = Api::docker("/nonexistent/docker.sock".into());
        assert!(matches!(api_tag(&missing, "a", "b:c"), Err(ApiError::Unreachable(_))));
        assert!(!api_answers(&missing));
    }

    #[test]
    fn a_chunked_body_is_put_back_together() {
        let unchunked = |body: &str| {
            let mut whole = String::new();
            Chunked { inner: body.as_bytes(), left: 0, done: false }.read_to_string(&mut whole).ok().map(|_| whole)
        };
        assert_eq!(unchunked("5\r\n{\"a\":\r\n3;x=y\r\n12}\r\n0\r\n\r\n").as_deref(), Some("{\"a\":12}"));
        assert_eq!(unchunked("0\r\n\r\n").as_deref(), Some(""));
        assert_eq!(unchunked("9\r\nshort\r\n0\r\n\r\n"), None);
        assert_eq!(unchunked("3\r\nlonger\r\n0\r\n\r\n"), None);
        assert_eq!(unchunked("zz\r\nab\r\n"), None);
    }

    #[test]
    fn inspects_through_the_api() {
        // An answer split in two chunks, as the daemon sends a long one.
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      a\r\n{\"Id\":\"sha\r\n\
                      f\r\n256:ab\",\"Os\":1}\r\n0\r\n\r\n";
        let (_dir, socket, server) = serve_once(answer);
        assert_eq!(
            api_inspect(&socket, "sha256:ab").ok().flatten().as_deref(),
            Some("{\"Id\":\"sha256:ab\",\"Os\":1}")
        );
        assert_eq!(server.join().unwrap(), "GET /images/sha256%3Aab/json HTTP/1.1");
        let (_dir, socket, server) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}");
        assert!(matches!(api_inspect(&socket, "a/b:c"), Ok(None)));
        assert_eq!(server.join().unwrap(), "GET /images/a%2Fb%3Ac/json HTTP/1.1");
        let (_dir, socket, server) = serve_once("HTTP/1.1 500 Oops\r\n\r\n");
        assert!(matches!(api_inspect(&socket, "a"), Err(ApiError::Unreachable(_))));
        server.join().unwrap();
    }

    #[test]
    fn removes_through_the_api() {
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n\
                      [{\"Untagged\":\"l/a:t\"},{\"Deleted\":\"sha256:ab\"},{\"Deleted\":\"sha256:cd\"}]\n";
        let (_dir, socket, server) = serve_once(answer);
        assert_eq!(api_remove(&socket, "l/a:t").ok(), Some(vec!["sha256:ab".to_string(), "sha256:cd".to_string()]));
        assert_eq!(server.join().unwrap(), "DELETE /images/l%2Fa%3At HTTP/1.1");
        // Another name still holds the image: untagged, nothing deleted.
        let (_dir, socket, server) = serve_once("HTTP/1.1 200 OK\r\n\r\n[{\"Untagged\":\"l/a:t\"}]");
        assert_eq!(api_remove(&socket, "l/a:t").ok(), Some(vec![]));
        server.join().unwrap();
        let answer = "HTTP/1.1 409 Conflict\r\n\r\n{\"message\":\"conflict: unable to remove repository reference\"}";
        let (_dir, socket, server) = serve_once(answer);
        assert!(
            matches!(api_remove(&socket, "l/a:t"), Err(ApiError::Refused(m)) if m == "conflict: unable to remove repository reference")
        );
        server.join().unwrap();
    }

    #[test]
    fn the_daemon_id_comes_from_info() {
        let answer =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n{\"ID\":\"AB:CD\",\"Images\":3}\n\r\n0\r\n\r\n";
        let (_dir, socket, server) = serve_once(answer);
        assert_eq!(api_daemon_id(&socket).as_deref(), Some("AB:CD"));
        assert_eq!(server.join().unwrap(), "GET /info HTTP/1.1");
        let (_dir, socket, server) = serve_once("HTTP/1.1 403 Forbidden\r\n\r\n");
        assert_eq!(api_daemon_id(&socket), None);
        server.join().unwrap();
    }

    #[test]
    fn podmans_api_has_paths_and_a_report_of_its_own() {
        let (_dir, api, server) = serve_podman_once("HTTP/1.1 201 Created\r\n\r\n");
        assert!(api_tag(&api, "ab12", "l/a:t").is_ok());
        assert_eq!(server.join().unwrap(), "POST /v4.0.0/libpod/images/ab12/tag?repo=l%2Fa&tag=t HTTP/1.1");
        let (_dir, api, server) =
            serve_podman_once("HTTP/1.1 404 Not Found\r\n\r\n{\"message\":\"x: image not known\"}");
        assert!(matches!(api_inspect(&api, "x"), Ok(None)));
        assert_eq!(server.join().unwrap(), "GET /v4.0.0/libpod/images/x/json HTTP/1.1");
        // podman reports what it removed in one object.
        let answer =
            "HTTP/1.1 200 OK\r\n\r\n{\"Deleted\":[\"ab12\"],\"Untagged\":[\"l/a:t\"],\"Errors\":[],\"ExitCode\":0}";
        let (_dir, api, server) = serve_podman_once(answer);
        assert_eq!(api_remove(&api, "l/a:t").ok(), Some(vec!["ab12".to_string()]));
        assert_eq!(server.join().unwrap(), "DELETE /v4.0.0/libpod/images/l%2Fa%3At HTTP/1.1");
        let (_dir, api, server) =
            serve_podman_once("HTTP/1.1 200 OK\r\n\r\n{\"Untagged\":[\"l/a:t\"],\"Deleted\":null}");
        assert_eq!(api_remove(&api, "l/a:t").ok(), Some(vec![]));
        server.join().unwrap();
        let (_dir, api, server) = serve_podman_once("HTTP/1.1 200 OK\r\n\r\nOK");
        assert!(api_answers(&api));
        assert_eq!(server.join().unwrap(), "GET /v4.0.0/libpod/_ping HTTP/1.1");
    }

    #[test]
    fn saves_as_the_archive_streams() {
        // Bytes of any value, over chunks; podman is asked for docker's format.
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n\
                      3\r\n\u{0}\u{1}\u{7f}\r\n2\r\nab\r\n0\r\n\r\n";
        let (_dir, api, server) = serve_once(answer);
        let mut archive = Vec::new();
        api_save(&api, "l/a:t").ok().unwrap().read_to_end(&mut archive).unwrap();
        assert_eq!(archive, b"\x00\x01\x7fab");
        assert_eq!(server.join().unwrap(), "GET /images/l%2Fa%3At/get HTTP/1.1");
        let (_dir, api, server) = serve_podman_once("HTTP/1.1 200 OK\r\n\r\ntar");
        let mut archive = String::new();
        api_save(&api, "l/a:t").ok().unwrap().read_to_string(&mut archive).unwrap();
        assert_eq!(archive, "tar");
        assert_eq!(server.join().unwrap(), "GET /v4.0.0/libpod/images/l%2Fa%3At/get?format=docker-archive HTTP/1.1");
        let (_dir, api, server) = serve_once("HTTP/1.1 404 Not Found\r\n\r\n{\"message\":\"No such image: l/a:t\"}");
        assert!(matches!(api_save(&api, "l/a:t"), Err(ApiError::Refused(m)) if m == "No such image: l/a:t"));
        server.join().unwrap();
        // A connection that ends inside the head is no answer.
        let (_dir, api, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Type: x\r\n");
        assert!(matches!(api_save(&api, "l/a:t"), Err(ApiError::Unreachable(_))));
        server.join().unwrap();
    }
}
