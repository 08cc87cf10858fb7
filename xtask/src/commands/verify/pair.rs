//! The pair of builds: an image built twice from nothing, each build named
//! for the verification alone (`<LOCAL_IMAGE_PREFIX>/<path>_verify:<pid>-1`
//! and `-2`: never one of the image's own names, which no directory name can
//! give, since image directories hold no `_`), each saved and summarised as
//! it streams (the first while the second builds) and then removed,
//! whatever happens. A run killed before it removed them leaves names that
//! hold its process ID: the next run removes them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::archive::{summarize, Summary};
use crate::engine::{BuildCache, BuildSpec, Built, Engine, EngineCli};

/// What the repository of a verification build's name ends with.
const SUFFIX: &str = "_verify";

/// What two builds made.
pub enum Pair {
    /// The same image, to the byte: the same ID.
    Identical,
    /// Two images, each as the engine saved it.
    Two(Box<(Summary, Summary)>),
}

/// The names of the two builds of the image with local repository `local`
/// (`<LOCAL_IMAGE_PREFIX>/<path>`), this run's.
pub fn names(local: &str) -> [String; 2] {
    let pid = std::process::id();
    [format!("{local}{SUFFIX}:{pid}-1"), format!("{local}{SUFFIX}:{pid}-2")]
}

/// Builds `spec` twice without any cache, each build's output appended to
/// `log`, and summarises both images. The first is named and read while the
/// second builds, and removed while the second is read.
pub fn build_twice(engine: &EngineCli, spec: &BuildSpec<'_>, names: &[String; 2], log: &Path) -> Result<Pair> {
    let cleanup = engine.for_cleanup();
    let cache = BuildCache { none: true, from: None, to: None };
    let first = build(engine, spec, &cache, log, "first")?;
    // The first build keeps its name until the second is built: podman
    // shares a layer between two images of the same content, and removing
    // the first while the second commits that layer fails the commit
    // ("layer not known").
    let mut made_first = Made { engine: &cleanup, names: Vec::new() };
    engine.tag(&first.id, &names[0])?;
    made_first.names.push(names[0].clone());
    std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            engine.save(&names[0], summarize).with_context(|| format!("cannot read the first build, {}", names[0]))
        });
        let second = build(engine, spec, &cache, log, "second");
        let first_summary = reading.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reading the first build panicked")));
        let second = second?;
        // The second is committed: the first goes now, while the second is read.
        scope.spawn(move || drop(made_first));
        let mut made = Made { engine: &cleanup, names: Vec::new() };
        engine.tag(&second.id, &names[1])?;
        made.names.push(names[1].clone());
        if second.id == first.id {
            return Ok(Pair::Identical);
        }
        let first_summary = first_summary?;
        let second_summary =
            engine.save(&names[1], summarize).with_context(|| format!("cannot read the second build, {}", names[1]))?;
        Ok(Pair::Two(Box::new((first_summary, second_summary))))
    })
}

/// One build from nothing, headed in the log by which it is.
fn build(engine: &EngineCli, spec: &BuildSpec<'_>, cache: &BuildCache, log: &Path, which: &str) -> Result<Built> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write log {}", log.display()))?;
    writeln!(file, "## verify: the {which} build").with_context(|| format!("cannot write log {}", log.display()))?;
    engine.build(spec, cache, log).with_context(|| format!("the {which} build"))
}

/// The names a verification gave a build, removed once it is read (or
/// failed), by an engine an interrupt does not stop.
struct Made<'e> {
    engine: &'e EngineCli,
    names: Vec<String>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let refused = match self.engine.remove_names(&self.names) {
            Ok(removed) => removed.refused.join("; "),
            Err(e) => format!("{e:#}"),
        };
        if !refused.is_empty() {
            eprintln!("warning: cannot remove the verification images {}: {refused}", self.names.join(", "));
        }
    }
}

/// The verification names, among those the engine lists, that runs which
/// are over left behind (killed before they removed them).
pub fn left_behind(listed: &[(String, String)], local_prefix: &str) -> Vec<String> {
    let under = format!("{local_prefix}/");
    listed
        .iter()
        .map(|(name, _)| name)
        .filter(|name| {
            // podman keeps a name without a registry domain under `localhost/`.
            let plain = if name.starts_with(&under) { name.as_str() } else { name.trim_start_matches("localhost/") };
            let Some((repository, tag)) = plain.strip_prefix(&under).and_then(|rest| rest.rsplit_once(':')) else {
                return false;
            };
            let pid = tag.strip_suffix("-1").or_else(|| tag.strip_suffix("-2")).and_then(|p| p.parse::<i32>().ok());
            repository.ends_with(SUFFIX) && pid.is_some_and(|pid| !alive(pid))
        })
        .cloned()
        .collect()
}

/// Whether process `pid` is still running.
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let asked = unsafe { libc::kill(pid, 0) };
    asked == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_this_run_alone() {
        let pid = std::process::id();
        assert_eq!(
            names("x.example/a/b"),
            [format!("x.example/a/b_verify:{pid}-1"), format!("x.example/a/b_verify:{pid}-2")]
        );
    }

    #[test]
    fn what_killed_runs_left_behind() {
        // No process has so high an ID: that run is over.
        let (over, me) = (999_999_999, std::process::id());
        let listed: Vec<(String, String)> = [
            format!("x.example/a_verify:{over}-1"),
            format!("localhost/local/b/c_verify:{over}-2"),
            format!("x.example/a_verify:{me}-1"),
            format!("x.example/a:{over}-1"),
            "x.example/a_verify:latest".to_string(),
            format!("other.example/a_verify:{over}-1"),
            format!("x.example/a_verify:{over}-3"),
        ]
        .into_iter()
        .map(|n| (n, "sha256:1".to_string()))
        .collect();
        assert_eq!(left_behind(&listed, "x.example"), [format!("x.example/a_verify:{over}-1")]);
        assert_eq!(left_behind(&listed, "local"), [format!("localhost/local/b/c_verify:{over}-2")]);
    }
}
