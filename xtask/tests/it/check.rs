//! `check` on trees written here: one image per rule, Dockerfiles that
//! are awkward to read (continuations, heredocs, stages, ARG before FROM,
//! an escape directive), and this workspace's own images, which pass
//! `check --deny-warnings` as CI runs it. Files only: no engine, no registry.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{bare_xtask, run};

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// An images root in a temporary directory.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let tree = Tree { dir: tempfile::tempdir().unwrap() };
        fs::create_dir(tree.root()).unwrap();
        tree
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("images")
    }

    fn write(&self, rel: &str, text: &str) -> &Tree {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text.replace("<digest>", DIGEST)).unwrap();
        self
    }

    /// The binary, run from the tree's directory (so paths print as
    /// `images/…`), with settings of its own.
    fn check(&self, args: &[&str]) -> Command {
        let mut cmd = bare_xtask();
        let config = self.dir.path().join("images.toml");
        fs::write(&config, "").unwrap();
        cmd.current_dir(self.dir.path())
            .env("IMAGES_CONFIG", &config)
            .env("IMAGES_DIR", "images")
            .env("LOCAL_IMAGE_PREFIX", "xtask.test/images")
            .env("REMOTE_IMAGE_PREFIX", "registry.test:5000/cache")
            .arg("check")
            .args(args);
        cmd
    }
}

/// One image per rule, each breaking it (and, where it has one, the way
/// that does not).
fn rules_tree() -> Tree {
    let tree = Tree::new();
    tree.write("base-tag/Dockerfile", "FROM alpine\nFROM debian:latest AS second\nFROM second\nFROM debian@<digest>\n")
        .write("base-digest/Dockerfile", "FROM debian:13\nFROM debian:13@<digest>\nFROM scratch\n")
        // Catalog images: `base` (and `base/nested`), and `only-arm`, for aarch64 alone.
        .write("base/Dockerfile", "FROM scratch\n")
        .write("base/nested/Dockerfile", "FROM scratch\n")
        .write("only-arm/Dockerfile.aarch64", "FROM scratch\n")
        .write(
            "catalog-name/Dockerfile",
            "FROM xtask.test/images/base:latest\n\
             FROM xtask.test/images/base_nested AS by-name\n\
             FROM registry.test:5000/cache/base_x86_64:0123456789abcdef\n\
             FROM localhost/xtask.test/images/base\n\
             FROM xtask.test/images/nope\n\
             FROM xtask.test/images/only-arm\n\
             COPY --from=xtask.test/images/base /x /x\n\
             COPY --from=by-name /x /y\n",
        )
        .write("arch/Dockerfile", "FROM scratch\n")
        .write("arch/Dockerfile.amd64", "FROM scratch\n")
        .write("arch/Dockerfile.PPC64LE", "FROM scratch\n")
        .write("arch/Dockerfile.X86_64", "FROM scratch\n")
        .write("arch/Dockerfile.llama-2-7b", "FROM scratch\n")
        .write("arm-only/Dockerfile.arm64", "FROM scratch\n")
        .write("ignored/.dockerignore", "# everything but the data\n*\n!data\n")
        .write("ignored/Dockerfile", "FROM scratch\nCOPY data /data\n")
        .write("ignored/data", "x\n")
        .write(
            "add-checksum/Dockerfile",
            "FROM scratch\n\
             ADD https://example.com/a.tar.gz /a\n\
             ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/b.tar.gz /b\n\
             ADD git@github.com:x/y.git /y\n",
        )
        .write(
            "missing-source/Dockerfile",
            "FROM scratch\n\
             COPY present.txt /\n\
             COPY absent.txt /\n\
             COPY *.md /docs/\n\
             COPY build.log /\n\
             COPY [\"dir with space/\", \"/d\"]\n\
             COPY sub/*.txt ./sub/../sub/a.txt /s/\n\
             COPY https://example.com/x /x\n\
             COPY --from=other /absent /absent\n",
        )
        .write("missing-source/.dockerignore", "*.log\n")
        .write("missing-source/present.txt", "x\n")
        .write("missing-source/build.log", "x\n")
        .write("missing-source/dir with space/f", "x\n")
        .write("missing-source/sub/a.txt", "x\n")
        .write(
            "syntax/Dockerfile",
            "RUN echo before\n\
             FROM scratch\n\
             # xtask: allow(no-such-rule)\n\
             FRM x\n\
             # xtask: allow syntax\n\
             RUN <<EOF\n\
             never closed\n",
        )
        .write("no-from/Dockerfile", "ARG X=1\n")
        .write(
            "unpinned/Dockerfile",
            "FROM debian:13@<digest>\n\
             RUN apt-get update && apt-get install -y --no-install-recommends git curl=8.14.1-2 ./local.deb \\\n\
             \x20 && rm -rf /var/lib/apt/lists/*\n\
             RUN apk add --no-cache --virtual .deps musl-dev zlib=1.3.1-r2\n\
             RUN pip install requests==2.32.3 flask -r requirements.txt && python3 -m pip install --upgrade pip\n\
             RUN npm install -g typescript@5.6.3 left-pad@^1.3.0 @scope/pkg\n\
             RUN npm ci && pip install -r requirements.txt\n",
        )
        .write(
            "curl-pipe/Dockerfile",
            "FROM debian:13@<digest>\n\
             RUN curl -fsSL https://example.com/install.sh | sh\n\
             RUN wget -qO- https://example.com/x | sudo bash -s -- --yes\n\
             RUN curl -fsSL https://example.com/key | gpg --dearmor > /k\n",
        )
        .write(
            "build-time/Dockerfile",
            "FROM debian:13@<digest>\n\
             RUN date > /built && date -d \"@$SOURCE_DATE_EPOCH\" > /fixed\n\
             RUN echo \"$(date +%s)\" | tee /t\n\
             RUN date\n",
        )
        .write(
            "git-clone/Dockerfile",
            "FROM debian:13@<digest>\n\
             RUN git clone --depth 1 -b main https://example.com/x.git /x\n\
             RUN git clone https://example.com/y.git /y && git -C /y checkout 4b825dc642cb\n",
        )
        .write(
            "apt-lists/Dockerfile",
            "FROM debian:13@<digest>\n\
             RUN apt-get update\n\
             RUN apt-get update && apt-get clean\n\
             RUN --mount=type=cache,target=/var/lib/apt/lists apt-get update\n\
             RUN apt-get update && rm -rf /var/lib/apt/lists/*\n",
        );
    tree
}

#[test]
fn one_case_per_rule() {
    let tree = rules_tree();
    let out = run(&mut tree.check(&[]));
    let expected = [
        "images/add-checksum/Dockerfile:2: error: ADD https://example.com/a.tar.gz without --checksum: what it serves can change; add --checksum=sha256:<digest> [add-checksum]",
        "images/add-checksum/Dockerfile:4: error: ADD git@github.com:x/y.git without --checksum: what it serves can change; add --checksum=sha256:<digest> [add-checksum]",
        "images/apt-lists/Dockerfile:2: warning: apt-get update without `rm -rf /var/lib/apt/lists/*` in the same RUN: the lists stay in the layer and go stale [apt-lists]",
        "images/apt-lists/Dockerfile:3: warning: apt-get update without `rm -rf /var/lib/apt/lists/*` in the same RUN: the lists stay in the layer and go stale [apt-lists]",
        "images/arch/Dockerfile.PPC64LE: error: Dockerfile.PPC64LE is never used: PPC64LE is not an architecture the tool builds for (x86_64, aarch64) [arch-suffix]",
        "images/arch/Dockerfile.X86_64: error: Dockerfile.X86_64 is never used: the tool calls this architecture x86_64; rename it Dockerfile.x86_64 [arch-suffix]",
        "images/arch/Dockerfile.amd64: error: Dockerfile.amd64 is never used: the tool calls this architecture x86_64; rename it Dockerfile.x86_64 [arch-suffix]",
        "images/arm-only/Dockerfile.arm64: error: Dockerfile.arm64 is never used: the tool calls this architecture aarch64; rename it Dockerfile.aarch64 [arch-suffix]",
        "images/base-digest/Dockerfile:1: warning: FROM debian:13 has no digest: its tag can be pushed again; append @sha256:<digest> [base-digest]",
        "images/base-tag/Dockerfile:1: error: FROM alpine has no tag: it means `latest`, which moves; name a version (and its digest) [base-tag]",
        "images/base-tag/Dockerfile:2: error: FROM debian:latest: `latest` moves; name a version (and its digest) [base-tag]",
        "images/build-time/Dockerfile:2: warning: `date` writes the build time into the image: no two builds are the same; use SOURCE_DATE_EPOCH (`ARG SOURCE_DATE_EPOCH`, then `date -d \"@$SOURCE_DATE_EPOCH\"`) or leave the time out [build-time]",
        "images/build-time/Dockerfile:3: warning: `date` writes the build time into the image: no two builds are the same; use SOURCE_DATE_EPOCH (`ARG SOURCE_DATE_EPOCH`, then `date -d \"@$SOURCE_DATE_EPOCH\"`) or leave the time out [build-time]",
        "images/catalog-name/Dockerfile:2: error: FROM xtask.test/images/base_nested: `base_nested` is an image name, not its path; use its local name xtask.test/images/base/nested [catalog-name]",
        "images/catalog-name/Dockerfile:3: error: FROM registry.test:5000/cache/base_x86_64:0123456789abcdef: the cache registry's name for the catalog image base, which is not built first; use its local name xtask.test/images/base [catalog-name]",
        "images/catalog-name/Dockerfile:4: error: FROM localhost/xtask.test/images/base: podman's spelling of the local name; use xtask.test/images/base, which every engine finds [catalog-name]",
        &format!("images/catalog-name/Dockerfile:5: error: FROM xtask.test/images/nope: no image nope in {}: add it, or fix the FROM line [catalog-name]", tree.root().display()),
        "images/catalog-name/Dockerfile:6: error: FROM xtask.test/images/only-arm: only-arm is not an image for x86_64: add a Dockerfile for it there, or fix the FROM line [catalog-name]",
        "images/catalog-name/Dockerfile:7: error: COPY --from xtask.test/images/base: a catalog image copied from is not built first; name it in a stage (`FROM xtask.test/images/base:latest AS base`) and copy from the stage [catalog-name]",
        "images/curl-pipe/Dockerfile:2: warning: `curl … | sh`: a script fetched at build time runs unverified; download it, check its sha256, then run it [curl-pipe-shell]",
        "images/curl-pipe/Dockerfile:3: warning: `wget … | bash`: a script fetched at build time runs unverified; download it, check its sha256, then run it [curl-pipe-shell]",
        "images/git-clone/Dockerfile:2: warning: git clone takes whatever the branch (or tag) points at when the image is built; check a commit out in the same RUN (`git checkout <commit>`, or `git clone --revision <commit>`) [git-clone-branch]",
        "images/ignored/.dockerignore:2: error: excludes Dockerfile, the image's own Dockerfile: remove the pattern, or re-include it with `!Dockerfile` [ignored-dockerfile]",
        "images/missing-source/Dockerfile:3: error: COPY absent.txt: not in the build context [missing-source]",
        "images/missing-source/Dockerfile:4: error: COPY *.md: not in the build context [missing-source]",
        "images/missing-source/Dockerfile:5: error: COPY build.log: .dockerignore excludes it from the build context [missing-source]",
        "images/missing-source/Dockerfile:8: error: COPY cannot fetch https://example.com/x: use ADD with --checksum [missing-source]",
        "images/missing-source/Dockerfile:9: error: COPY --from other has no tag: it means `latest`, which moves; name a version (and its digest) [base-tag]",
        "images/no-from/Dockerfile: error: no FROM: a Dockerfile needs at least one stage [syntax]",
        "images/syntax/Dockerfile:1: error: RUN before the first FROM: only ARG may come before it [syntax]",
        "images/syntax/Dockerfile:3: error: no rule `no-such-rule` can be allowed: use base-tag, catalog-name, add-checksum, missing-source, base-digest, unpinned-packages, curl-pipe-shell, apt-lists, build-time, git-clone-branch, pip-hashes [syntax]",
        "images/syntax/Dockerfile:4: error: unknown instruction `FRM` [syntax]",
        "images/syntax/Dockerfile:5: error: malformed xtask comment: write `# xtask: allow(<rule>[, <rule>…])` [syntax]",
        "images/syntax/Dockerfile:6: error: heredoc `EOF` is never closed: end it with a line holding `EOF` alone [syntax]",
        "images/unpinned/Dockerfile:2: warning: apt-get install of unpinned packages: git; pin them (name=version) [unpinned-packages]",
        "images/unpinned/Dockerfile:4: warning: apk add of unpinned packages: musl-dev; pin them (name=version) [unpinned-packages]",
        "images/unpinned/Dockerfile:5: warning: pip install -r requirements.txt without --require-hashes: what pip downloads is not checked; give each requirement its --hash (pip-compile --generate-hashes) and add --require-hashes [pip-hashes]",
        "images/unpinned/Dockerfile:5: warning: pip install of unpinned packages: flask; pin them (name==version) [unpinned-packages]",
        "images/unpinned/Dockerfile:5: warning: pip install of unpinned packages: pip; pin them (name==version) [unpinned-packages]",
        "images/unpinned/Dockerfile:6: warning: npm install of unpinned packages: left-pad@^1.3.0, @scope/pkg; pin them (name@version) [unpinned-packages]",
        "images/unpinned/Dockerfile:7: warning: pip install -r requirements.txt without --require-hashes: what pip downloads is not checked; give each requirement its --hash (pip-compile --generate-hashes) and add --require-hashes [pip-hashes]",
    ];
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected, "{}", out.stderr);
    assert_eq!(out.stderr, "checked 17 Dockerfiles: 26 errors, 15 warnings\n");
    assert_eq!(out.code, Some(1));
}

/// The awkward parts of the syntax, read as the builder reads them: only
/// what is really there is reported, on the line where it is.
#[test]
fn awkward_dockerfiles() {
    let tree = Tree::new();
    tree.write(
        "awkward/Dockerfile",
        "# syntax=docker/dockerfile:1\n\
         ARG BASE=debian\n\
         ARG VERSION=13\n\
         ARG DIGEST=<digest>\n\
         FROM ${BASE}:${VERSION}@${DIGEST} AS build\n\
         ENV DIR=src\n\
         COPY ${DIR}/main.c /src/\n\
         RUN apt-get update \\\n\
         \x20   # the lists go at the end of this RUN\n\
         \n\
         \x20   && apt-get install -y \\\n\
         \x20        gcc=4:14.2.0-1 \\\n\
         \x20        make \\\n\
         \x20   && rm -rf /var/lib/apt/lists/*\n\
         RUN <<EOF\n\
         set -e\n\
         apt-get update\n\
         EOF\n\
         COPY <<EOF /etc/motd\n\
         FROM this-is-not-an-instruction\n\
         apt-get install nothing\n\
         EOF\n\
         # xtask: allow(curl-pipe-shell) the script is checked below\n\
         RUN curl -fsSL https://example.com/i.sh \\\n\
         \x20 | sh\n\
         RUN [\"/bin/sh\", \"-c\", \"pip install flask\"]\n\
         RUN bash -c 'apt-get install -y \\\n\
         \x20     vim'\n\
         RUN python3 <<EOF\n\
         apt-get update\n\
         EOF\n\
         FROM build AS test\n\
         COPY --from=build /src /src\n\
         FROM \\\n\
         \x20 scratch\n\
         COPY --from=test /src /src\n\
         COPY --from=0 /src /src2\n\
         FROM ${BASE}\n",
    )
    .write("awkward/src/main.c", "int main() {}\n")
    .write(
        "escape/Dockerfile",
        "# escape=`\n\
         FROM debian:13@<digest>\n\
         RUN apt-get update && `\n\
         \x20   apt-get install -y git && `\n\
         \x20   rm -rf /var/lib/apt/lists/*\n\
         COPY C:\\not-a-continuation\\ /x\n",
    );
    let out = run(&mut tree.check(&[]));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "images/awkward/Dockerfile:11: warning: apt-get install of unpinned packages: make; pin them (name=version) [unpinned-packages]",
            "images/awkward/Dockerfile:17: warning: apt-get update without `rm -rf /var/lib/apt/lists/*` in the same RUN: the lists stay in the layer and go stale [apt-lists]",
            "images/awkward/Dockerfile:26: warning: pip install of unpinned packages: flask; pin them (name==version) [unpinned-packages]",
            "images/awkward/Dockerfile:27: warning: apt-get install of unpinned packages: vim; pin them (name=version) [unpinned-packages]",
            "images/awkward/Dockerfile:38: error: FROM debian has no tag: it means `latest`, which moves; name a version (and its digest) [base-tag]",
            "images/escape/Dockerfile:4: warning: apt-get install of unpinned packages: git; pin them (name=version) [unpinned-packages]",
            "images/escape/Dockerfile:6: error: COPY C:\\not-a-continuation\\: not in the build context [missing-source]",
        ],
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr, "checked 2 Dockerfiles: 2 errors, 5 warnings\n");
    assert_eq!(out.code, Some(1));
}

#[test]
fn json_selection_and_denied_warnings() {
    let tree = rules_tree();
    let out = run(&mut tree.check(&["curl-pipe", "base-digest", "--json"]));
    let document: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(document["schema"], json!(1), "{}", out.stdout);
    let found = document["findings"].clone();
    let row = |path: &str, line: u64, rule: &str, message: &str| json!({ "path": path, "line": line, "level": "warning", "rule": rule, "message": message });
    let piped = |fetch: &str, shell: &str| {
        format!(
            "`{fetch} … | {shell}`: a script fetched at build time runs unverified; download it, check its sha256, \
             then run it"
        )
    };
    assert_eq!(
        found,
        json!([
            row(
                "images/base-digest/Dockerfile",
                1,
                "base-digest",
                "FROM debian:13 has no digest: its tag can be pushed again; append @sha256:<digest>"
            ),
            row("images/curl-pipe/Dockerfile", 2, "curl-pipe-shell", &piped("curl", "sh")),
            row("images/curl-pipe/Dockerfile", 3, "curl-pipe-shell", &piped("wget", "bash")),
        ])
    );
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), "checked 2 Dockerfiles: 0 errors, 3 warnings\n"));

    let denied = run(&mut tree.check(&["curl-pipe", "--deny-warnings"]));
    assert_eq!(denied.code, Some(1), "{}", denied.stderr);
    assert_eq!(denied.stderr, "checked 1 Dockerfile: 0 errors, 2 warnings (warnings denied)\n");

    // Allowed with a reason, the same Dockerfile passes.
    tree.write(
        "curl-pipe/Dockerfile",
        "FROM debian:13@<digest>\n\
         # xtask: allow(curl-pipe-shell) the installer is fetched from our own server over TLS\n\
         RUN curl -fsSL https://example.com/install.sh | sh\n\
         # xtask: allow(curl-pipe-shell)\n\
         RUN wget -qO- https://example.com/x | sudo bash -s -- --yes\n",
    );
    let allowed = run(&mut tree.check(&["curl-pipe", "--deny-warnings"]));
    assert_eq!((allowed.code, allowed.stdout.as_str()), (Some(0), ""), "{}", allowed.stderr);
    assert_eq!(allowed.stderr, "checked 1 Dockerfile: no problems\n");

    let unknown = run(&mut tree.check(&["curl-piped"]));
    assert_eq!(unknown.code, Some(1));
    assert_eq!(unknown.stderr, "error: unknown image or group `curl-piped`: did you mean curl-pipe, unpinned?\n");
}

/// The rules are listed in `check --help`, unwrapped.
/// A directory that cannot make an image name breaks every `*-all-*` run:
/// `check` fails on it, naming its path, in text and JSON, and a check of
/// images named on the command line leaves it alone.
#[test]
fn image_directories_that_cannot_be_names_are_errors() {
    let tree = Tree::new();
    tree.write("NcUpper/Dockerfile", "FROM scratch\n")
        .write("nc space/Dockerfile", "FROM scratch\n")
        .write("ok/Dockerfile", "FROM scratch\n");
    let root = tree.root();
    let finding = |dir: &str| {
        format!(
            "image directory {}/{dir} is not a valid image name (`{dir}`): use lower case letters, digits, and `.` or `-` \
             between them",
            root.display()
        )
    };
    let out = run(&mut tree.check(&["--deny-warnings"]));
    assert_eq!(
        out.stdout,
        format!(
            "images/NcUpper: error: {} [image-name]\nimages/nc space: error: {} [image-name]\n",
            finding("NcUpper"),
            finding("nc space")
        )
    );
    assert_eq!(out.stderr, "checked 1 Dockerfile: 2 errors, 0 warnings\n");
    assert_eq!(out.code, Some(1));

    let out = run(&mut tree.check(&["--json"]));
    let document: Value = serde_json::from_str(&out.stdout).unwrap();
    let error = |dir: &str| json!({"path": format!("images/{dir}"), "line": null, "level": "error", "rule": "image-name", "message": finding(dir)});
    assert_eq!(document, json!({"schema": 1, "findings": [error("NcUpper"), error("nc space")]}));
    assert_eq!(out.code, Some(1));

    let out = run(&mut tree.check(&["ok"]));
    assert_eq!((out.stdout.as_str(), out.code), ("", Some(0)), "{}", out.stderr);
}

#[test]
fn help_lists_the_rules() {
    let tree = Tree::new();
    let out = run(&mut tree.check(&["--help"]));
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.ends_with(&format!("{}\n", xtask::commands::check::RULES_HELP)), "{}", out.stdout);
}

/// This workspace's images pass, as CI checks them.
#[test]
fn own_images_pass_with_warnings_denied() {
    let workspace = xtask::workspace_root();
    let out = run(bare_xtask().current_dir(&workspace).args(["check", "--deny-warnings"]));
    let dockerfiles = walk_dockerfiles(&workspace.join("images"));
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", format!("checked {dockerfiles} Dockerfiles: no problems\n").as_str())
    );
}

fn walk_dockerfiles(dir: &Path) -> usize {
    let mut n = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            n += walk_dockerfiles(&entry.path());
        } else if entry.file_name().to_string_lossy().starts_with("Dockerfile") {
            n += 1;
        }
    }
    n
}
