//! What a build is built on: each external base its Dockerfile names (found
//! where `pin` finds them, [`catalog::bases`](crate::catalog::bases)) with
//! the digest of what the build uses for it, for the bases label
//! ([`BaseDigest`]); and, where the builder would resolve a tag itself, the
//! Dockerfile's text with that base named by its digest. Each distinct base
//! is looked up once per run, by the first build on it: a run that only
//! pulls asks nothing.
//!
//! How the digest of a base is known, so that the label is true:
//! - a base pinned `name:tag@sha256:…` is built from that digest: it is
//!   read from the reference, with no look-up;
//! - on a builder that reads the engine's image store (the classic builder,
//!   podman, BuildKit in the daemon or buildx's `docker` driver), a base
//!   present locally for the platform built is what the build uses: its
//!   digest is the one the engine holds for it in the base's repository
//!   (`RepoDigests`, one engine call per base). An image with none (built
//!   here and never pushed) or several gives no digest the build can be
//!   said to have used, and nothing is recorded;
//! - otherwise the builder pulls the tag, or resolves it itself (BuildKit
//!   without the image store). The tool resolves it first, through its own
//!   registry client (one request per base), and the build reads a copy of
//!   the Dockerfile naming that digest: every builder, a batch's too, then
//!   builds from exactly what the label names, and `status --bases` later
//!   compares like with like (an index digest for a multi-platform tag).
//!   Pulling ahead through the engine would cost a whole pull outside any
//!   job, and would not reach a builder that keeps no local images. A
//!   registry that cannot be asked leaves the base unrecorded and the
//!   Dockerfile as it is written.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use super::Context;
use crate::catalog::bases::{self, apply, followed, Catalogued, Edit};
use crate::catalog::{dockerfile, image_files};
use crate::engine::{Builder, Engine, ImageDetails};
use crate::git::provenance::{is_sha256, BaseDigest};
use crate::model::{Arch, Parts, Reference};
use crate::planning::Job;
use crate::registry::Registry;

/// The run's look-ups of the bases its builds are built on.
#[derive(Default)]
pub struct BuiltOn {
    local_prefix: String,
    remote_prefix: String,
    /// Every image path of the catalog, for any architecture.
    paths: HashSet<String>,
    /// The `ARG`s `DOCKER_BUILD_ARGS` sets: a base written as the default
    /// of one is not what the build uses.
    overridden: HashSet<String>,
    /// Each base as written, for the platform built, once looked up.
    looked_up: Mutex<HashMap<(String, Option<Arch>), LookedUp>>,
}

/// What a build is built on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildBases {
    /// Each external base with a digest known, by the `name:tag` it follows.
    pub digests: Vec<BaseDigest>,
    /// The Dockerfile's text with the bases resolved through their
    /// registry named by digest, when there are such bases.
    pub text: Option<String>,
}

/// A base's lookup, made by the first build that needs it; the others wait.
type LookedUp = Arc<OnceLock<Lookup>>;

/// How the digest of an unpinned base is known.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    /// The local image the build uses.
    Local(String),
    /// What the tag points at in its registry, which the build is to name.
    Registry(String),
    Unknown,
}

impl BuiltOn {
    pub fn new(local_prefix: &str, remote_prefix: &str, paths: HashSet<String>, build_args: &[String]) -> BuiltOn {
        BuiltOn {
            local_prefix: local_prefix.to_string(),
            remote_prefix: remote_prefix.to_string(),
            paths,
            overridden: dockerfile::build_args(build_args).into_keys().collect(),
            looked_up: Mutex::default(),
        }
    }

    /// What the build of `job` is built on; `None` when its Dockerfile
    /// cannot be read here (the build says why), as nothing can then be
    /// said of its bases.
    pub(super) fn of(&self, ctx: &Context, job: &Job) -> Option<BuildBases> {
        let bytes = image_files::read(&ctx.images_root.join(&job.path), &job.dockerfile).ok()??;
        let text = String::from_utf8(bytes).ok()?;
        self.in_text(&text, ctx.arch, &|reference, followed, platform| {
            self.lookup(reference, platform, || look_up(ctx.engine, ctx.registry, reference, followed, platform))
        })
    }

    /// What a build of the Dockerfile `text` for `arch` is built on, each
    /// unpinned base's digest from `look_up` (the base as written, the tag
    /// it follows, the platform built for it).
    fn in_text(
        &self,
        text: &str,
        arch: Arch,
        look_up: &dyn Fn(&str, &str, Option<Arch>) -> Lookup,
    ) -> Option<BuildBases> {
        let own =
            Catalogued { local_prefix: &self.local_prefix, remote_prefix: &self.remote_prefix, paths: &self.paths };
        let mut digests = BTreeSet::new();
        let mut edits = Vec::new();
        for base in bases::find(text, &own).bases {
            let overridden = base.site.strip_prefix("ARG ").is_some_and(|name| self.overridden.contains(name));
            // A digest alone follows no tag: it never moves.
            let Some(followed) = followed(&base.reference).filter(|_| !overridden) else { continue };
            let digest = match Parts::of(&base.reference).digest {
                Some(digest) => Some(digest.to_string()),
                None => match look_up(&base.reference, &followed, platform(base.platform.as_deref(), arch)) {
                    Lookup::Local(digest) => Some(digest),
                    Lookup::Registry(digest) => {
                        let new = format!("{followed}@{digest}");
                        edits.push(Edit { at: base.at, old: base.reference.clone(), new });
                        Some(digest)
                    }
                    Lookup::Unknown => None,
                },
            };
            if let Some(digest) = digest.filter(|d| is_sha256(d)) {
                digests.insert(BaseDigest { reference: followed, digest });
            }
        }
        // The edits are of the text they were found in: they apply, or the
        // build could not be said to use what they name.
        let text = if edits.is_empty() { None } else { Some(apply(text, &edits).ok()?) };
        Some(BuildBases { digests: digests.into_iter().collect(), text })
    }

    /// The lookup of `reference` for `platform`, made once per run.
    fn lookup(&self, reference: &str, platform: Option<Arch>, make: impl FnOnce() -> Lookup) -> Lookup {
        let cell = {
            let mut looked_up = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
            looked_up.entry((reference.to_string(), platform)).or_default().clone()
        };
        cell.get_or_init(make).clone()
    }
}

/// Where the digest of the unpinned base `reference` (which follows
/// `followed`) comes from, for a build of `platform` (unknown: a variable).
fn look_up(
    engine: &dyn Engine,
    registry: &Registry,
    reference: &str,
    followed: &str,
    platform: Option<Arch>,
) -> Lookup {
    let own_store = !matches!(engine.builder(), Builder::Buildx { driver } if driver != "docker");
    if own_store {
        let local = match engine.images(&[reference]) {
            Ok(found) => found.into_values().next(),
            // Nothing can be said of what the build will find.
            Err(_) => return Lookup::Unknown,
        };
        if let Some(image) = local {
            return local_digest(reference, &image, platform).map_or(Lookup::Unknown, Lookup::Local);
        }
    }
    match registry.manifest(followed) {
        Ok(Some(manifest)) => Lookup::Registry(manifest.digest),
        Ok(None) | Err(_) => Lookup::Unknown,
    }
}

/// The digest the local image of `reference` has in the base's repository,
/// when the build of `platform` uses it: it is for that platform (else the
/// builder looks elsewhere, or the build fails its platform check), and the
/// engine knows it by one digest there.
fn local_digest(reference: &str, image: &ImageDetails, platform: Option<Arch>) -> Option<String> {
    if !platform.is_some_and(|p| image.platform.is(p)) {
        return None;
    }
    let wanted = Reference::parse(reference).ok()?;
    let digests: BTreeSet<&str> = image
        .repo_digests
        .iter()
        .filter_map(|named| {
            let (name, digest) = named.split_once('@')?;
            let r = Reference::parse(name).ok()?;
            (r.host == wanted.host && r.repository == wanted.repository).then_some(digest)
        })
        .collect();
    match digests.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}

/// The architecture a `FROM --platform` (as written) builds for, the
/// build's own without one; `None` for one it cannot tell.
fn platform(written: Option<&str>, arch: Arch) -> Option<Arch> {
    match written {
        None | Some("$TARGETPLATFORM" | "${TARGETPLATFORM}") => Some(arch),
        Some("$BUILDPLATFORM" | "${BUILDPLATFORM}") => Arch::host().ok(),
        Some(p) => Arch::ALL.into_iter().find(|a| a.platform() == p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{self, Fake};
    use crate::registry::{Credentials, Transport};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn built_on(build_args: &[&str]) -> BuiltOn {
        let args: Vec<String> = build_args.iter().map(|a| a.to_string()).collect();
        BuiltOn::new("l.test/images", "r.test/cache", HashSet::from(["cat".to_string()]), &args)
    }

    fn based(pairs: &[(&str, String)]) -> Vec<BaseDigest> {
        pairs.iter().map(|(r, d)| BaseDigest { reference: r.to_string(), digest: d.clone() }).collect()
    }

    /// Pinned bases need no look-up; a base resolved through its registry
    /// is named by digest in the text built; an unknown one is left alone;
    /// catalog images, stages, `scratch`, a digest alone and an `ARG` the
    /// build arguments set are not bases the label names.
    #[test]
    fn each_base_with_the_digest_the_build_uses() {
        let text = "ARG OVER=x.test/over:1\nARG VIA=x.test/via:2\n\
                    FROM x.test/pinned:1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa AS a\n\
                    FROM x.test/local:3 AS b\nFROM x.test/remote AS c\nFROM ${VIA} AS d\nFROM $OVER AS e\n\
                    FROM x.test/unknown:4 AS f\nFROM x.test/alone@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n\
                    FROM l.test/images/cat:latest AS g\nFROM a\nFROM scratch\nCOPY --from=x.test/remote /x /x\n";
        let asked = Mutex::new(Vec::new());
        let look_up = |reference: &str, followed: &str, platform: Option<Arch>| {
            asked.lock().unwrap().push(format!("{reference} {followed} {platform:?}"));
            match reference {
                "x.test/local:3" => Lookup::Local(digest('c')),
                "x.test/remote" => Lookup::Registry(digest('d')),
                "x.test/via:2" => Lookup::Registry(digest('e')),
                _ => Lookup::Unknown,
            }
        };
        let found = built_on(&["--build-arg", "OVER=y.test/other:1"]).in_text(text, Arch::Aarch64, &look_up).unwrap();
        assert_eq!(
            found.digests,
            based(&[
                ("x.test/local:3", digest('c')),
                ("x.test/pinned:1", digest('a')),
                ("x.test/remote:latest", digest('d')),
                ("x.test/via:2", digest('e')),
            ])
        );
        let d = |c| digest(c);
        assert_eq!(
            found.text.unwrap(),
            format!(
                "ARG OVER=x.test/over:1\nARG VIA=x.test/via:2@{}\n\
                 FROM x.test/pinned:1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa AS a\n\
                 FROM x.test/local:3 AS b\nFROM x.test/remote:latest@{} AS c\nFROM ${{VIA}} AS d\nFROM $OVER AS e\n\
                 FROM x.test/unknown:4 AS f\nFROM x.test/alone@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n\
                 FROM l.test/images/cat:latest AS g\nFROM a\nFROM scratch\nCOPY --from=x.test/remote:latest@{} /x /x\n",
                d('e'),
                d('d'),
                d('d')
            )
        );
        assert_eq!(
            *asked.lock().unwrap(),
            [
                "x.test/via:2 x.test/via:2 Some(Aarch64)",
                "x.test/local:3 x.test/local:3 Some(Aarch64)",
                "x.test/remote x.test/remote:latest Some(Aarch64)",
                "x.test/unknown:4 x.test/unknown:4 Some(Aarch64)",
                "x.test/remote x.test/remote:latest Some(Aarch64)",
            ]
        );
        // Nothing resolved through a registry: the file is built as it is.
        let local = built_on(&[]).in_text("FROM x.test/local:3\n", Arch::X86_64, &look_up).unwrap();
        assert_eq!((local.digests, local.text), (based(&[("x.test/local:3", digest('c'))]), None));
        let none = built_on(&[]).in_text("FROM scratch\n", Arch::X86_64, &look_up).unwrap();
        assert_eq!(none, BuildBases::default());
    }

    /// A base present locally gives the digest the engine holds for it in
    /// its own repository, when it is one, and when the image is for the
    /// platform built; one absent is asked of its registry, and one whose
    /// registry cannot be asked stays unknown.
    #[test]
    fn local_images_give_their_repository_digest() {
        let image = |arch: &str, digests: &[String]| ImageDetails {
            repo_digests: digests.to_vec(),
            ..fake::details(&format!("sha256:{arch}-{}", digests.join(",")), arch)
        };
        let engine = Fake::with(&[])
            .holding(&["x.test/one:1"], image("amd64", &[format!("x.test/one@{}", digest('1'))]))
            .holding(&["busybox:1"], image("amd64", &[format!("docker.io/library/busybox@{}", digest('2'))]))
            .holding(&["x.test/arm:1"], image("arm64", &[format!("x.test/arm@{}", digest('3'))]))
            .holding(&["x.test/built:1"], image("amd64", &[]))
            .holding(
                &["x.test/two:1"],
                image("amd64", &[format!("x.test/two@{}", digest('4')), format!("x.test/two@{}", digest('5'))]),
            )
            .holding(&["x.test/renamed:1"], image("amd64", &[format!("x.test/elsewhere@{}", digest('6'))]));
        let registry = Registry::new(Credentials::from_files(vec![]), Transport::system(&[]));
        let x86 = Some(Arch::X86_64);
        let ask = |reference: &str, platform: Option<Arch>| {
            let followed = followed(reference).unwrap();
            look_up(&engine, &registry, reference, &followed, platform)
        };
        assert_eq!(ask("x.test/one:1", x86), Lookup::Local(digest('1')));
        assert_eq!(ask("busybox:1", x86), Lookup::Local(digest('2')));
        assert_eq!(ask("x.test/arm:1", Some(Arch::Aarch64)), Lookup::Local(digest('3')));
        for (reference, platform) in [
            ("x.test/arm:1", x86),
            ("x.test/one:1", None),
            ("x.test/built:1", x86),
            ("x.test/two:1", x86),
            ("x.test/renamed:1", x86),
            // Absent, and nothing listens at its registry.
            ("127.0.0.1:1/absent:1", x86),
        ] {
            assert_eq!(ask(reference, platform), Lookup::Unknown, "{reference}");
        }
    }

    #[test]
    fn platforms_a_from_names() {
        assert_eq!(platform(None, Arch::Aarch64), Some(Arch::Aarch64));
        assert_eq!(platform(Some("$TARGETPLATFORM"), Arch::Aarch64), Some(Arch::Aarch64));
        assert_eq!(platform(Some("linux/amd64"), Arch::Aarch64), Some(Arch::X86_64));
        assert_eq!(platform(Some("${BUILDPLATFORM}"), Arch::Aarch64), Arch::host().ok());
        assert_eq!(platform(Some("$OTHER"), Arch::Aarch64), None);
    }
}
