//! Every image's tag for several architectures at once: the catalogs of one
//! images root (one per architecture), each image directory read once
//! whatever the number of architectures it is an image for. Where the
//! directories are read from, and what is remembered between calls, is the
//! caller's: the images root on disk ([`super::tagging::tags_by_arch`]) or a
//! git revision (`crate::git::Snapshot::tags`).

use std::collections::HashMap;

use anyhow::Result;
use rayon::prelude::*;

use crate::catalog::discovery::Catalog;
use crate::catalog::tagging::{content_tag, resolve_bases, Own, Resolved};
use crate::config::TagScheme;
use crate::model::{Arch, ImageIndex};

/// An image directory's own inputs for each architecture asked for, each
/// or why it cannot be read.
pub type OwnByArch = Vec<(Arch, Result<Own, String>)>;

/// Every image's tag in each catalog, or why it has none.
pub struct Tags {
    /// One map per catalog, in the order given.
    pub tags: Vec<HashMap<ImageIndex, Result<String, String>>>,
    /// The failure met first, which the others may follow from: reading an
    /// image directory (for any catalog), then, catalog by catalog, finding
    /// the bases of its images and then computing their tags.
    pub first_failure: Option<String>,
}

/// Every image's tag in each catalog. `gvisor` gives the legacy tag of an
/// image directory, `own` its own inputs for each (architecture,
/// Dockerfile) asked for; each is asked about every directory once.
pub fn tags(
    scheme: TagScheme,
    catalogs: &[&Catalog],
    gvisor: impl Fn(&str) -> Result<String> + Sync,
    own: impl Fn(&str, &[(Arch, &str)]) -> Result<OwnByArch> + Sync,
) -> Tags {
    let mut dirs: Vec<&str> = catalogs.iter().flat_map(|c| c.images.iter().map(|i| i.path.as_str())).collect();
    dirs.sort_unstable();
    dirs.dedup();
    let mut first_failure = None;
    let tags = match scheme {
        TagScheme::Gvisor => {
            let by_dir: HashMap<&str, Result<String, String>> =
                dirs.par_iter().map(|&d| (d, gvisor(d).map_err(|e| format!("{e:#}")))).collect();
            for e in dirs.iter().filter_map(|d| by_dir[d].as_ref().err()) {
                noted(&mut first_failure, e.clone());
            }
            catalogs
                .iter()
                .map(|c| c.indexed().map(|(i, image)| (i, by_dir[image.path.as_str()].clone())).collect())
                .collect()
        }
        TagScheme::Content => {
            let index: Vec<HashMap<&str, ImageIndex>> =
                catalogs.iter().map(|c| c.indexed().map(|(i, image)| (image.path.as_str(), i)).collect()).collect();
            let by_dir: HashMap<&str, Result<OwnByArch, String>> = dirs
                .par_iter()
                .map(|&d| {
                    let wants: Vec<(Arch, &str)> = catalogs
                        .iter()
                        .zip(&index)
                        .filter_map(|(c, idx)| idx.get(d).map(|&i| (c.arch, c[i].dockerfile.as_str())))
                        .collect();
                    (d, own(d, &wants).map_err(|e| format!("{e:#}")))
                })
                .collect();
            for d in &dirs {
                let unreadable: Vec<&String> = match &by_dir[d] {
                    Ok(all) => all.iter().filter_map(|(_, o)| o.as_ref().err()).collect(),
                    Err(e) => vec![e],
                };
                for e in unreadable {
                    noted(&mut first_failure, e.clone());
                }
            }
            catalogs.iter().map(|c| content_tags(c, &by_dir, &mut first_failure)).collect()
        }
    };
    Tags { tags, first_failure }
}

/// The tags of one catalog's images from the own inputs of their directories.
fn content_tags(
    c: &Catalog,
    by_dir: &HashMap<&str, Result<OwnByArch, String>>,
    first_failure: &mut Option<String>,
) -> HashMap<ImageIndex, Result<String, String>> {
    let mut resolved: HashMap<ImageIndex, Resolved> = HashMap::new();
    let mut unread: HashMap<ImageIndex, String> = HashMap::new();
    for (i, image) in c.indexed() {
        let mine = by_dir[image.path.as_str()]
            .as_ref()
            .map_err(String::clone)
            .and_then(|all| all.iter().find(|(a, _)| *a == c.arch).expect("asked for").1.clone())
            .and_then(|o| {
                let bases = resolve_bases(c, image, &o.bases).map_err(|e| noted(first_failure, format!("{e:#}")))?;
                c.knows_bases(i, &bases);
                Ok(Resolved { digest: o.digest, bases })
            });
        match mine {
            Ok(r) => {
                resolved.insert(i, r);
            }
            Err(e) => {
                unread.insert(i, e);
            }
        }
    }
    let mut tags = HashMap::new();
    c.indices()
        .map(|i| {
            let tag = match unread.get(&i) {
                Some(e) => Err(e.clone()),
                None => content_tag(c, i, &resolved, &mut tags, &mut Vec::new())
                    .map_err(|e| noted(first_failure, format!("{e:#}"))),
            };
            (i, tag)
        })
        .collect()
}

/// A failure, noted if it is the first.
fn noted(first_failure: &mut Option<String>, e: String) -> String {
    first_failure.get_or_insert_with(|| e.clone());
    e
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use anyhow::bail;

    use super::*;
    use crate::catalog::discovery::{catalog_of, Dockerfiles};

    /// The catalogs of images root `/r` holding these directories, each with
    /// a plain Dockerfile, for every architecture.
    fn catalogs(dirs: &[&str]) -> Vec<Catalog> {
        let dirs: Vec<(PathBuf, Dockerfiles)> =
            dirs.iter().map(|d| (PathBuf::from(d), Dockerfiles { plain: true, per_arch: [false; 2] })).collect();
        Arch::ALL.iter().map(|a| catalog_of(Path::new("/r"), *a, dirs.clone()).unwrap()).collect()
    }

    /// Own inputs whose digest names the directory and the architecture;
    /// `bases` gives the image paths a directory is built `FROM`.
    fn own_of(dir: &str, arch: Arch, bases: &[&str]) -> Own {
        let mut digest = [0; 32];
        digest[0] = dir.as_bytes()[0];
        digest[1] = arch as u8;
        Own { digest, bases: bases.iter().map(|b| (format!("gvisor.dev/images/{b}"), b.to_string())).collect() }
    }

    fn by_name(
        c: &Catalog,
        tags: &HashMap<ImageIndex, Result<String, String>>,
    ) -> Vec<(String, Result<String, String>)> {
        c.indexed().map(|(i, image)| (image.name.clone(), tags[&i].clone())).collect()
    }

    #[test]
    fn each_directory_is_asked_about_once_for_every_architecture() {
        let catalogs = catalogs(&["a", "b"]);
        let refs: Vec<&Catalog> = catalogs.iter().collect();
        let asked = Mutex::new(Vec::new());
        let got = tags(
            TagScheme::Content,
            &refs,
            |_| unreachable!("the content scheme"),
            |dir, wants| {
                asked.lock().unwrap().push((dir.to_string(), wants.len()));
                let bases: &[&str] = if dir == "b" { &["a"] } else { &[] };
                Ok(wants.iter().map(|(arch, _)| (*arch, Ok(own_of(dir, *arch, bases)))).collect())
            },
        );
        let mut asked = asked.into_inner().unwrap();
        asked.sort();
        assert_eq!(asked, [("a".to_string(), 2), ("b".to_string(), 2)]);
        assert_eq!(got.first_failure, None);
        let per_arch: Vec<Vec<String>> =
            got.tags.iter().map(|t| (0..2).map(|i| t[&ImageIndex(i)].clone().unwrap()).collect()).collect();
        assert_ne!(per_arch[0], per_arch[1], "each architecture's inputs make its tags");
        assert_ne!(per_arch[0][0], per_arch[0][1]);
        // The bases found are told to the catalog.
        assert_eq!(catalogs[0].bases(ImageIndex(1), || bail!("told already")).unwrap(), [ImageIndex(0)]);

        let gvisor = tags(TagScheme::Gvisor, &refs, |dir| Ok(format!("tag-{dir}")), |_, _| unreachable!("gvisor"));
        for (c, t) in catalogs.iter().zip(&gvisor.tags) {
            assert_eq!(by_name(c, t), [("a".into(), Ok("tag-a".into())), ("b".into(), Ok("tag-b".into()))]);
        }
    }

    /// Every image that cannot be tagged says why; the failure met first is
    /// a directory that cannot be read, before the bases of an image listed
    /// earlier, and before what follows from either.
    #[test]
    fn failures_are_per_image_and_the_first_is_a_cause() {
        let catalogs = catalogs(&["a", "b", "c", "d"]);
        let refs: Vec<&Catalog> = catalogs.iter().take(1).collect();
        let got = tags(
            TagScheme::Content,
            &refs,
            |_| unreachable!("the content scheme"),
            |dir, wants| match dir {
                "c" => bail!("cannot read /r/c"),
                _ => {
                    let bases: &[&str] = match dir {
                        "a" => &["gone"],
                        "d" => &["c"],
                        _ => &[],
                    };
                    Ok(wants.iter().map(|(arch, _)| (*arch, Ok(own_of(dir, *arch, bases)))).collect())
                }
            },
        );
        let arch = Arch::ALL[0];
        let want_a = format!(
            "a is built FROM gvisor.dev/images/gone, which is not an image for {arch}: add /r/gone or fix the FROM line"
        );
        let got_by_name = by_name(&catalogs[0], &got.tags[0]);
        assert_eq!(got_by_name[0], ("a".into(), Err(want_a)));
        assert!(got_by_name[1].1.is_ok());
        assert_eq!(got_by_name[2], ("c".into(), Err("cannot read /r/c".into())));
        assert_eq!(got_by_name[3], ("d".into(), Err("the inputs of c could not be read".into())));
        assert_eq!(got.first_failure.as_deref(), Some("cannot read /r/c"));
    }
}
