//! Planning: what must happen to each image, decided from the images, their
//! tags and what was observed of the engine and the registry. Pure: the plan
//! is plain data that `--dry-run` prints and the executor runs.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::model::{Arch, Platform};
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
    /// Jobs (indexes into the plan) that must finish first: the local images
    /// this one is built `FROM`.
    pub after: Vec<JobIndex>,
    /// False for a base brought in only because a requested image builds on it.
    pub requested: bool,
    /// The platform the local `:latest` is for now, when this job moves it
    /// from an image for another architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_was: Option<String>,
    /// Where a build takes unchanged steps from, if it builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSource>,
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
    /// Whether the registry has each image's tag (looked up for test and push).
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
    /// Builds may take unchanged steps from the previous version.
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

/// `targets` holds every requested image and every image they are built on
/// (catalog index -> target); `requested` lists the requested ones.
pub fn plan(
    targets: &HashMap<ImageIndex, Target>,
    requested: &[ImageIndex],
    seen: &Observed,
    opts: Options,
) -> Vec<Job> {
    let mut steps: HashMap<ImageIndex, (Vec<Step>, String)> =
        requested.iter().map(|&i| (i, mode_steps(&targets[&i], seen, opts))).collect();
    let arch = opts.arch;

    // Whatever may be built needs its bases present under their local names
    // first: load them, or make their own job bring them.
    let mut stack: Vec<ImageIndex> =
        requested.iter().copied().filter(|i| steps[i].0.iter().any(Step::may_build)).collect();
    let mut needs_local: HashSet<ImageIndex> = HashSet::new();
    while let Some(i) = stack.pop() {
        for &base in &targets[&i].bases {
            if needs_local.insert(base) {
                let (own, _) = steps.get(&base).cloned().unwrap_or_default();
                if !own.iter().any(Step::brings_local) {
                    let (load, why) = load_steps(&targets[&base], seen, opts.skip_load, arch);
                    let entry = steps.entry(base).or_insert_with(|| (Vec::new(), why.clone()));
                    if !requested.contains(&base) {
                        entry.1 = format!("base of another image; {why}");
                    }
                    let mut merged = load;
                    merged.extend(own);
                    entry.0 = merged;
                }
                if steps[&base].0.iter().any(Step::may_build) {
                    stack.push(base);
                }
            }
        }
    }

    let mut order: Vec<ImageIndex> = steps.keys().copied().collect();
    order.sort_by(|a, b| targets[a].name.cmp(&targets[b].name));
    let position: HashMap<ImageIndex, JobIndex> = order.iter().enumerate().map(|(p, &i)| (i, JobIndex(p))).collect();
    order
        .iter()
        .map(|&i| {
            let t = &targets[&i];
            let (job_steps, why) = steps.remove(&i).expect("every ordered image has steps");
            let after = if job_steps.iter().any(Step::may_build) {
                t.bases.iter().filter_map(|b| position.get(b).copied()).collect()
            } else {
                Vec::new()
            };
            let names_locally = job_steps.iter().any(Step::brings_local);
            let latest_was =
                names_locally.then(|| seen.foreign(&t.names.local_latest(), arch)).flatten().map(|p| p.to_string());
            let cache =
                (opts.cache && job_steps.iter().any(Step::may_build)).then(|| cache_source(t, seen, arch)).flatten();
            Job {
                image: i,
                name: t.name.clone(),
                path: t.path.clone(),
                dockerfile: t.dockerfile.clone(),
                arch,
                test: t.test,
                names: t.names.clone(),
                steps: job_steps,
                why,
                after,
                requested: requested.contains(&i),
                latest_was,
                cache,
            }
        })
        .collect()
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

fn mode_steps(t: &Target, seen: &Observed, opts: Options) -> (Vec<Step>, String) {
    let [local, _, remote] = t.names.plan_names();
    let in_registry = seen.remote.get(&t.image).copied();
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
        Mode::Test => match in_registry {
            Some(true) => (vec![], "the registry has it".into()),
            _ => (vec![Step::Build], "the registry lacks it".into()),
        },
        Mode::Push => {
            let mut steps = Vec::new();
            let why;
            if in_registry == Some(true) {
                why = "the registry has it".to_string();
            } else if seen.present(&remote, arch).is_some() {
                steps.push(Step::Push { from: None });
                why = "the registry lacks it".into();
            } else if seen.present(&local, arch).is_some() {
                steps.push(Step::Push { from: Some(local) });
                why = "the registry lacks it".into();
            } else {
                steps.extend([Step::Build, Step::Push { from: None }]);
                why = "the registry lacks it and it is not present locally".into();
            }
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
    fn load_missing_pulls_else_builds_after_its_base() {
        let jobs = plan(&targets(), &[ImageIndex(1)], &Observed::default(), opts(Mode::Load));
        assert_eq!(
            summary(&jobs),
            vec![
                ("base".into(), vec![Step::Pull { or_build: true }], vec![], false),
                ("top".into(), vec![Step::Pull { or_build: true }], vec![0], true),
            ]
        );
        assert_eq!(jobs[0].why, "base of another image; not present locally");
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
