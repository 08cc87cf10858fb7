//! Image references as people and engines write them
//! (`[host[:port]/]repository[:tag][@digest]`): the one parser of them.

use anyhow::{bail, Result};

/// A reference taken apart as written: `name[:tag][@digest]`. The tag is
/// what follows the last `:` after the last `/`, so a registry's port is
/// never read as a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    /// Everything before the tag and the digest: `host:5000/a/b`.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> Parts<'a> {
    pub fn of(reference: &'a str) -> Parts<'a> {
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (reference, None),
        };
        match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => Parts { name, tag: Some(tag), digest },
            _ => Parts { name: rest, tag: None, digest },
        }
    }
}

/// `host/repository:tag` or `host/repository@digest`, as the registry sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `registry.example:5000`, as written (`docker.io` for names without one).
    pub host: String,
    pub repository: String,
    /// A tag or a digest: the digest when both are given.
    pub object: String,
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Reference> {
        let parts = Parts::of(reference);
        let object = parts.digest.or(parts.tag).unwrap_or("latest").to_string();
        let name = parts.name;
        let (first, rest) = name.split_once('/').unwrap_or(("", name));
        let (host, repository) = if first.contains('.') || first.contains(':') || first == "localhost" {
            (first.to_string(), rest.to_string())
        } else if first.is_empty() {
            ("docker.io".to_string(), format!("library/{rest}"))
        } else {
            ("docker.io".to_string(), name.to_string())
        };
        if repository.is_empty() || object.is_empty() {
            bail!("`{reference}` is not an image reference");
        }
        Ok(Reference { host, repository, object })
    }

    pub fn with_object(&self, object: &str) -> Reference {
        Reference { object: object.to_string(), ..self.clone() }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.object.contains(':') { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.host, self.repository, self.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_keep_a_port_out_of_the_tag() {
        let parts = |name, tag, digest| Parts { name, tag, digest };
        assert_eq!(Parts::of("r:5000/a/b:t@sha256:0"), parts("r:5000/a/b", Some("t"), Some("sha256:0")));
        assert_eq!(Parts::of("r:5000/a/b"), parts("r:5000/a/b", None, None));
        assert_eq!(Parts::of("a/b@sha256:0"), parts("a/b", None, Some("sha256:0")));
        assert_eq!(Parts::of("busybox:1.36"), parts("busybox", Some("1.36"), None));
    }

    #[test]
    fn references_as_the_registry_sees_them() {
        let r = Reference::parse("127.0.0.1:5000/a/b:t").unwrap();
        assert_eq!((r.host.as_str(), r.repository.as_str(), r.object.as_str()), ("127.0.0.1:5000", "a/b", "t"));
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = Reference::parse("me/app@sha256:00").unwrap();
        assert_eq!(r.to_string(), "docker.io/me/app@sha256:00");
        let r = Reference::parse("host.example/a:t@sha256:00").unwrap();
        assert_eq!((r.repository.as_str(), r.object.as_str()), ("a", "sha256:00"));
        assert!(Reference::parse("host.example/").is_err());
    }

    #[test]
    fn references() {
        let parse = |s: &str| {
            let r = Reference::parse(s).unwrap();
            (r.host, r.repository, r.object)
        };
        let own = |h: &str, r: &str, o: &str| (h.to_string(), r.to_string(), o.to_string());
        assert_eq!(parse("127.0.0.1:5000/images/a_x86_64:abc"), own("127.0.0.1:5000", "images/a_x86_64", "abc"));
        assert_eq!(parse("localhost/x"), own("localhost", "x", "latest"));
        assert_eq!(parse("r.example/a/b@sha256:00"), own("r.example", "a/b", "sha256:00"));
        assert_eq!(parse("busybox"), own("docker.io", "library/busybox", "latest"));
        assert_eq!(parse("gvisor/x:1"), own("docker.io", "gvisor/x", "1"));
        assert_eq!(Reference::parse("r.example:5000/a:t").unwrap().to_string(), "r.example:5000/a:t");
        assert_eq!(Reference::parse("r.example/a@sha256:0").unwrap().to_string(), "r.example/a@sha256:0");
    }
}
