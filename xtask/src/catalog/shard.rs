//! Sharding: splitting the `*-all-*` commands' images across N CI machines so
//! that together they cover each image exactly once, with similar work each.
//!
//! Images built `FROM` one another stay on one shard (so no machine waits for
//! another's base), and each such family weighs what its build contexts
//! hold: bytes of files, plus a fixed cost per image for the engine's own
//! overhead. Families go, heaviest first (ties by name), to the shard with the
//! least weight so far (ties to the lowest number). Every machine computes the
//! same split from the same tree.
//!
//! `--shard auto` is the shard of the CI's parallel job, from the variables
//! the CI sets ([`PARALLEL_JOB_VARIABLES`]).

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

use crate::catalog::discovery::Catalog;
use crate::catalog::tagging;
use crate::config::Settings;
use crate::model::ImageIndex;

/// A fixed cost per image, in bytes-equivalent: a build or pull of an empty
/// image still costs the engine about as much as hashing this much.
pub const IMAGE_COST: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Shard> {
        let parsed = s.split_once('/').and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count >= 1 && (1..=count).contains(&index) => Ok(Shard { index, count }),
            _ => bail!("invalid shard `{s}`: use K/N with 1 <= K <= N, e.g. 2/4"),
        }
    }
}

/// The variables a CI's parallel job says which one it is by: its index,
/// the job count, and the index of the first job.
pub const PARALLEL_JOB_VARIABLES: [(&str, &str, usize); 3] = [
    ("BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),
    ("CI_NODE_INDEX", "CI_NODE_TOTAL", 1),
    // gVisor's pipeline.
    ("PARTITION", "TOTAL_PARTITIONS", 1),
];

impl Shard {
    /// `--shard auto`: the shard of this CI parallel job, from
    /// [`PARALLEL_JOB_VARIABLES`]; `var` reads a variable (empty is unset).
    /// Several CIs' variables must give one shard. The errors say what is
    /// wrong with the variables; the caller says they were for `auto`.
    pub fn of_parallel_job(var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut found: Option<(Shard, String)> = None;
        for (index_name, count_name, first) in PARALLEL_JOB_VARIABLES {
            let (index, count) = match (var(index_name), var(count_name)) {
                (None, None) => continue,
                (Some(index), Some(count)) => (index, count),
                (Some(_), None) => {
                    bail!("{index_name} is set but not {count_name}: set both, or give the shard as K/N")
                }
                (None, Some(_)) => {
                    bail!("{count_name} is set but not {index_name}: set both, or give the shard as K/N")
                }
            };
            let said = format!("{index_name}={index} with {count_name}={count}");
            let numbers = index.trim().parse::<usize>().ok().zip(count.trim().parse::<usize>().ok());
            let shard = match numbers {
                Some((index, count)) if count >= 1 && (first..first + count).contains(&index) => {
                    Shard { index: index - first + 1, count }
                }
                _ => bail!(
                    "{said} is no job of a parallel run ({index_name} counts from {first}): \
                     fix them, or give the shard as K/N"
                ),
            };
            match &found {
                Some((other, by)) if *other != shard => bail!(
                    "{by} (shard {}/{}) and {said} (shard {}/{}) disagree: unset one, or give the \
                     shard as K/N",
                    other.index,
                    other.count,
                    shard.index,
                    shard.count
                ),
                Some(_) => {}
                None => found = Some((shard, said)),
            }
        }
        found.map(|(shard, _)| shard).ok_or_else(|| {
            let names: Vec<String> = PARALLEL_JOB_VARIABLES.iter().map(|(i, n, _)| format!("{i}/{n}")).collect();
            anyhow!("this is no CI parallel job: none of {} is set; give the shard as K/N", names.join(", "))
        })
    }
}

/// An image as the splitter sees it.
pub struct Item<'a> {
    pub name: &'a str,
    pub weight: u64,
    /// Names of the images it is built `FROM`.
    pub bases: Vec<&'a str>,
}

/// The requested images (indexes into the catalog) that fall to one shard,
/// in the catalog's order: what the `*-all-*` commands and the listing
/// commands work on with `--shard K/N`.
pub fn select(
    catalog: &Catalog,
    settings: &Settings,
    requested: &[ImageIndex],
    shard: Shard,
) -> Result<Vec<ImageIndex>> {
    let mut bases = HashMap::new();
    for &i in requested {
        bases.insert(i, tagging::local_bases(catalog, settings, i)?.to_vec());
    }
    let items: Vec<Item> = requested
        .iter()
        .map(|&i| Item {
            name: &catalog[i].name,
            weight: catalog.context_bytes(i),
            bases: bases[&i].iter().map(|&b| catalog[b].name.as_str()).collect(),
        })
        .collect();
    let mine = split(&items, shard.count).swap_remove(shard.index - 1);
    Ok(mine.iter().filter_map(|name| catalog.index_of(name)).collect())
}

/// The names each shard gets, shard 1 first, each list sorted.
pub fn split(items: &[Item], count: usize) -> Vec<Vec<String>> {
    // Families: images linked by FROM, found with a union-find over names.
    let index: HashMap<&str, usize> = items.iter().enumerate().map(|(i, it)| (it.name, i)).collect();
    let mut parent: Vec<usize> = (0..items.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, item) in items.iter().enumerate() {
        for base in &item.bases {
            if let Some(&b) = index.get(base) {
                let (ri, rb) = (find(&mut parent, i), find(&mut parent, b));
                parent[ri.max(rb)] = ri.min(rb);
            }
        }
    }
    let mut families: HashMap<usize, (u64, Vec<&str>)> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let root = find(&mut parent, i);
        let family = families.entry(root).or_default();
        family.0 += item.weight + IMAGE_COST;
        family.1.push(item.name);
    }
    let mut families: Vec<(u64, Vec<&str>)> = families.into_values().collect();
    for f in &mut families {
        f.1.sort_unstable();
    }
    families.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1[0].cmp(b.1[0])));

    let mut shards: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); count.max(1)];
    for (weight, names) in families {
        let lightest = (0..shards.len()).min_by_key(|&s| (shards[s].0, s)).expect("at least one shard");
        shards[lightest].0 += weight;
        shards[lightest].1.extend(names.iter().map(|n| n.to_string()));
    }
    shards
        .into_iter()
        .map(|(_, mut names)| {
            names.sort_unstable();
            names
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<(String, u64, Vec<String>)> {
        (0..n)
            .map(|i| {
                let bases = if i % 7 == 3 { vec![format!("img{}", i - 1)] } else { vec![] };
                (format!("img{i}"), ((i * 7919) % 13) as u64 * 300_000, bases)
            })
            .collect()
    }

    #[test]
    fn shards_are_disjoint_cover_everything_and_keep_families_together() {
        let raw = items(103);
        let list: Vec<Item> = raw
            .iter()
            .map(|(n, w, b)| Item { name: n, weight: *w, bases: b.iter().map(String::as_str).collect() })
            .collect();
        for count in [1, 2, 3, 4, 7, 16, 200] {
            let shards = split(&list, count);
            assert_eq!(shards.len(), count);
            let mut all: Vec<String> = shards.iter().flatten().cloned().collect();
            let total = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), total, "{count} shards overlap");
            let mut want: Vec<String> = raw.iter().map(|r| r.0.clone()).collect();
            want.sort_unstable();
            assert_eq!(all, want, "{count} shards do not cover every image");
            for (name, _, bases) in &raw {
                for base in bases {
                    let home = |n: &str| shards.iter().position(|s| s.iter().any(|x| x == n));
                    assert_eq!(home(name), home(base), "{name} and its base {base} split apart");
                }
            }
            assert_eq!(split(&list, count), shards, "the split is not deterministic");
        }
    }

    #[test]
    fn shards_are_balanced_by_weight() {
        let raw = items(100);
        let list: Vec<Item> = raw.iter().map(|(n, w, _)| Item { name: n, weight: *w, bases: vec![] }).collect();
        let weight: HashMap<&str, u64> = raw.iter().map(|(n, w, _)| (n.as_str(), *w + IMAGE_COST)).collect();
        let shards = split(&list, 4);
        let loads: Vec<u64> = shards.iter().map(|s| s.iter().map(|n| weight[n.as_str()]).sum()).collect();
        let heaviest = raw.iter().map(|r| r.1 + IMAGE_COST).max().unwrap();
        let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(hi - lo <= heaviest, "loads {loads:?} differ by more than one image");
    }

    fn parallel_job(vars: &[(&str, &str)]) -> Result<Shard> {
        Shard::of_parallel_job(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    /// `--shard auto` reads the shard from the variables of Buildkite's,
    /// GitLab's or gVisor's parallel jobs.
    #[test]
    fn auto_is_the_parallel_jobs_shard() {
        let cases: &[(&[(&str, &str)], Shard)] = &[
            (&[("BUILDKITE_PARALLEL_JOB", "0"), ("BUILDKITE_PARALLEL_JOB_COUNT", "4")], Shard { index: 1, count: 4 }),
            (&[("BUILDKITE_PARALLEL_JOB", "3"), ("BUILDKITE_PARALLEL_JOB_COUNT", "4")], Shard { index: 4, count: 4 }),
            (&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "3")], Shard { index: 1, count: 3 }),
            (&[("CI_NODE_INDEX", "3"), ("CI_NODE_TOTAL", "3")], Shard { index: 3, count: 3 }),
            (&[("PARTITION", "2"), ("TOTAL_PARTITIONS", "5")], Shard { index: 2, count: 5 }),
            // gVisor's pipeline sets its variables from Buildkite's.
            (
                &[
                    ("BUILDKITE_PARALLEL_JOB", "1"),
                    ("BUILDKITE_PARALLEL_JOB_COUNT", "2"),
                    ("PARTITION", "2"),
                    ("TOTAL_PARTITIONS", "2"),
                ],
                Shard { index: 2, count: 2 },
            ),
            // Empty is unset.
            (
                &[("CI_NODE_INDEX", ""), ("CI_NODE_TOTAL", ""), ("PARTITION", "1"), ("TOTAL_PARTITIONS", "1")],
                Shard { index: 1, count: 1 },
            ),
        ];
        for (vars, shard) in cases {
            assert_eq!(parallel_job(vars).unwrap(), *shard, "{vars:?}");
        }
    }

    /// Outside a parallel job, or with variables that give no one shard,
    /// `--shard auto` is an error that says which.
    #[test]
    fn auto_needs_one_consistent_parallel_job() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[],
                "this is no CI parallel job: none of BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT, \
                 CI_NODE_INDEX/CI_NODE_TOTAL, PARTITION/TOTAL_PARTITIONS is set; give the shard as K/N",
            ),
            (
                &[("CI_NODE_INDEX", "2")],
                "CI_NODE_INDEX is set but not CI_NODE_TOTAL: set both, or give the shard as K/N",
            ),
            (
                &[("TOTAL_PARTITIONS", "4")],
                "TOTAL_PARTITIONS is set but not PARTITION: set both, or give the shard as K/N",
            ),
            (
                &[("BUILDKITE_PARALLEL_JOB", "4"), ("BUILDKITE_PARALLEL_JOB_COUNT", "4")],
                "BUILDKITE_PARALLEL_JOB=4 with BUILDKITE_PARALLEL_JOB_COUNT=4 is no job of a parallel run \
                 (BUILDKITE_PARALLEL_JOB counts from 0): fix them, or give the shard as K/N",
            ),
            (
                &[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "2")],
                "CI_NODE_INDEX=0 with CI_NODE_TOTAL=2 is no job of a parallel run (CI_NODE_INDEX counts \
                 from 1): fix them, or give the shard as K/N",
            ),
            (
                &[("PARTITION", "one"), ("TOTAL_PARTITIONS", "2")],
                "PARTITION=one with TOTAL_PARTITIONS=2 is no job of a parallel run (PARTITION counts \
                 from 1): fix them, or give the shard as K/N",
            ),
            (
                &[("PARTITION", "1"), ("TOTAL_PARTITIONS", "0")],
                "PARTITION=1 with TOTAL_PARTITIONS=0 is no job of a parallel run (PARTITION counts \
                 from 1): fix them, or give the shard as K/N",
            ),
            (
                &[
                    ("BUILDKITE_PARALLEL_JOB", "0"),
                    ("BUILDKITE_PARALLEL_JOB_COUNT", "2"),
                    ("CI_NODE_INDEX", "2"),
                    ("CI_NODE_TOTAL", "2"),
                ],
                "BUILDKITE_PARALLEL_JOB=0 with BUILDKITE_PARALLEL_JOB_COUNT=2 (shard 1/2) and \
                 CI_NODE_INDEX=2 with CI_NODE_TOTAL=2 (shard 2/2) disagree: unset one, or give the shard as K/N",
            ),
        ];
        for (vars, message) in cases {
            assert_eq!(parallel_job(vars).unwrap_err().to_string(), *message, "{vars:?}");
        }
    }

    #[test]
    fn parse() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
        for bad in ["0/4", "5/4", "1/0", "a/b", "3", ""] {
            assert_eq!(
                bad.parse::<Shard>().unwrap_err().to_string(),
                format!("invalid shard `{bad}`: use K/N with 1 <= K <= N, e.g. 2/4")
            );
        }
    }
}
