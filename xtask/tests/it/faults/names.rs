//! Hostile names: image directories whose names are shell code, options,
//! blanks, newlines or not UTF-8 are refused with one clear line and run
//! nothing; such names of files inside a valid image, very deep nesting and
//! symlinks out of the tree or in loops are built like any other content.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::inspect::file_in;
use super::Report;
use crate::support::{docker_ok, unique, Run, Sandbox};

const LIMIT: Duration = Duration::from_secs(60);

/// Directory names that must not become images.
const HOSTILE: [&[u8]; 9] = [
    b"$(touch x)",
    b"`touch x`",
    b"; rm -rf",
    b"--rm",
    b"with space",
    b"new\nline",
    b"\xff\xfe",
    b"Upper",
    b"esc\x1b[31mred",
];

/// File names that are fine inside an image.
const AWKWARD: [&[u8]; 11] = [
    b"with space",
    b"new\nline",
    b"\xff\xfe",
    b"quo'te",
    b"dq\"x",
    b"$(touch x)",
    b"-rm",
    b"--rm",
    b"back\\slash",
    b"tab\tname",
    b".hidden",
];

pub fn run(report: &mut Report) {
    for name in HOSTILE {
        let shown = String::from_utf8_lossy(name).escape_debug().to_string();
        report.case(&format!("hostile image directory \"{shown}\" is skipped, and refused where it counts"), |r| {
            r.fault("hostile directory name", 1);
            let sandbox = Sandbox::sealed("hostile");
            sandbox.write("ok/Dockerfile", "FROM scratch\n");
            let dir = sandbox.images.join(OsStr::from_bytes(name));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
            let said = |run: &Run, prefix: &str| -> Result<(), String> {
                let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains("image directory ")).collect();
                if lines.len() != 1 || !lines[0].starts_with(prefix) {
                    return Err(format!(
                        "expected one line starting {prefix:?} saying which directory is wrong: {run}"
                    ));
                }
                Ok(())
            };
            // Listing and naming other images: the directory is left out, with a warning.
            for args in [&["list-all-images"][..], &["list-all-images", "--json"]] {
                let run = sandbox.xtask_within(args, LIMIT);
                run.success();
                said(&run, "warning: skipped: image directory ")?;
                if !run.stdout.contains("ok") || run.stdout.lines().count() > if args.len() == 1 { 1 } else { 20 } {
                    return Err(format!("expected the other image alone: {run}"));
                }
            }
            sandbox.xtask_within(&["local-image", "ok"], LIMIT).success();
            // Every image: the rest is done, then the run fails naming it.
            for args in [&["load-all-images"][..], &["push-all-images", "--dry-run"]] {
                let run = sandbox.xtask_within(args, LIMIT);
                run.status(1);
                let last = run.stderr.lines().last().unwrap_or_default();
                if !last.starts_with("error: image directory ") {
                    return Err(format!("expected a last line saying which directory is wrong: {run}"));
                }
            }
            no_x(&sandbox)
        });
    }

    report.case("awkward file names inside an image: listed, built, all copied", |r| {
        r.fault("awkward file names", AWKWARD.len());
        let sandbox = Sandbox::sealed("awkward");
        sandbox.write("awk/Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
        for name in AWKWARD {
            let path = sandbox.images.join("awk").join(OsStr::from_bytes(name));
            fs::write(&path, name).unwrap();
            let dir = sandbox.images.join("awk/sub").join(OsStr::from_bytes(name));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("f"), name).unwrap();
        }
        listed_and_built(&sandbox, "awk")?;
        let copied = export(&sandbox, &format!("{}:latest", sandbox.local("awk")));
        for name in AWKWARD {
            for rel in
                [PathBuf::from(OsStr::from_bytes(name)), Path::new("sub").join(OsStr::from_bytes(name)).join("f")]
            {
                let got = fs::read(copied.join("ctx").join(&rel)).ok();
                if got.as_deref() != Some(name) {
                    return Err(format!("{} was not copied into the image", rel.display()));
                }
            }
        }
        no_x(&sandbox)
    });

    report.case("nesting 200 directories deep inside an image", |r| {
        r.fault("deep nesting", 1);
        let sandbox = Sandbox::sealed("deep");
        sandbox.write("deep/Dockerfile", "FROM scratch\nCOPY . /\n");
        let rel = vec!["d"; 200].join("/") + "/bottom";
        sandbox.write(&format!("deep/{rel}"), "at the bottom\n");
        listed_and_built(&sandbox, "deep")?;
        let got = file_in(&format!("{}:latest", sandbox.local("deep")), &format!("/{rel}"));
        if got.as_deref() != Some(b"at the bottom\n".as_slice()) {
            return Err(format!("the deepest file is not in the image: {got:?}"));
        }
        Ok(())
    });

    report.case("symlinks out of the images root: listed, built, tag ignores what they point at", |r| {
        r.fault("symlinks out of the tree", 3);
        let sandbox = Sandbox::sealed("outlink");
        sandbox.write("links/Dockerfile", "FROM scratch\nCOPY . /\n");
        let outside = sandbox.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "outside the tree\n").unwrap();
        let image = sandbox.images.join("links");
        symlink(&outside, image.join("abs-dir")).unwrap();
        symlink(outside.join("secret"), image.join("abs-file")).unwrap();
        symlink("../../outside", image.join("rel-dir")).unwrap();
        // A linked directory with a Dockerfile is not an image: links are not followed.
        fs::write(outside.join("Dockerfile"), "FROM scratch\n").unwrap();
        symlink(&outside, sandbox.images.join("linked")).unwrap();
        let before = listed_and_built(&sandbox, "links")?;
        fs::write(outside.join("secret"), "changed outside the tree\n").unwrap();
        let after = listed(&sandbox, "links")?;
        if before != after {
            return Err(format!("the tag follows content outside the tree: {before} then {after}"));
        }
        let copied = export(&sandbox, &format!("{}:latest", sandbox.local("links")));
        let link = fs::read_link(copied.join("abs-file")).map_err(|e| format!("abs-file is not a symlink: {e}"))?;
        if link != outside.join("secret") {
            return Err(format!("abs-file points at {}", link.display()));
        }
        Ok(())
    });

    report.case("symlink loops inside an image and at the root: listed, built, no hang", |r| {
        r.fault("symlink loops", 4);
        let sandbox = Sandbox::sealed("loops");
        sandbox.write("loops/Dockerfile", "FROM scratch\nCOPY . /\n");
        let image = sandbox.images.join("loops");
        symlink("two", image.join("one")).unwrap();
        symlink("one", image.join("two")).unwrap();
        symlink(".", image.join("self")).unwrap();
        fs::create_dir_all(image.join("sub")).unwrap();
        symlink("..", image.join("sub/up")).unwrap();
        symlink(".", sandbox.images.join("root-loop")).unwrap();
        listed_and_built(&sandbox, "loops").map(|_| ())
    });
}

/// The image's tag from `list-all-images --json`, which must agree with
/// `local-image`.
fn listed(sandbox: &Sandbox, name: &str) -> Result<String, String> {
    let run = sandbox.xtask_within(&["list-all-images", "--json"], LIMIT);
    run.success();
    let value: serde_json::Value = serde_json::from_str(&run.stdout).map_err(|e| format!("{e}: {run}"))?;
    let rows = value["images"].as_array().ok_or_else(|| format!("no images: {run}"))?;
    if rows.len() != 1 || rows[0]["name"] != name {
        return Err(format!("expected only {name}: {run}"));
    }
    let tag = rows[0]["tag"].as_str().unwrap().to_string();
    let local = sandbox.xtask_within(&["local-image", name], LIMIT);
    local.success();
    if local.stdout.trim() != format!("{}:{tag}", sandbox.local(name)) {
        return Err(format!("local-image disagrees with list-all-images --json ({tag}): {local}"));
    }
    Ok(tag)
}

/// Listed, then loaded (built) under the tag listed; returns the tag.
fn listed_and_built(sandbox: &Sandbox, name: &str) -> Result<String, String> {
    let tag = listed(sandbox, name)?;
    let run = sandbox.xtask_within(&["load", name, "--json"], LIMIT);
    run.success();
    let value: serde_json::Value = serde_json::from_str(&run.stdout).map_err(|e| format!("{e}: {run}"))?;
    let first = &value["images"][0];
    if first["action"] != "built" || first["tag"] != tag.as_str() {
        return Err(format!("expected {name} built as {tag}: {run}"));
    }
    Ok(tag)
}

/// The image's filesystem, unpacked into a directory of the sandbox.
fn export(sandbox: &Sandbox, image: &str) -> PathBuf {
    let dir = sandbox.path().join(format!("export-{}", unique()));
    fs::create_dir_all(&dir).unwrap();
    let created = docker_ok(&["create", image, "/nothing-runs"]);
    let container = created.trim();
    let script = "docker export \"$1\" | tar -x -C \"$2\"";
    let out = Command::new("sh").args(["-c", script, "sh", container, dir.to_str().unwrap()]).output().unwrap();
    docker_ok(&["rm", container]);
    assert!(out.status.success(), "docker export {image}: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// No file named `x` appeared where a shell run by the tool would make it.
fn no_x(sandbox: &Sandbox) -> Result<(), String> {
    let mut places = vec![xtask::workspace_root().join("x"), std::env::current_dir().unwrap().join("x")];
    places.extend(
        walkdir::WalkDir::new(sandbox.path())
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter(|e| e.file_name() == "x")
            .map(|e| e.into_path()),
    );
    match places.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(p) => Err(format!("{} was created", p.display())),
        None => Ok(()),
    }
}
