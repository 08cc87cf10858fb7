//! Listings: a registry's repositories (`_catalog`) and a repository's tags
//! (`tags/list`), page after page as its `Link` headers lead, on the
//! registry's own host only, and no further than the limits of pages and
//! entries.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::client::Registry;
use super::exchange::{Access, Call, Reply};
use super::failure::{failure, status_error};
use super::limits::{MAX_DOCUMENT_BYTES, MAX_ENTRIES, MAX_PAGES};
use crate::model::Reference;

/// Entries asked for per page of a listing.
const PAGE: usize = 1000;

/// What a listing has gathered so far, and how far it may go.
struct Gathered<'a> {
    registry: &'a str,
    /// `repositories`, `tags of <repository>`: what is listed, for messages.
    what: String,
    entries: Vec<String>,
    pages: usize,
}

impl Gathered<'_> {
    /// Takes one page; fails past the limits.
    fn take(&mut self, page: Vec<String>) -> Result<()> {
        self.pages += 1;
        if self.entries.len() + page.len() > MAX_ENTRIES {
            return Err(self.over(format!("more than {MAX_ENTRIES} {}", self.what)));
        }
        self.entries.extend(page);
        Ok(())
    }

    /// Whether another page may be read.
    fn another(&self) -> Result<()> {
        if self.pages >= MAX_PAGES {
            return Err(self.over(format!("{} in more than {MAX_PAGES} pages", self.what)));
        }
        Ok(())
    }

    fn over(&self, what: String) -> anyhow::Error {
        failure(format!("registry {} lists {what}, more than this tool reads", self.registry), false)
    }
}

impl Registry {
    /// Every repository of the registry at `host`, from its `_catalog`,
    /// page after page.
    pub fn repositories(&self, host: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct CatalogPage {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let scopes = ["registry:catalog:*".to_string()];
        let what = format!("{host}/v2/_catalog");
        let r = Reference::parse(&format!("{host}/_catalog"))?;
        let mut gathered = Gathered { registry: host, what: "repositories".into(), entries: Vec::new(), pages: 0 };
        let mut path = format!("/v2/_catalog?n={PAGE}");
        loop {
            let (page, next) = self.retry.run(|| {
                let reply = self.send_to(host, &path, &scopes, &what, Call::new("GET", "", Access::Pull))?;
                match reply.status() {
                    200 => {}
                    404 => bail!("registry {host} does not list its repositories (no _catalog endpoint)"),
                    code => return Err(status_error(&r, code, &reply)),
                }
                let next = next_page(&reply);
                let body = reply.body(&"a page of its repository list", MAX_DOCUMENT_BYTES)?;
                let page: CatalogPage = serde_json::from_slice(&body)
                    .map_err(|e| anyhow!("registry {host}: its repository list cannot be read: {e}"))?;
                Ok((page, next))
            })?;
            gathered.take(page.repositories.unwrap_or_default())?;
            match next {
                Some(next) if next != path => path = next,
                _ => return Ok(gathered.entries),
            }
            gathered.another()?;
        }
    }

    /// Every tag of a repository (`host/repository`), page after page;
    /// none when the registry has no such repository.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct TagsPage {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let r = Reference::parse(repository)?;
        let what = format!("tags of {}", r.repository);
        let mut gathered = Gathered { registry: &r.host, what, entries: Vec::new(), pages: 0 };
        let mut path = format!("tags/list?n={PAGE}");
        loop {
            let (page, next) = self.retry.run(|| {
                let reply = self.send(&r, Call::new("GET", &path, Access::Pull))?;
                match reply.status() {
                    200 => {}
                    404 => return Ok((TagsPage { tags: None }, None)),
                    code => return Err(status_error(&r, code, &reply)),
                }
                let next = next_page(&reply);
                let body =
                    reply.body(&format_args!("a page of the tag list of {}", r.repository), MAX_DOCUMENT_BYTES)?;
                let page: TagsPage = serde_json::from_slice(&body).map_err(|e| {
                    anyhow!("registry {}: the tag list of {} cannot be read: {e}", r.host, r.repository)
                })?;
                Ok((page, next))
            })?;
            gathered.take(page.tags.unwrap_or_default())?;
            // The next page's link is absolute from `/v2/`; `send` wants it
            // below the repository.
            let below = format!("/v2/{}/", r.repository);
            match next.as_deref().and_then(|n| n.strip_prefix(&below)) {
                Some(next) if next != path => path = next.to_string(),
                _ => return Ok(gathered.entries),
            }
            gathered.another()?;
        }
    }
}

/// The path of the next page of a listing, from its `Link` header
/// (`</v2/…?last=x&n=1000>; rel="next"`): on the registry's own host,
/// whatever host the link names.
fn next_page(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
    let start = link.find('<')? + 1;
    let end = start + link[start..].find('>')?;
    let target = &link[start..end];
    // Relative, as docker-registry writes it, or a whole URL.
    let path = target.find("/v2/").map_or(target, |at| &target[at..]);
    link[end..].contains("next").then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_stop_at_their_limits() {
        let mut gathered = Gathered { registry: "r.example", what: "tags of a".into(), entries: vec![], pages: 0 };
        gathered.take(vec!["x".into(); MAX_ENTRIES - 1]).unwrap();
        gathered.another().unwrap();
        gathered.take(vec!["y".into()]).unwrap();
        let e = gathered.take(vec!["z".into()]).unwrap_err();
        assert_eq!(e.to_string(), "registry r.example lists more than 1000000 tags of a, more than this tool reads");
        let mut paged = Gathered { registry: "r.example", what: "repositories".into(), entries: vec![], pages: 0 };
        for _ in 0..MAX_PAGES {
            paged.another().unwrap();
            paged.take(vec![]).unwrap();
        }
        let e = paged.another().unwrap_err();
        assert_eq!(
            e.to_string(),
            "registry r.example lists repositories in more than 10000 pages, more than this tool reads"
        );
    }
}
