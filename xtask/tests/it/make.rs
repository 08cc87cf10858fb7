//! The Makefile shim as a drop-in for a legacy `tools/images.mk`. A fixture
//! tree shaped like gVisor's (a root Makefile of its own that includes
//! `tools/images.mk`, nested images, a directory with an invalid name) gets
//! the tool's files and the shim copied in, as the README's migration says,
//! and make runs in it with a stand-in `cargo` that logs each call and runs
//! the built binary as `cargo xtask` would in that tree. Commands that would
//! reach the container engine are logged only.

use crate::common;
use crate::support::{clean_env, run, Run};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gvisor-tree");

/// What `init` writes from the fixture's legacy `tools/images.mk`.
const SETTINGS: &str = r#"images_dir = "images"
remote_image_prefix = "registry.example.net/fixture-ci/images"
local_image_prefix = "gvisor.dev/images"
tag_scheme = "gvisor"
non_test_images = ["default", "compatibility/gitea/runner"]
"#;

const ALL: &str = "basic_alpine basic_busybox certs compatibility_gitea_runner compatibility_gitea_server default \
                   runtimes_go1.22 runtimes_python3.12 web_app";
const TESTS: &str =
    "basic_alpine basic_busybox certs compatibility_gitea_server runtimes_go1.22 runtimes_python3.12 web_app";

/// `cargo`, as far as the shim uses it: `cargo xtask ARGS` (the workspace's
/// alias, found from the current directory) and `cargo run --quiet
/// --manifest-path M --package xtask -- ARGS`. It logs its arguments, then
/// runs the binary with `CARGO_MANIFEST_DIR` set as cargo sets it.
const STAND_IN: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$(dirname "$0")/cargo.log"
if [ "$1" = xtask ]; then
    shift
    dir=$(pwd -P)
    until [ -f "$dir/xtask/Cargo.toml" ]; do
        if [ "$dir" = / ]; then echo 'error: no such command: `xtask`' >&2; exit 101; fi
        dir=$(dirname "$dir")
    done
elif [ "$1 $2 $3" = "run --quiet --manifest-path" ] && [ "$5 $6 $7" = "--package xtask --" ]; then
    dir=$(dirname "$4")
    shift 7
else
    echo "unexpected cargo command: $*" >&2
    exit 97
fi
case "$1" in
    list-all-images|list-all-test-images|local-image|settings|init) ;;
    *) exit 0 ;;
esac
CARGO_MANIFEST_DIR="$dir/xtask" exec "$XTASK_BIN" "$@"
"#;

/// A copy of the fixture tree with the tool's files in it (all but the
/// settings file), and the stand-in cargo beside it.
struct Project {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Project {
    /// Before the migration: the legacy `tools/images.mk` is still there.
    fn legacy() -> Project {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("project");
        cp_a(Path::new(FIXTURE), &root);
        // The README's first step: the tool, less its settings and its tests.
        let workspace = xtask::workspace_root();
        fs::create_dir(root.join("xtask")).unwrap();
        for file in ["xtask/src", "xtask/Cargo.toml", ".cargo", "Cargo.toml", "Cargo.lock"] {
            cp_a(&workspace.join(file), &root.join(file));
        }
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("cargo"), STAND_IN).unwrap();
        fs::set_permissions(bin.join("cargo"), fs::Permissions::from_mode(0o755)).unwrap();
        Project { tmp, root }
    }

    /// After it: the settings written and the shim over the legacy file.
    fn migrated() -> Project {
        let p = Project::legacy();
        fs::write(p.root.join("xtask/images.toml"), SETTINGS).unwrap();
        fs::copy(xtask::workspace_root().join("Makefile"), p.root.join("tools/images.mk")).unwrap();
        p
    }

    fn cargo(&self) -> PathBuf {
        self.tmp.path().join("bin/cargo")
    }

    /// `make ARGS` in the project's root.
    fn make(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("make");
        clean_env(&mut cmd);
        cmd.env_remove("XTASK_FLAGS").env_remove("CARGO_MANIFEST_DIR");
        // `cargo` is the stand-in, found on PATH as the real one would be.
        let path = std::env::join_paths(
            std::iter::once(self.tmp.path().join("bin"))
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        cmd.env_remove("CARGO").env("PATH", path).env("XTASK_BIN", env!("CARGO_BIN_EXE_xtask"));
        cmd.current_dir(&self.root).args(args);
        cmd
    }

    /// `cargo xtask ARGS` in the project's root, through the stand-in.
    fn cargo_xtask(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.cargo());
        clean_env(&mut cmd);
        cmd.env_remove("CARGO_MANIFEST_DIR").env("XTASK_BIN", env!("CARGO_BIN_EXE_xtask"));
        cmd.current_dir(&self.root).arg("xtask").args(args);
        cmd
    }

    /// The calls cargo got since the last look, one line each.
    fn calls(&self) -> String {
        let log = self.tmp.path().join("bin/cargo.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text
    }

    /// The cargo calls the Make API's value calls make for `commands`: the
    /// tool's command spelled out with the workspace's manifest, in order.
    fn value_calls(&self, commands: &[&str]) -> String {
        let manifest = self.root.canonicalize().unwrap().join("Cargo.toml");
        let spelled = format!("run --quiet --manifest-path {} --package xtask --", manifest.display());
        commands.iter().map(|c| format!("{spelled} {c}\n")).collect()
    }

    /// The legacy tag (the `gvisor` scheme) of one image.
    fn tag(&self, path: &str) -> String {
        legacy_tags(&self.root.join("images"), &[path.to_string()])[&path.replace('/', "_")].clone()
    }

    fn images(&self) -> PathBuf {
        self.root.join("images")
    }
}

fn cp_a(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

fn host_arch() -> String {
    let out = Command::new("uname").arg("-m").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `make --eval 'show: ; @echo TEXT' show`: what TEXT expands to.
fn show(p: &Project, text: &str, args: &[&str]) -> Run {
    let rule = format!("show: ; @echo '{text}'");
    run(p.make(&["-s", "--eval", &rule]).args(args).arg("show"))
}

fn bad_name_warning(p: &Project) -> String {
    format!(
        "warning: skipped: image directory {}/bad_name has `_` in its name `bad_name`: image names join directories with `_`, so names would be ambiguous; use `-` instead\n",
        p.images().display()
    )
}

// ---- the migration ---------------------------------------------------------------------

/// The README's migration, command by command: with the tool's files copied
/// in, `init` takes the settings from the legacy file, the shim replaces it,
/// and the root Makefile's targets get the legacy tags and names.
#[test]
fn migration_as_the_readme_gives_it() {
    let p = Project::legacy();
    let out = run(&mut p.cargo_xtask(&["init", "--from-makefile", "tools/images.mk"]));
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (
            Some(0),
            "",
            "wrote xtask/images.toml from tools/images.mk:\n  \
             remote_image_prefix = \"registry.example.net/fixture-ci/images\"\n  \
             local_image_prefix = \"gvisor.dev/images\"\n  \
             non_test_images = [\"default\", \"compatibility/gitea/runner\"]\n  \
             tag_scheme = \"gvisor\": the legacy tags, so the images already pushed stay valid\n\
             added target/ to .gitignore: cargo builds the tool there\n"
        )
    );
    let legacy = xtask::commands::init::Legacy {
        remote_image_prefix: Some("registry.example.net/fixture-ci/images".into()),
        local_image_prefix: Some("gvisor.dev/images".into()),
        non_test_images: Some(vec!["default".into(), "compatibility/gitea/runner".into()]),
    };
    let written = fs::read_to_string(p.root.join("xtask/images.toml")).unwrap();
    assert_eq!(written, xtask::commands::init::render(&legacy, "tools/images.mk"));

    fs::copy(xtask::workspace_root().join("Makefile"), p.root.join("tools/images.mk")).unwrap();
    assert_eq!(p.calls(), "xtask init --from-makefile tools/images.mk\n");

    let go = p.tag("runtimes/go1.22");
    let out = run(&mut p.make(&["-n", "go1.22-runtime-tests"]));
    assert_eq!(
        out.ok(),
        format!(
            "cargo xtask load runtimes_go1.22\n\
             echo --- RUNTIME go1.22 >&2\n\
             IMAGE_TAG={go} && \\\n\
             echo \"testing go1.22 in gvisor.dev/images/runtimes/go1.22:${{IMAGE_TAG}}\"\n"
        )
    );
    assert_eq!(p.calls(), p.value_calls(&["local-image --print tag runtimes_go1.22", "settings LOCAL_IMAGE_PREFIX"]));

    let certs = p.tag("certs");
    let arch = host_arch();
    assert_eq!(
        run(&mut p.make(&["-n", "webhook-config"])).ok(),
        format!("INIT=registry.example.net/fixture-ci/images/certs_{arch}:{certs} && \\\necho \"init: ${{INIT}}\"\n")
    );
    assert_eq!(p.calls(), p.value_calls(&["settings REMOTE_IMAGE_PREFIX", "local-image --print tag certs"]));

    // Run again, init neither reads the shim nor overwrites the file.
    let shim_error = "error: tools/images.mk is this tool's Makefile shim, not a legacy Makefile: run init before \
                      copying the shim over it, or give it the legacy file (`git show HEAD:tools/images.mk > legacy.mk`)";
    for force in [&[][..], &["--force"]] {
        let again = run(p.cargo_xtask(&["init", "--from-makefile", "tools/images.mk"]).args(force));
        assert_eq!(again.error_line(), shim_error);
    }
    fs::write(p.root.join("legacy.mk"), "REMOTE_IMAGE_PREFIX := other.example/images\n").unwrap();
    let again = run(&mut p.cargo_xtask(&["init", "--from-makefile", "legacy.mk"]));
    assert_eq!(again.error_line(), "error: xtask/images.toml already exists: pass --force to overwrite it");
    assert_eq!(fs::read_to_string(p.root.join("xtask/images.toml")).unwrap(), written);
    let forced = run(&mut p.cargo_xtask(&["init", "--from-makefile", "legacy.mk", "--force"]));
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert_eq!(
        show(&p, "$(REMOTE_IMAGE_PREFIX) $(LOCAL_IMAGE_PREFIX)", &[]).ok(),
        "other.example/images gvisor.dev/images\n"
    );
}

#[test]
fn init_errors() {
    let p = Project::legacy();
    let init = |file: &str, text: &str| {
        fs::write(p.root.join(file), text).unwrap();
        run(&mut p.cargo_xtask(&["init", "--from-makefile", file])).error_line().to_string()
    };
    assert_eq!(
        init("none.mk", "ARCH := $(shell uname -m)\n"),
        "error: none.mk sets none of REMOTE_IMAGE_PREFIX, LOCAL_IMAGE_PREFIX, NON_TEST_IMAGES: is it the legacy images Makefile?"
    );
    assert_eq!(
        init("shell.mk", "REMOTE_IMAGE_PREFIX ?= $(shell cat registry.txt)\n"),
        "error: cannot take the settings from shell.mk: line 1: REMOTE_IMAGE_PREFIX uses `$(shell cat registry.txt)`, which init cannot evaluate"
    );
    assert_eq!(
        init("bad.mk", "LOCAL_IMAGE_PREFIX := Example.org/Images\n"),
        "error: bad.mk sets a value the tool cannot use: LOCAL_IMAGE_PREFIX `Example.org/Images` is not a valid image repository prefix: use lower case letters, digits and . _ - / :"
    );
    let missing = run(&mut p.cargo_xtask(&["init", "--from-makefile", "missing.mk"]));
    assert_eq!(
        missing.error_line(),
        "error: cannot read the legacy Makefile missing.mk: No such file or directory (os error 2)"
    );
    assert!(!p.root.join("xtask/images.toml").exists());
}

// ---- included by a root Makefile ---------------------------------------------------------

const IMAGES_HELP: &str = r#"Image targets (each runs `cargo xtask <command>`; `cargo xtask --help` says more):
  list-all-images           list-all-test-images
  load-all-images           load-all-test-images      build-all-images
  push-all-images           push-all-test-images      test-all-test-images
  register-cross            make foreign-architecture binaries runnable (qemu)
  local-image-<image>       print its local name and tag
  load-<image or group>     use the local image, else pull its tag, else build it
  pull-<image>              pull the remote tag
  rebuild-<image>           build it (also build-<image>)
  tag-<image>               give the image pulled under its remote name its local names
  test-<image>              build it if the registry lacks its tag
  push-<image or group>     build and push what the registry lacks
  push-manifest-<image>     publish a multi-arch index over the pushed per-arch images
  <image> is a name (basic_hello) or a path (basic/hello).

Make's flags:
  -k, -i                    --keep-going: when an image fails, finish the others
  -jN                       --jobs N for the *-all-* targets
  XTASK_FLAGS='...'         any other flags, e.g. XTASK_FLAGS='--shard 2/4 --dry-run'

Variables (on the command line or in the environment; unset ones come from
xtask/images.toml): ARCH IMAGES_DIR IMAGES_CONFIG REMOTE_IMAGE_PREFIX
LOCAL_IMAGE_PREFIX TAG_SCHEME NON_TEST_IMAGES DOCKER_BUILD_ARGS SKIP_IMAGE_LOAD
DOCKER_PUSH_AS_LATEST IMAGES_ENGINE XTASK_FLAGS

For a Makefile that includes this one (nothing runs until expanded):
  $(ARCH)                        the architecture, `uname -m` unless given
  $(REMOTE_IMAGE_PREFIX)         the cache registry's prefix
  $(LOCAL_IMAGE_PREFIX)          the local names' prefix
  $(ALL_IMAGES), $(TEST_IMAGES)  every image name, every test image name
  $(call path,<image>)           its directory, e.g. images/basic/hello
  $(call dockerfile,<image>)     its Dockerfile for ARCH
  $(call tag,<image>)            its tag (one tool call)
  $(call remote_image,<image>)   <REMOTE_IMAGE_PREFIX>/<path>_<ARCH>
  $(call local_image,<image>)    <LOCAL_IMAGE_PREFIX>/<path>
"#;

/// Included, the shim leaves the root Makefile its `help`, its shell and its
/// default goal (make warns of no overridden recipe), adds its `##` lines to
/// the root's help, and offers `images-help`. Make started on the shim itself
/// has `help` too, as its default goal.
#[test]
fn included_shim_leaves_the_root_makefile_its_own() {
    let p = Project::migrated();
    let out = run(&mut p.make(&[]));
    assert_eq!(
        (out.code, out.stdout, out.stderr),
        (Some(0), format!("built for {}\n", host_arch()), "--- BUILD\n".to_string())
    );
    let help = run(&mut p.make(&["help"]));
    assert_eq!(
        help.ok(),
        "  help: Lists the targets.\n  \
         build: Builds the project.\n  \
         builder: Starts the build container.\n  \
         %-runtime-tests: Runs a language runtime's tests.\n  \
         integration-tests: Runs the integration tests.\n  \
         webhook-config: Pins the certificate image in the webhook's configuration.\n  \
         image-files: Shows where an image's files are.\n\
         \n\
         Image targets: each runs `cargo xtask <command>`; `make images-help` lists\n\
         them with the variables and functions this file gives a Makefile.\n\
         \n  \
         images-help: Describes the image targets, make flags, variables and functions.\n  \
         load-%: Uses the local image, else pulls its tag, else builds it; load-<group> loads a group.\n  \
         push-%: Builds and pushes what the registry lacks.\n"
    );
    assert_eq!(run(&mut p.make(&["images-help"])).ok(), IMAGES_HELP);
    // A root Makefile that includes the shim before its first target.
    fs::write(p.root.join("first.mk"), "include tools/images.mk\nfirst: ; @echo first\n").unwrap();
    assert_eq!(run(&mut p.make(&["-f", "first.mk"])).ok(), "first\n");
    // The root Makefile's SHELL runs the recipes (`[[` is bash's).
    assert_eq!(run(&mut p.make(&["-s", "--eval", "sh: ; @[[ -n x ]] && echo bash", "sh"])).ok(), "bash\n");
    for args in
        [&["-f", "tools/images.mk"][..], &["-f", "tools/images.mk", "help"], &["-f", "tools/images.mk", "images-help"]]
    {
        assert_eq!(run(&mut p.make(args)).ok(), IMAGES_HELP, "{args:?}");
    }
    assert_eq!(p.calls(), "");
}

/// Reading the Makefiles and printing recipes runs nothing: no tool call
/// until a variable or function is expanded, and the prefixes the tool would
/// give are not exported to recipes (which would ask it in each).
#[test]
fn nothing_runs_until_needed() {
    let p = Project::migrated();
    assert_eq!(
        run(&mut p.make(&["-n", "integration-tests"])).ok(),
        "cargo xtask load basic_alpine\n\
         cargo xtask load basic_busybox\n\
         cargo xtask load web_app\n\
         cargo xtask load compatibility_gitea_server\n\
         cargo xtask load compatibility_gitea_runner\n\
         cargo xtask load certs\n\
         echo \"testing in fixture-builder-"
            .to_string()
            + &host_arch()
            + "\"\n"
    );
    let env = run(&mut p.make(&[
        "-s",
        "--eval",
        "env: ; @echo \"[$$REMOTE_IMAGE_PREFIX][$$LOCAL_IMAGE_PREFIX][$$ARCH]\"",
        "env",
    ]));
    assert_eq!(env.ok(), format!("[][][{}]\n", host_arch()));
    // A function defined from the API but not expanded costs nothing.
    assert_eq!(run(&mut p.make(&["-s", "--eval", "pinned = $(call tag,certs)", "build"])).code, Some(0));
    assert_eq!(p.calls(), "");
}

// ---- the Make API ------------------------------------------------------------------------

#[test]
fn prefixes_from_the_settings_file_once_else_as_given() {
    let p = Project::migrated();
    let both = "$(REMOTE_IMAGE_PREFIX) $(LOCAL_IMAGE_PREFIX) $(REMOTE_IMAGE_PREFIX)";
    assert_eq!(
        show(&p, both, &[]).ok(),
        "registry.example.net/fixture-ci/images gvisor.dev/images registry.example.net/fixture-ci/images\n"
    );
    assert_eq!(p.calls(), p.value_calls(&["settings REMOTE_IMAGE_PREFIX", "settings LOCAL_IMAGE_PREFIX"]));

    // Given on the command line, in the environment, or by a Makefile before
    // the include: no tool call, and exported to recipes.
    let exported = "env: ; @echo \"$$REMOTE_IMAGE_PREFIX $$LOCAL_IMAGE_PREFIX\"";
    let given = |cmd: &mut Command| {
        let out =
            run(cmd.args(["-s", "--eval", &format!("show: ; @echo '{both}'"), "--eval", exported, "show", "env"]));
        out.ok().to_string()
    };
    assert_eq!(
        given(&mut p.make(&["REMOTE_IMAGE_PREFIX=cli.example/r", "LOCAL_IMAGE_PREFIX=cli.example/l"])),
        "cli.example/r cli.example/l cli.example/r\ncli.example/r cli.example/l\n"
    );
    assert_eq!(
        given(p.make(&[]).env("REMOTE_IMAGE_PREFIX", "env.example/r").env("LOCAL_IMAGE_PREFIX", "env.example/l")),
        "env.example/r env.example/l env.example/r\nenv.example/r env.example/l\n"
    );
    assert_eq!(
        given(&mut p.make(&[
            "--eval",
            "REMOTE_IMAGE_PREFIX := file.example/r",
            "--eval",
            "LOCAL_IMAGE_PREFIX = file.example/l"
        ])),
        "file.example/r file.example/l file.example/r\nfile.example/r file.example/l\n"
    );
    assert_eq!(p.calls(), "");
    // Empty counts as unset, as for the tool.
    assert_eq!(show(&p, "$(LOCAL_IMAGE_PREFIX)", &["LOCAL_IMAGE_PREFIX="]).ok(), "gvisor.dev/images\n");
    assert_eq!(p.calls(), p.value_calls(&["settings LOCAL_IMAGE_PREFIX"]));
}

#[test]
fn arch_defaults_to_uname_and_reaches_the_tool() {
    let p = Project::migrated();
    let host = host_arch();
    let text = "$(ARCH) $(call remote_image,basic_alpine) $(call dockerfile,basic_alpine)";
    let prefix = "registry.example.net/fixture-ci/images";
    let plain = if host == "aarch64" { "Dockerfile.aarch64" } else { "Dockerfile" };
    assert_eq!(show(&p, text, &[]).ok(), format!("{host} {prefix}/basic/alpine_{host} {plain}\n"));
    assert_eq!(show(&p, text, &["ARCH="]).ok(), format!("{host} {prefix}/basic/alpine_{host} {plain}\n"));
    assert_eq!(
        show(&p, text, &["ARCH=aarch64"]).ok(),
        format!("aarch64 {prefix}/basic/alpine_aarch64 Dockerfile.aarch64\n")
    );
    // The tool's other spellings: names use its own.
    assert_eq!(
        run(p.make(&["-s", "--eval", &format!("show: ; @echo '{text}'"), "show"]).env("ARCH", "arm64")).ok(),
        format!("arm64 {prefix}/basic/alpine_aarch64 Dockerfile.aarch64\n")
    );
    assert_eq!(show(&p, text, &["ARCH=amd64"]).ok(), format!("amd64 {prefix}/basic/alpine_x86_64 Dockerfile\n"));
    // Containers named after it, by the root Makefile.
    assert_eq!(
        run(&mut p.make(&["-n", "ARCH=aarch64", "integration-tests"])).ok().lines().last(),
        Some("echo \"testing in fixture-builder-aarch64\"")
    );
}

#[test]
fn image_lists() {
    let p = Project::migrated();
    let out = show(&p, "$(ALL_IMAGES) | $(TEST_IMAGES)", &[]);
    assert_eq!((out.code, out.stdout), (Some(0), format!("{ALL} | {TESTS}\n")));
    // The directory with an invalid name is skipped, with a warning each time.
    assert_eq!(out.stderr, bad_name_warning(&p).repeat(2));
    // Value calls spell the tool's command out: silent, even while it compiles.
    assert_eq!(p.calls(), p.value_calls(&["list-all-images", "list-all-test-images"]));
    let out = run(&mut p.make(&["list-all-images"]));
    assert_eq!((out.stdout, out.stderr), (ALL.replace(' ', "\n") + "\n", bad_name_warning(&p)));
    let out = run(&mut p.make(&["list-all-test-images"]));
    assert_eq!((out.stdout, out.stderr), (TESTS.replace(' ', "\n") + "\n", bad_name_warning(&p)));
}

#[test]
fn image_functions() {
    let p = Project::migrated();
    let (go, server) = (p.tag("runtimes/go1.22"), p.tag("compatibility/gitea/server"));
    let text = "$(call path,runtimes_go1.22) $(call dockerfile,runtimes_go1.22) $(call tag,runtimes_go1.22) \
                $(call remote_image,runtimes_go1.22) $(call local_image,runtimes_go1.22) \
                $(call path,compatibility/gitea/server) $(call tag,compatibility/gitea/server) \
                $(call local_image,compatibility_gitea_server)";
    let arch = host_arch();
    assert_eq!(
        show(&p, text, &[]).ok(),
        format!(
            "images/runtimes/go1.22 Dockerfile {go} registry.example.net/fixture-ci/images/runtimes/go1.22_{arch} \
             gvisor.dev/images/runtimes/go1.22 images/compatibility/gitea/server {server} \
             gvisor.dev/images/compatibility/gitea/server\n"
        )
    );
    // One call per tag expanded; the images root and the prefixes once.
    assert_eq!(
        p.calls(),
        p.value_calls(&[
            "settings IMAGES_DIR",
            "local-image --print dockerfile runtimes_go1.22",
            "local-image --print tag runtimes_go1.22",
            "settings REMOTE_IMAGE_PREFIX",
            "settings LOCAL_IMAGE_PREFIX",
            "local-image --print tag compatibility/gitea/server",
        ])
    );
    assert_eq!(show(&p, "$(call tag,certs) $(call tag,certs)", &[]).ok(), format!("{0} {0}\n", p.tag("certs")));
    assert_eq!(p.calls(), p.value_calls(&["local-image --print tag certs"; 2]));
    // The same tag as the tool's own command, and the local name it prints.
    assert_eq!(
        run(&mut p.make(&["local-image-runtimes_go1.22"])).ok(),
        format!("gvisor.dev/images/runtimes/go1.22:{go}\n")
    );
    assert_eq!(run(&mut p.make(&["image-files"])).ok(), "images/basic/alpine/Dockerfile\n");
    // A given images root is used as it is.
    assert_eq!(
        show(&p, "$(call path,certs)", &[&format!("IMAGES_DIR={}/", p.images().display())]).ok(),
        format!("{}/certs\n", p.images().display())
    );
    p.calls();

    // A name the tool refuses stops make, saying why.
    for (name, why) in [
        ("nope", "error: unknown image or group `nope`: run `cargo xtask list-all-images` to see them".to_string()),
        ("bad_name", format!("error: {}", bad_name_warning(&p).trim_end().trim_start_matches("warning: skipped: "))),
    ] {
        let out = show(&p, &format!("$(call tag,{name})"), &[]);
        assert_eq!((out.code, out.stdout.as_str()), (Some(2), ""));
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{}", out.stderr);
        assert_eq!(lines[0], why);
        assert!(
            lines[1].starts_with("tools/images.mk:")
                && lines[1].ends_with(&format!(": *** `cargo xtask local-image --print tag {name}` failed.  Stop.")),
            "{}",
            out.stderr
        );
    }
}

/// Every variable and function of the Make API is defined by the shim, and
/// documented by `images-help` and by the README.
#[test]
fn make_api_is_documented() {
    let readme = fs::read_to_string(xtask::workspace_root().join("README.md")).unwrap();
    let p = Project::migrated();
    let api = [
        ("ARCH", "$(ARCH)"),
        ("REMOTE_IMAGE_PREFIX", "$(REMOTE_IMAGE_PREFIX)"),
        ("LOCAL_IMAGE_PREFIX", "$(LOCAL_IMAGE_PREFIX)"),
        ("ALL_IMAGES", "$(ALL_IMAGES)"),
        ("TEST_IMAGES", "$(TEST_IMAGES)"),
        ("path", "$(call path,<image>)"),
        ("dockerfile", "$(call dockerfile,<image>)"),
        ("tag", "$(call tag,<image>)"),
        ("remote_image", "$(call remote_image,<image>)"),
        ("local_image", "$(call local_image,<image>)"),
    ];
    let flavors = show(&p, &api.iter().map(|(name, _)| format!("$(flavor {name})")).collect::<Vec<_>>().join(" "), &[]);
    assert_eq!(
        flavors.ok(),
        "simple recursive recursive recursive recursive recursive recursive recursive recursive recursive\n"
    );
    for (_, doc) in api {
        assert!(IMAGES_HELP.contains(doc), "images-help does not mention {doc}");
        assert!(readme.contains(&format!("`{doc}`")), "the README does not mention {doc}");
    }
    for doc in ["images-help", "XTASK_FLAGS", "make -k", "make -i", "make -jN", "init --from-makefile tools/images.mk"]
    {
        assert!(readme.contains(doc), "the README does not mention {doc}");
    }
    assert_eq!(p.calls(), "");
}

// ---- targets ---------------------------------------------------------------------------

/// `make -k` and `make -i` mean --keep-going, `make -jN` on a `*-all-*`
/// target --jobs N, and XTASK_FLAGS passes anything else.
#[test]
fn make_flags_reach_the_tool() {
    let p = Project::migrated();
    let cases: &[(&[&str], &str)] = &[
        (&["load-certs"], "xtask load certs\n"),
        (&["-k", "load-certs"], "xtask load certs --keep-going\n"),
        (&["-i", "pull-certs"], "xtask pull certs --keep-going\n"),
        (&["--keep-going", "-s", "rebuild-basic"], "xtask rebuild basic --keep-going\n"),
        (&["-j3", "load-all-images"], "xtask load-all-images --jobs 3\n"),
        (&["-j", "3", "-k", "push-all-test-images"], "xtask push-all-test-images --keep-going --jobs 3\n"),
        (&["-j1", "build-all-images"], "xtask build-all-images --jobs 1\n"),
        (&["-j", "test-all-test-images"], "xtask test-all-test-images\n"),
        (&["-j2", "load-certs"], "xtask load certs\n"),
        (&["-k", "-j2", "register-cross"], "xtask register-cross\n"),
        (
            &["XTASK_FLAGS=--shard 2/4 --dry-run", "-k", "load-all-test-images"],
            "xtask load-all-test-images --keep-going --shard 2/4 --dry-run\n",
        ),
        // Variables given to make are not make's flags, whatever they hold.
        (&["NOTE=a -j7 k", "push-all-images"], "xtask push-all-images\n"),
        (&["XTASK_FLAGS=--json -j2", "tag-certs"], "xtask tag certs --json -j2\n"),
        // push-manifest takes no --keep-going.
        (&["-k", "push-manifest-basic"], "xtask push-manifest basic\n"),
    ];
    for (args, want) in cases {
        let out = run(&mut p.make(args));
        assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{args:?}");
        assert_eq!(p.calls(), *want, "{args:?}");
    }
    // Printed as they would run, under make -n.
    assert_eq!(
        run(&mut p.make(&["-n", "-k", "-j4", "load-all-images"])).ok(),
        "cargo xtask load-all-images --keep-going --jobs 4\n"
    );
    // Prerequisites of a root target, run in parallel: each gets -k, none -j.
    let out = run(&mut p.make(&["-k", "-j4", "integration-images"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut calls: Vec<String> = p.calls().lines().map(String::from).collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            "xtask load basic_alpine --keep-going",
            "xtask load basic_busybox --keep-going",
            "xtask load certs --keep-going",
            "xtask load compatibility_gitea_runner --keep-going",
            "xtask load compatibility_gitea_server --keep-going",
            "xtask load web_app --keep-going",
        ]
    );
    // The listing commands take XTASK_FLAGS only.
    let out = run(&mut p.make(&["-k", "-j2", "XTASK_FLAGS=--shard 1/1", "list-all-test-images"]));
    assert_eq!(out.stdout, TESTS.replace(' ', "\n") + "\n");
    assert_eq!(p.calls(), "xtask list-all-test-images --shard 1/1\n");
}

/// `--shard K/N` on the listing: N shards cover each image once, and images
/// built FROM one another share one.
#[test]
fn sharded_listing() {
    let p = Project::migrated();
    for (list, everything) in [("list-all-images", ALL), ("list-all-test-images", TESTS)] {
        for count in 1..=4 {
            let mut seen: Vec<String> = Vec::new();
            for index in 1..=count {
                let out = run(p.make(&[list]).env("XTASK_FLAGS", format!("--shard {index}/{count}")));
                assert_eq!(out.code, Some(0), "{}", out.stderr);
                let names: Vec<String> = out.stdout.lines().map(String::from).collect();
                let mut sorted = names.clone();
                sorted.sort();
                assert_eq!(names, sorted, "{list} {index}/{count}");
                assert_eq!(
                    names.contains(&"runtimes_go1.22".to_string()),
                    names.contains(&"basic_busybox".to_string()),
                    "{list} {index}/{count}: runtimes_go1.22 is built FROM basic_busybox: {names:?}"
                );
                seen.extend(names);
            }
            let total = seen.len();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), total, "{list} over {count} shards: an image on two");
            assert_eq!(seen.join(" "), everything, "{list} over {count} shards");
        }
    }
}

/// `--shard auto` in a CI parallel job is the job's shard: Buildkite
/// counts its jobs from 0, GitLab and gVisor's pipeline from 1. Outside one
/// it is a command-line error.
#[test]
fn auto_shard_is_the_parallel_jobs() {
    let p = Project::migrated();
    let list = |vars: &[(&str, String)], shard: &str| {
        let mut cmd = p.make(&["list-all-images"]);
        // Whatever job the tests themselves run in.
        for (index, count, _) in xtask::catalog::shard::PARALLEL_JOB_VARIABLES {
            cmd.env_remove(index).env_remove(count);
        }
        run(cmd.envs(vars.iter().map(|(k, v)| (k, v))).env("XTASK_FLAGS", format!("--shard {shard}")))
    };
    for count in 1..=3 {
        for index in 1..=count {
            let given = list(&[], &format!("{index}/{count}"));
            assert_eq!(given.code, Some(0), "{}", given.stderr);
            let jobs = [
                [("BUILDKITE_PARALLEL_JOB", index - 1), ("BUILDKITE_PARALLEL_JOB_COUNT", count)],
                [("CI_NODE_INDEX", index), ("CI_NODE_TOTAL", count)],
                [("PARTITION", index), ("TOTAL_PARTITIONS", count)],
            ];
            for job in jobs {
                let vars: Vec<(&str, String)> = job.iter().map(|(k, v)| (*k, v.to_string())).collect();
                let auto = list(&vars, "auto");
                assert_eq!(
                    (auto.code, auto.stdout.as_str()),
                    (Some(0), given.stdout.as_str()),
                    "{vars:?}: {}",
                    auto.stderr
                );
            }
        }
    }
    let outside = list(&[], "auto");
    assert_eq!(outside.code, Some(2), "{}", outside.stderr);
    assert!(
        outside.stderr.contains(
            "error: invalid value 'auto' for '--shard <K/N>': this is no CI parallel job: none of \
             BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT, CI_NODE_INDEX/CI_NODE_TOTAL, \
             PARTITION/TOTAL_PARTITIONS is set; give the shard as K/N\n"
        ),
        "{}",
        outside.stderr
    );
}

#[test]
fn names_with_slashes_and_targets_without_a_name() {
    let p = Project::migrated();
    for goal in ["load-web/app", "load-web/app/"] {
        let out = run(&mut p.make(&[goal]));
        assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{goal}");
        assert_eq!(p.calls(), "xtask load web/app\n", "{goal}");
    }
    assert_eq!(
        run(&mut p.make(&["-n", "push-compatibility/gitea/", "push-manifest-web/app", "test-web_app"])).ok(),
        "cargo xtask push compatibility/gitea\ncargo xtask push-manifest web/app\ncargo xtask test web_app\n"
    );
    let server = p.tag("compatibility/gitea/server");
    assert_eq!(
        run(&mut p.make(&["local-image-compatibility/gitea/server/"])).ok(),
        format!("gvisor.dev/images/compatibility/gitea/server:{server}\n")
    );
    p.calls();
    for verb in ["load", "push", "push-manifest", "local-image"] {
        let out = run(&mut p.make(&[&format!("{verb}-")]));
        assert_eq!((out.code, out.stdout.as_str()), (Some(2), ""), "{verb}-");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "error: `make {verb}-` names no image: use {verb}-<image or group>, e.g. {verb}-basic_hello (make images-help lists the targets)"
            )
        );
        assert_eq!(lines.len(), 2, "{}", out.stderr);
        assert!(lines[1].ends_with(&format!(": {verb}-] Error 2")), "{}", out.stderr);
    }
    assert_eq!(p.calls(), "");
}

#[test]
fn invalid_directory_named_on_the_command_line() {
    let p = Project::migrated();
    let out = run(&mut p.make(&["local-image-bad_name"]));
    assert_ne!(out.code, Some(0));
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        format!("error: {}", bad_name_warning(&p).trim_end().trim_start_matches("warning: skipped: "))
    );
    assert_eq!(out.stdout, "");
}

/// The shim finds the workspace from where it is: `make -C` runs cargo in the
/// workspace; make started elsewhere spells out the manifest, and the tool
/// runs where make does.
#[test]
fn workspace_found_from_elsewhere() {
    let p = Project::migrated();
    let elsewhere = p.tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let listing = ALL.replace(' ', "\n") + "\n";

    let mut cmd = p.make(&["--no-print-directory", "-C"]);
    let out = run(cmd.arg(&p.root).arg("list-all-images").current_dir(&elsewhere));
    assert_eq!(out.stdout, listing);
    assert_eq!(p.calls(), "xtask list-all-images\n");

    let manifest = format!("{}/Cargo.toml", p.root.canonicalize().unwrap().display());
    let mut cmd = p.make(&["-f"]);
    let out = run(cmd.arg(p.root.join("tools/images.mk")).arg("list-all-images").current_dir(&elsewhere));
    assert_eq!(out.stdout, listing);
    assert_eq!(p.calls(), format!("run --quiet --manifest-path {manifest} --package xtask -- list-all-images\n"));

    // A Makefile outside the workspace including the shim: the images root is
    // given as make's directory sees it.
    let outside = elsewhere.join("Makefile");
    fs::write(
        &outside,
        format!("include {}/tools/images.mk\nshow: ; @echo $(call path,certs) $(call tag,certs)\n", p.root.display()),
    )
    .unwrap();
    let out = run(p.make(&["-s", "show"]).current_dir(&elsewhere));
    let images = p.root.canonicalize().unwrap().join("images");
    assert_eq!(out.ok(), format!("{}/certs {}\n", images.display(), p.tag("certs")));
    assert_eq!(
        p.calls(),
        format!(
            "run --quiet --manifest-path {manifest} --package xtask -- settings IMAGES_DIR\n\
             run --quiet --manifest-path {manifest} --package xtask -- local-image --print tag certs\n"
        )
    );
}
