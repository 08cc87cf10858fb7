//! Transport: how a registry is reached. Plain HTTP on loopback and for
//! the insecure registries; TLS (rustls) otherwise, trusting the system's
//! roots and the registry's own CA files from `certs.d`. Also what an
//! address is: its origin (scheme, host, port), which decides where
//! credentials may go, and whether it is on loopback.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::limits;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alive connections kept open per registry; as many as requests run at once.
const IDLE_PER_HOST: usize = 16;

/// How plain-HTTP registries and CA files are found.
#[derive(Clone, Debug)]
pub struct Transport {
    /// Registries (`host[:port]`) or IP ranges (`10.0.0.0/8`) spoken to over
    /// plain HTTP, as docker's `insecure-registries`.
    pub insecure: Vec<String>,
    /// Where per-registry CA files live: `<dir>/<host[:port]>/*.crt`.
    pub certs_dirs: Vec<PathBuf>,
    /// How long one request may take, its answer read to the end
    /// ([`limits::REQUEST_DEADLINE`]); a blob's gets more by its size.
    pub deadline: Duration,
}

impl Default for Transport {
    fn default() -> Transport {
        Transport { insecure: Vec::new(), certs_dirs: Vec::new(), deadline: limits::REQUEST_DEADLINE }
    }
}

impl Transport {
    /// docker's rules: loopback and the daemon's `insecure-registries`
    /// (`/etc/docker/daemon.json`) are plain HTTP, on top of `extra`; CA
    /// files come from `/etc/docker/certs.d` and `/etc/containers/certs.d`.
    pub fn system(extra: &[String]) -> Transport {
        let mut insecure = extra.to_vec();
        if let Ok(text) = std::fs::read_to_string("/etc/docker/daemon.json") {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(list) = value["insecure-registries"].as_array() {
                    insecure.extend(list.iter().filter_map(|v| v.as_str()).map(String::from));
                }
            }
        }
        Transport {
            insecure,
            certs_dirs: vec!["/etc/docker/certs.d".into(), "/etc/containers/certs.d".into()],
            deadline: limits::request_deadline(),
        }
    }

    pub fn is_plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.insecure.iter().any(|entry| matches_insecure(entry, host))
    }

    /// The CA certificates for `host` besides the system's, as DER.
    fn ca_files(&self, host: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in &self.certs_dirs {
            let Ok(entries) = std::fs::read_dir(dir.join(host)) else { continue };
            let mut found: Vec<PathBuf> =
                entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "crt")).collect();
            found.sort();
            files.extend(found);
        }
        files
    }

    /// Where the API of `host` is: over plain HTTP or TLS; docker.io's at
    /// its API host.
    pub(super) fn base(&self, host: &str) -> String {
        let api = if host == "docker.io" { "registry-1.docker.io" } else { host };
        format!("{}://{api}", if self.is_plain_http(host) { "http" } else { "https" })
    }

    /// A pool of keep-alive connections to `host`, over TLS unless it is
    /// spoken to in plain HTTP. Every request is given its deadline, which
    /// bounds each read too. Redirects are the caller's to follow: ureq
    /// would follow one to another port of the same host name with the
    /// `Authorization` header.
    pub(super) fn agent(&self, host: &str) -> Result<ureq::Agent> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .max_idle_connections_per_host(IDLE_PER_HOST)
            .redirects(0)
            .user_agent(concat!("cargo-xtask-images/", env!("CARGO_PKG_VERSION")));
        if !self.is_plain_http(host) {
            builder = builder.tls_config(Arc::new(self.tls_config(host)?));
        }
        Ok(builder.build())
    }

    /// The system's roots, and the registry's own CA files.
    fn tls_config(&self, host: &str) -> Result<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().unwrap_or_default() {
            let _ = roots.add(cert);
        }
        for file in self.ca_files(host) {
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&file)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| anyhow!("cannot read CA file {}: {e}", file.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| anyhow!("CA file {} holds an unusable certificate: {e}", file.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Whether an `insecure-registries` entry covers `host`: the same
/// `host[:port]`, or a CIDR range holding its IP address.
fn matches_insecure(entry: &str, host: &str) -> bool {
    let entry = entry.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    if entry == host {
        return true;
    }
    let Some((net, bits)) = entry.split_once('/') else { return false };
    let ip = host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    match (net.parse::<std::net::Ipv4Addr>(), ip.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) {
        (Ok(net), Ok(ip), Ok(bits)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        _ => false,
    }
}

/// The daemon talks plain HTTP to registries on loopback; the CLI's own
/// registry calls must be told so. The host of `reference` is on loopback
/// when it is `localhost` or a loopback address: `127.attacker.example` is
/// a name like any other.
pub fn is_loopback(reference: &str) -> bool {
    let host = reference.split('/').next().unwrap_or("");
    let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let name = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, "")) => address,
            Some((address, port)) if port.strip_prefix(':').is_some_and(is_port) => address,
            _ => return false,
        },
        // An IPv6 address without brackets has no port.
        None if host.parse::<IpAddr>().is_ok() => host,
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where a URL points: its scheme, host and port, the unit credentials are
/// bound to (docker's and containerd's rule: none for another host, port
/// or scheme).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub scheme: String,
    /// In lower case; an IPv6 address in brackets.
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute `http` or `https` URL.
    pub fn of(url: &str) -> Result<Origin> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| anyhow!("`{url}` is not an absolute URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(anyhow!("`{url}` is neither HTTP nor HTTPS")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(anyhow!("`{url}` names no host, or a user"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().map_err(|_| anyhow!("`{url}` has no valid port"))?)
            }
            _ => (authority, default),
        };
        Ok(Origin { scheme, host: host.to_ascii_lowercase(), port })
    }

    /// `host[:port]`, as a registry is named: no port when it is the scheme's.
    pub fn authority(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.authority())
    }
}

/// The absolute URL a `Location` (or a `Link`) names, read from `from`:
/// whole, without a scheme, from the root, or relative to `from`'s path.
pub(super) fn resolve(from: &str, location: &str) -> Result<String> {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(location.to_string());
    }
    let (scheme, rest) = from.split_once("://").ok_or_else(|| anyhow!("`{from}` is not an absolute URL"))?;
    if let Some(path) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{path}"));
    }
    let root = rest.find(['/', '?', '#']).map_or(rest, |at| &rest[..at]);
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{root}{location}"));
    }
    let path = rest[root.len()..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |at| &path[..=at]);
    Ok(format!("{scheme}://{root}{dir}{location}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_entries() {
        assert!(matches_insecure("r.example:5000", "r.example:5000"));
        assert!(matches_insecure("http://r.example:5000/", "r.example:5000"));
        assert!(!matches_insecure("r.example", "r.example:5000"));
        assert!(matches_insecure("10.0.0.0/8", "10.1.2.3:5000"));
        assert!(matches_insecure("10.1.2.3/32", "10.1.2.3"));
        assert!(!matches_insecure("10.0.0.0/8", "11.1.2.3:5000"));
        assert!(!matches_insecure("10.0.0.0/8", "r.example"));
        let t = Transport { insecure: vec!["build.lan:5000".into()], ..Transport::default() };
        assert!(
            t.is_plain_http("127.0.0.1:5000") && t.is_plain_http("localhost:1") && t.is_plain_http("build.lan:5000")
        );
        assert!(!t.is_plain_http("r.example"));
    }

    #[test]
    fn loopback_is_an_address_not_a_prefix() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000/a/b",
            "127.1.2.3:1",
            "[::1]:5000",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "127.attacker.example",
            "127.attacker.example:5000/a",
            "127.0.0.1.nip.io:5000",
            "localhost.attacker.example",
            "10.0.0.1:5000",
            "[::2]:5000",
            "registry.example",
            "127.0.0.1:",
            "[::1]x",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
        let t = Transport::default();
        assert!(!t.is_plain_http("127.attacker.example:5000"));
        assert_eq!(t.base("127.attacker.example"), "https://127.attacker.example");
    }

    #[test]
    fn origins() {
        let o = |url: &str| Origin::of(url).unwrap();
        assert_eq!(
            o("http://127.0.0.1:5000/v2/x"),
            Origin { scheme: "http".into(), host: "127.0.0.1".into(), port: 5000 }
        );
        assert_eq!(o("HTTPS://R.example/v2/"), Origin { scheme: "https".into(), host: "r.example".into(), port: 443 });
        assert_eq!(o("https://r.example:443?x"), o("https://r.example/"));
        assert_ne!(o("http://r.example/"), o("https://r.example/"));
        assert_ne!(o("http://127.0.0.1:5000/"), o("http://127.0.0.1:5001/"));
        assert_eq!(o("http://[::1]:5000/v2/").host, "[::1]");
        assert_eq!(o("http://[::1]/v2/").port, 80);
        assert!(o("http://[::1]:5000/").is_loopback() && !o("https://127.attacker.example/").is_loopback());
        for bad in ["/v2/x", "ftp://r.example/", "http://user:pw@r.example/", "http:///x", "http://r.example:x/"] {
            assert!(Origin::of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locations() {
        let from = "http://r.example:5000/v2/a/blobs/uploads/?mount=x";
        let r = |location: &str| resolve(from, location).unwrap();
        assert_eq!(r("https://s.example/u/1?x=y"), "https://s.example/u/1?x=y");
        assert_eq!(r("//s.example/u/1"), "http://s.example/u/1");
        assert_eq!(r("/v2/a/blobs/uploads/1"), "http://r.example:5000/v2/a/blobs/uploads/1");
        assert_eq!(r("1?state=s"), "http://r.example:5000/v2/a/blobs/uploads/1?state=s");
        assert_eq!(resolve("http://r.example", "x").unwrap(), "http://r.example/x");
    }
}
