//! What a repository holds is not to be trusted: Dockerfiles, `.dockerignore`
//! files and Makefiles made to crash the tool, exhaust it, leak through it
//! or forge its output, and names that would read as options. Each test
//! has a tree of its own and runs the built binary (and make, for the
//! shim) on it: files only, no engine, no registry.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::{bare_xtask, clean_env, run, spawn, Run};

/// Long enough for a debug build on a loaded machine; a run that takes
/// longer is stuck (or quadratic).
const LIMIT: Duration = Duration::from_secs(120);

/// An images root in a temporary directory, with settings of its own.
struct Images {
    dir: tempfile::TempDir,
}

impl Images {
    fn new() -> Images {
        let images = Images { dir: tempfile::tempdir().unwrap() };
        fs::create_dir(images.root()).unwrap();
        fs::write(images.dir.path().join("images.toml"), "").unwrap();
        images
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> &Images {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn link(&self, target: impl AsRef<Path>, rel: &str) -> &Images {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
        self
    }

    /// The binary, run from the tree's directory (paths print as `images/…`).
    fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = bare_xtask();
        cmd.current_dir(self.dir.path())
            .env("IMAGES_CONFIG", self.dir.path().join("images.toml"))
            .env("IMAGES_DIR", "images")
            .env("ARCH", "x86_64")
            .env("LOCAL_IMAGE_PREFIX", "xtask.test/images")
            .env("REMOTE_IMAGE_PREFIX", "registry.test:5000/cache")
            .args(args);
        cmd
    }

    /// Runs `cmd` to its end, killed (and failing) past [`LIMIT`].
    fn run(&self, cmd: Command) -> Run {
        spawn(cmd, self.dir.path()).wait(LIMIT)
    }
}

/// `cmd` may map no more than 4 GiB: reading without bound fails at once
/// instead of taking the machine's memory.
fn bounded_memory(cmd: &mut Command) -> &mut Command {
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 4 << 30, rlim_max: 4 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd
}

/// `RUN npm install ""` (or `é`) made `check` slice a string where it has
/// no character boundary, and panic.
#[test]
fn check_reads_any_package_name() {
    let images = Images::new();
    images.write("npm/Dockerfile", "FROM scratch@sha256:0\nRUN npm install \"\"\nRUN npm install é @ x@1.2.3\n");
    let out = images.run(images.xtask(&["check"]));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "images/npm/Dockerfile:2: warning: npm install of unpinned packages: ; pin them (name@version) [unpinned-packages]",
            "images/npm/Dockerfile:3: warning: npm install of unpinned packages: é, @; pin them (name@version) [unpinned-packages]",
        ],
        "{out}"
    );
    out.status(0);
    assert_eq!(out.stderr, "checked 1 Dockerfile: 0 errors, 2 warnings\n");
}

/// `FROM ${A:-${A:-…}}` 12,000 deep overflowed the stack of every command
/// that reads FROM lines, in time that grew with the square of the depth.
#[test]
fn substitution_nested_too_deep_is_an_error_naming_its_line() {
    let images = Images::new();
    let deep = format!("{}scratch{}", "${A:-".repeat(12_000), "}".repeat(12_000));
    images.write("deep/Dockerfile", format!("ARG A\nFROM {deep}\n")).write("fine/Dockerfile", "FROM scratch\n");
    let message = "variables substituted within each other more than 32 deep (`${A:-${B:-…}}`): nest fewer";

    let out = images.run(images.xtask(&["check"]));
    assert_eq!(out.stdout, format!("images/deep/Dockerfile:2: error: {message} [syntax]\n"), "{out}");
    out.status(1);

    let dockerfile = images.root().join("deep/Dockerfile");
    for args in [&["local-image", "--print", "tag", "deep"][..], &["list-all-images", "--shard", "1/2"]] {
        let out = images.run(images.xtask(args));
        out.status(1);
        assert_eq!(out.stderr, format!("error: {}:2: {message}\n", dockerfile.display()), "{out}");
    }
    // The others are still tagged.
    let out = images.run(images.xtask(&["local-image", "fine"]));
    assert!(out.ok().starts_with("xtask.test/images/fine:"), "{out}");
}

/// A Dockerfile linked to `/proc/self/environ` made `check` print the
/// environment, secrets and all (upper-cased, in an "unknown instruction"
/// message); one linked to `/dev/zero` took all the memory there was.
#[test]
fn image_files_linked_out_of_their_directory_are_refused() {
    let images = Images::new();
    images
        .link("/proc/self/environ", "environ/Dockerfile")
        .link("/dev/zero", "zero/Dockerfile")
        .link("../shared/Dockerfile", "sibling/Dockerfile")
        .write("shared/Dockerfile", "FROM scratch\n")
        .write("ignore/Dockerfile", "FROM scratch\n")
        .link("/proc/self/environ", "ignore/.dockerignore")
        .write("inside/Dockerfile.real", "FROM scratch\n")
        .link("Dockerfile.real", "inside/Dockerfile");
    let secret = "hunter2-do-not-print-me";
    let root = images.root();
    let refused = |image: &str, file: &str, target: &str| {
        format!(
            "{}/{image}/{file} is a symlink to {target}, outside its image directory: an image's {file} must be a \
             file in it; put the file there instead",
            root.display()
        )
    };
    for (image, target) in
        [("environ", "/proc/self/environ"), ("zero", "/dev/zero"), ("sibling", "../shared/Dockerfile")]
    {
        for args in [&["check", image][..], &["local-image", image]] {
            let mut cmd = images.xtask(args);
            bounded_memory(cmd.env("XTASK_SECRET", secret));
            let out = images.run(cmd);
            assert!(!format!("{out}").to_lowercase().contains(secret), "{out}");
            out.status(1);
            assert_eq!(out.stderr, format!("error: {}\n", refused(image, "Dockerfile", target)), "{out}");
            assert_eq!(out.stdout, "", "{out}");
        }
    }
    // A .dockerignore: a finding of check, an error where tags are made.
    let out = images.run(images.xtask(&["check", "ignore"]));
    assert_eq!(
        out.stdout,
        format!(
            "images/ignore/.dockerignore: error: {} [syntax]\n",
            refused("ignore", ".dockerignore", "/proc/self/environ")
        ),
        "{out}"
    );
    let out = images.run(images.xtask(&["local-image", "ignore"]));
    assert_eq!(out.stderr, format!("error: {}\n", refused("ignore", ".dockerignore", "/proc/self/environ")), "{out}");
    // A link that stays in the image directory is read.
    let out = images.run(images.xtask(&["check", "inside"]));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out}");
    assert!(images.run(images.xtask(&["local-image", "inside"])).ok().starts_with("xtask.test/images/inside:"));
}

/// A Dockerfile is read up to 1 MiB; past that, the limit is named.
#[test]
fn a_dockerfile_past_the_limit_is_refused() {
    let images = Images::new();
    let mut text = b"FROM scratch\n".to_vec();
    text.resize(1 << 20, b'#');
    images.write("max/Dockerfile", &text);
    text.push(b'\n');
    images.write("over/Dockerfile", &text);
    let message = format!(
        "error: {}/over/Dockerfile is larger than 1 MiB, the most an image's Dockerfile or .dockerignore may hold: \
         make it smaller\n",
        images.root().display()
    );
    for args in [&["check", "over"][..], &["local-image", "over"]] {
        let out = images.run(images.xtask(args));
        out.status(1);
        assert_eq!(out.stderr, message, "{out}");
    }
    images.run(images.xtask(&["check", "max"])).success();
}

/// What a Dockerfile or a directory's name holds reaches the terminal
/// escaped, and a long line only as a short excerpt.
#[test]
fn file_text_is_shown_escaped_and_short() {
    let images = Images::new();
    // A line that would erase itself and write another, were it shown as it is.
    let long = format!("X{}", "\u{1b}[2K-total:0-deleted-".repeat(200));
    images
        .write(
            "forged/Dockerfile",
            format!("FROM x.example/a\u{1b}[2K:1@sha256:0\nCOPY \u{202e}txt.sh /\n{long} x\n# xtask: allow(\u{1b}[1m)\nRUN true\n"),
        )
        .write("bad\u{1b}[31mname/Dockerfile", "FROM scratch\n");
    let out = images.run(images.xtask(&["check", "forged"]));
    assert!(!out.stdout.contains(['\u{1b}', '\u{202e}']) && !out.stderr.contains('\u{1b}'), "{out}");
    // As many whole escapes as fit in 79 characters, then `…`.
    let excerpt = format!("X{}", "\\u{1b}[2K-TOTAL:0-DELETED-".repeat(3));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "images/forged/Dockerfile:2: error: COPY \\u{202e}txt.sh: not in the build context [missing-source]"
                .to_string(),
            format!("images/forged/Dockerfile:3: error: unknown instruction `{excerpt}…` [syntax]"),
            "images/forged/Dockerfile:4: error: no rule `\\u{1b}[1m` can be allowed: use base-tag, catalog-name, \
             add-checksum, missing-source, base-digest, unpinned-packages, curl-pipe-shell, apt-lists, build-time, \
             git-clone-branch, pip-hashes [syntax]"
                .to_string(),
        ],
        "{out}"
    );
    assert_eq!(out.stderr, "checked 1 Dockerfile: 3 errors, 0 warnings\n", "{out}");
    // A directory's name, in the finding every `*-all-*` run would fail on.
    let out = images.run(images.xtask(&["check"]));
    assert!(!out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'), "{out}");
    let bad = format!(
        "images/bad\\u{{1b}}[31mname: error: image directory {}/bad\\u{{1b}}[31mname is not a valid image name \
         (`bad\\u{{1b}}[31mname`): use lower case letters, digits, and `.` or `-` between them [image-name]",
        images.root().display()
    );
    assert!(out.stdout.lines().any(|l| l == bad), "{out}");
    // A FROM line's reference, in the base rules' messages.
    images.write("forged/Dockerfile", "FROM x.example/a\u{1b}[2K\n");
    let out = images.run(images.xtask(&["check", "forged"]));
    assert_eq!(
        out.stdout,
        "images/forged/Dockerfile:1: error: FROM x.example/a\\u{1b}[2K has no tag: it means `latest`, which moves; \
         name a version (and its digest) [base-tag]\n",
        "{out}"
    );
}

/// `--local-image-prefix=--help` was taken, and would have reached the
/// engine as an option in every name made from it; so would an image name
/// given after `--`.
#[test]
fn prefixes_and_names_that_read_as_options_are_refused() {
    let images = Images::new();
    images.write("a/Dockerfile", "FROM scratch\n");
    let refused = |what: &str, prefix: &str| {
        format!(
            "error: {what} `{prefix}` starts with `-`, which the engine would read as an option: start it with a \
             registry host or a letter, e.g. localhost:5000/images\n"
        )
    };
    let out = images.run(images.xtask(&["--local-image-prefix=--help", "local-image", "a"]));
    out.status(1);
    assert_eq!(out.stderr, refused("LOCAL_IMAGE_PREFIX", "--help"), "{out}");
    let mut cmd = images.xtask(&["list-all-images"]);
    cmd.env("REMOTE_IMAGE_PREFIX", "-rf");
    let out = images.run(cmd);
    out.status(1);
    assert_eq!(out.stderr, refused("REMOTE_IMAGE_PREFIX", "-rf"), "{out}");

    let out = images.run(images.xtask(&["load", "--dry-run", "--", "-rf"]));
    out.status(2);
    assert!(
        out.stderr.starts_with(
            "error: invalid value '-rf' for '<IMAGE>...': image names never start with `-`: give options before `--`, \
             names after it\n"
        ),
        "{out}"
    );
}

/// The Makefile shim alone in a directory marked as its workspace, with a
/// stand-in `cargo` that only logs its arguments.
struct Shim {
    dir: tempfile::TempDir,
}

impl Shim {
    fn new() -> Shim {
        let shim = Shim { dir: tempfile::tempdir().unwrap() };
        let at = shim.dir.path();
        fs::copy(xtask::workspace_root().join("Makefile"), at.join("Makefile")).unwrap();
        fs::create_dir_all(at.join("xtask")).unwrap();
        fs::write(at.join("xtask/Cargo.toml"), "").unwrap();
        fs::create_dir(at.join("bin")).unwrap();
        let cargo = at.join("bin/cargo");
        fs::write(&cargo, format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}/cargo.log'\n", at.display())).unwrap();
        fs::set_permissions(&cargo, fs::Permissions::from_mode(0o755)).unwrap();
        shim
    }

    fn make(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("make");
        clean_env(&mut cmd);
        let path = std::env::join_paths(
            std::iter::once(self.dir.path().join("bin"))
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        cmd.env_remove("XTASK_FLAGS").env_remove("CARGO").env("PATH", path);
        run(cmd.current_dir(self.dir.path()).arg("--no-print-directory").args(args))
    }

    /// The calls cargo got since the last look, one line each.
    fn calls(&self) -> String {
        let log = self.dir.path().join("cargo.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text
    }
}

/// `make load--rf` ran `cargo xtask load -rf`: the image part of a target
/// reached the tool as an option. Targets and functions now refuse a name
/// that starts with `-`, and the tool is not run.
#[test]
fn make_never_hands_a_name_to_the_tool_as_an_option() {
    let shim = Shim::new();
    assert_eq!(shim.make(&["-k", "load-ok"]).ok(), "");
    assert_eq!(shim.calls(), "xtask load ok --keep-going\n");
    for (goal, name) in [
        ("load--rf", "-rf"),
        ("push--", "-"),
        ("push-manifest---help", "--help"),
        ("local-image--x", "-x"),
        ("load--rf/x/", "-rf/x"),
    ] {
        let out = shim.make(&["-k", goal]);
        assert_eq!((out.code, out.stdout.as_str()), (Some(2), ""), "{out}");
        assert_eq!(
            out.stderr_lines()[0],
            format!(
                "error: `make {goal}` names `{name}`, which is no image: image names never start with `-` (make \
                 images-help lists the targets)"
            ),
            "{out}"
        );
        assert_eq!(shim.calls(), "", "{goal}");
    }
    // The functions a Makefile that includes the shim calls.
    fs::write(shim.dir.path().join("Other.mk"), "include Makefile\nshow: ; @echo $(call tag,-rf)\n").unwrap();
    let out = shim.make(&["-f", "Other.mk", "show"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(out.stderr, "Other.mk:2: *** image name `-rf` starts with `-`: image names never do.  Stop.\n");
    assert_eq!(shim.calls(), "");
}

// ---- properties: nothing read panics -----------------------------------------------

/// Text made of `pieces` and any characters.
fn text(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(pieces).prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..48).prop_map(|p| p.concat())
}

fn config() -> Config {
    Config { cases: 256, failure_persistence: None, ..Config::default() }
}

/// Any `.dockerignore` is read, or refused with a message naming the line's
/// pattern; what is read answers for any path.
#[test]
fn any_dockerignore_is_read() {
    use xtask::catalog::dockerignore::DockerIgnore;
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "*", "**", "?", "[", "]", "[!", "\\", "!", "/", "./", "../", ".", "#", "\n", "\r\n", " ", "a", "b/", "{", "}", ",",
    ];
    TestRunner::new(config())
        .run(&(text(PIECES), text(&["a", "b", "/", ".", "*", "[", "é"])), |(ignore, path)| {
            if let Ok(ignore) = DockerIgnore::parse(&ignore) {
                let _ = ignore.excluded_by(Path::new(&path));
                let _ = ignore.inclusion(Path::new(&path), true);
            }
            Ok(())
        })
        .unwrap();
}

/// Any Makefile `init` is given is read, or refused with a message.
#[test]
fn any_legacy_makefile_is_read() {
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "REMOTE_IMAGE_PREFIX", "LOCAL_IMAGE_PREFIX", "NON_TEST_IMAGES", "A", "B", " = ", " := ", " ?= ", " += ", " != ",
        "::=", ":", "$(", "${", ")", "}", "$$", "$", "\\\n", "\\", "\\|", "#", "\\#", "\n", "\t", " ", "export ",
        "override ", "define ", "endef", "ifeq (", "endif", "else", "x.example/a", "é",
    ];
    TestRunner::new(config())
        .run(&text(PIECES), |makefile| {
            let _ = xtask::commands::init::parse(&makefile);
            Ok(())
        })
        .unwrap();
}
