//! Batches: several builds in one `docker buildx bake`, its definition
//! written from the builds, its output split back into each build's log.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::build::{built_digest, steps_reused};
use super::client::last_error_line;
use super::{BuildCache, BuildSpec, Built, Engine, EngineCli};

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
        // A text of its own (bases named by digest) goes in the definition.
        if let Some(text) = b.spec.text {
            target["dockerfile-inline"] = text.into();
        }
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

impl EngineCli {
    /// Builds `builds` with one `docker buildx bake`; see [`Engine::build_batch`].
    pub(super) fn bake(&self, builds: &[BatchBuild<'_>], work: &Path) -> Result<Vec<Built>> {
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
