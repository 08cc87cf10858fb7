//! Planning: what must happen to each image, decided from the images, their
//! tags and what was observed of the engine and the registry. Pure: the plan
//! is plain data that `--dry-run` prints and the executor runs.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

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

/// One image's share of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    #[serde(skip)]
    pub image: usize,
    pub name: String,
    pub tag: String,
    /// `<LOCAL_IMAGE_PREFIX>/<path>`, without a tag.
    pub local: String,
    /// `<REMOTE_IMAGE_PREFIX>/<path>_<arch>`, without a tag.
    pub remote: String,
    pub steps: Vec<Step>,
    pub why: String,
    /// Jobs (indexes into the plan) that must finish first: the local images
    /// this one is built `FROM`.
    pub after: Vec<usize>,
    /// False for a base brought in only because a requested image builds on it.
    pub requested: bool,
}

impl Job {
    /// Whether running this job may build (and so run foreign binaries).
    pub fn may_build(&self) -> bool {
        self.steps.iter().any(Step::may_build)
    }

    pub fn local_ref(&self) -> String {
        format!("{}:{}", self.local, self.tag)
    }
    pub fn local_latest(&self) -> String {
        format!("{}:latest", self.local)
    }
    pub fn remote_ref(&self) -> String {
        format!("{}:{}", self.remote, self.tag)
    }
    pub fn remote_latest(&self) -> String {
        format!("{}:latest", self.remote)
    }
}

/// An image as the planner sees it.
#[derive(Clone, Debug)]
pub struct Target {
    pub image: usize,
    pub name: String,
    pub tag: String,
    pub local: String,
    pub remote: String,
    /// Images (catalog indexes) this one is built `FROM`.
    pub bases: Vec<usize>,
}

/// What was seen before planning.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Local images, `repository:tag` -> image ID.
    pub local: HashMap<String, String>,
    /// Whether the registry has each image's tag (looked up for test and push).
    pub remote: HashMap<usize, bool>,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub mode: Mode,
    pub skip_load: bool,
    pub push_latest: bool,
}

/// `targets` holds every requested image and every image they are built on
/// (catalog index -> target); `requested` lists the requested ones.
pub fn plan(targets: &HashMap<usize, Target>, requested: &[usize], seen: &Observed, opts: Options) -> Vec<Job> {
    let mut steps: HashMap<usize, (Vec<Step>, String)> =
        requested.iter().map(|&i| (i, mode_steps(&targets[&i], seen, opts))).collect();

    // Whatever may be built needs its bases present under their local names
    // first: load them, or make their own job bring them.
    let mut stack: Vec<usize> = requested.iter().copied().filter(|i| steps[i].0.iter().any(Step::may_build)).collect();
    let mut needs_local: HashSet<usize> = HashSet::new();
    while let Some(i) = stack.pop() {
        for &base in &targets[&i].bases {
            if needs_local.insert(base) {
                let (own, _) = steps.get(&base).cloned().unwrap_or_default();
                if !own.iter().any(Step::brings_local) {
                    let (load, why) = load_steps(&targets[&base], seen, opts.skip_load);
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

    let mut order: Vec<usize> = steps.keys().copied().collect();
    order.sort_by(|a, b| targets[a].name.cmp(&targets[b].name));
    let position: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
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
            Job {
                image: i,
                name: t.name.clone(),
                tag: t.tag.clone(),
                local: t.local.clone(),
                remote: t.remote.clone(),
                steps: job_steps,
                why,
                after,
                requested: requested.contains(&i),
            }
        })
        .collect()
}

fn refs(t: &Target) -> (String, String, String) {
    (format!("{}:{}", t.local, t.tag), format!("{}:latest", t.local), format!("{}:{}", t.remote, t.tag))
}

fn load_steps(t: &Target, seen: &Observed, skip_load: bool) -> (Vec<Step>, String) {
    let (local, latest, remote) = refs(t);
    if let Some(id) = seen.local.get(&local) {
        if seen.local.get(&latest) == Some(id) {
            return (vec![], "present".into());
        }
        return (vec![Step::TagLocal { from: local }], "present; :latest points elsewhere".into());
    }
    if seen.local.contains_key(&remote) {
        return (vec![Step::TagLocal { from: remote }], "present under its remote name".into());
    }
    if skip_load {
        return (vec![Step::Missing], "not present locally, and SKIP_IMAGE_LOAD forbids pulling or building".into());
    }
    (vec![Step::Pull { or_build: true }], "not present locally".into())
}

fn mode_steps(t: &Target, seen: &Observed, opts: Options) -> (Vec<Step>, String) {
    let (local, _, remote) = refs(t);
    let in_registry = seen.remote.get(&t.image).copied();
    match opts.mode {
        Mode::Load => load_steps(t, seen, opts.skip_load),
        Mode::Pull => (vec![Step::Pull { or_build: false }], "pull requested".into()),
        Mode::Rebuild => (vec![Step::Build], "build requested".into()),
        Mode::Tag => {
            if seen.local.contains_key(&remote) {
                (vec![Step::TagLocal { from: remote }], "present under its remote name".into())
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
            } else if seen.local.contains_key(&remote) {
                steps.push(Step::Push { from: None });
                why = "the registry lacks it".into();
            } else if seen.local.contains_key(&local) {
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
            image,
            name: name.into(),
            tag: format!("t{image}"),
            local: format!("l/{name}"),
            remote: format!("r/{name}_x86_64"),
            bases,
        }
    }

    fn targets() -> HashMap<usize, Target> {
        [(0, target(0, "base", vec![])), (1, target(1, "top", vec![0])), (2, target(2, "solo", vec![]))].into()
    }

    fn opts(mode: Mode) -> Options {
        Options { mode, skip_load: false, push_latest: false }
    }

    fn summary(jobs: &[Job]) -> Vec<(String, Vec<Step>, Vec<usize>, bool)> {
        jobs.iter().map(|j| (j.name.clone(), j.steps.clone(), j.after.clone(), j.requested)).collect()
    }

    #[test]
    fn load_present_does_nothing() {
        let mut seen = Observed::default();
        seen.local.insert("l/solo:t2".into(), "id".into());
        seen.local.insert("l/solo:latest".into(), "id".into());
        let jobs = plan(&targets(), &[2], &seen, opts(Mode::Load));
        assert_eq!(summary(&jobs), vec![("solo".into(), vec![], vec![], true)]);
        assert_eq!(jobs[0].why, "present");
    }

    #[test]
    fn load_missing_pulls_else_builds_after_its_base() {
        let jobs = plan(&targets(), &[1], &Observed::default(), opts(Mode::Load));
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
        let jobs = plan(&targets(), &[2], &Observed::default(), o);
        assert_eq!(summary(&jobs), vec![("solo".into(), vec![Step::Missing], vec![], true)]);
    }

    #[test]
    fn push_skips_what_the_registry_has_and_loads_bases_of_builds() {
        let mut seen = Observed::default();
        seen.remote.insert(0, true);
        seen.remote.insert(1, false);
        let jobs = plan(&targets(), &[0, 1], &seen, opts(Mode::Push));
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
        seen.remote.insert(2, true);
        let o = Options { push_latest: true, ..opts(Mode::Push) };
        let jobs = plan(&targets(), &[2], &seen, o);
        assert_eq!(summary(&jobs), vec![("solo".into(), vec![Step::PushLatest], vec![], true)]);
    }

    #[test]
    fn push_names_a_locally_present_image_before_pushing() {
        let mut seen = Observed::default();
        seen.remote.insert(2, false);
        seen.local.insert("l/solo:t2".into(), "id".into());
        let jobs = plan(&targets(), &[2], &seen, opts(Mode::Push));
        assert_eq!(jobs[0].steps, vec![Step::Push { from: Some("l/solo:t2".into()) }]);
    }

    #[test]
    fn test_mode_builds_only_what_the_registry_lacks() {
        let mut seen = Observed::default();
        seen.remote.insert(0, true);
        seen.remote.insert(2, false);
        let jobs = plan(&targets(), &[0, 2], &seen, opts(Mode::Test));
        assert_eq!(
            summary(&jobs),
            vec![("base".into(), vec![], vec![], true), ("solo".into(), vec![Step::Build], vec![], true)]
        );
    }

    #[test]
    fn tag_needs_the_remote_named_image() {
        let mut seen = Observed::default();
        seen.local.insert("r/solo_x86_64:t2".into(), "id".into());
        let jobs = plan(&targets(), &[0, 2], &seen, opts(Mode::Tag));
        assert_eq!(
            summary(&jobs),
            vec![
                ("base".into(), vec![Step::Missing], vec![], true),
                ("solo".into(), vec![Step::TagLocal { from: "r/solo_x86_64:t2".into() }], vec![], true),
            ]
        );
    }
}
