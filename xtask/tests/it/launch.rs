//! The `cargo xtask` alias of the workspace's `.cargo/config.toml`, applied
//! to a small crate of the test's own (compiling the tool itself from nothing
//! takes a minute): a run that compiles shows cargo's progress, a warm run
//! prints the program's output alone.

use std::fs;
use std::path::Path;
use std::process::Command;

/// The alias's arguments, with the package it runs replaced by `package`.
fn alias_for(package: &str) -> Vec<String> {
    let config = xtask::workspace_root().join(".cargo/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let args = table["alias"]["xtask"].as_array().expect("the alias is a list of arguments");
    let mut args: Vec<String> = args.iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let at = args.iter().position(|a| a == "--package").expect("the alias names its package");
    args[at + 1] = package.to_string();
    args
}

/// `cargo ARGS` in `dir`, as a user's shell runs it: none of the cargo
/// settings the test itself runs under.
fn cargo(dir: &Path, args: &[String]) -> (String, String) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
            cmd.env_remove(key);
        }
    }
    let out = cmd.args(args).current_dir(dir).env("CARGO_TARGET_DIR", dir.join("target")).output().unwrap();
    assert!(out.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_first_run_shows_progress_and_a_warm_run_only_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("Cargo.toml"), "[package]\nname = \"launched\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .unwrap();
    fs::create_dir(dir.join("src")).unwrap();
    fs::write(dir.join("src/main.rs"), "fn main() { println!(\"ran\"); }\n").unwrap();
    // A compile long enough for cargo to draw its progress (it waits a moment
    // before the first frame, so that quick builds do not flicker).
    fs::write(
        dir.join("build.rs"),
        "fn main() {\n    println!(\"cargo::rerun-if-changed=build.rs\");\n    \
         std::thread::sleep(std::time::Duration::from_millis(1500));\n}\n",
    )
    .unwrap();
    let args = alias_for("launched");

    let (stdout, stderr) = cargo(dir, &args);
    assert_eq!(stdout, "ran\n");
    assert!(stderr.contains("/3: launched"), "a compiling run shows cargo's progress: {stderr:?}");
    assert!(!stderr.contains("Compiling") && !stderr.contains("Finished"), "{stderr:?}");

    let (stdout, stderr) = cargo(dir, &args);
    assert_eq!((stdout.as_str(), stderr.as_str()), ("ran\n", ""), "a warm run prints the program's output alone");
}
