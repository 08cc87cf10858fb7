//! Planning: what must happen to each image, decided from the images, their
//! tags and what was observed of the engine and the registry. Pure: the plan
//! is plain data that `--dry-run` prints and the executor runs.
//!
//! Bases are planned lazily: an image built `FROM` another of the catalog
//! needs that base present only when it is built, since a pulled image
//! carries its base's layers. A base is planned to run whatever happens
//! when a dependent surely builds; when a dependent pulls and builds only if
//! its pull fails, the base is planned to run only then ([`Job::only_if_built`]).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::model::{Action, Arch, Platform};
use crate::model::{ImageIndex, ImageInfo, ImageRef, JobIndex};

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Load,
    Pull,
    Rebuild,
    Tag,
    Test,
    Push,
}

impl Mode {
    /// Whether the plan needs to know which tags the registry has.
    pub fn needs_remote(self) -> bool {
        matches!(self, Mode::Test | Mode::Push)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Give the local names (`:<tag>` and `:latest`) to the image present as `from`.
    TagLocal { from: String },
    /// Pull the remote tag, then give it the local names; when `or_build`,
    /// build it if the pull fails.
    Pull { or_build: bool },
    /// Build, then give the image its remote and local names.
    Build,
    /// Push the remote tag, first naming the image present as `from` with it.
    Push { from: Option<String> },
    /// Point the remote `:latest` at the current tag.
    PushLatest,
    /// The image is needed but may not be fetched (SKIP_IMAGE_LOAD) or is absent.
    Missing,
}

impl Step {
    fn brings_local(&self) -> bool {
        matches!(self, Step::Pull { .. } | Step::Build | Step::TagLocal { .. })
    }

    fn may_build(&self) -> bool {
        matches!(self, Step::Pull { or_build: true } | Step::Build)
    }

    pub fn describe(&self) -> String {
        match self {
            Step::TagLocal { from } => format!("tag from {from}"),
            Step::Pull { or_build: true } => "pull, else build".into(),
            Step::Pull { or_build: false } => "pull".into(),
            Step::Build => "build".into(),
            Step::Push { .. } => "push".into(),
            Step::PushLatest => "point remote :latest at it".into(),
            Step::Missing => "fail: missing".into(),
        }
    }
}

/// Whether steps build: surely, only when a pull fails, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Building {
    Surely,
    IfPullFails,
    Never,
}

fn builds(steps: &[Step]) -> Building {
    if steps.contains(&Step::Build) {
        Building::Surely
    } else if steps.contains(&Step::Pull { or_build: true }) {
        Building::IfPullFails
    } else {
        Building::Never
    }
}

/// What a build takes unchanged steps from: the previous version of the
/// image, for the same architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "reference", rename_all = "lowercase")]
pub enum CacheSource {
    /// The local `:latest`.
    Local(String),
    /// The registry's `<remote>:latest`.
    Remote(String),
}

impl CacheSource {
    pub fn reference(&self) -> &str {
        match self {
            CacheSource::Local(r) | CacheSource::Remote(r) => r,
        }
    }
}

/// The image the last stage of a build starts from: its layers are in the
/// built image, but the build did not make them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromImage {
    /// `FROM scratch`: every layer is the build's own.
    Scratch,
    /// An image by its reference, as the Dockerfile names it.
    Image(String),
    /// The Dockerfile leaves it to a variable that has no value.
    Unknown,
}

/// One image's share of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    #[serde(skip)]
    pub image: ImageIndex,
    pub name: String,
    pub path: String,
    /// Its Dockerfile for the architecture, in its directory.
    #[serde(skip)]
    pub dockerfile: String,
    pub arch: Arch,
    pub test: bool,
    #[serde(flatten)]
    pub names: ImageRef,
    pub steps: Vec<Step>,
    pub why: String,
    /// Jobs (indexes into the plan) that must finish before this one starts:
    /// the local images it surely builds `FROM`.
    pub after: Vec<JobIndex>,
    /// Jobs that must finish before the build a failed pull falls back to:
    /// the local images it is built `FROM`, brought only then.
    pub build_after: Vec<JobIndex>,
    /// Empty for a job that runs whatever happens. Otherwise it runs only
    /// when one of these jobs builds (its pull failed): it brings a base
    /// that build needs, and is of no use otherwise.
    pub only_if_built: Vec<JobIndex>,
    /// False for a base brought in only because a requested image builds on
    /// it (or, for push, is built on it).
    pub requested: bool,
    /// The platform the local `:latest` is for now, when this job moves it
    /// from an image for another architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_was: Option<String>,
    /// Where a build takes unchanged steps from, if it builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSource>,
    /// What its build starts from.
    #[serde(skip)]
    pub from: FromImage,
}

impl std::ops::Index<JobIndex> for [Job] {
    type Output = Job;
    fn index(&self, j: JobIndex) -> &Job {
        &self[j.0]
    }
}

impl Job {
    pub fn info(&self) -> ImageInfo {
        ImageInfo::named(&self.name, &self.path, self.arch, &self.names, self.test)
    }

    /// Whether running this job may build (and so run foreign binaries).
    pub fn may_build(&self) -> bool {
        self.steps.iter().any(Step::may_build)
    }

    /// Whether it runs whatever happens (else only when a build needs it).
    pub fn runs_anyway(&self) -> bool {
        self.only_if_built.is_empty()
    }

    /// What a job with no steps reports: a requested image of `test` or
    /// `push` is skipped (the registry has it); anything else is present.
    pub fn idle(&self, mode_idle: Action) -> Action {
        if self.requested {
            mode_idle
        } else {
            Action::Present
        }
    }
}

/// An image as the planner sees it.
#[derive(Clone, Debug)]
pub struct Target {
    pub image: ImageIndex,
    pub name: String,
    pub path: String,
    pub dockerfile: String,
    pub test: bool,
    pub names: ImageRef,
    /// Images (catalog indexes) this one is built `FROM`.
    pub bases: Vec<ImageIndex>,
    /// What its build starts from.
    pub from: FromImage,
}

impl Target {
    pub fn info(&self, arch: Arch) -> ImageInfo {
        ImageInfo::named(&self.name, &self.path, arch, &self.names, self.test)
    }
}

/// What was seen before planning.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Local images, `repository:tag` -> image ID.
    pub local: HashMap<String, String>,
    /// The platform of local images, by ID. An image counts as present only
    /// when it is for the architecture asked for.
    pub platforms: HashMap<String, Platform>,
    /// Whether the registry has each image's tag (looked up for test and
    /// push, and for load where the image is not present).
    pub remote: HashMap<ImageIndex, bool>,
    /// Whether the registry has each image's `<remote>:latest` (looked up for
    /// images that may build and have no local `:latest` for the architecture).
    pub remote_latest: HashMap<ImageIndex, bool>,
    /// The registry could not be asked: what is not present is built.
    pub registry_down: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub mode: Mode,
    pub arch: Arch,
    /// Building may take unchanged steps from the previous version.
    pub cache: bool,
    pub skip_load: bool,
    pub push_latest: bool,
}

impl Observed {
    /// The ID of the local image `reference` names, if it is one for `arch`.
    pub fn present(&self, reference: &str, arch: Arch) -> Option<&String> {
        self.local.get(reference).filter(|id| self.platforms.get(*id).is_some_and(|p| p.is(arch)))
    }

    /// The platform of the local image `reference` names, when it is for
    /// another architecture than `arch`.
    pub fn foreign(&self, reference: &str, arch: Arch) -> Option<&Platform> {
        self.local.get(reference).and_then(|id| self.platforms.get(id)).filter(|p| !p.is(arch))
    }
}

/// One image's share of the plan while it is made.
struct Draft {
    steps: Vec<Step>,
    /// Why it has its steps: the mode's reason, or how it is brought here.
    why: String,
    /// How it is brought here, when that was added to steps of the mode's
    /// that would not have (a requested image of `test`, a pushed base).
    load_why: Option<String>,
    requested: bool,
    /// Whether it will be present under its local names once its steps ran
    /// (or fail trying): what is built on it then needs nothing more of it.
    local: bool,
    runs: Runs,
}

impl Draft {
    /// A job that runs whatever happens, with the steps of the command.
    fn anyway(steps: Vec<Step>, why: String, requested: bool, local: bool) -> Draft {
        Draft { steps, why, load_why: None, requested, local, runs: Runs::Anyway }
    }
}

/// When a job runs, and so when a base it brings is needed: whatever
/// happens, or only when one of these images builds (its pull failed).
#[derive(Clone)]
enum Runs {
    Anyway,
    OnlyIfBuilt(BTreeSet<ImageIndex>),
}

/// `targets` holds every requested image and every image they are built on
/// (catalog index -> target); `requested` lists the requested ones.
pub fn plan(
    targets: &HashMap<ImageIndex, Target>,
    requested: &[ImageIndex],
    seen: &Observed,
    opts: Options,
) -> Vec<Job> {
    let mut drafts: HashMap<ImageIndex, Draft> = HashMap::new();
    for &i in requested {
        let (steps, why) = mode_steps(&targets[&i], seen, opts);
        // A load's steps are load steps: they leave it here, or fail.
        let local = opts.mode == Mode::Load || steps.iter().any(|s| s.brings_local() || *s == Step::Missing);
        drafts.insert(i, Draft::anyway(steps, why, true, local));
    }
    if opts.mode == Mode::Push {
        // What a pushed image is built on is pushed too, so that any
        // machine can build on it without building it again.
        for i in bases_of(targets, requested) {
            let (steps, why) = push_steps(&targets[&i], seen, opts.arch);
            if !steps.is_empty() {
                let local = steps.contains(&Step::Build);
                drafts.insert(i, Draft::anyway(steps, why, false, local));
            }
        }
    }

    // Whatever builds needs its bases present under their local names
    // first: planned to run anyway for a build that surely happens, and
    // only when needed for one a failed pull falls back to.
    let mut stack: Vec<ImageIndex> = drafts.keys().copied().collect();
    while let Some(i) = stack.pop() {
        let draft = &drafts[&i];
        let need = match builds(&draft.steps) {
            Building::Never => continue,
            Building::Surely => draft.runs.clone(),
            Building::IfPullFails => Runs::OnlyIfBuilt([i].into()),
        };
        for base in &targets[&i].bases {
            if bring(&mut drafts, &targets[base], &need, seen, opts) {
                stack.push(*base);
            }
        }
    }
    // A base wanted only for a build that may not happen, and present
    // already, would do nothing: it is no job.
    drafts.retain(|_, d| matches!(d.runs, Runs::Anyway) || !d.steps.is_empty());

    let mut order: Vec<ImageIndex> = drafts.keys().copied().collect();
    order.sort_by(|a, b| targets[a].name.cmp(&targets[b].name));
    let position: HashMap<ImageIndex, JobIndex> = order.iter().enumerate().map(|(p, &i)| (i, JobIndex(p))).collect();
    let positions = |images: &mut dyn Iterator<Item = &ImageIndex>| -> Vec<JobIndex> {
        let mut found: Vec<JobIndex> = images.filter_map(|i| position.get(i).copied()).collect();
        found.sort_unstable();
        found
    };
    order
        .iter()
        .map(|&i| {
            let t = &targets[&i];
            let d = &drafts[&i];
            let bases = |when: Building| if builds(&d.steps) == when { positions(&mut t.bases.iter()) } else { vec![] };
            let names_locally = d.steps.iter().any(Step::brings_local);
            let latest_was = names_locally
                .then(|| seen.foreign(&t.names.local_latest(), opts.arch))
                .flatten()
                .map(|p| p.to_string());
            let cache =
                (opts.cache && d.steps.iter().any(Step::may_build)).then(|| cache_source(t, seen, opts.arch)).flatten();
            Job {
                image: i,
                name: t.name.clone(),
                path: t.path.clone(),
                dockerfile: t.dockerfile.clone(),
                arch: opts.arch,
                test: t.test,
                names: t.names.clone(),
                steps: d.steps.clone(),
                why: why(d, &dependents(targets, i)),
                after: bases(Building::Surely),
                build_after: bases(Building::IfPullFails),
                only_if_built: match &d.runs {
                    Runs::Anyway => vec![],
                    Runs::OnlyIfBuilt(triggers) => positions(&mut triggers.iter()),
                },
                requested: d.requested,
                latest_was,
                cache,
                from: t.from.clone(),
            }
        })
        .collect()
}

/// Makes `base` present before a build that runs as `need` says: plans its
/// load, or makes its job run whenever that build does. Whether its draft
/// changed, so that what it is built on must be looked at again.
fn bring(drafts: &mut HashMap<ImageIndex, Draft>, t: &Target, need: &Runs, seen: &Observed, opts: Options) -> bool {
    let Some(d) = drafts.get_mut(&t.image) else {
        let (steps, why) = load_steps(t, seen, opts.skip_load, opts.arch);
        let draft = Draft { steps, why, load_why: None, requested: false, local: true, runs: need.clone() };
        drafts.insert(t.image, draft);
        return true;
    };
    let mut changed = false;
    if !d.local {
        // Its job runs anyway and would not bring it here (the registry has
        // it, or it is pushed from another name): it brings it first, even
        // for a build that may not happen, since a job runs once.
        let (load, why) = load_steps(t, seen, opts.skip_load, opts.arch);
        if !load.is_empty() {
            d.steps.splice(0..0, load);
            d.load_why = Some(why);
        }
        d.local = true;
        changed = true;
    }
    match (&mut d.runs, need) {
        (Runs::Anyway, _) => {}
        (runs, Runs::Anyway) => {
            *runs = Runs::Anyway;
            changed = true;
        }
        (Runs::OnlyIfBuilt(triggers), Runs::OnlyIfBuilt(more)) => {
            let before = triggers.len();
            triggers.extend(more);
            changed |= triggers.len() != before;
        }
    }
    changed
}

/// Every image the requested ones are built on, however deep, that is not
/// requested itself; sorted.
fn bases_of(targets: &HashMap<ImageIndex, Target>, requested: &[ImageIndex]) -> Vec<ImageIndex> {
    let mut found: BTreeSet<ImageIndex> = BTreeSet::new();
    let mut stack: Vec<ImageIndex> = requested.to_vec();
    while let Some(i) = stack.pop() {
        for &base in &targets[&i].bases {
            if !requested.contains(&base) && found.insert(base) {
                stack.push(base);
            }
        }
    }
    found.into_iter().collect()
}

/// The names of the images of `targets` built on `image`, sorted.
fn dependents(targets: &HashMap<ImageIndex, Target>, image: ImageIndex) -> Vec<String> {
    let mut names: Vec<String> =
        targets.values().filter(|t| t.bases.contains(&image)).map(|t| t.name.clone()).collect();
    names.sort();
    names
}

/// Why a job has its steps: a base says whose base it is.
fn why(d: &Draft, dependents: &[String]) -> String {
    let of = dependents.join(", ");
    match (&d.load_why, d.requested) {
        (None, true) => d.why.clone(),
        (Some(load), true) => format!("{}; base of {of}: {load}", d.why),
        (None, false) => format!("base of {of}; {}", d.why),
        (Some(load), false) => format!("base of {of}; {}; {load}", d.why),
    }
}

/// The previous version to build on: the local `:latest` when it is for
/// the architecture, else the registry's `:latest` when it has one.
fn cache_source(t: &Target, seen: &Observed, arch: Arch) -> Option<CacheSource> {
    let latest = t.names.local_latest();
    if seen.present(&latest, arch).is_some() {
        return Some(CacheSource::Local(latest));
    }
    (seen.remote_latest.get(&t.image) == Some(&true)).then(|| CacheSource::Remote(t.names.remote_latest()))
}

/// Images that may build, have no local `:latest` for the architecture, and
/// whose `<remote>:latest` the registry was not asked about yet.
pub fn wants_remote_latest(jobs: &[Job], seen: &Observed, arch: Arch) -> Vec<ImageIndex> {
    // A pull of a tag the registry has needs no build.
    let builds = |j: &Job| {
        j.steps.iter().any(|s| match s {
            Step::Build => true,
            Step::Pull { or_build: true } => seen.remote.get(&j.image) != Some(&true),
            _ => false,
        })
    };
    jobs.iter()
        .filter(|j| builds(j) && seen.present(&j.names.local_latest(), arch).is_none())
        .filter(|j| !seen.remote_latest.contains_key(&j.image))
        .map(|j| j.image)
        .collect()
}

/// What makes an image present under its local names: nothing, a tag, a
/// pull (else a build) or a build, as what is here and in the registry says.
fn load_steps(t: &Target, seen: &Observed, skip_load: bool, arch: Arch) -> (Vec<Step>, String) {
    let [local, latest, remote] = t.names.plan_names();
    if let Some(id) = seen.present(&local, arch) {
        if seen.local.get(&latest) == Some(id) {
            return (vec![], "present".into());
        }
        return (vec![Step::TagLocal { from: local }], "present; :latest points elsewhere".into());
    }
    if seen.present(&remote, arch).is_some() {
        return (vec![Step::TagLocal { from: remote }], "present under its remote name".into());
    }
    let absent = match seen.foreign(&local, arch) {
        Some(other) => format!("present only for {other}"),
        None => "not present locally".to_string(),
    };
    if skip_load {
        return (vec![Step::Missing], format!("{absent}, and SKIP_IMAGE_LOAD forbids pulling or building"));
    }
    match seen.remote.get(&t.image) {
        Some(false) => (vec![Step::Build], "not in the registry".to_string()),
        Some(true) => (vec![Step::Pull { or_build: true }], "in the registry".to_string()),
        None if seen.registry_down => (vec![Step::Build], format!("{absent}; the registry cannot be asked")),
        None => (vec![Step::Pull { or_build: true }], absent),
    }
}

/// What pushing an image takes: nothing when the registry has its tag,
/// else a push from the name it has here, built first when it has none.
fn push_steps(t: &Target, seen: &Observed, arch: Arch) -> (Vec<Step>, String) {
    let [local, _, remote] = t.names.plan_names();
    if seen.remote.get(&t.image) == Some(&true) {
        (vec![], "the registry has it".into())
    } else if seen.present(&remote, arch).is_some() {
        (vec![Step::Push { from: None }], "the registry lacks it".into())
    } else if seen.present(&local, arch).is_some() {
        (vec![Step::Push { from: Some(local) }], "the registry lacks it".into())
    } else {
        (vec![Step::Build, Step::Push { from: None }], "the registry lacks it and it is not present locally".into())
    }
}

fn mode_steps(t: &Target, seen: &Observed, opts: Options) -> (Vec<Step>, String) {
    let remote = t.names.remote_tagged();
    let arch = opts.arch;
    match opts.mode {
        Mode::Load => load_steps(t, seen, opts.skip_load, arch),
        Mode::Pull => (vec![Step::Pull { or_build: false }], "pull requested".into()),
        Mode::Rebuild => (vec![Step::Build], "build requested".into()),
        Mode::Tag => {
            if seen.present(&remote, arch).is_some() {
                (vec![Step::TagLocal { from: remote }], "present under its remote name".into())
            } else if let Some(other) = seen.foreign(&remote, arch) {
                (
                    vec![Step::Missing],
                    format!("{remote} is for {other}, not {}: pull or build it again", arch.platform()),
                )
            } else {
                (vec![Step::Missing], format!("{remote} is not present locally: pull or build it first"))
            }
        }
        Mode::Test => match seen.remote.get(&t.image) {
            Some(true) => (vec![], "the registry has it".into()),
            Some(false) => (vec![Step::Build], "the registry lacks it".into()),
            None => (vec![Step::Build], "the registry cannot be asked".into()),
        },
        Mode::Push => {
            let (mut steps, why) = push_steps(t, seen, arch);
            if opts.push_latest {
                steps.push(Step::PushLatest);
            }
            (steps, why)
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn target(image: usize, name: &str, bases: Vec<usize>) -> Target {
        Target {
            image: ImageIndex(image),
            name: name.into(),
            path: name.into(),
            dockerfile: "Dockerfile".into(),
            test: true,
            names: ImageRef {
                tag: format!("t{image}"),
                local: format!("l/{name}"),
                remote: format!("r/{name}_x86_64"),
            },
            bases: bases.into_iter().map(ImageIndex).collect(),
            from: FromImage::Scratch,
        }
    }

    fn targets() -> HashMap<ImageIndex, Target> {
        [target(0, "base", vec![]), target(1, "top", vec![0]), target(2, "solo", vec![])].map(|t| (t.image, t)).into()
    }

    fn opts(mode: Mode) -> Options {
        Options { mode, arch: Arch::X86_64, cache: false, skip_load: false, push_latest: false }
    }

    fn platform(architecture: &str) -> Platform {
        Platform { os: "linux".into(), architecture: architecture.into(), variant: String::new() }
    }

    /// What was seen: local names of images `id` (for amd64) and `arm` (for arm64).
    fn local(names: &[(&str, &str)]) -> Observed {
        let mut seen = Observed::default();
        for (name, id) in names {
            seen.local.insert(name.to_string(), id.to_string());
        }
        seen.platforms.insert("id".into(), platform("amd64"));
        seen.platforms.insert("arm".into(), platform("arm64"));
        seen
    }

    fn summary(jobs: &[Job]) -> Vec<(String, Vec<Step>, Vec<usize>, bool)> {
        jobs.iter()
            .map(|j| (j.name.clone(), j.steps.clone(), j.after.iter().map(|a| a.0).collect(), j.requested))
            .collect()
    }

    #[test]
    fn load_present_does_nothing() {
        let seen = local(&[("l/solo:t2", "id"), ("l/solo:latest", "id")]);
        let jobs = plan(&targets(), &[ImageIndex(2)], &seen, opts(Mode::Load));
        assert_eq!(summary(&jobs), vec![("solo".into(), vec![], vec![], true)]);
        assert_eq!(jobs[0].why, "present");
    }

    #[test]
    fn load_missing_pulls_else_builds_and_brings_its_base_only_for_that_build() {
        let jobs = plan(&targets(), &[ImageIndex(1)], &Observed::default(), opts(Mode::Load));
        assert_eq!(
            planned(&jobs),
            [
                job("base", &[PULL_ELSE_BUILD], "base of top; not present locally", &[], &[], &["top"], false),
                job("top", &[PULL_ELSE_BUILD], "not present locally", &[], &["base"], &[], true),
            ]
        );
    }

    /// A job as the tests compare it: all the plan decides of it.
    #[derive(Debug, PartialEq)]
    struct Planned {
        name: String,
        steps: Vec<Step>,
        why: String,
        after: Vec<String>,
        build_after: Vec<String>,
        only_if_built: Vec<String>,
        requested: bool,
    }

    const PULL_ELSE_BUILD: Step = Step::Pull { or_build: true };

    fn planned(jobs: &[Job]) -> Vec<Planned> {
        let names = |js: &[JobIndex]| js.iter().map(|&j| jobs[j].name.clone()).collect();
        jobs.iter()
            .map(|j| Planned {
                name: j.name.clone(),
                steps: j.steps.clone(),
                why: j.why.clone(),
                after: names(&j.after),
                build_after: names(&j.build_after),
                only_if_built: names(&j.only_if_built),
                requested: j.requested,
            })
            .collect()
    }

    fn job(
        name: &str,
        steps: &[Step],
        why: &str,
        after: &[&str],
        build_after: &[&str],
        only_if_built: &[&str],
        requested: bool,
    ) -> Planned {
        let strings = |s: &[&str]| s.iter().map(|n| n.to_string()).collect();
        Planned {
            name: name.into(),
            steps: steps.to_vec(),
            why: why.into(),
            after: strings(after),
            build_after: strings(build_after),
            only_if_built: strings(only_if_built),
            requested,
        }
    }

    /// `app` and `web` built on `base`, built on `root`; `solo` alone.
    fn family() -> HashMap<ImageIndex, Target> {
        [
            target(0, "root", vec![]),
            target(1, "base", vec![0]),
            target(2, "app", vec![1]),
            target(3, "web", vec![1]),
            target(4, "solo", vec![]),
        ]
        .map(|t| (t.image, t))
        .into()
    }

    /// What the registry has, by image.
    fn registry(seen: &mut Observed, has: &[(usize, bool)]) {
        seen.remote.extend(has.iter().map(|&(i, has)| (ImageIndex(i), has)));
    }

    #[test]
    fn a_pulled_image_brings_its_base_only_when_its_pull_fails() {
        let mut seen = Observed::default();
        registry(&mut seen, &[(0, false), (1, false), (2, true)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Load));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[PULL_ELSE_BUILD], "in the registry", &[], &["base"], &[], true),
                job("base", &[Step::Build], "base of app, web; not in the registry", &["root"], &[], &["app"], false),
                job("root", &[Step::Build], "base of base; not in the registry", &[], &[], &["app"], false),
            ]
        );
        // Each base of a base pulled is needed only if that one's pull fails.
        registry(&mut seen, &[(1, true)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Load));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[PULL_ELSE_BUILD], "in the registry", &[], &["base"], &[], true),
                job("base", &[PULL_ELSE_BUILD], "base of app, web; in the registry", &[], &["root"], &["app"], false),
                job("root", &[Step::Build], "base of base; not in the registry", &[], &[], &["base"], false),
            ]
        );
    }

    #[test]
    fn a_build_brings_its_bases_whatever_happens() {
        let mut seen = Observed::default();
        registry(&mut seen, &[(0, false), (1, true), (2, false)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Load));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[Step::Build], "not in the registry", &["base"], &[], &[], true),
                job("base", &[PULL_ELSE_BUILD], "base of app, web; in the registry", &[], &["root"], &[], false),
                job("root", &[Step::Build], "base of base; not in the registry", &[], &[], &["base"], false),
            ]
        );
    }

    #[test]
    fn a_base_wanted_by_several_builds_says_so_and_runs_anyway_once_one_is_sure() {
        let mut seen = local(&[("l/root:t0", "id"), ("l/root:latest", "id")]);
        registry(&mut seen, &[(1, false), (2, true), (3, true)]);
        let jobs = plan(&family(), &[ImageIndex(2), ImageIndex(3)], &seen, opts(Mode::Load));
        // root is present: a base that would do nothing is no job.
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[PULL_ELSE_BUILD], "in the registry", &[], &["base"], &[], true),
                job("base", &[Step::Build], "base of app, web; not in the registry", &[], &[], &["app", "web"], false),
                job("web", &[PULL_ELSE_BUILD], "in the registry", &[], &["base"], &[], true),
            ]
        );
        assert_eq!(
            crate::report::plan_text(&jobs, &[]).lines().nth(1),
            Some("base  t1  only if app or web is built: build  (base of app, web; not in the registry)")
        );
        registry(&mut seen, &[(3, false)]);
        let jobs = plan(&family(), &[ImageIndex(2), ImageIndex(3)], &seen, opts(Mode::Load));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[PULL_ELSE_BUILD], "in the registry", &[], &["base"], &[], true),
                job("base", &[Step::Build], "base of app, web; not in the registry", &["root"], &[], &[], false),
                job("root", &[], "base of base; present", &[], &[], &[], false),
                job("web", &[Step::Build], "not in the registry", &["base"], &[], &[], true),
            ]
        );
    }

    #[test]
    fn a_pull_needs_no_base_and_a_present_image_looks_at_none() {
        let mut seen = local(&[("l/app:t2", "id"), ("l/app:latest", "id")]);
        registry(&mut seen, &[(0, false), (1, false)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Load));
        assert_eq!(planned(&jobs), [job("app", &[], "present", &[], &[], &[], true)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &Observed::default(), opts(Mode::Pull));
        assert_eq!(
            planned(&jobs),
            [job("app", &[Step::Pull { or_build: false }], "pull requested", &[], &[], &[], true)]
        );
    }

    #[test]
    fn push_pushes_the_bases_the_registry_lacks() {
        let build_push = [Step::Build, Step::Push { from: None }];
        let lacks = "the registry lacks it and it is not present locally";
        let mut seen = Observed::default();
        registry(&mut seen, &[(0, true), (1, false), (2, false)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Push));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &build_push, lacks, &["base"], &[], &[], true),
                job("base", &build_push, &format!("base of app, web; {lacks}"), &["root"], &[], &[], false),
                job("root", &[PULL_ELSE_BUILD], "base of base; in the registry", &[], &[], &[], false),
            ]
        );
        // When nothing is built, a base present here is pushed from its
        // local name, and one the registry has needs nothing.
        let mut seen = local(&[("l/base:t1", "id"), ("l/app:t2", "id")]);
        registry(&mut seen, &[(0, true), (1, false), (2, true)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Push));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[], "the registry has it", &[], &[], &[], true),
                job(
                    "base",
                    &[Step::Push { from: Some("l/base:t1".into()) }],
                    "base of app, web; the registry lacks it",
                    &[],
                    &[],
                    &[],
                    false
                ),
            ]
        );
        assert_eq!(jobs[0].idle(Action::Skipped), Action::Skipped);
    }

    #[test]
    fn test_says_what_a_base_is_and_what_it_is_not() {
        let mut seen = local(&[("l/base:t1", "id"), ("l/base:latest", "id")]);
        registry(&mut seen, &[(0, false), (1, false), (2, false)]);
        let jobs = plan(&family(), &[ImageIndex(2)], &seen, opts(Mode::Test));
        let expected = |why: &str| {
            [
                job("app", &[Step::Build], why, &["base"], &[], &[], true),
                job("base", &[], "base of app, web; present", &[], &[], &[], false),
            ]
        };
        assert_eq!(planned(&jobs), expected("the registry lacks it"));
        // Present, never skipped as if the registry had it.
        assert_eq!(jobs[1].idle(Action::Skipped), Action::Present);
        // With the registry down, nothing is said of what it has.
        let mut down = local(&[("l/base:t1", "id"), ("l/base:latest", "id")]);
        down.registry_down = true;
        let jobs = plan(&family(), &[ImageIndex(2)], &down, opts(Mode::Test));
        assert_eq!(planned(&jobs), expected("the registry cannot be asked"));
        // A requested image the registry has is skipped, unless a build
        // needs it here.
        registry(&mut seen, &[(1, true)]);
        seen.local.clear();
        let jobs = plan(&family(), &[ImageIndex(1), ImageIndex(2)], &seen, opts(Mode::Test));
        assert_eq!(
            planned(&jobs),
            [
                job("app", &[Step::Build], "the registry lacks it", &["base"], &[], &[], true),
                job(
                    "base",
                    &[PULL_ELSE_BUILD],
                    "the registry has it; base of app, web: in the registry",
                    &[],
                    &["root"],
                    &[],
                    true
                ),
                job("root", &[Step::Build], "base of base; not in the registry", &[], &[], &["base"], false),
            ]
        );
    }

    #[test]
    fn skip_image_load_fails_missing_images() {
        let o = Options { skip_load: true, ..opts(Mode::Load) };
        let jobs = plan(&targets(), &[ImageIndex(2)], &Observed::default(), o);
        assert_eq!(summary(&jobs), vec![("solo".into(), vec![Step::Missing], vec![], true)]);
    }

    #[test]
    fn push_skips_what_the_registry_has_and_loads_bases_of_builds() {
        let mut seen = Observed::default();
        seen.remote.insert(ImageIndex(0), true);
        seen.remote.insert(ImageIndex(1), false);
        let jobs = plan(&targets(), &[ImageIndex(0), ImageIndex(1)], &seen, opts(Mode::Push));
        assert_eq!(
            summary(&jobs),
            vec![
                ("base".into(), vec![Step::Pull { or_build: true }], vec![], true),
                ("top".into(), vec![Step::Build, Step::Push { from: None }], vec![0], true),
            ]
        );
    }

    #[test]
    fn push_as_latest_moves_remote_latest_even_when_present() {
        let mut seen = Observed::default();
        seen.remote.insert(ImageIndex(2), true);
        let o = Options { push_latest: true, ..opts(Mode::Push) };
        let jobs = plan(&targets(), &[ImageIndex(2)], &seen, o);
        assert_eq!(summary(&jobs), vec![("solo".into(), vec![Step::PushLatest], vec![], true)]);
    }

    #[test]
    fn push_names_a_locally_present_image_before_pushing() {
        let mut seen = local(&[("l/solo:t2", "id")]);
        seen.remote.insert(ImageIndex(2), false);
        let jobs = plan(&targets(), &[ImageIndex(2)], &seen, opts(Mode::Push));
        assert_eq!(jobs[0].steps, vec![Step::Push { from: Some("l/solo:t2".into()) }]);
    }

    #[test]
    fn test_mode_builds_only_what_the_registry_lacks() {
        let mut seen = Observed::default();
        seen.remote.insert(ImageIndex(0), true);
        seen.remote.insert(ImageIndex(2), false);
        let jobs = plan(&targets(), &[ImageIndex(0), ImageIndex(2)], &seen, opts(Mode::Test));
        assert_eq!(
            summary(&jobs),
            vec![("base".into(), vec![], vec![], true), ("solo".into(), vec![Step::Build], vec![], true)]
        );
    }

    #[test]
    fn tag_needs_the_remote_named_image() {
        let seen = local(&[("r/solo_x86_64:t2", "id")]);
        let jobs = plan(&targets(), &[ImageIndex(0), ImageIndex(2)], &seen, opts(Mode::Tag));
        assert_eq!(
            summary(&jobs),
            vec![
                ("base".into(), vec![Step::Missing], vec![], true),
                ("solo".into(), vec![Step::TagLocal { from: "r/solo_x86_64:t2".into() }], vec![], true),
            ]
        );
    }
}

#[cfg(test)]
mod platform_tests {
    use super::*;

    fn target(name: &str) -> HashMap<ImageIndex, Target> {
        let t = Target {
            image: ImageIndex(0),
            name: name.into(),
            path: name.into(),
            dockerfile: "Dockerfile".into(),
            test: true,
            names: ImageRef { tag: "t".into(), local: format!("l/{name}"), remote: format!("r/{name}_x86_64") },
            bases: vec![],
            from: FromImage::Scratch,
        };
        [(ImageIndex(0), t)].into()
    }

    fn seen(names: &[(&str, &str)]) -> Observed {
        let mut seen = Observed::default();
        for (name, id) in names {
            seen.local.insert(name.to_string(), id.to_string());
        }
        let p = |a: &str, v: &str| Platform { os: "linux".into(), architecture: a.into(), variant: v.into() };
        seen.platforms.insert("amd".into(), p("amd64", ""));
        seen.platforms.insert("arm".into(), p("arm64", ""));
        seen.platforms.insert("armv8".into(), p("arm64", "v8"));
        seen
    }

    fn plan_for(seen: &Observed, mode: Mode, arch: Arch) -> Job {
        let o = Options { mode, arch, cache: true, skip_load: false, push_latest: false };
        plan(&target("x"), &[ImageIndex(0)], seen, o).remove(0)
    }

    #[test]
    fn an_image_for_another_architecture_is_not_present() {
        let s = seen(&[("l/x:t", "arm"), ("l/x:latest", "arm")]);
        let job = plan_for(&s, Mode::Load, Arch::X86_64);
        assert_eq!(
            (job.steps, job.why.as_str()),
            (vec![Step::Pull { or_build: true }], "present only for linux/arm64")
        );
        assert_eq!(job.latest_was.as_deref(), Some("linux/arm64"));
        // For its own architecture it is, whether or not the engine records arm64's variant.
        assert_eq!(plan_for(&s, Mode::Load, Arch::Aarch64).steps, vec![]);
        let v8 = seen(&[("l/x:t", "armv8"), ("l/x:latest", "armv8")]);
        assert_eq!(plan_for(&v8, Mode::Load, Arch::Aarch64).steps, vec![]);
    }

    #[test]
    fn load_retags_from_the_architectures_own_remote_name_and_says_latest_moves() {
        let s = seen(&[("l/x:t", "arm"), ("l/x:latest", "arm"), ("r/x_x86_64:t", "amd")]);
        let job = plan_for(&s, Mode::Load, Arch::X86_64);
        assert_eq!(job.steps, vec![Step::TagLocal { from: "r/x_x86_64:t".into() }]);
        assert_eq!(job.latest_was.as_deref(), Some("linux/arm64"));
        // :latest for the same architecture moves without a word.
        let same = seen(&[("l/x:latest", "armv8"), ("r/x_x86_64:t", "arm")]);
        let job = plan_for(&same, Mode::Load, Arch::Aarch64);
        assert_eq!((job.steps.len(), job.latest_was), (1, None));
    }

    #[test]
    fn a_remote_name_on_an_image_for_another_architecture_is_neither_tagged_nor_pushed() {
        let s = seen(&[("r/x_x86_64:t", "arm"), ("l/x:t", "arm")]);
        let job = plan_for(&s, Mode::Tag, Arch::X86_64);
        assert_eq!(job.steps, vec![Step::Missing]);
        assert_eq!(job.why, "r/x_x86_64:t is for linux/arm64, not linux/amd64: pull or build it again");
        let mut s = s;
        s.remote.insert(ImageIndex(0), false);
        assert_eq!(plan_for(&s, Mode::Push, Arch::X86_64).steps, vec![Step::Build, Step::Push { from: None }]);
    }

    #[test]
    fn an_image_of_unknown_platform_is_not_present() {
        let mut s = seen(&[("l/x:t", "gone"), ("l/x:latest", "gone")]);
        s.platforms.remove("gone");
        assert_eq!(plan_for(&s, Mode::Load, Arch::X86_64).steps, vec![Step::Pull { or_build: true }]);
    }

    #[test]
    fn builds_take_the_previous_version_of_their_own_architecture() {
        // The local :latest, when it is for the architecture.
        let mut s = seen(&[("l/x:latest", "amd")]);
        let job = plan_for(&s, Mode::Rebuild, Arch::X86_64);
        assert_eq!(job.cache, Some(CacheSource::Local("l/x:latest".into())));
        // An aarch64 :latest is never used for x86_64: the registry's, if any.
        s = seen(&[("l/x:latest", "arm")]);
        assert_eq!(plan_for(&s, Mode::Rebuild, Arch::X86_64).cache, None);
        assert_eq!(
            wants_remote_latest(&[plan_for(&s, Mode::Rebuild, Arch::X86_64)], &s, Arch::X86_64),
            vec![ImageIndex(0)]
        );
        s.remote_latest.insert(ImageIndex(0), true);
        assert_eq!(
            plan_for(&s, Mode::Rebuild, Arch::X86_64).cache,
            Some(CacheSource::Remote("r/x_x86_64:latest".into()))
        );
        assert_eq!(
            wants_remote_latest(&[plan_for(&s, Mode::Rebuild, Arch::X86_64)], &s, Arch::X86_64),
            Vec::<ImageIndex>::new()
        );
        // Nothing that does not build, and nothing when turned off.
        let present = seen(&[("l/x:t", "amd"), ("l/x:latest", "amd")]);
        assert_eq!(plan_for(&present, Mode::Load, Arch::X86_64).cache, None);
        let o = Options { mode: Mode::Rebuild, arch: Arch::X86_64, cache: false, skip_load: false, push_latest: false };
        assert_eq!(plan(&target("x"), &[ImageIndex(0)], &seen(&[("l/x:latest", "amd")]), o)[0].cache, None);
    }
}
