//! Transport: how a registry is reached. Plain HTTP on loopback and for
//! the insecure registries; TLS (rustls) otherwise, trusting the system's
//! roots and the registry's own CA files from `certs.d`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A manifest is small: a registry silent this long is stalled.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alive connections kept open per registry; as many as requests run at once.
const IDLE_PER_HOST: usize = 16;

/// How plain-HTTP registries and CA files are found.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// Registries (`host[:port]`) or IP ranges (`10.0.0.0/8`) spoken to over
    /// plain HTTP, as docker's `insecure-registries`.
    pub insecure: Vec<String>,
    /// Where per-registry CA files live: `<dir>/<host[:port]>/*.crt`.
    pub certs_dirs: Vec<PathBuf>,
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
        Transport { insecure, certs_dirs: vec!["/etc/docker/certs.d".into(), "/etc/containers/certs.d".into()] }
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
    /// spoken to in plain HTTP.
    pub(super) fn agent(&self, host: &str) -> Result<ureq::Agent> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .timeout_write(READ_TIMEOUT)
            .max_idle_connections_per_host(IDLE_PER_HOST)
            .redirects(5)
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
/// registry calls must be told so.
pub fn is_loopback(reference: &str) -> bool {
    let host = reference.split('/').next().unwrap_or("");
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
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
        let t = Transport { insecure: vec!["build.lan:5000".into()], certs_dirs: vec![] };
        assert!(
            t.is_plain_http("127.0.0.1:5000") && t.is_plain_http("localhost:1") && t.is_plain_http("build.lan:5000")
        );
        assert!(!t.is_plain_http("r.example"));
    }
}
