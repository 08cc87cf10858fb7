//! Engine: what the commands ask of a container engine ([`Engine`]), and
//! how docker or podman is asked ([`Cli`]). Every call goes through `cmd!`
//! and the run's [`Processes`], which track the child so an interrupt can
//! stop it; failures become one-line errors that say what to do.

pub mod cross;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use xshell::{cmd, Shell};

use crate::config::EngineKind;
use crate::model::{Arch, Platform};
use crate::model::{Event, Observer, Parts};
use crate::process::{first_line, NotFound, Output, Processes};
use crate::registry::{cli_error, is_loopback, Retry, QUICK_RETRY_DELAYS, RETRY_DELAYS};

/// How often a build is tried when it fails only because of [`CACHE_RACES`]
/// (an engine where images are removed all the time loses several in a row).
const BUILD_ATTEMPTS: usize = 6;
/// What docker's classic builder, and podman's, say when an image vanished
/// under their cache look-up.
const CACHE_RACES: &[&str] =
    &["unable to find image \"sha256:", "checking if cached image exists from a previous build"];
/// How often the local images are listed when an image vanishes meanwhile.
const LIST_ATTEMPTS: usize = 5;
/// What podman's listing says when an image vanished under it.
const LIST_RACES: &[&str] = &["image not known", "locating item named", "layer not known"];
/// What podman says when its store changed under a call about images that
/// are still there.
const STORE_RACES: &[&str] = &["locating item named", "layer not known"];

/// What the commands ask of a container engine. [`Cli`] asks docker or
/// podman; tests put a fake of their own in its place.
pub trait Engine: Sync {
    /// The builder `build` uses, found out once: podman's own; for docker,
    /// `DOCKER_BUILDKIT` when set, else BuildKit whenever the client has it
    /// (buildx from 23.0 on, the daemon's own before), else the classic one.
    fn builder(&self) -> &Builder;

    /// Checked once, up front: the engine is there and answers.
    fn check(&self) -> Result<()>;

    /// Every local image, `repository:tag` -> image ID, in one call.
    fn local_images(&self) -> Result<HashMap<String, String>>;

    /// The platform each of the local images `ids` (or names) was built
    /// for. An image that vanished meanwhile is left out.
    fn platforms(&self, ids: &[&str]) -> Result<HashMap<String, Platform>>;

    /// What one local image is.
    fn image(&self, image: &str) -> Result<ImageDetails>;

    /// What each of the local images `ids` (or names) is, in one call where
    /// the engine allows; one that vanished meanwhile is left out.
    fn images(&self, ids: &[&str]) -> Result<HashMap<String, ImageDetails>> {
        Ok(ids.iter().filter_map(|id| Some((id.to_string(), self.image(id).ok()?))).collect())
    }

    /// The platform of one local image.
    fn platform(&self, image: &str) -> Result<Platform> {
        self.image(image).map(|d| d.platform)
    }

    /// Removes one local name; the image stays if other names keep it.
    fn untag(&self, reference: &str) -> Result<()>;

    /// Pulls `reference` for `arch`. `quick`: give up sooner on a failing
    /// registry (the caller can build).
    fn pull(&self, reference: &str, arch: Arch, quick: bool, log: &Path) -> Result<()>;

    /// Builds the image and returns its ID, and how many steps came from
    /// the cache when the builder says. It gets no name here: the caller
    /// names it once it has checked what was built.
    fn build(&self, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path) -> Result<Built>;

    /// Builds several images in one call, when the builder can: their IDs,
    /// in order, each build's own output appended to its log. `None` when it
    /// cannot (then each is built on its own); an error when the call
    /// failed, which may have built some of them.
    fn build_batch(&self, builds: &[BatchBuild<'_>], work: &Path) -> Option<Result<Vec<Built>>> {
        let _ = (builds, work);
        None
    }

    /// Whether [`Engine::build_batch`] may build a batch at all.
    fn batches_builds(&self) -> bool {
        false
    }

    /// With a buildx builder that has no local image store: builds and
    /// pushes the image to `repository` by digest alone (no tag, no round
    /// trip through the daemon), and returns its manifest digest. The caller
    /// checks it in the registry before giving it a tag.
    fn build_push(&self, spec: &BuildSpec<'_>, cache: &BuildCache, repository: &str, log: &Path) -> Result<String>;

    /// Whether builds go straight to the registry when pushing: buildx with
    /// a builder that has no local image store.
    fn pushes_from_builder(&self) -> bool {
        matches!(self.builder(), Builder::Buildx { driver } if driver != "docker")
    }

    /// Gives the local image `source` the name `target`.
    fn tag(&self, source: &str, target: &str) -> Result<()>;

    /// Pushes the local name `reference` to its registry.
    fn push(&self, reference: &str, log: &Path) -> Result<()>;

    /// Whether the run was interrupted (Ctrl-C, SIGTERM): start nothing more.
    fn interrupted(&self) -> bool;

    /// The same engine, for the calls of one image's job: one that echoes
    /// its calls says they are for `image`. `None`: this one will do.
    fn for_image(&self, image: &str) -> Option<Box<dyn Engine + '_>> {
        let _ = image;
        None
    }
}

/// The docker or podman command-line client. Its clones share what they
/// found out (version, builder, API socket) and the processes they run.
#[derive(Clone)]
pub struct Cli {
    pub kind: EngineKind,
    program: &'static str,
    /// The CLI's own version, as `check` read it.
    client_version: Arc<OnceLock<String>>,
    builder: Arc<OnceLock<Builder>>,
    /// Told of every call and its output ([`Event::Echo`]), under `--verbose`.
    echo: Option<Arc<dyn Observer>>,
    /// The image the calls are for, for [`Event::Echo`].
    image: Option<Arc<str>>,
    processes: Processes,
    retry: Retry,
    /// docker's API socket, when the CLI would talk to a daemon there.
    api_socket: Arc<OnceLock<Option<PathBuf>>>,
}

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

impl Cli {
    pub fn new(kind: EngineKind) -> Cli {
        let processes = Processes::default();
        Cli {
            kind,
            program: kind.program(),
            client_version: Arc::default(),
            builder: Arc::default(),
            echo: None,
            image: None,
            retry: Retry::new(processes.interrupt().clone(), None),
            processes,
            api_socket: Arc::default(),
        }
    }

    /// Tells `events` of each retry of a failed pull or push.
    pub fn telling_retries(mut self, events: Arc<dyn Observer>) -> Cli {
        self.retry = Retry::new(self.processes.interrupt().clone(), Some(events));
        self
    }

    /// How this engine's calls are tried again, for a registry client to share.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// The processes this engine runs: [`Processes::stop_all_on_signals`]
    /// makes Ctrl-C and SIGTERM stop them.
    pub fn processes(&self) -> &Processes {
        &self.processes
    }

    /// Tells `events` of every call's command line and output as well.
    pub fn echoing(mut self, events: Arc<dyn Observer>) -> Cli {
        self.echo = Some(events);
        self
    }

    fn echo(&self, text: &str) {
        if let Some(echo) = &self.echo {
            for line in text.lines() {
                echo.event(Event::Echo { image: self.image.as_deref(), line });
            }
        }
    }

    /// The driver of buildx's selected builder (`BUILDX_BUILDER`, or the
    /// current one), or `None` without buildx.
    fn buildx_driver(&self) -> Option<String> {
        let sh = Shell::new().ok()?;
        let program = self.program;
        let out = self.run(cmd!(sh, "{program} buildx inspect"), None).ok()?;
        if !out.ok {
            return None;
        }
        let driver = out.stdout.lines().find_map(|l| l.strip_prefix("Driver:")).map(|d| d.trim().to_string());
        Some(driver.unwrap_or_else(|| "docker".into()))
    }

    /// Runs one engine command to completion; output goes to `log` when given.
    fn run(&self, cmd: xshell::Cmd<'_>, log: Option<&Path>) -> Result<Output> {
        self.echo(&format!("$ {cmd}"));
        let echo = |text: &str| self.echo(text);
        let echo: Option<&dyn Fn(&str)> = if self.echo.is_some() { Some(&echo) } else { None };
        self.processes.run(cmd.into(), log, echo).map_err(|e| match e.downcast_ref::<NotFound>() {
            Some(_) => anyhow!("{}", self.not_installed()),
            None => e,
        })
    }

    fn not_installed(&self) -> String {
        match self.kind {
            EngineKind::Docker => {
                "docker is not installed: install it (apt-get install docker.io) or choose podman with --engine podman"
                    .into()
            }
            EngineKind::Podman => "podman is not installed: install it (apt-get install podman)".into(),
        }
    }

    /// Names (as [`Cli::image_names`] lists them) -> image ID, each also
    /// under the names the engine answers to.
    fn by_name(&self, names: Vec<(String, String)>) -> HashMap<String, String> {
        let mut images = HashMap::new();
        for (name, id) in names {
            // podman keeps a name without a registry domain (`local/x`) as
            // `localhost/local/x`, and answers to both.
            if self.kind == EngineKind::Podman {
                if let Some(short) = name.strip_prefix("localhost/") {
                    images.entry(short.to_string()).or_insert_with(|| id.clone());
                }
            }
            images.insert(name, id);
        }
        images
    }

    /// Every name of a local image as the engine lists it, `repository:tag`,
    /// with the image's ID, in one call.
    pub fn image_names(&self) -> Result<Vec<(String, String)>> {
        let sh = Shell::new()?;
        let program = self.program;
        let format = "{{.Repository}}:{{.Tag}}\t{{.ID}}";
        // podman's listing fails outright when an image it is listing is
        // removed meanwhile (by anyone); the next listing no longer sees it.
        let out = self
            .asked_again_on(LIST_RACES, || self.run(cmd!(sh, "{program} images --no-trunc --format {format}"), None))?;
        if !out.ok {
            bail!("cannot list local images: {}", first_line(&out.stderr));
        }
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(name, _)| !name.contains("<none>"))
            .map(|(name, id)| (name.to_string(), full_id(id.trim())))
            .collect())
    }

    /// Every container, running or not, with the image it was created
    /// from, in one call. `listed` (every local name and its image, as
    /// [`Cli::image_names`] gives them) resolves docker's image column,
    /// which shows the name the container was created with while that name
    /// still means the container's image, else its ID.
    pub fn containers(&self, listed: &[(String, String)]) -> Result<Vec<Container>> {
        let names = self.by_name(listed.to_vec());
        let sh = Shell::new()?;
        let program = self.program;
        let format = match self.kind {
            EngineKind::Docker => "{{.ID}}\t{{.Names}}\t{{.Image}}",
            EngineKind::Podman => "{{.ID}}\t{{.Names}}\t{{.ImageID}}",
        };
        let out = self.run(cmd!(sh, "{program} ps --all --no-trunc --format {format}"), None)?;
        if !out.ok {
            bail!("cannot list containers: {}", first_line(&out.stderr));
        }
        let mut containers = Vec::new();
        for line in out.stdout.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(id), Some(name), Some(image)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let image = image.trim();
            let image_id = if self.kind == EngineKind::Podman || image.starts_with("sha256:") {
                Some(full_id(image))
            } else {
                let tagged = if image.rsplit('/').next().is_some_and(|last| last.contains(':')) {
                    image.to_string()
                } else {
                    format!("{image}:latest")
                };
                let familiar = tagged.strip_prefix("docker.io/").unwrap_or(&tagged);
                let familiar = familiar.strip_prefix("library/").unwrap_or(familiar);
                names.get(&tagged).or_else(|| names.get(familiar)).cloned()
            };
            containers.push(Container { id: id.to_string(), name: name.to_string(), image: image_id });
        }
        Ok(containers)
    }

    /// What the engine says of local images (`ids`): platform, size and
    /// layers, in one call for up to [`INSPECT_AT_ONCE`] images. An image
    /// that vanished meanwhile is left out.
    pub fn image_facts(&self, ids: &[&str]) -> Result<HashMap<String, ImageFacts>> {
        Ok(self
            .inspected(ids, INSPECT_AT_ONCE)?
            .into_iter()
            .map(|(_, image)| {
                let facts = ImageFacts {
                    platform: Platform {
                        os: image.os.clone(),
                        architecture: image.architecture.clone(),
                        variant: image.variant.clone().unwrap_or_default(),
                    },
                    size: image.size,
                    layers: image.rootfs.and_then(|r| r.layers).unwrap_or_default(),
                };
                (full_id(&image.id), facts)
            })
            .collect())
    }

    /// Removes local names, without force: the engine keeps an image that
    /// a container uses. An image goes when its last name does.
    pub fn remove_names(&self, references: &[String]) -> Result<Removed> {
        let sh = Shell::new()?;
        let program = self.program;
        let mut removed = Removed::default();
        for chunk in references.chunks(REMOVE_AT_ONCE) {
            let out = self.run(cmd!(sh, "{program} rmi {chunk...}"), None)?;
            for line in out.stdout.lines() {
                if let Some(id) = line.trim().strip_prefix("Deleted: ") {
                    removed.deleted.insert(full_id(id.trim()));
                }
            }
            if !out.ok {
                removed.refused.extend(out.stderr.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
        }
        Ok(removed)
    }

    /// What each of the local images `ids` (or names) is, from their
    /// configs, in one engine call per few hundred. An image that vanished
    /// meanwhile is left out.
    pub fn inspect(&self, ids: &[&str]) -> Result<HashMap<String, ImageDetails>> {
        let mut found = HashMap::new();
        for (asked, image) in self.inspected(ids, 500)? {
            let details = image.details();
            // Under the name asked when the answer is in order; by ID in any case.
            if let Some(asked) = asked {
                found.insert(asked.to_string(), details.clone());
            }
            found.insert(details.id.clone(), details);
        }
        Ok(found)
    }

    /// The images `ids` as `image inspect` describes them, `at_once` per
    /// call, each with the name it was asked by when the call found them all
    /// (then its answer is in the order asked). An image that vanished
    /// meanwhile is left out.
    fn inspected<'a>(&self, ids: &[&'a str], at_once: usize) -> Result<Vec<(Option<&'a str>, InspectedImage)>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(at_once) {
            let out = self.inspect_call(chunk)?;
            // Asked about several, engines print what they found, and fail
            // naming what they did not.
            let parsed: Vec<InspectedImage> = match serde_json::from_str(out.stdout.trim()) {
                Ok(images) => images,
                // podman prints none of them when one is missing: each on its own.
                Err(_) if !out.ok && is_missing(&out.stderr) && chunk.len() > 1 => {
                    for id in chunk {
                        found.extend(self.inspected(&[id], 1)?);
                    }
                    continue;
                }
                Err(_) if !out.ok && is_missing(&out.stderr) => continue,
                Err(_) if !out.ok => bail!("cannot inspect local images: {}", first_line(&out.stderr)),
                Err(e) => bail!("cannot read the engine's image inspection: {e}"),
            };
            found.extend(chunk.iter().zip(parsed).map(|(asked, image)| (out.ok.then_some(*asked), image)));
        }
        Ok(found)
    }

    /// `image inspect` of `ids`, asked again when podman's store changed
    /// under it (another process removing an image), as the listing is.
    fn inspect_call(&self, ids: &[&str]) -> Result<Output> {
        let sh = Shell::new()?;
        let program = self.program;
        self.asked_again_on(STORE_RACES, || self.run(cmd!(sh, "{program} image inspect {ids...}"), None))
    }

    /// podman's flag for a registry on loopback, which speaks plain HTTP
    /// (docker's daemon allows that by itself).
    fn plain_http_flag(&self, reference: &str) -> Option<&'static str> {
        (self.kind == EngineKind::Podman && is_loopback(reference)).then_some("--tls-verify=false")
    }

    /// Makes `call`, again (up to [`LIST_ATTEMPTS`] in all) while it fails
    /// saying one of `races`: the engine's store changed under it.
    fn asked_again_on(&self, races: &[&str], call: impl Fn() -> Result<Output>) -> Result<Output> {
        let mut out = call()?;
        for _ in 1..LIST_ATTEMPTS {
            if out.ok || !races.iter().any(|r| out.stderr.contains(r)) {
                break;
            }
            out = call()?;
        }
        Ok(out)
    }

    /// Builds `builds` with one `docker buildx bake`; see [`Engine::build_batch`].
    fn bake(&self, builds: &[BatchBuild<'_>], work: &Path) -> Result<Vec<Built>> {
        let sh = Shell::new()?;
        let program = self.program;
        // Named after the first build, which is in no other batch now, and
        // this process: batches run at once, in this run and in others.
        let stem = format!("{}.{}", builds[0].name, std::process::id());
        let definition = work.join(format!("{stem}.bake.json"));
        let metadata = work.join(format!("{stem}.metadata.json"));
        let _ = std::fs::remove_file(&metadata);
        std::fs::write(&definition, bake_definition(builds).to_string())
            .with_context(|| format!("cannot write {}", definition.display()))?;
        let out = self
            .run(cmd!(sh, "{program} buildx bake --progress=plain -f {definition} --metadata-file {metadata}"), None);
        let written = std::fs::read_to_string(&metadata);
        for file in [&definition, &metadata] {
            let _ = std::fs::remove_file(file);
        }
        let out = out?;
        let logs = split_by_target(&out.stderr, builds.len());
        for (i, (b, text)) in builds.iter().zip(&logs).enumerate() {
            let head = format!(
                "$ {program} buildx bake (target b{i} of {} built together; the lines of the others are left out)\n",
                builds.len()
            );
            let _ = File::options()
                .create(true)
                .append(true)
                .open(b.log)
                .and_then(|mut f| f.write_all(head.as_bytes()).and_then(|()| f.write_all(text.as_bytes())));
        }
        if !out.ok {
            bail!("the batch build failed: {}", last_error_line(&out.stderr));
        }
        let written = written.context("the batch build wrote no metadata")?;
        let value: serde_json::Value =
            serde_json::from_str(&written).context("the batch build's metadata is not JSON")?;
        builds
            .iter()
            .enumerate()
            .map(|(i, _)| match built_digest(&value[format!("b{i}")]) {
                Some(digest) => {
                    Ok(Built { id: digest.to_string(), steps_reused: steps_reused(self.builder(), &logs[i]) })
                }
                None => bail!("the batch build's metadata names no image for one of its builds"),
            })
            .collect()
    }

    /// The local API socket, when the daemon there is the one the CLI talks
    /// to (same daemon ID): a `docker` on PATH may be a wrapper of another.
    fn verified_api_socket(&self) -> Option<PathBuf> {
        let socket = local_docker_socket(self.kind)?;
        let id = api_daemon_id(&socket)?;
        let sh = Shell::new().ok()?;
        let program = self.program;
        let format = "{{.ID}}";
        let out = self.run(cmd!(sh, "{program} info --format {format}"), None).ok()?;
        (out.ok && out.stdout.trim() == id).then_some(socket)
    }

    fn build_once(&self, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path) -> Result<Built> {
        let sh = Shell::new()?;
        let (program, platform) = (self.program, spec.arch.platform());
        let file = spec.dir.join(spec.dockerfile);
        let dir = spec.dir;
        let args = spec.args;
        // Beside the log, and of this process alone: runs at once on one
        // tree build the same image.
        let iidfile = log.with_extension(format!("{}.iid", std::process::id()));
        let _ = std::fs::remove_file(&iidfile);
        let builder = self.builder();
        let no_cache = cache.none.then_some("--no-cache");
        let own: &[&str] = match builder {
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
        };
        let cache_from = cache.from.as_deref().map(|from| ["--cache-from", from]);
        let cache_from = cache_from.iter().flatten();
        let cache_to = cache.to.as_deref().map(|to| ["--cache-to", to]);
        let cache_to = cache_to.iter().flatten();
        // docker's classic builder and podman turn each `--label` into a
        // step of its own, which commits; one `LABEL` line at the end of a
        // copy of the Dockerfile costs one commit for all of them.
        let labelled = matches!(builder, Builder::Classic | Builder::Podman)
            .then(|| label_line(spec.labels))
            .flatten()
            .map(|line| -> Result<PathBuf> {
                let copy = log.with_extension(format!("{}.Dockerfile", std::process::id()));
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                std::fs::write(&copy, format!("{text}\n{line}\n"))
                    .with_context(|| format!("cannot write {}", copy.display()))?;
                Ok(copy)
            })
            .transpose()?;
        let labels: Vec<String> = match labelled {
            Some(_) => Vec::new(),
            None => spec.labels.iter().flat_map(|(k, v)| ["--label".into(), format!("{k}={v}")]).collect(),
        };
        let file = labelled.clone().unwrap_or(file);
        // podman reads and writes its cache repository itself.
        let tls = (self.kind == EngineKind::Podman && cache.from.iter().chain(&cache.to).any(|r| is_loopback(r)))
            .then_some("--tls-verify=false");
        let mut command = cmd!(
            sh,
            "{program} build {own...} {no_cache...} {cache_from...} {cache_to...} {tls...} --platform {platform} --iidfile {iidfile} {labels...} -f {file} {args...} {dir}"
        );
        if *builder == Builder::DaemonBuildKit {
            command = command.env("DOCKER_BUILDKIT", "1");
        }
        let out = self.run(command, Some(log));
        let id = std::fs::read_to_string(&iidfile);
        let _ = std::fs::remove_file(&iidfile);
        if let Some(copy) = &labelled {
            let _ = std::fs::remove_file(copy);
        }
        let out = out?;
        if out.ok {
            let id = id.with_context(|| format!("the build wrote no image ID to {}", iidfile.display()))?;
            return Ok(Built { id: full_id(id.trim()), steps_reused: steps_reused(builder, &out.stderr) });
        }
        let last = last_error_line(&out.stderr);
        if last.to_lowercase().contains("no space left on device") {
            bail!(
                "the engine ran out of disk space: free some (`{program} system prune`) and retry; log: {}",
                log.display()
            );
        }
        // An engine that finds the `FROM` image only for another platform
        // looks for it in a registry, and says so in its own words.
        let lower = out.stderr.to_lowercase();
        if [
            "load metadata for",
            "did not resolve to an alias",
            "no image found in manifest list",
            "does not match the specified platform",
        ]
        .iter()
        .any(|n| lower.contains(n))
        {
            bail!(
                "build failed: {last}; is its base image available for {platform}? A local image for another \
                 architecture does not count; log: {}",
                log.display()
            );
        }
        bail!("build failed: {last}; log: {}", log.display())
    }
}

impl Engine for Cli {
    fn interrupted(&self) -> bool {
        self.processes.interrupt().is_set()
    }

    fn for_image(&self, image: &str) -> Option<Box<dyn Engine + '_>> {
        Some(Box::new(Cli { image: Some(image.into()), ..self.clone() }))
    }

    fn builder(&self) -> &Builder {
        self.builder.get_or_init(|| {
            if self.kind == EngineKind::Podman {
                return Builder::Podman;
            }
            let major =
                self.client_version.get().and_then(|v| v.split('.').next()).and_then(|m| m.trim().parse::<u32>().ok());
            let old_client = major.is_some_and(|m| m < 23);
            match std::env::var("DOCKER_BUILDKIT").ok().as_deref().map(str::trim) {
                Some("0" | "false" | "FALSE" | "False") => return Builder::Classic,
                Some(v) if !v.is_empty() && old_client => return Builder::DaemonBuildKit,
                _ if old_client => return Builder::DaemonBuildKit,
                _ => {}
            }
            // From 23.0 on, `docker build` is buildx's when the plugin is there.
            match self.buildx_driver() {
                Some(driver) => Builder::Buildx { driver },
                None => Builder::Classic,
            }
        })
    }

    fn check(&self) -> Result<()> {
        let sh = Shell::new()?;
        let program = self.program;
        let format = match self.kind {
            EngineKind::Docker => "{{.Client.Version}} {{.Server.Version}}",
            EngineKind::Podman => "{{.Version}}",
        };
        let out = self.run(cmd!(sh, "{program} version --format {format}"), None)?;
        if out.ok {
            let client = out.stdout.split_whitespace().next().unwrap_or_default();
            let _ = self.client_version.set(client.to_string());
            return Ok(());
        }
        match self.kind {
            EngineKind::Docker => {
                let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
                let context = std::env::var("DOCKER_CONTEXT").map(|c| format!(" (context {c})")).unwrap_or_default();
                bail!(
                    "the docker daemon is not reachable at {host}{context}: start it (`sudo dockerd &` or `sudo systemctl start docker`) or set DOCKER_HOST; docker said: {}",
                    first_line(&out.stderr)
                )
            }
            EngineKind::Podman => bail!("podman does not work here: {}", first_line(&out.stderr)),
        }
    }

    fn local_images(&self) -> Result<HashMap<String, String>> {
        Ok(self.by_name(self.image_names()?))
    }

    fn platforms(&self, ids: &[&str]) -> Result<HashMap<String, Platform>> {
        Ok(self.inspect(ids)?.into_iter().map(|(k, d)| (k, d.platform)).collect())
    }

    fn images(&self, ids: &[&str]) -> Result<HashMap<String, ImageDetails>> {
        self.inspect(ids)
    }

    fn image(&self, image: &str) -> Result<ImageDetails> {
        self.inspect(&[image])?
            .remove(image)
            .ok_or_else(|| anyhow!("{image} is not present locally: it vanished (removed by another process?)"))
    }

    fn untag(&self, reference: &str) -> Result<()> {
        let sh = Shell::new()?;
        let program = self.program;
        let out = self.run(cmd!(sh, "{program} rmi {reference}"), None)?;
        if !out.ok {
            bail!("cannot remove the name {reference}: {}", first_line(&out.stderr));
        }
        Ok(())
    }

    fn pull(&self, reference: &str, arch: Arch, quick: bool, log: &Path) -> Result<()> {
        let sh = Shell::new()?;
        let (program, platform) = (self.program, arch.platform());
        let tls = self.plain_http_flag(reference);
        self.retry.run_with(if quick { &QUICK_RETRY_DELAYS } else { &RETRY_DELAYS }, || {
            let out = self.run(cmd!(sh, "{program} pull {tls...} --platform {platform} {reference}"), Some(log))?;
            if !out.ok {
                return Err(cli_error(reference, &last_error_line(&out.stderr)));
            }
            Ok(())
        })
    }

    fn build(&self, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path) -> Result<Built> {
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

    fn build_batch(&self, builds: &[BatchBuild<'_>], work: &Path) -> Option<Result<Vec<Built>>> {
        // buildx's `docker` driver builds into the daemon's image store and
        // reports each image's ID; build arguments of the user's own are
        // command-line flags a definition cannot hold.
        let batchable = self.batches_builds()
            && builds.len() > 1
            && builds.iter().all(|b| b.spec.args.is_empty() && b.cache.to.is_none());
        batchable.then(|| self.bake(builds, work))
    }

    fn batches_builds(&self) -> bool {
        matches!(self.builder(), Builder::Buildx { driver } if driver == "docker")
    }

    fn build_push(&self, spec: &BuildSpec<'_>, cache: &BuildCache, repository: &str, log: &Path) -> Result<String> {
        let sh = Shell::new()?;
        let (program, platform) = (self.program, spec.arch.platform());
        let (file, dir, args) = (spec.dir.join(spec.dockerfile), spec.dir, spec.args);
        let metadata = log.with_extension(format!("{}.metadata.json", std::process::id()));
        let _ = std::fs::remove_file(&metadata);
        let no_cache = cache.none.then_some("--no-cache");
        let cache_from = cache.from.as_deref().map(|from| ["--cache-from", from]);
        let cache_from = cache_from.iter().flatten();
        let output = format!("type=image,name={repository},push-by-digest=true,name-canonical=true,push=true");
        let out = self.run(
            cmd!(
                sh,
                "{program} buildx build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 {no_cache...} {cache_from...} --platform {platform} --metadata-file {metadata} --output {output} -f {file} {args...} {dir}"
            ),
            Some(log),
        );
        let written = std::fs::read_to_string(&metadata);
        let _ = std::fs::remove_file(&metadata);
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

    fn tag(&self, source: &str, target: &str) -> Result<()> {
        // Through the daemon's API when it is on a local socket: one request
        // instead of a CLI process (about 15 ms of CPU each, three per build).
        if let Some(socket) = self.api_socket.get_or_init(|| self.verified_api_socket()) {
            self.echo(&format!("$ docker tag {source} {target}  # through the API at {}", socket.display()));
            match api_tag(socket, source, target) {
                Ok(()) => return Ok(()),
                Err(ApiError::Refused(why)) => bail!("cannot tag {source} as {target}: {why}"),
                // The socket did not answer as expected: the CLI may.
                Err(ApiError::Unreachable(why)) => {
                    self.echo(&format!("# the API did not answer ({why}): with the CLI"))
                }
            }
        }
        let sh = Shell::new()?;
        let program = self.program;
        let out = self.run(cmd!(sh, "{program} tag {source} {target}"), None)?;
        if !out.ok {
            bail!("cannot tag {source} as {target}: {}", first_line(&out.stderr));
        }
        Ok(())
    }

    fn push(&self, reference: &str, log: &Path) -> Result<()> {
        let sh = Shell::new()?;
        let program = self.program;
        let tls = self.plain_http_flag(reference);
        self.retry.run(|| {
            let out = self.run(cmd!(sh, "{program} push {tls...} {reference}"), Some(log))?;
            if !out.ok {
                return Err(cli_error(reference, &last_error_line(&out.stderr)));
            }
            Ok(())
        })
    }
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

/// The digest of what a buildx build made, from its metadata (`--metadata-file`,
/// one target's part of it under bake).
fn built_digest(metadata: &serde_json::Value) -> Option<&str> {
    metadata["containerimage.digest"].as_str().filter(|d| d.starts_with("sha256:"))
}

/// The unix socket docker's CLI would reach its daemon at, when that is
/// plain to see: docker, no `DOCKER_CONTEXT` and no current context other
/// than `default` in its config, `DOCKER_HOST` unset or `unix://`.
fn local_docker_socket(kind: EngineKind) -> Option<PathBuf> {
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

enum ApiError {
    /// The daemon answered no; what it said.
    Refused(String),
    /// No usable answer.
    Unreachable(String),
}

/// One request to docker's API socket, `Connection: close`: the status
/// and the body (a chunked body keeps its chunk-size lines).
fn api_call(socket: &Path, method: &str, path: &str) -> std::result::Result<(u16, String), ApiError> {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let unreachable = |e: std::io::Error| ApiError::Unreachable(e.to_string());
    let request = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(unreachable)?;
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(unreachable)?;
    let answer = String::from_utf8_lossy(&answer);
    let first = answer.lines().next().unwrap_or_default().to_string();
    match answer.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) {
        Some(status) => Ok((status, answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())),
        None => Err(ApiError::Unreachable(first)),
    }
}

/// The first JSON object of an API answer's body, chunked or not.
fn api_json(body: &str) -> Option<serde_json::Value> {
    body.lines().find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok().filter(|v| v.is_object()))
}

/// `POST /images/{source}/tag?repo=…&tag=…` on docker's API socket.
fn api_tag(socket: &Path, source: &str, target: &str) -> std::result::Result<(), ApiError> {
    // `repo:tag`, the tag after the last `/`; docker's default tag otherwise.
    let parts = Parts::of(target);
    let (repo, tag) = (parts.name, parts.tag.unwrap_or("latest"));
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let path = format!("/images/{}/tag?repo={}&tag={}", encode(source), encode(repo), encode(tag));
    match api_call(socket, "POST", &path)? {
        (200..=299, _) => Ok(()),
        (400..=499, body) => Err(ApiError::Refused(
            api_json(&body)
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_else(|| body.trim().to_string()),
        )),
        (status, _) => Err(ApiError::Unreachable(format!("HTTP {status}"))),
    }
}

/// The daemon's ID (`GET /info`), to make sure the socket is the daemon
/// the CLI talks to.
fn api_daemon_id(socket: &Path) -> Option<String> {
    match api_call(socket, "GET", "/info").ok()? {
        (200, body) => api_json(&body)?["ID"].as_str().map(String::from),
        _ => None,
    }
}

/// One build of a batch: a name of its own (for the batch's definition),
/// what to build, with which cache, and its log.
pub struct BatchBuild<'a> {
    pub name: &'a str,
    pub spec: BuildSpec<'a>,
    pub cache: BuildCache,
    pub log: &'a Path,
}

/// Builds at most this many images in one `docker buildx bake` (docker
/// 20.10's BuildKit lost track of larger runs here: "no such job").
pub const BATCH_LIMIT: usize = 64;

/// The `docker buildx bake` definition (JSON) of `builds`: one target per
/// build, named by its index, with no tags: they are given once checked.
fn bake_definition(builds: &[BatchBuild<'_>]) -> serde_json::Value {
    let mut targets = serde_json::Map::new();
    for (i, b) in builds.iter().enumerate() {
        let labels: serde_json::Map<String, serde_json::Value> =
            b.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        let mut target = serde_json::json!({
            "context": b.spec.dir,
            "dockerfile": b.spec.dockerfile,
            "platforms": [b.spec.arch.platform()],
            "labels": labels,
            "args": { "BUILDKIT_INLINE_CACHE": "1" },
        });
        if b.cache.none {
            target["no-cache"] = true.into();
        }
        if let Some(from) = &b.cache.from {
            target["cache-from"] = serde_json::json!([from]);
        }
        targets.insert(format!("b{i}"), target);
    }
    let names: Vec<String> = (0..builds.len()).map(|i| format!("b{i}")).collect();
    serde_json::json!({ "group": { "default": { "targets": names } }, "target": targets })
}

/// The lines of BuildKit's plain progress output that belong to each of
/// `targets`: a step's lines follow its number (`#7 ...`), and its first
/// line names the target (`#7 [b3 internal] load build definition`).
/// Lines of steps no target claims go to every target.
fn split_by_target(output: &str, targets: usize) -> Vec<String> {
    let mut owner: HashMap<&str, Option<usize>> = HashMap::new();
    let mut logs = vec![String::new(); targets];
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let step = line.strip_prefix('#').and_then(|rest| rest.split_once(' '));
        let target = match step {
            Some((n, rest)) => *owner.entry(n).or_insert_with(|| {
                let name = rest.strip_prefix('[')?.split([' ', ']']).next()?;
                name.strip_prefix('b')?.parse::<usize>().ok().filter(|&t| t < targets)
            }),
            None => None,
        };
        match target {
            Some(t) => {
                logs[t].push_str(line);
                logs[t].push('\n');
            }
            None => logs.iter_mut().for_each(|l| {
                l.push_str(line);
                l.push('\n');
            }),
        }
    }
    logs
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
fn steps_reused(builder: &Builder, output: &str) -> Option<u32> {
    let count = |f: &dyn Fn(&str) -> bool| output.lines().filter(|l| f(l.trim())).count() as u32;
    Some(match builder {
        Builder::Classic => count(&|l| l == "---> Using cache"),
        Builder::Podman => count(&|l| l.starts_with("--> Using cache")),
        Builder::Buildx { .. } | Builder::DaemonBuildKit => {
            count(&|l| l.starts_with('#') && l.ends_with(" CACHED") && l.split_whitespace().count() == 2)
        }
    })
}

/// A local image as the engine describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDetails {
    pub id: String,
    pub platform: Platform,
    /// Bytes, as the engine counts them (every layer, the base's included).
    pub size: u64,
    pub layers: usize,
    /// When it was built, as the engine writes it (RFC 3339).
    pub created: String,
    pub labels: BTreeMap<String, String>,
}

/// The part of `image inspect` read: what an image is for, and what it is.
#[derive(serde::Deserialize)]
struct InspectedImage {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Os", default)]
    os: String,
    #[serde(rename = "Architecture", default)]
    architecture: String,
    #[serde(rename = "Variant", default)]
    variant: Option<String>,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "Created", default)]
    created: Option<String>,
    #[serde(rename = "RootFS", default)]
    rootfs: Option<InspectedRootFs>,
    #[serde(rename = "Config", default)]
    config: Option<InspectedConfig>,
}

#[derive(serde::Deserialize)]
struct InspectedRootFs {
    #[serde(rename = "Layers", default)]
    layers: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct InspectedConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

impl InspectedImage {
    fn details(self) -> ImageDetails {
        ImageDetails {
            id: full_id(&self.id),
            platform: Platform {
                os: self.os,
                architecture: self.architecture,
                variant: self.variant.unwrap_or_default(),
            },
            size: self.size,
            layers: self.rootfs.and_then(|r| r.layers).map_or(0, |l| l.len()),
            created: self.created.unwrap_or_default(),
            labels: self.config.and_then(|c| c.labels).unwrap_or_default(),
        }
    }
}

/// A local image as `image inspect` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    pub platform: Platform,
    /// Bytes, its base's layers included.
    pub size: u64,
    /// Its layers' digests, base first.
    pub layers: Vec<String>,
}

/// What removing names did: the images deleted (by ID), and what the
/// engine said of the names it kept.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    pub deleted: std::collections::HashSet<String>,
    pub refused: Vec<String>,
}

/// A container and the image it was created from, when the engine's
/// answer tells which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: Option<String>,
}

/// Images inspected in one engine call: their IDs stay well below the
/// kernel's limit on a command line's length.
const INSPECT_AT_ONCE: usize = 20_000;

/// Names removed in one engine call.
const REMOVE_AT_ONCE: usize = 200;

/// Whether an engine said that images it was asked about do not exist.
fn is_missing(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    lower.contains("no such image") || lower.contains("image not known")
}

/// Image IDs as docker writes them; podman leaves out the `sha256:`.
fn full_id(id: &str) -> String {
    if id.contains(':') {
        id.to_string()
    } else {
        format!("sha256:{id}")
    }
}

/// The most telling line of a log: the last one that mentions an error.
fn last_error_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let Some(at) = lines.iter().rposition(|l| l.to_lowercase().contains("error")).or(lines.len().checked_sub(1)) else {
        return "no output".into();
    };
    // `errors:` heads a list of what the registry said, one per line.
    if lines[at].ends_with(':') && at + 1 < lines.len() {
        return lines[at..].join(" ");
    }
    lines[at].to_string()
}

#[cfg(test)]
mod tests {
    use super::label_line;

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

#[cfg(test)]
mod api_tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    use super::{api_daemon_id, api_tag, ApiError};

    /// A socket of its own that answers one request with `answer`; the
    /// thread gives the request line it got.
    fn serve_once(answer: &'static str) -> (tempfile::TempDir, PathBuf, JoinHandle<String>) {
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
        let answer = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2f\r\n{\"message\":\"No such image: sha256:ab\"}\n\r\n0\r\n\r\n";
        assert_eq!(exchange(answer, "sha256:ab", "l/a:t").0, Err("refused: No such image: sha256:ab".into()));
    }

    #[test]
    fn anything_else_is_unreachable() {
        assert_eq!(exchange("HTTP/1.1 500 Oops\r\n\r\n", "a", "b:c").0, Err("unreachable: HTTP 500".into()));
        assert_eq!(exchange("garbage", "a", "b:c").0, Err("unreachable: garbage".into()));
        let missing = std::path::Path::new("/nonexistent/docker.sock");
        assert!(matches!(api_tag(missing, "a", "b:c"), Err(ApiError::Unreachable(_))));
    }

    #[test]
    fn the_daemon_id_comes_from_info() {
        let answer =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1c\r\n{\"ID\":\"AB:CD\",\"Images\":3}\n\r\n0\r\n\r\n";
        let (_dir, socket, server) = serve_once(answer);
        assert_eq!(api_daemon_id(&socket).as_deref(), Some("AB:CD"));
        assert_eq!(server.join().unwrap(), "GET /info HTTP/1.1");
        let (_dir, socket, server) = serve_once("HTTP/1.1 403 Forbidden\r\n\r\n");
        assert_eq!(api_daemon_id(&socket), None);
        server.join().unwrap();
    }
}

#[cfg(test)]
mod batch_tests {
    use super::split_by_target;

    #[test]
    fn bake_output_is_split_by_target() {
        let output = "#0 building with \"default\" instance using docker driver\n\n#1 [internal] load local bake definitions\n#1 DONE 0.0s\n\n#2 [b1 internal] load build definition from Dockerfile\n#3 [b0 internal] load build definition from Dockerfile\n#2 DONE 0.0s\n#3 DONE 0.0s\n#4 [b0 1/1] COPY a /\n#4 CACHED\nERROR: b1 failed\n";
        let logs = split_by_target(output, 2);
        assert_eq!(
            logs[0],
            "#0 building with \"default\" instance using docker driver\n#1 [internal] load local bake definitions\n#1 DONE 0.0s\n#3 [b0 internal] load build definition from Dockerfile\n#3 DONE 0.0s\n#4 [b0 1/1] COPY a /\n#4 CACHED\nERROR: b1 failed\n"
        );
        assert_eq!(
            logs[1],
            "#0 building with \"default\" instance using docker driver\n#1 [internal] load local bake definitions\n#1 DONE 0.0s\n#2 [b1 internal] load build definition from Dockerfile\n#2 DONE 0.0s\nERROR: b1 failed\n"
        );
    }
}
