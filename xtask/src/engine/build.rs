//! Builds: what a build is ([`BuildSpec`], [`BuildCache`], [`Built`]), the
//! builders docker and podman have ([`Builder`]), and how the CLI runs one
//! build, into the engine's store or straight to a registry.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use xshell::{cmd, Shell};

use super::client::last_error_line;
use super::inspect::full_id;
use super::{Engine, EngineCli};
use crate::config::EngineKind;
use crate::model::Arch;
use crate::registry::is_loopback;

/// How often a build is tried when it fails only because of [`CACHE_RACES`]
/// (an engine where images are removed all the time loses several in a row).
const BUILD_ATTEMPTS: usize = 6;
/// What docker's classic builder, and podman's, say when an image vanished
/// under their cache look-up.
const CACHE_RACES: &[&str] =
    &["unable to find image \"sha256:", "checking if cached image exists from a previous build"];

/// What builds images. docker's classic builder and podman's match cached
/// layers without regard to the platform they were built for; BuildKit does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Builder {
    /// docker's legacy builder.
    Classic,
    /// BuildKit through the buildx plugin, with the selected builder's driver
    /// (`docker` builds into the daemon's image store; others need `--load`).
    Buildx {
        driver: String,
    },
    /// The daemon's own BuildKit, which a client older than 23.0 uses when
    /// `DOCKER_BUILDKIT=1` is set (the tool sets it).
    DaemonBuildKit,
    Podman,
}

impl Builder {
    /// Whether a layer cached for one platform may be reused for another.
    pub fn shares_cache_across_platforms(&self) -> bool {
        matches!(self, Builder::Classic | Builder::Podman)
    }

    /// `classic`, `buildkit` or `podman`, for machines.
    pub fn kind(&self) -> &'static str {
        match self {
            Builder::Classic => "classic",
            Builder::Buildx { .. } | Builder::DaemonBuildKit => "buildkit",
            Builder::Podman => "podman",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Builder::Classic => "docker's classic builder".into(),
            Builder::Buildx { driver } => format!("BuildKit (buildx, driver {driver})"),
            Builder::DaemonBuildKit => "BuildKit (the daemon's own, DOCKER_BUILDKIT=1)".into(),
            Builder::Podman => "podman".into(),
        }
    }
}

/// What to build: the context directory, its Dockerfile, for which
/// architecture, with which extra arguments.
pub struct BuildSpec<'a> {
    pub dir: &'a Path,
    pub dockerfile: &'a str,
    pub arch: Arch,
    pub args: &'a [String],
    /// `--label` pairs: they describe the image and never change its tag.
    pub labels: &'a [(String, String)],
    /// The Dockerfile's text to build from, when it is not the file's own
    /// (bases named by digest): the build reads it from a copy, or from the
    /// batch's definition; the file stays as it is.
    pub text: Option<&'a str>,
}

/// What a build may take from a cache.
#[derive(Clone, Debug, Default)]
pub struct BuildCache {
    /// `--no-cache`: nothing at all.
    pub none: bool,
    /// An image (or, for podman, a cache repository) to take layers from.
    pub from: Option<String>,
    /// podman: the cache repository to push the layers built to.
    pub to: Option<String>,
}

/// A finished build: the image, and how many of its steps the builder took
/// from its cache, when its output says.
#[derive(Clone, Debug)]
pub struct Built {
    pub id: String,
    pub steps_reused: Option<u32>,
}

/// The steps a build's output reports as taken from the cache.
pub(super) fn steps_reused(builder: &Builder, output: &str) -> Option<u32> {
    let count = |f: &dyn Fn(&str) -> bool| output.lines().filter(|l| f(l.trim())).count() as u32;
    Some(match builder {
        Builder::Classic => count(&|l| l == "---> Using cache"),
        Builder::Podman => count(&|l| l.starts_with("--> Using cache")),
        Builder::Buildx { .. } | Builder::DaemonBuildKit => {
            count(&|l| l.starts_with('#') && l.ends_with(" CACHED") && l.split_whitespace().count() == 2)
        }
    })
}

impl EngineCli {
    /// [`Engine::build`].
    pub(super) fn build_image(&self, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path) -> Result<Built> {
        // docker's classic builder, and podman's, fail a build when an image
        // they look at for their cache is removed meanwhile (`rmi` or `image
        // prune` by anyone else on the engine); the same build then succeeds.
        for attempt in 1..BUILD_ATTEMPTS {
            match self.build_once(spec, cache, log) {
                Err(e) if CACHE_RACES.iter().any(|r| format!("{e:#}").contains(r)) && !self.interrupted() => {
                    // Let the removal under way finish before looking again.
                    std::thread::sleep(std::time::Duration::from_millis(100 * attempt as u64));
                }
                done => return done,
            }
        }
        self.build_once(spec, cache, log)
    }

    /// [`Engine::build_push`].
    pub(super) fn build_to_registry(
        &self,
        spec: &BuildSpec<'_>,
        cache: &BuildCache,
        repository: &str,
        log: &Path,
    ) -> Result<String> {
        let sh = Shell::new()?;
        let (program, platform) = (self.program, spec.arch.platform());
        let (dir, args) = (spec.dir, spec.args);
        let dockerfile = labelled(self.builder(), spec, log)?;
        let (file, labels) = (&dockerfile.file, &dockerfile.label_flags);
        let metadata = log.with_extension(format!("{}.metadata.json", std::process::id()));
        let _ = std::fs::remove_file(&metadata);
        let no_cache = cache.none.then_some("--no-cache");
        let cache_from = cache.from.as_deref().map(|from| ["--cache-from", from]);
        let cache_from = cache_from.iter().flatten();
        let output = format!("type=image,name={repository},push-by-digest=true,name-canonical=true,push=true");
        let out = self.run(
            cmd!(
                sh,
                "{program} buildx build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 {no_cache...} {cache_from...} --platform {platform} --metadata-file {metadata} {labels...} --output {output} -f {file} {args...} {dir}"
            ),
            Some(log),
        );
        let written = std::fs::read_to_string(&metadata);
        let _ = std::fs::remove_file(&metadata);
        if let Some(copy) = &dockerfile.copy {
            let _ = std::fs::remove_file(copy);
        }
        let out = out?;
        if !out.ok {
            bail!("build failed: {}; log: {}", last_error_line(&out.stderr), log.display());
        }
        let written = written.with_context(|| format!("the build wrote no metadata to {}", metadata.display()))?;
        let value: serde_json::Value = serde_json::from_str(&written)
            .with_context(|| format!("the build's metadata is not JSON: {}", metadata.display()))?;
        match built_digest(&value) {
            Some(digest) => Ok(digest.to_string()),
            None => bail!("the build's metadata names no pushed image digest; log: {}", log.display()),
        }
    }

    /// One `build`, as the builder wants it run; the image's ID from the
    /// file the engine writes it to.
    pub(super) fn build_once(&self, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path) -> Result<Built> {
        let sh = Shell::new()?;
        let (program, platform, dir, args) = (self.program, spec.arch.platform(), spec.dir, spec.args);
        // Beside the log, and of this process alone: runs at once on one
        // tree build the same image.
        let iidfile = log.with_extension(format!("{}.iid", std::process::id()));
        let _ = std::fs::remove_file(&iidfile);
        let builder = self.builder();
        let own = builder_flags(builder);
        let cached = self.cache_flags(cache);
        let dockerfile = labelled(builder, spec, log)?;
        let (file, labels) = (&dockerfile.file, &dockerfile.label_flags);
        let mut command = cmd!(
            sh,
            "{program} build {own...} {cached...} --platform {platform} --iidfile {iidfile} {labels...} -f {file} {args...} {dir}"
        );
        if *builder == Builder::DaemonBuildKit {
            command = command.env("DOCKER_BUILDKIT", "1");
        }
        let out = self.run(command, Some(log));
        let id = std::fs::read_to_string(&iidfile);
        let _ = std::fs::remove_file(&iidfile);
        if let Some(copy) = &dockerfile.copy {
            let _ = std::fs::remove_file(copy);
        }
        let out = out?;
        if !out.ok {
            return Err(self.build_failure(&out.stderr, platform, log));
        }
        let id = id.with_context(|| format!("the build wrote no image ID to {}", iidfile.display()))?;
        Ok(Built { id: full_id(id.trim()), steps_reused: steps_reused(builder, &out.stderr) })
    }

    /// The flags of what a build may take from a cache (`--no-cache`,
    /// `--cache-from`, podman's `--cache-to`), in that order.
    fn cache_flags<'c>(&self, cache: &'c BuildCache) -> Vec<&'c str> {
        let mut flags = Vec::new();
        if cache.none {
            flags.push("--no-cache");
        }
        if let Some(from) = &cache.from {
            flags.extend(["--cache-from", from.as_str()]);
        }
        if let Some(to) = &cache.to {
            flags.extend(["--cache-to", to.as_str()]);
        }
        // podman reads and writes its cache repository itself.
        if self.kind == EngineKind::Podman && cache.from.iter().chain(&cache.to).any(|r| is_loopback(r)) {
            flags.push("--tls-verify=false");
        }
        flags
    }

    /// What a failed build's output says went wrong, and what to do about it.
    fn build_failure(&self, stderr: &str, platform: &str, log: &Path) -> anyhow::Error {
        let program = self.program;
        let last = last_error_line(stderr);
        if last.to_lowercase().contains("no space left on device") {
            return anyhow!(
                "the engine ran out of disk space: free some (`{program} system prune`) and retry; log: {}",
                log.display()
            );
        }
        // An engine that finds the `FROM` image only for another platform
        // looks for it in a registry, and says so in its own words.
        let lower = stderr.to_lowercase();
        if [
            "load metadata for",
            "did not resolve to an alias",
            "no image found in manifest list",
            "does not match the specified platform",
        ]
        .iter()
        .any(|n| lower.contains(n))
        {
            return anyhow!(
                "build failed: {last}; is its base image available for {platform}? A local image for another \
                 architecture does not count; log: {}",
                log.display()
            );
        }
        anyhow!("build failed: {last}; log: {}", log.display())
    }
}

/// The flags each builder needs of its own.
fn builder_flags(builder: &Builder) -> &'static [&'static str] {
    match builder {
        // Failed steps leave no stopped container behind.
        Builder::Classic => &["--force-rm"],
        // Inline cache metadata, so that the image can be the cache of
        // its next version, wherever that is built.
        Builder::Buildx { driver } if driver == "docker" => {
            &["--progress=plain", "--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        }
        // A builder without the daemon's image store keeps its result
        // to itself unless told to load it there.
        Builder::Buildx { .. } => &["--progress=plain", "--build-arg", "BUILDKIT_INLINE_CACHE=1", "--load"],
        Builder::DaemonBuildKit => &["--progress=plain", "--build-arg", "BUILDKIT_INLINE_CACHE=1"],
        Builder::Podman => &[],
    }
}

/// The Dockerfile a build reads, and the `--label` flags it gets.
struct Labelled {
    file: PathBuf,
    /// The copy of the Dockerfile made for its labels or its own text,
    /// removed after the build.
    copy: Option<PathBuf>,
    label_flags: Vec<String>,
}

/// How `spec`'s labels reach the image. docker's classic builder and podman
/// turn each `--label` into a step of its own, which commits; one `LABEL`
/// line at the end of a copy of the Dockerfile (beside `log`) costs one
/// commit for all of them. A spec with a text of its own is built from a
/// copy too, on any builder.
fn labelled(builder: &Builder, spec: &BuildSpec<'_>, log: &Path) -> Result<Labelled> {
    let file = spec.dir.join(spec.dockerfile);
    let line = matches!(builder, Builder::Classic | Builder::Podman).then(|| label_line(spec.labels)).flatten();
    let label_flags = match line {
        Some(_) => Vec::new(),
        None => spec.labels.iter().flat_map(|(k, v)| ["--label".into(), format!("{k}={v}")]).collect(),
    };
    if line.is_none() && spec.text.is_none() {
        return Ok(Labelled { file, copy: None, label_flags });
    }
    let copy = log.with_extension(format!("{}.Dockerfile", std::process::id()));
    let mut text = match spec.text {
        Some(text) => text.to_string(),
        None => std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?,
    };
    if let Some(line) = line {
        text = format!("{text}\n{line}\n");
    }
    std::fs::write(&copy, text).with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(Labelled { file: copy.clone(), copy: Some(copy), label_flags })
}

/// One Dockerfile `LABEL` instruction setting all of `labels`, when each
/// key and value can be written there as it is: nothing a Dockerfile would
/// expand or unescape (`$`, quotes, escape characters, spaces).
fn label_line(labels: &[(String, String)]) -> Option<String> {
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@+,~%#=".contains(c));
    if labels.is_empty() || !labels.iter().all(|(k, v)| plain(k) && (v.is_empty() || plain(v))) {
        return None;
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("\"{k}\"=\"{v}\"")).collect();
    Some(format!("LABEL {}", pairs.join(" ")))
}

/// The step of its Dockerfile a build began (`3/7`), when `line` of its
/// output says so: `Step 3/7 : RUN …` (docker's classic builder), `STEP 3/7:
/// RUN …` (podman), `#9 [3/7] RUN …` or `#9 [stage 3/7] RUN …` (BuildKit's
/// plain progress).
pub(super) fn build_step(line: &str) -> Option<&str> {
    let counted = |s: &str| {
        let (done, total) = s.split_once('/')?;
        let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        (digits(done) && digits(total)).then_some(())
    };
    let step = if let Some(rest) = line.strip_prefix("Step ") {
        rest.split_once(" :")?.0
    } else if let Some(rest) = line.strip_prefix("STEP ") {
        rest.split_once(':')?.0
    } else {
        let rest = line.strip_prefix('#')?;
        let (id, rest) = rest.split_once(" [")?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let inside = rest.split_once(']')?.0.trim();
        inside.rsplit(' ').next()?
    };
    counted(step).map(|()| step)
}

/// The digest of what a buildx build made, from its metadata (`--metadata-file`,
/// one target's part of it under bake).
pub(super) fn built_digest(metadata: &serde_json::Value) -> Option<&str> {
    metadata["containerimage.digest"].as_str().filter(|d| d.starts_with("sha256:"))
}

#[cfg(test)]
mod tests {
    use super::{build_step, label_line};

    #[test]
    fn steps_as_each_builder_prints_them() {
        for (line, step) in [
            ("Step 3/7 : RUN make", Some("3/7")),
            ("STEP 12/12: LABEL a=b", Some("12/12")),
            ("#9 [3/7] RUN make", Some("3/7")),
            ("#9 [ 3/7] RUN make", Some("3/7")),
            ("#11 [build 2/4] COPY . /src", Some("2/4")),
            ("#4 [internal] load metadata for docker.io/library/alpine:3.19", None),
            ("#9 DONE 0.4s", None),
            ("#9 0.312 Step 1/2 is printed by the RUN", None),
            (" ---> Running in 0123abcd", None),
            ("Step three/7 : RUN make", None),
            ("STEP 1/: FROM scratch", None),
        ] {
            assert_eq!(build_step(line), step, "{line:?}");
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn one_label_instruction_for_plain_labels() {
        let labels = pairs(&[
            ("org.opencontainers.image.revision", "0123abcd-dirty"),
            ("org.opencontainers.image.source", "https://example.com/a/b.git"),
            ("io.example.images.path", "gpu/ollama"),
        ]);
        assert_eq!(
            label_line(&labels).as_deref(),
            Some(
                "LABEL \"org.opencontainers.image.revision\"=\"0123abcd-dirty\" \
                 \"org.opencontainers.image.source\"=\"https://example.com/a/b.git\" \
                 \"io.example.images.path\"=\"gpu/ollama\""
            )
        );
    }

    #[test]
    fn labels_a_dockerfile_would_rewrite_stay_flags() {
        for value in ["$HOME", "a b", "say \"hi\"", "back\\slash", "tick`", "new\nline"] {
            assert_eq!(label_line(&pairs(&[("k", value)])), None, "{value:?}");
        }
        assert_eq!(label_line(&[]), None);
    }
}
