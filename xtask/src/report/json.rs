//! `--json` for machines: the documents of the engine commands, and how
//! every document is printed (on stdout, with its schema version).

use std::io::Write;

use crate::model::{Arch, ImageInfo, JobIndex, Outcome};
use crate::planning::{CacheSource, Job, Mode, Step};

/// `--json` of an engine command: what happened to each image.
#[derive(serde::Serialize)]
pub struct OutcomeDocument<'a> {
    #[serde(rename = "command")]
    pub mode: Mode,
    pub arch: Arch,
    /// What builds ran on, when the run could build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<&'static str>,
    pub images: &'a [Outcome],
}

/// `--dry-run --json`: what would happen to each image, and why.
#[derive(serde::Serialize)]
pub struct PlanDocument<'a> {
    #[serde(rename = "command")]
    pub mode: Mode,
    pub arch: Arch,
    pub plan: Vec<PlanEntry<'a>>,
}

#[derive(serde::Serialize)]
pub struct PlanEntry<'a> {
    #[serde(flatten)]
    pub image: ImageInfo,
    pub steps: &'a [Step],
    pub why: String,
    /// Images (by name) that must be done first: those it surely builds on.
    pub after: Vec<&'a str>,
    /// Images (by name) that must be done before the build a failed pull
    /// falls back to: those it is built on, brought only then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub build_after: Vec<&'a str>,
    /// For a base brought only for a build that may not happen: the images
    /// whose build (a failed pull's) it is brought for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub only_if_built: Vec<&'a str>,
    /// False for a base brought in only because a requested image is built on it.
    pub requested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'a CacheSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_was: Option<&'a str>,
}

impl<'a> PlanDocument<'a> {
    pub fn new(mode: Mode, arch: Arch, jobs: &'a [Job], skipped: &'a [Outcome]) -> PlanDocument<'a> {
        let names = |js: &[JobIndex]| -> Vec<&'a str> { js.iter().map(|&b| jobs[b].name.as_str()).collect() };
        let mut plan: Vec<PlanEntry<'a>> = jobs
            .iter()
            .map(|j| PlanEntry {
                image: j.info(),
                steps: &j.steps,
                why: j.why.clone(),
                after: names(&j.after),
                build_after: names(&j.build_after),
                only_if_built: names(&j.only_if_built),
                requested: j.requested,
                cache: j.cache.as_ref(),
                latest_was: j.latest_was.as_deref(),
            })
            .collect();
        plan.extend(skipped.iter().map(|o| PlanEntry {
            image: o.image.clone(),
            steps: &[],
            why: o.reason.clone().unwrap_or_default(),
            after: vec![],
            build_after: vec![],
            only_if_built: vec![],
            requested: true,
            cache: None,
            latest_was: None,
        }));
        plan.sort_by(|a, b| a.image.name.cmp(&b.image.name));
        PlanDocument { mode, arch, plan }
    }
}

/// The version of the JSON documents' shape, at the top of each.
pub const SCHEMA: u32 = 1;

/// Prints a JSON document: `{"schema": 1, <the fields of value>}`; `value`
/// serializes as an object.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Document<'a, T> {
        schema: u32,
        #[serde(flatten)]
        body: &'a T,
    }
    // Buffered: stdout alone is flushed at every line, and a list of
    // thousands of images has tens of thousands.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, &Document { schema: SCHEMA, body: value })?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Prints a JSON document whose one field besides the schema is the list
/// `items` under `key`: `{"schema": 1, "images": […]}`.
pub fn print_list<T: serde::Serialize>(key: &str, items: &[T]) -> anyhow::Result<()> {
    print_json(&std::collections::BTreeMap::from([(key, items)]))
}
