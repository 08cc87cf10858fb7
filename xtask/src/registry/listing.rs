//! Listings: a registry's repositories (`_catalog`) and a repository's tags
//! (`tags/list`), page after page as its `Link` headers lead.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::client::{read_body, Registry};
use super::exchange::{Access, Call};
use super::failure::status_error;
use crate::model::Reference;

/// Entries asked for per page of a listing.
const PAGE: usize = 1000;

impl Registry {
    /// Every repository of the registry at `host`, from its `_catalog`,
    /// page after page.
    pub fn repositories(&self, host: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let scopes = ["registry:catalog:*".to_string()];
        let what = format!("{host}/v2/_catalog");
        let mut out = Vec::new();
        let mut path = format!("/v2/_catalog?n={PAGE}");
        loop {
            let (page, next) = self.retry.run(|| {
                let response = self.send_to(host, &path, &scopes, &what, Call::new("GET", "", Access::Pull))?;
                match response.status() {
                    200 => {}
                    404 => bail!("registry {host} does not list its repositories (no _catalog endpoint)"),
                    code => return Err(status_error(&Reference::parse(&format!("{host}/_catalog"))?, code, &response)),
                }
                let next = next_page(&response);
                let body = read_body(response, &Reference::parse(&format!("{host}/_catalog"))?)?;
                let page: Page = serde_json::from_slice(&body)
                    .map_err(|e| anyhow!("registry {host}: its repository list cannot be read: {e}"))?;
                Ok((page, next))
            })?;
            out.extend(page.repositories.unwrap_or_default());
            match next {
                Some(next) if next != path => path = next,
                _ => return Ok(out),
            }
        }
    }

    /// Every tag of a repository (`host/repository`), page after page;
    /// none when the registry has no such repository.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let r = Reference::parse(repository)?;
        let mut out = Vec::new();
        let mut path = format!("tags/list?n={PAGE}");
        loop {
            let (page, next) = self.retry.run(|| {
                let response = self.send(&r, Call::new("GET", &path, Access::Pull))?;
                match response.status() {
                    200 => {}
                    404 => return Ok((Page { tags: None }, None)),
                    code => return Err(status_error(&r, code, &response)),
                }
                let next = next_page(&response);
                let body = read_body(response, &r)?;
                let page: Page = serde_json::from_slice(&body).map_err(|e| {
                    anyhow!("registry {}: the tag list of {} cannot be read: {e}", r.host, r.repository)
                })?;
                Ok((page, next))
            })?;
            out.extend(page.tags.unwrap_or_default());
            // The next page's link is absolute from `/v2/`; `send` wants it
            // below the repository.
            let below = format!("/v2/{}/", r.repository);
            match next.as_deref().and_then(|n| n.strip_prefix(&below)) {
                Some(next) if next != path => path = next.to_string(),
                _ => return Ok(out),
            }
        }
    }
}

/// The path of the next page of a listing, from its `Link` header
/// (`</v2/…?last=x&n=1000>; rel="next"`).
fn next_page(response: &ureq::Response) -> Option<String> {
    let link = response.header("link")?;
    let start = link.find('<')? + 1;
    let end = start + link[start..].find('>')?;
    let target = &link[start..end];
    // Relative, as docker-registry writes it, or a whole URL.
    let path = target.find("/v2/").map_or(target, |at| &target[at..]);
    link[end..].contains("next").then(|| path.to_string())
}
