//! Two checkouts of one workspace that share a target directory (worktrees,
//! a global `CARGO_TARGET_DIR`) each act on their own tree, whichever of them
//! built the binary last.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::clean_env;

/// The workspace's files that make `cargo xtask` work, copied to `to`,
/// with an images tree holding one image per name in `images`.
fn checkout(to: &Path, images: &[&str]) {
    let root = xtask::workspace_root();
    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "xtask/Cargo.toml", "xtask/images.toml"] {
        let target = to.join(file);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(root.join(file), &target).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let status = Command::new("cp").arg("-a").arg(root.join("xtask/src")).arg(to.join("xtask/src")).status().unwrap();
    assert!(status.success());
    for image in images {
        let dir = to.join("images").join(image);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
    }
}

/// `cargo xtask <args>` run from `dir`, with none of the settings'
/// variables inherited.
fn cargo_xtask(dir: &Path, target: &Path, args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    clean_env(&mut cmd);
    // What cargo sets for this test binary must not reach the inner cargo.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("CARGO_") && n != "CARGO_HOME") {
            cmd.env_remove(name);
        }
    }
    let out =
        cmd.current_dir(dir).env("CARGO_TARGET_DIR", target).args(["--offline", "xtask"]).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo xtask {args:?} in {}: {stderr}", dir.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn checkouts_sharing_a_target_directory_each_act_on_their_own_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, target): (PathBuf, PathBuf, PathBuf) =
        (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("shared-target"));
    checkout(&a, &["only-in-a", "both"]);
    checkout(&b, &["both", "only-in-b"]);
    let (in_a, in_b) = ("both\nonly-in-a\n", "both\nonly-in-b\n");
    // Each run may rebuild the binary over the other's, or find it fresh.
    assert_eq!(cargo_xtask(&a, &target, &["list-all-images"]), in_a);
    assert_eq!(cargo_xtask(&b, &target, &["list-all-images"]), in_b);
    assert_eq!(cargo_xtask(&a, &target, &["list-all-images"]), in_a);
    // From a directory inside the checkout too.
    assert_eq!(cargo_xtask(&b.join("images"), &target, &["list-all-images"]), in_b);
    // The binary last built, run by hand for the other checkout, as cargo
    // runs it: the checkout is the one cargo names, not the one it was built in.
    let binary = target.join("debug/xtask");
    let out = Command::new(&binary)
        .arg("list-all-images")
        .env("CARGO_MANIFEST_DIR", a.join("xtask"))
        .env_remove("IMAGES_DIR")
        .env_remove("IMAGES_CONFIG")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), in_a, "{}", String::from_utf8_lossy(&out.stderr));
}
