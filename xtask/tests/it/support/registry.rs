//! A registry of a test's own, and plain HTTP to a registry.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` on a free port with storage of its own and deletes
/// enabled, for a test that stops it, kills it and starts it again on the
/// same port and storage, deletes from it, wants a password or a token, or
/// speaks TLS to it. Killed on drop.
pub struct Registry {
    pub addr: String,
    dir: PathBuf,
    tls: bool,
    child: Option<Child>,
}

/// How a [`Registry`] differs from a plain-HTTP one on loopback.
#[derive(Default)]
pub struct Setup<'a> {
    /// The IPv4 address it listens on; `127.0.0.1` when `None`.
    pub ip: Option<&'a str>,
    /// Its `auth:` section, as YAML at the top level.
    pub auth: Option<String>,
    /// Its certificate and key: it speaks TLS.
    pub tls: Option<(&'a Path, &'a Path)>,
}

impl Registry {
    /// Its files (settings, storage, log) go under `dir`. `htpasswd`: the
    /// path of a bcrypt htpasswd file, for basic auth.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let auth = htpasswd.map(|p| format!("auth:\n  htpasswd:\n    realm: xtask-test\n    path: {}\n", p.display()));
        Registry::start_with(dir, Setup { auth, ..Setup::default() })
    }

    pub fn start_with(dir: &Path, setup: Setup<'_>) -> Registry {
        fs::create_dir_all(dir.join("registry-data")).unwrap();
        let ip = setup.ip.unwrap_or("127.0.0.1");
        let auth = setup.auth.unwrap_or_default();
        let tls = setup
            .tls
            .map(|(cert, key)| format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()))
            .unwrap_or_default();
        for _ in 0..5 {
            let port = TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port();
            let addr = format!("{ip}:{port}");
            fs::write(
                dir.join("registry.yml"),
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth}http:\n  addr: {addr}\n{tls}",
                    dir.join("registry-data").display()
                ),
            )
            .unwrap();
            let mut registry = Registry { addr, dir: dir.to_path_buf(), tls: setup.tls.is_some(), child: None };
            if registry.run() {
                return registry;
            }
        }
        panic!("docker-registry did not start: {}", fs::read_to_string(dir.join("registry.log")).unwrap_or_default());
    }

    /// Starts the registry process; whether it answers within 15 seconds.
    fn run(&mut self) -> bool {
        let log = fs::File::options().create(true).append(true).open(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run docker-registry (tests/env/up.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            // Over TLS, that something listens; else that it answers.
            if (self.tls && TcpStream::connect(&self.addr).is_ok()) || answers(&self.addr) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it, and fails if its address still answers.
    pub fn stop(&mut self) {
        self.kill();
        assert!(!answers(&self.addr), "registry {} still answers after it was stopped", self.addr);
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.run() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not start again on {}", self.addr);
    }

    /// Files of its storage that are empty: what a write cut short by a
    /// crash leaves (the registry writes files in place, and takes an empty
    /// one for a complete one afterwards).
    pub fn empty_files(&self) -> Vec<String> {
        walkdir::WalkDir::new(self.dir.join("registry-data"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && e.metadata().is_ok_and(|m| m.len() == 0))
            .map(|e| e.path().display().to_string())
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a registry answers `GET /v2/` at `addr`: 200, or 401 when it
/// wants a password.
fn answers(addr: &str) -> bool {
    http(addr, "GET", "/v2/", None).is_ok_and(|(status, _)| status == 200 || status == 401)
}

/// One HTTP/1.0 request to a plain-HTTP registry: (status, body). `auth`:
/// `user:password`, for basic auth.
pub fn http(addr: &str, method: &str, path: &str, auth: Option<&str>) -> std::io::Result<(u16, Vec<u8>)> {
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let basic = auth.map(|auth| format!("Basic {}", base64(auth.as_bytes())));
    let mut headers = vec![("Accept", accept)];
    headers.extend(basic.as_deref().map(|b| ("Authorization", b)));
    let (status, _, body) = exchange(addr, method, path, &headers, b"", Duration::from_secs(10))?;
    Ok((status, body))
}

/// An HTTP answer: its status, its headers (names lower case) and its body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.0 request with `headers` and `body`, waiting at most
/// `timeout` for each read: the status (0 when there is none), the headers
/// (names lower case) and the body.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, response.get(end + 4..).unwrap_or_default().to_vec()))
}

pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
