//! Sharding: splitting the `*-all-*` commands' images across N CI machines so
//! that together they cover each image exactly once, with similar work each.
//!
//! Images built `FROM` one another stay on one shard (so no machine waits for
//! another's base), and each such family weighs what its build contexts
//! hold: bytes of files, plus a fixed cost per image for the engine's own
//! overhead. Families go, heaviest first (ties by name), to the shard with the
//! least weight so far (ties to the lowest number). Every machine computes the
//! same split from the same tree.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{bail, Result};

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
