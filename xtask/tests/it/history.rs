//! Tags at git revisions, computed from git's objects, against the tags of
//! a checkout of each revision: random histories of a small images root
//! (nested images, bases, per-architecture Dockerfiles, modes, symlinks in
//! and out of the images root, `.dockerignore`, awkward names, invalid
//! directories), both schemes, both architectures. No container engine is
//! needed; git is.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::git;
use xtask::catalog::discovery::{discover_lenient, Catalog};
use xtask::catalog::tagging;
use xtask::config::{FileConfig, Overrides, Settings};
use xtask::git::history::History;
use xtask::model::Arch;
use xtask::model::ImageIndex;

const LOCAL: &str = "local.test/p";

/// Paths under the work tree's top that edits pick from: the images root is
/// `images/`, and `shared/` lies beside it.
const FILES: &[&str] = &[
    "images/a/Dockerfile",
    "images/a/f",
    "images/a/d/g",
    "images/a/d.txt",
    "images/a/.dockerignore",
    "images/a/sub/Dockerfile",
    "images/a/sub/x.log",
    "images/b/Dockerfile",
    "images/b/sp ace",
    "images/b/back\\slash",
    "images/c/Dockerfile",
    "images/c/Dockerfile.x86_64",
    "images/c/Dockerfile.aarch64",
    "images/c/run.sh",
    "images/grp/e/Dockerfile",
    "images/grp/e/f",
    "images/bad_name/Dockerfile",
    "shared/Dockerfile",
    "shared/ignore",
];

const CONTENTS: &[&str] = &[
    "FROM scratch\nCOPY . /\n",
    "FROM local.test/p/c\n",
    "FROM local.test/p/a:latest AS a\nFROM scratch\n",
    "FROM local.test/p/grp/e\n",
    "FROM local.test/p/missing\n",
    "*.log\n",
    "d\n!d/g\n",
    "a",
    "b",
];

/// Symlink targets, relative to the link's directory.
const TARGETS: &[&str] =
    &["f", "d", "../../shared/Dockerfile", "../../shared/ignore", "../b", "missing", "../c/run.sh"];

#[derive(Clone, Debug)]
enum Edit {
    Write(&'static str, &'static str),
    Delete(&'static str),
    Chmod(&'static str, bool),
    Symlink(&'static str, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = prop::sample::select(FILES);
    prop_oneof![
        6 => (path.clone(), prop::sample::select(CONTENTS)).prop_map(|(p, c)| Edit::Write(p, c)),
        2 => path.clone().prop_map(Edit::Delete),
        2 => (path.clone(), any::<bool>()).prop_map(|(p, x)| Edit::Chmod(p, x)),
        2 => (path, prop::sample::select(TARGETS)).prop_map(|(p, t)| Edit::Symlink(p, t)),
    ]
}

fn apply(top: &Path, edit: &Edit) {
    let remove = |path: &Path| {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }
    };
    // Every parent must be a directory: an edit never writes through a symlink.
    let parents_ok = |path: &Path| {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == top {
                return true;
            }
            if let Ok(meta) = fs::symlink_metadata(d) {
                if !meta.is_dir() {
                    return false;
                }
            }
            dir = d.parent();
        }
        true
    };
    match *edit {
        Edit::Write(p, content) => {
            let path = top.join(p);
            if !parents_ok(&path) {
                return;
            }
            remove(&path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
        }
        Edit::Delete(p) => {
            let path = top.join(p);
            if parents_ok(&path) {
                remove(&path);
            }
        }
        Edit::Chmod(p, exec) => {
            let path = top.join(p);
            if parents_ok(&path) && fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                fs::set_permissions(&path, fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).unwrap();
            }
        }
        Edit::Symlink(p, target) => {
            let path = top.join(p);
            // A link that leads outside the repository is refused from git's
            // objects on purpose (a checkout would read what is outside it),
            // so a checkout cannot be the reference for it: none is made.
            if !parents_ok(&path) || leads_outside(p, target) {
                return;
            }
            remove(&path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, &path).unwrap();
        }
    }
}
/// A checkout of `commit` into `dir`, by git's own checkout code.
/// Whether `target`, read from the directory of the link at `link`
/// (relative to the repository's top), names a place above the top.
fn leads_outside(link: &str, target: &str) -> bool {
    let mut depth = link.split('/').count() - 1;
    for part in target.split('/') {
        match part {
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
    }
    false
}

fn checkout(top: &Path, commit: &str, dir: &Path) {
    let index = dir.with_extension("index");
    let run = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(top).args(args).env("GIT_INDEX_FILE", &index).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["read-tree", commit]);
    run(&["checkout-index", "-a", "-f", &format!("--prefix={}/", dir.display())]);
    fs::remove_file(index).unwrap();
}

fn settings(root: &Path, scheme: &str, arch: Arch) -> Settings {
    let overrides = Overrides {
        images_dir: Some(root.to_path_buf()),
        arch: Some(arch),
        tag_scheme: Some(scheme.parse().unwrap()),
        local_image_prefix: Some(LOCAL.into()),
        build_args: Some("--build-arg X=1".into()),
        ..Overrides::default()
    };
    Settings::resolve(FileConfig::default(), overrides, root, root).unwrap()
}

/// What a catalog holds, less where its root is.
fn shape(c: &Catalog) -> (Vec<(String, String)>, Vec<String>, Vec<String>) {
    (
        c.images.iter().map(|i| (i.name.clone(), i.dockerfile.clone())).collect(),
        c.other_arch.iter().map(|i| i.name.clone()).collect(),
        c.invalid.iter().map(|i| i.path.clone()).collect(),
    )
}

/// Each image's tag in a checkout, or that it has none: one at a time, since
/// an image whose tag cannot be computed fails the whole listing.
fn checkout_tags(catalog: &Catalog, settings: &Settings) -> BTreeMap<String, Option<String>> {
    catalog
        .indexed()
        .map(|(i, image)| {
            let tag = tagging::tags(catalog, settings, &[i]).ok().map(|t| t[&i].clone());
            (image.name.clone(), tag)
        })
        .collect()
}

#[test]
fn tags_from_git_objects_are_the_tags_of_a_checkout() {
    const CASES: u32 = 24;
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let compared = std::cell::Cell::new(0usize);
    let with_tags = std::cell::Cell::new(0usize);
    let result = runner.run(&prop::collection::vec(prop::collection::vec(edit(), 1..10), 2..7), |commits| {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("repo");
        fs::create_dir_all(top.join("images/a")).unwrap();
        fs::create_dir_all(top.join("shared")).unwrap();
        fs::write(top.join("images/a/Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(top.join("shared/Dockerfile"), "FROM scratch\n").unwrap();
        git(&top, &["init", "-q"]);
        let mut made = Vec::new();
        for edits in std::iter::once(vec![]).chain(commits) {
            for e in &edits {
                apply(&top, e);
            }
            git(&top, &["add", "-A"]);
            git(&top, &["commit", "-q", "--allow-empty", "-m", "edit"]);
            made.push(git(&top, &["rev-parse", "HEAD"]).trim().to_string());
        }
        let root = top.join("images");
        for scheme in ["content", "gvisor"] {
            // One history for every revision, newest first, so that what is
            // remembered from one revision is used for another.
            let history = History::open(&root).unwrap();
            for commit in made.iter().rev() {
                let out = dir.path().join(format!("checkout-{commit}"));
                if !out.exists() {
                    checkout(&top, commit, &out);
                }
                let snapshot = history.at(&history.repo.commit(commit).unwrap()).unwrap();
                let catalogs: Vec<Catalog> = Arch::ALL.iter().map(|a| snapshot.catalog(*a).unwrap()).collect();
                let refs: Vec<&Catalog> = catalogs.iter().collect();
                let from_git = snapshot.tags(&settings(&root, scheme, Arch::X86_64), &refs);
                let images = out.join("images");
                for ((arch, catalog), git_tags) in Arch::ALL.iter().zip(&catalogs).zip(&from_git) {
                    let settings = settings(&images, scheme, *arch);
                    let on_disk = match discover_lenient(&images, *arch) {
                        Ok(c) => c,
                        Err(_) => {
                            prop_assert!(catalog.images.is_empty(), "{commit}: no images root in the checkout");
                            continue;
                        }
                    };
                    prop_assert_eq!(shape(&on_disk), shape(catalog), "catalog of {} for {}", commit, arch);
                    let want = checkout_tags(&on_disk, &settings);
                    let got: BTreeMap<String, Option<String>> =
                        catalog.indexed().map(|(i, image)| (image.name.clone(), git_tags[&i].clone().ok())).collect();
                    prop_assert_eq!(&got, &want, "{} tags of {} for {}", scheme, commit, arch);
                    compared.set(compared.get() + 1);
                    with_tags.set(with_tags.get() + want.values().filter(|t| t.is_some()).count());
                    // Every architecture at once, as prune computes them.
                    if want.values().all(Option::is_some) {
                        let both: Vec<Catalog> =
                            Arch::ALL.iter().map(|a| discover_lenient(&images, *a).unwrap()).collect();
                        let both_refs: Vec<&Catalog> = both.iter().collect();
                        let all = tagging::tags_by_arch(&settings, &both_refs);
                        if let Ok(all) = all {
                            let k = Arch::ALL.iter().position(|a| a == arch).unwrap();
                            let by_name: BTreeMap<String, Option<String>> = both[k]
                                .indexed()
                                .map(|(i, image)| (image.name.clone(), Some(all[k][&i].clone())))
                                .collect();
                            prop_assert_eq!(&by_name, &want, "tags_by_arch, {} of {} for {}", scheme, commit, arch);
                        }
                    }
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("{} catalogs compared, {} tags equal", compared.get(), with_tags.get());
    assert!(compared.get() >= 4 * CASES as usize * 2, "only {} catalogs compared", compared.get());
    assert!(with_tags.get() >= 200, "only {} tags compared", with_tags.get());
}

/// A Dockerfile linked from outside its image directory is refused, in a
/// checkout and from git's objects alike, with one message: what it reads
/// could change without the image's tree changing.
#[test]
fn a_dockerfile_linked_from_outside_is_refused_at_each_revision() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path();
    fs::create_dir_all(top.join("images/a")).unwrap();
    fs::create_dir_all(top.join("shared")).unwrap();
    symlink("../../shared/Dockerfile", top.join("images/a/Dockerfile")).unwrap();
    git(top, &["init", "-q"]);
    let root = top.join("images");
    let refused = format!(
        "{}/a/Dockerfile is a symlink to ../../shared/Dockerfile, outside its image directory: an image's Dockerfile \
         must be a file in it; put the file there instead",
        root.display()
    );
    let mut commits = Vec::new();
    for content in ["FROM scratch\n", "FROM scratch\nCOPY . /\n"] {
        fs::write(top.join("shared/Dockerfile"), content).unwrap();
        git(top, &["add", "-A"]);
        git(top, &["commit", "-q", "-m", "edit"]);
        let s = settings(&root, "content", Arch::X86_64);
        let now = discover_lenient(&root, Arch::X86_64).unwrap();
        let error = tagging::tags(&now, &s, &[ImageIndex(0)]).unwrap_err();
        assert_eq!(format!("{error:#}"), refused);
        commits.push(git(top, &["rev-parse", "HEAD"]).trim().to_string());
    }
    let history = History::open(&root).unwrap();
    let s = settings(&root, "content", Arch::X86_64);
    for commit in &commits {
        let snapshot = history.at(&history.repo.commit(commit).unwrap()).unwrap();
        let catalog = snapshot.catalog(Arch::X86_64).unwrap();
        let got = snapshot.tags(&s, &[&catalog]).pop().unwrap();
        assert_eq!(format!("{:#}", got[&ImageIndex(0)].as_ref().unwrap_err()), refused, "at {commit}");
    }
}

/// A link that leads outside the repository makes the image untaggable at
/// that revision: what it reads would be whatever a checkout has beside it.
#[test]
fn a_link_out_of_the_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("repo");
    fs::create_dir_all(top.join("images/a")).unwrap();
    fs::create_dir_all(top.join("shared")).unwrap();
    fs::write(top.join("images/a/Dockerfile"), "FROM scratch\n").unwrap();
    symlink("../../shared/ignore", top.join("images/a/.dockerignore")).unwrap();
    symlink("../../outside", top.join("shared/ignore")).unwrap();
    git(&top, &["init", "-q"]);
    git(&top, &["add", "-A"]);
    git(&top, &["commit", "-q", "-m", "links"]);
    let root = top.join("images");
    let history = History::open(&root).unwrap();
    let snapshot = history.at(&history.repo.commit("HEAD").unwrap()).unwrap();
    let catalog = snapshot.catalog(Arch::X86_64).unwrap();
    let got = snapshot.tags(&settings(&root, "content", Arch::X86_64), &[&catalog]).pop().unwrap();
    let error = format!("{:#}", got[&ImageIndex(0)].as_ref().unwrap_err());
    assert!(error.contains("leads outside the repository"), "{error}");
}
