//! The registry client against real registry servers that want more than
//! loopback HTTP: token authentication (a token service of the test's own,
//! signing with a key the registry trusts) and TLS with a CA of the test's
//! own. Builds and pushes go through docker, look-ups, retags and indexes
//! through the tool's own client, with the same credentials and CA files.

use crate::support;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::{docker_login, outcome, run, Registry, Sandbox, Setup};

/// A program the test starts, killed on drop.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port(ip: &str) -> u16 {
    TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port()
}

pub(crate) fn wait_listening(addr: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{addr} exited ({status}): {}", fs::read_to_string(log).unwrap_or_default());
        }
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens at {addr}: {}", fs::read_to_string(log).unwrap_or_default());
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A new RSA key and a certificate for it, signed by itself, valid two days,
/// as files `key` and `cert` in `dir`.
pub(crate) fn self_signed(dir: &Path, key: &str, cert: &str, common_name: &str) {
    let subject = format!("/CN={common_name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-subj", &subject, "-days",
            "2",
        ],
    );
}

/// A token service: grants a JWT (RS256, its certificate in `x5c`) for every
/// scope asked, to the one user it knows; records each request's scopes.
pub(crate) const TOKEN_SERVICE: &str = r#"
import base64, json, os, subprocess, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, key, cert_der, user, password, log = sys.argv[1:7]
with open(cert_der, "rb") as f:
    x5c = base64.b64encode(f.read()).decode()
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        scopes = query.get("scope", [])
        with open(log, "a") as f:
            f.write(" ".join(scopes) + "\n")
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "xtask-test-issuer", "sub": user, "aud": query.get("service", [""])[0],
                  "exp": now + 600, "nbf": now - 60, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                                   capture_output=True, check=True).stdout
        body = json.dumps({"token": signing + "." + b64(signature), "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
"#;

/// A registry that wants a bearer token from a token service: the tool logs
/// in as docker does, with the credentials `docker login` stored, and the
/// whole cycle works: look-ups, push, retag, an index over two
/// repositories (which needs a token for both); without a login it fails
/// saying so.
#[test]
fn token_authentication() {
    let mut s = Sandbox::new("token-auth");
    let dir = s.path().join("token");
    fs::create_dir_all(&dir).unwrap();
    self_signed(&dir, "key.pem", "cert.pem", "xtask-test-token");
    openssl(&dir, &["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    let token_port = free_port("127.0.0.1");
    let scopes_log = dir.join("scopes.log");
    let password = format!("pw-{}", s.id);
    let script = dir.join("token.py");
    fs::write(&script, TOKEN_SERVICE).unwrap();
    let token_log = fs::File::create(dir.join("token.log")).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(token_port.to_string())
        .arg(dir.join("key.pem"))
        .arg(dir.join("cert.der"))
        .arg("tester")
        .arg(&password)
        .arg(&scopes_log)
        .stdout(token_log.try_clone().unwrap())
        .stderr(token_log)
        .spawn()
        .expect("python3");
    wait_listening(&format!("127.0.0.1:{token_port}"), &mut child, &dir.join("token.log"));
    let _tokens = Server(child);

    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: xtask-test\n    issuer: xtask-test-issuer\n    rootcertbundle: {}\n",
        dir.join("cert.pem").display()
    );
    let registry = Registry::start_with(&dir.join("registry"), Setup { auth: Some(auth), ..Setup::default() });
    let addr = registry.addr.clone();
    s.use_registry(&addr);
    let docker_config = s.path().join("docker");
    docker_login(&docker_config, &addr, "tester", &password).unwrap_or_else(|e| panic!("{e}"));

    s.scratch_image("a");
    let tag = s.tag("a");
    let with_login =
        |args: &[&str]| run(s.cmd(args).env("DOCKER_CONFIG", &docker_config).env("IMAGES_ENGINE", "docker"));
    let kind = support::builder().kind();
    let kind = if kind == "podman" { "classic" } else { kind };
    assert_eq!(
        with_login(&["push", "a", "--json"]).success().outcomes_built_by(kind),
        [outcome("a", &tag, "pushed", Some(&s.log("a")))]
    );
    let again = with_login(&["push", "a", "--json", "--push-as-latest"]);
    assert_eq!(again.success().outcomes_built_by(kind), [outcome("a", &tag, "latest", None)], "{again}");
    let third = with_login(&["push", "a", "--json", "--push-as-latest"]);
    assert_eq!(third.success().outcomes_built_by(kind), [outcome("a", &tag, "skipped", None)], "{third}");

    // An index over the two architectures' repositories.
    let arm = run(s
        .cmd(&["push", "a"])
        .env("DOCKER_CONFIG", &docker_config)
        .env("IMAGES_ENGINE", "docker")
        .env("ARCH", "aarch64"));
    arm.success();
    let index = with_login(&["push-manifest", "a"]);
    index.success();
    let scopes = fs::read_to_string(&scopes_log).unwrap();
    let target = format!("repository:{}/a:pull,push", s.id);
    assert!(
        scopes.lines().any(|l| l.contains(&target) && l.contains(&format!("repository:{}/a_aarch64:pull", s.id))),
        "no token for the index's repository with its members' asked:\n{scopes}"
    );
    let inspect = Command::new("docker")
        .env("DOCKER_CONFIG", &docker_config)
        .args(["manifest", "inspect", "--insecure"])
        .arg(index.stderr.trim().strip_prefix("pushed index ").and_then(|l| l.split(' ').next()).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("\"arm64\"") && text.contains("\"amd64\""),
        "{text}{}",
        String::from_utf8_lossy(&inspect.stderr)
    );

    // No login: the token service refuses, and the tool says to log in.
    let empty = s.path().join("no-login");
    fs::create_dir_all(&empty).unwrap();
    let refused = run(s.cmd(&["push", "a"]).env("DOCKER_CONFIG", &empty).env("IMAGES_ENGINE", "docker"));
    refused.status(1);
    let line =
        refused.stderr_lines().into_iter().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{refused}"));
    assert!(line.contains(&format!("registry {addr} refused the credentials")), "{refused}");
    assert!(line.ends_with(&format!("run `docker login {addr}`")), "{refused}");
    assert!(!refused.stderr.contains(&password), "{refused}");
}

/// The first address of this host that is not loopback: docker and the tool
/// speak TLS to it.
fn host_ip() -> String {
    let out = Command::new("hostname").arg("-I").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace()
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .unwrap_or_else(|| panic!("no IPv4 address other than loopback: {text}"))
        .to_string()
}

/// Removes a directory on drop.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A registry that speaks TLS with a certificate from a CA of the test's own:
/// with the CA in `/etc/docker/certs.d/<host:port>/ca.crt`, where docker
/// reads it, the tool reads it too; without it, the look-up fails saying
/// where the CA goes.
#[test]
fn tls_with_a_ca_of_its_own() {
    let mut s = Sandbox::new("tls-ca");
    let dir = s.path().join("tls");
    fs::create_dir_all(&dir).unwrap();
    let ip = host_ip();
    self_signed(&dir, "ca.key", "ca.crt", "xtask-test-ca");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=registry",
        ],
    );
    fs::write(dir.join("san.cnf"), format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n")).unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let setup = Setup { ip: Some(&ip), tls: Some((&cert, &key)), ..Setup::default() };
    let registry = Registry::start_with(&dir.join("registry"), setup);
    let addr = registry.addr.clone();
    let certs = PathBuf::from("/etc/docker/certs.d").join(&addr);
    fs::create_dir_all(&certs).unwrap();
    let _cleanup = Cleanup(certs.clone());
    fs::copy(dir.join("ca.crt"), certs.join("ca.crt")).unwrap();
    s.use_registry(&addr);

    s.scratch_image("a");
    let tag = s.tag("a");
    let docker = |args: &[&str]| run(s.cmd(args).env("IMAGES_ENGINE", "docker"));
    let kind = support::builder().kind();
    let kind = if kind == "podman" { "classic" } else { kind };
    let pushed = docker(&["push", "a", "--json"]);
    assert_eq!(pushed.success().outcomes_built_by(kind), [outcome("a", &tag, "pushed", Some(&s.log("a")))]);
    let again = docker(&["push", "a", "--json"]);
    assert_eq!(again.success().outcomes_built_by(kind), [outcome("a", &tag, "skipped", None)], "{again}");

    fs::remove_file(certs.join("ca.crt")).unwrap();
    let untrusted = docker(&["push", "a"]);
    untrusted.status(1);
    let line = untrusted
        .stderr_lines()
        .into_iter()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{untrusted}"));
    assert!(line.contains(&format!("registry {addr}: TLS failed")), "{untrusted}");
    assert!(line.contains(&format!("/etc/docker/certs.d/{addr}/ca.crt")), "{untrusted}");
}
