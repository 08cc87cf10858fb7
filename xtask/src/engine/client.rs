//! The docker or podman command-line client: how each of the [`Engine`]'s
//! questions becomes a `cmd!` call, what the answer means, and which
//! failures are the engine's store changing under the call (asked again,
//! `store.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Result};
use xshell::{cmd, Shell};

use super::api::{api_remove, api_save, api_tag, Api, ApiError};
use super::build::build_step;
use super::inspect::full_id;
use super::service::{Interruptible, LocalApi, PodmanService};
use super::store::{INSPECT_AT_ONCE, LIST_RACES};
use super::{BatchBuild, BuildCache, BuildSpec, Builder, Built, Container, Engine, ImageDetails, ImageFacts, Removed};
use crate::config::EngineKind;
use crate::model::{escape, Event, Observer};
use crate::model::{Arch, Platform};
use crate::process::{first_line, NotFound, Output, Processes};
use crate::registry::{cli_error, is_loopback, Retry, QUICK_RETRY_DELAYS, RETRY_DELAYS};

/// The docker or podman command-line client. Its clones share what they
/// found out (version, builder, API socket) and the processes they run.
#[derive(Clone)]
pub struct EngineCli {
    pub kind: EngineKind,
    pub(super) program: &'static str,
    /// The CLI's own version, as `check` read it.
    client_version: Arc<OnceLock<String>>,
    builder: Arc<OnceLock<Builder>>,
    /// Told of every call, its errors and its output for people
    /// ([`Event::Echo`]), under `--verbose`.
    echo: Option<Arc<dyn Observer>>,
    /// Told of each step a build of [`EngineCli::image`] begins ([`Event::Step`]).
    steps: Option<Arc<dyn Observer>>,
    /// The image the calls are for, for [`Event::Echo`] and [`Event::Step`].
    image: Option<Arc<str>>,
    processes: Processes,
    retry: Retry,
    /// The engine's API, when the CLI's store answers there too.
    api: Arc<OnceLock<Option<LocalApi>>>,
    /// The BuildKit version buildx's selected builder reports, read with
    /// its driver.
    buildkit_version: Arc<OnceLock<Option<String>>>,
    /// Variables every engine process gets on top of the tool's own
    /// environment.
    env: Vec<(String, String)>,
}

impl EngineCli {
    pub fn new(kind: EngineKind) -> EngineCli {
        let processes = Processes::default();
        EngineCli {
            kind,
            program: kind.program(),
            client_version: Arc::default(),
            builder: Arc::default(),
            echo: None,
            steps: None,
            image: None,
            retry: Retry::new(processes.interrupt().clone(), None),
            processes,
            api: Arc::default(),
            buildkit_version: Arc::default(),
            env: Vec::new(),
        }
    }

    /// The same engine, its processes given `name=value` in their
    /// environment (`SOURCE_DATE_EPOCH` for a build).
    pub fn with_env(mut self, name: &str, value: &str) -> EngineCli {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The same engine with processes of its own, which an interrupt of
    /// this one does not refuse: for removing what a run made after Ctrl-C
    /// stopped it.
    pub fn for_cleanup(&self) -> EngineCli {
        EngineCli { processes: Processes::default(), ..self.clone() }
    }

    /// The version of BuildKit that builds (`v0.13.1`), as buildx's
    /// selected builder reports it; `None` for the other builders.
    pub fn buildkit_version(&self) -> Option<&str> {
        self.builder();
        self.buildkit_version.get().and_then(Option::as_deref)
    }

    /// Streams the local image `reference` to `read` as a docker-archive
    /// (`docker save`; podman's `--format docker-archive`): a tar of its
    /// config, its layers as plain tars and `manifest.json`, in the order
    /// the engine writes them. Nothing of it touches the disk.
    pub fn save<T>(&self, reference: &str, read: impl FnOnce(&mut dyn std::io::Read) -> Result<T>) -> Result<T> {
        // From the engine's API where it answers: no CLI process, and no
        // copy of the stream through it.
        if let Some(api) = self.local_api() {
            self.echo_api(api, &format!("save {reference}"));
            match api_save(api, reference) {
                Ok(archive) => {
                    let mut archive = Interruptible::new(archive, self.processes.interrupt());
                    return read(&mut archive);
                }
                Err(ApiError::Refused(why)) => bail!("cannot save {reference}: {why}"),
                Err(ApiError::Unreachable(why)) => self.echo_api_failed(&why),
            }
        }
        let sh = Shell::new()?;
        let program = self.program;
        let format: &[&str] = if self.kind == EngineKind::Podman { &["--format", "docker-archive"] } else { &[] };
        let command = cmd!(sh, "{program} save {format...} {reference}");
        self.echo(&format!("$ {command}"));
        let command = self.env.iter().fold(command, |c, (k, v)| c.env(k, v));
        let (read, out) = self.processes.stream(command.into(), read).map_err(|e| self.installed(e))?;
        if !out.ok {
            self.echo(&out.stderr);
            bail!("cannot save {reference}: {}", last_error_line(&out.stderr));
        }
        read
    }

    /// Tells `events` of each retry of a failed pull or push.
    pub fn telling_retries(mut self, events: Arc<dyn Observer>) -> EngineCli {
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

    /// Tells `events` of every call's command line as well, with its errors
    /// and the output meant for people (a build's, a pull's); see [`EngineCli::read`].
    pub fn echoing(mut self, events: Arc<dyn Observer>) -> EngineCli {
        self.echo = Some(events);
        self
    }

    /// Tells `events` of each Dockerfile step a build begins, for a
    /// progress line that names it.
    pub fn telling_steps(mut self, events: Arc<dyn Observer>) -> EngineCli {
        self.steps = Some(events);
        self
    }

    /// Echoes `call` as the CLI command it stands for, made through `api`.
    pub(super) fn echo_api(&self, api: &Api, call: &str) {
        self.echo(&format!("$ {} {call}  # through the API at {}", self.program, api.socket().display()));
    }

    /// Echoes why a call through the API goes to the CLI after all.
    pub(super) fn echo_api_failed(&self, why: &str) {
        self.echo(&format!("# the API did not answer ({why}): with the CLI"));
    }

    pub(super) fn echo(&self, text: &str) {
        if let Some(echo) = &self.echo {
            for line in text.lines() {
                echo.event(Event::Echo { image: self.image.as_deref(), line: &escape(line) });
            }
        }
    }

    /// The driver of buildx's selected builder (`BUILDX_BUILDER`, or the
    /// current one), or `None` without buildx.
    fn buildx_driver(&self) -> Option<String> {
        let sh = Shell::new().ok()?;
        let program = self.program;
        let out = self.read(cmd!(sh, "{program} buildx inspect")).ok()?;
        if !out.ok {
            return None;
        }
        let version = out.stdout.lines().find_map(|l| l.trim().strip_prefix("BuildKit version:"));
        let _ = self.buildkit_version.set(version.map(str::trim).filter(|v| !v.is_empty()).map(String::from));
        let driver = out.stdout.lines().find_map(|l| l.strip_prefix("Driver:")).map(|d| d.trim().to_string());
        Some(driver.unwrap_or_else(|| "docker".into()))
    }

    /// Runs one engine command whose output is for people (a build's, a
    /// pull's) to completion: it goes to `log` when given, and to the echo
    /// as it comes.
    pub(super) fn run(&self, cmd: xshell::Cmd<'_>, log: Option<&Path>) -> Result<Output> {
        self.echo(&format!("$ {cmd}"));
        let cmd = self.env.iter().fold(cmd, |c, (k, v)| c.env(k, v));
        let steps = self.steps.as_deref().zip(self.image.as_deref());
        let watch = |text: &str| {
            self.echo(text);
            if let Some((events, image)) = steps {
                if let Some(step) = text.lines().filter_map(build_step).next_back() {
                    events.event(Event::Step { image, step });
                }
            }
        };
        let watch: Option<&dyn Fn(&str)> = if self.echo.is_some() || steps.is_some() { Some(&watch) } else { None };
        self.processes.run(cmd.into(), log, watch).map_err(|e| self.installed(e))
    }

    /// Runs one engine command whose answer the tool reads (a listing, an
    /// inspection) to completion. The echo gets its command line, and what
    /// it said on stderr when it failed, but not the answer: thousands of
    /// lines of machine output would bury the calls.
    pub(super) fn read(&self, cmd: xshell::Cmd<'_>) -> Result<Output> {
        self.echo(&format!("$ {cmd}"));
        let cmd = self.env.iter().fold(cmd, |c, (k, v)| c.env(k, v));
        let out = self.processes.run(cmd.into(), None, None).map_err(|e| self.installed(e))?;
        if !out.ok {
            self.echo(&out.stderr);
        }
        Ok(out)
    }

    /// A failure to start the engine, saying how to install it when it is not.
    fn installed(&self, e: anyhow::Error) -> anyhow::Error {
        match e.downcast_ref::<NotFound>() {
            Some(_) => anyhow!("{}", self.not_installed()),
            None => e,
        }
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
    /// podman's flag for a registry on loopback, which speaks plain HTTP
    /// (docker's daemon allows that by itself).
    fn plain_http_flag(&self, reference: &str) -> Option<&'static str> {
        (self.kind == EngineKind::Podman && is_loopback(reference)).then_some("--tls-verify=false")
    }

    /// The engine's API, when an earlier call found or started it: for
    /// calls not worth a `docker info` or a podman service of their own.
    pub(super) fn ready_api(&self) -> Option<&Api> {
        self.api.get()?.as_ref()?.api()
    }

    /// The engine's API where the CLI's images are, found or started on
    /// first use: docker's daemon on its local socket, or podman's service.
    fn local_api(&self) -> Option<&Api> {
        let found = self.api.get_or_init(|| match self.kind {
            EngineKind::Docker => self.verified_docker_api().map(LocalApi::Daemon),
            EngineKind::Podman => {
                self.echo(&format!("$ {} system service  # for the calls after each build", self.program));
                PodmanService::start(self.program).map(LocalApi::Service)
            }
        });
        found.as_ref()?.api()
    }
}

impl Engine for EngineCli {
    fn interrupted(&self) -> bool {
        self.processes.interrupt().is_set()
    }

    fn for_image(&self, image: &str) -> Option<Box<dyn Engine + '_>> {
        Some(Box::new(EngineCli { image: Some(image.into()), ..self.clone() }))
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
        let out = self.read(cmd!(sh, "{program} version --format {format}"))?;
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

    fn image_names(&self) -> Result<Vec<(String, String)>> {
        let sh = Shell::new()?;
        let program = self.program;
        let format = "{{.Repository}}:{{.Tag}}\t{{.ID}}";
        // podman's listing fails outright when an image it is listing is
        // removed meanwhile (by anyone); the next listing no longer sees it.
        let out =
            self.asked_again_on(LIST_RACES, || self.read(cmd!(sh, "{program} images --no-trunc --format {format}")))?;
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

    fn containers(&self, listed: &[(String, String)]) -> Result<Vec<Container>> {
        let names = self.by_name(listed.to_vec());
        let sh = Shell::new()?;
        let program = self.program;
        let format = match self.kind {
            EngineKind::Docker => "{{.ID}}\t{{.Names}}\t{{.Image}}",
            EngineKind::Podman => "{{.ID}}\t{{.Names}}\t{{.ImageID}}",
        };
        let out = self.read(cmd!(sh, "{program} ps --all --no-trunc --format {format}"))?;
        if !out.ok {
            bail!("cannot list containers: {}", first_line(&out.stderr));
        }
        let mut containers = Vec::new();
        for line in out.stdout.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(id), Some(name), Some(image)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let image = image.trim();
            // docker shows the name the container was created with while
            // that name still means the container's image, else its ID.
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

    fn image_facts(&self, ids: &[&str]) -> Result<HashMap<String, ImageFacts>> {
        Ok(self.inspected(ids, INSPECT_AT_ONCE)?.into_iter().map(|(_, image)| image.facts()).collect())
    }

    fn remove_names(&self, references: &[String]) -> Result<Removed> {
        let mut removed = Removed::default();
        let mut references = references.to_vec();
        // A few names (a verification's builds) through the daemon's API on
        // a local socket: a request each instead of a CLI process.
        if references.len() <= REMOVE_THROUGH_API {
            if let Some(api) = self.local_api() {
                references.retain(|reference| {
                    self.echo_api(api, &format!("rmi {reference}"));
                    match api_remove(api, reference) {
                        Ok(deleted) => removed.deleted.extend(deleted.iter().map(|id| full_id(id))),
                        Err(ApiError::Refused(why)) => removed.refused.push(why),
                        // The socket did not answer as expected: the CLI may.
                        Err(ApiError::Unreachable(why)) => {
                            self.echo_api_failed(&why);
                            return true;
                        }
                    }
                    false
                });
            }
        }
        let sh = Shell::new()?;
        let program = self.program;
        for chunk in references.chunks(REMOVE_AT_ONCE) {
            let out = self.read(cmd!(sh, "{program} rmi {chunk...}"))?;
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

    fn platforms(&self, ids: &[&str]) -> Result<HashMap<String, Platform>> {
        Ok(self.inspect(ids)?.into_iter().map(|(k, d)| (k, d.platform)).collect())
    }

    fn images(&self, ids: &[&str]) -> Result<HashMap<String, ImageDetails>> {
        self.inspect(ids)
    }

    fn image(&self, image: &str) -> Result<ImageDetails> {
        let vanished = || anyhow!("{image} is not present locally: it vanished (removed by another process?)");
        // Through the engine's API (found or started here): one request
        // instead of a CLI process, after every build.
        if let Some(found) = self.local_api().and_then(|api| self.inspected_through_api(api, &[image])) {
            return found.into_iter().next().map(|(_, inspected)| inspected.details()).ok_or_else(vanished);
        }
        self.inspect(&[image])?.remove(image).ok_or_else(vanished)
    }

    fn untag(&self, reference: &str) -> Result<()> {
        let sh = Shell::new()?;
        let program = self.program;
        let out = self.read(cmd!(sh, "{program} rmi {reference}"))?;
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
        self.build_image(spec, cache, log)
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
        self.build_to_registry(spec, cache, repository, log)
    }

    fn tag(&self, source: &str, target: &str) -> Result<()> {
        // Through the daemon's API when it is on a local socket: one request
        // instead of a CLI process (about 15 ms of CPU each, three per build).
        if let Some(api) = self.local_api() {
            self.echo_api(api, &format!("tag {source} {target}"));
            match api_tag(api, source, target) {
                Ok(()) => return Ok(()),
                Err(ApiError::Refused(why)) => bail!("cannot tag {source} as {target}: {why}"),
                // The socket did not answer as expected: the CLI may.
                Err(ApiError::Unreachable(why)) => self.echo_api_failed(&why),
            }
        }
        let sh = Shell::new()?;
        let program = self.program;
        let out = self.read(cmd!(sh, "{program} tag {source} {target}"))?;
        if !out.ok {
            bail!("cannot tag {source} as {target}: {}", first_line(&out.stderr));
        }
        Ok(())
    }

    fn tag_all(&self, source: &str, targets: &[&str]) -> Result<()> {
        // A request a name where the engine's API answers; else podman
        // names an image several times in one call: one process (about
        // 60 ms, with its store's locks) instead of one per name.
        if self.kind != EngineKind::Podman || targets.len() < 2 || self.local_api().is_some() {
            return targets.iter().try_for_each(|target| self.tag(source, target));
        }
        let sh = Shell::new()?;
        let program = self.program;
        let out = self.read(cmd!(sh, "{program} tag {source} {targets...}"))?;
        if !out.ok {
            bail!("cannot tag {source} as {}: {}", targets.join(", "), first_line(&out.stderr));
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

/// Removals of at most this many names go through the engine's API.
const REMOVE_THROUGH_API: usize = 8;

/// Names removed in one engine call.
const REMOVE_AT_ONCE: usize = 200;
/// The most telling line of an engine's output: the cause it gave for
/// refusing its command line, else the last line that says `error` (at its
/// start, as engines head their own errors, before one that only mentions
/// it), else the last line.
pub(super) fn last_error_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let starts_with_error = |l: &&str| l.get(..5).is_some_and(|head| head.eq_ignore_ascii_case("error"));
    let Some(at) = usage_error(&lines)
        .or_else(|| lines.iter().rposition(starts_with_error))
        .or_else(|| lines.iter().rposition(|l| l.to_lowercase().contains("error")))
        .or(lines.len().checked_sub(1))
    else {
        return "no output".into();
    };
    // `errors:` heads a list of what the registry said, one per line.
    if lines[at].ends_with(':') && at + 1 < lines.len() {
        return lines[at..].join(" ");
    }
    lines[at].to_string()
}

/// Where docker's CLI says why it refused its command line. It ends its
/// output with a hint (`Run 'docker build --help' for more information`,
/// or `See 'docker build --help'.` before 23.0) next to the usage; the cause
/// is the line before them.
fn usage_error(lines: &[&str]) -> Option<usize> {
    let is_hint = |l: &&str| (l.starts_with("Run '") || l.starts_with("See '")) && l.contains(" --help'");
    // Only at the end: a build's own output may hold such a line.
    let hint = lines.len() - lines.iter().rev().take(3).position(is_hint)? - 1;
    lines[..hint].iter().rposition(|l| !l.starts_with("Usage:"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{last_error_line, EngineCli};
    use crate::config::EngineKind;
    use crate::model::{Event, Observer};

    #[derive(Default)]
    struct Steps(Mutex<Vec<String>>);

    impl Observer for Steps {
        fn event(&self, event: Event<'_>) {
            if let Event::Step { image, step } = event {
                self.0.lock().unwrap().push(format!("{image} {step}"));
            }
        }
    }

    /// A build's output, as it is written to the log, tells the steps it
    /// begins for the image the engine works for, and nothing else.
    #[test]
    fn a_builds_steps_are_told_as_its_output_comes() {
        let steps = Arc::new(Steps::default());
        let engine = EngineCli::new(EngineKind::Docker).telling_steps(steps.clone());
        let engine = EngineCli { image: Some("web_app".into()), ..engine };
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web_app.log");
        let sh = xshell::Shell::new().unwrap();
        // Lines that come apart are told apart; of those that come together,
        // the last step.
        let script = "printf 'Step 1/4 : FROM scratch\\n ---> Using cache\\n'; sleep 0.5; \
                      printf 'Step 2/4 : COPY a /a\\nsent\\nStep 3/4 : COPY b /b\\n'; sleep 0.5; \
                      printf 'STEP 4/4: LABEL x=y\\n'";
        let output = engine.run(xshell::cmd!(sh, "sh -c {script}"), Some(&log)).unwrap();
        assert!(output.ok);
        // (A loaded machine may read two pieces at once: at least two are told.)
        let told = steps.0.lock().unwrap().clone();
        let expected = ["web_app 1/4", "web_app 3/4", "web_app 4/4"];
        assert!(told.len() >= 2 && told.last().map(String::as_str) == Some("web_app 4/4"), "{told:?}");
        assert!(told.iter().all(|t| expected.contains(&t.as_str())) && told.is_sorted(), "{told:?}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.starts_with("Step 1/4 : FROM scratch\n") && logged.ends_with("STEP 4/4: LABEL x=y\n"),
            "{logged}"
        );

        // An engine for no one image tells no steps.
        let steps = Arc::new(Steps::default());
        let engine = EngineCli::new(EngineKind::Docker).telling_steps(steps.clone());
        engine.run(xshell::cmd!(sh, "sh -c {script}"), Some(&log)).unwrap();
        assert!(steps.0.lock().unwrap().is_empty());
    }

    /// What engines print when they fail, and the line a failure quotes.
    #[test]
    fn the_error_line_is_the_engines_cause() {
        let cases = [
            (
                "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.\n\
                 \x20           Install the buildx component to build images with BuildKit:\n\
                 \x20           https://docs.docker.com/go/buildx/\n\n\
                 docker: 'docker build' requires 1 argument\n\n\
                 Usage:  docker build [OPTIONS] PATH | URL | -\n\n\
                 Run 'docker build --help' for more information\n",
                "docker: 'docker build' requires 1 argument",
            ),
            (
                "\"docker build\" requires exactly 1 argument.\nSee 'docker build --help'.\n\n\
                 Usage:  docker build [OPTIONS] PATH | URL | -\n\nBuild an image from a Dockerfile\n",
                "\"docker build\" requires exactly 1 argument.",
            ),
            ("Error: accepts at most 1 arg(s), received 2\n", "Error: accepts at most 1 arg(s), received 2"),
            (
                "#5 [2/2] RUN exit 3\n#5 ERROR: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3\n\
                 ------\n > [2/2] RUN exit 3:\n------\nDockerfile:2\n\
                 ERROR: failed to solve: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3\n\
                 1 error occurred\n",
                "ERROR: failed to solve: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3",
            ),
            (
                "Step 1/2 : FROM scratch\nError response from daemon: pull access denied for x\n",
                "Error response from daemon: pull access denied for x",
            ),
            (
                "Step 2/2 : RUN make\nmake: *** [all] compile error 2\nThe command '/bin/sh -c make' returned a non-zero code: 2\n",
                "make: *** [all] compile error 2",
            ),
            (
                "Step 2/2 : RUN exit 3\nThe command '/bin/sh -c exit 3' returned a non-zero code: 3\n",
                "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
            ),
            // A hint within a build's output, not at its end, is the build's own.
            (
                "Step 2/2 : RUN tool\nunknown option\nSee 'tool --help'.\nsomething else\nand more\nfailed\nfinal\n",
                "final",
            ),
            ("errors:\ndenied: requested access to the resource is denied\n", "errors: denied: requested access to the resource is denied"),
            ("\n\n", "no output"),
        ];
        for (output, line) in cases {
            assert_eq!(last_error_line(output), line, "{output}");
        }
    }
}
