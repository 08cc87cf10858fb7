//! The rules `check` applies: their names, levels and help, the findings
//! they make, and the rules about what a RUN instruction's commands do.

use serde::Serialize;

use super::shell;
use super::walk::Walk;
use crate::catalog::dockerfile::Instruction;
use crate::model::{escape, excerpt};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

pub struct Rule {
    pub name: &'static str,
    pub level: Level,
    /// Whether `# xtask: allow(<rule>)` can silence it: only rules about
    /// an instruction can.
    pub allowable: bool,
}

const fn rule(name: &'static str, level: Level, allowable: bool) -> Rule {
    Rule { name, level, allowable }
}

pub const RULES: [Rule; 15] = [
    rule(IMAGE_NAME, Level::Error, false),
    rule(BASE_TAG, Level::Error, true),
    rule(CATALOG_NAME, Level::Error, true),
    rule(ARCH_SUFFIX, Level::Error, false),
    rule(IGNORED_DOCKERFILE, Level::Error, false),
    rule(ADD_CHECKSUM, Level::Error, true),
    rule(MISSING_SOURCE, Level::Error, true),
    rule(SYNTAX, Level::Error, false),
    rule(BASE_DIGEST, Level::Warning, true),
    rule(UNPINNED_PACKAGES, Level::Warning, true),
    rule(CURL_PIPE_SHELL, Level::Warning, true),
    rule(APT_LISTS, Level::Warning, true),
    rule(BUILD_TIME, Level::Warning, true),
    rule(GIT_CLONE_BRANCH, Level::Warning, true),
    rule(PIP_HASHES, Level::Warning, true),
];

pub(super) const IMAGE_NAME: &str = "image-name";
pub(super) const BASE_TAG: &str = "base-tag";
pub(super) const CATALOG_NAME: &str = "catalog-name";
pub(super) const ARCH_SUFFIX: &str = "arch-suffix";
pub(super) const IGNORED_DOCKERFILE: &str = "ignored-dockerfile";
pub(super) const ADD_CHECKSUM: &str = "add-checksum";
pub(super) const MISSING_SOURCE: &str = "missing-source";
pub(super) const SYNTAX: &str = "syntax";
pub(super) const BASE_DIGEST: &str = "base-digest";
pub(super) const UNPINNED_PACKAGES: &str = "unpinned-packages";
pub(super) const CURL_PIPE_SHELL: &str = "curl-pipe-shell";
pub(super) const APT_LISTS: &str = "apt-lists";
pub(super) const BUILD_TIME: &str = "build-time";
pub(super) const GIT_CLONE_BRANCH: &str = "git-clone-branch";
pub(super) const PIP_HASHES: &str = "pip-hashes";

/// `check --help`'s list of rules; no line is wider than clap's help (100 columns).
pub const RULES_HELP: &str = "\
Rules (errors fail the check; warnings do too with --deny-warnings):
  error    image-name          an image directory whose path cannot make an image name (upper
                               case, a space, ...): every *-all-* command fails on it
  error    base-tag            FROM an external image with no tag, or `latest`; a digest pins it,
                               whatever the tag
  error    catalog-name        FROM a catalog image under a name that is not its local name (its
                               remote name, `_` for `/`, podman's localhost/...), a local name that
                               is no image for the Dockerfile's architectures, or COPY --from a
                               catalog image: it would not be built first
  error    arch-suffix         Dockerfile.<suffix> with a suffix that spells an architecture, which
                               discovery never uses: amd64, x86-64, x64, arm64, arm64v8, armv8, arm,
                               armhf, armel, armv6, armv7, arm32v6, arm32v7, i386, i686, 386, x86,
                               ppc64le, ppc64, s390x, riscv64, mips, mipsle, mips64, mips64le,
                               loong64, loongarch64 (in any case), or x86_64/aarch64 in another
                               case; other suffixes (Dockerfile.llama-2-7b) are not architectures
  error    ignored-dockerfile  the image's .dockerignore excludes its Dockerfile
  error    add-checksum        ADD of a URL without --checksum
  error    missing-source      a COPY or ADD source that is not in the build context, or that
                               .dockerignore excludes
  error    syntax              what the builder refuses: an unclosed heredoc, an unknown
                               instruction, an instruction before FROM, no FROM; or a malformed
                               allow comment, or one naming no rule that can be allowed
  warning  base-digest         FROM an external image without a digest (@sha256:...)
  warning  unpinned-packages   apt-get/apt install, apk add, pip install or npm install of a
                               package without a version
  warning  curl-pipe-shell     curl ... | sh (or wget, bash, ...): a script fetched at build time,
                               run unverified
  warning  apt-lists           apt-get update in a RUN that does not remove /var/lib/apt/lists
  warning  build-time          `date` (without -d or -r) written to a file, piped on or substituted
                               in a RUN: the build time goes into the image, which no rebuild
                               reproduces; use SOURCE_DATE_EPOCH
  warning  git-clone-branch    git clone in a RUN that checks no commit out: it takes whatever the
                               branch (or tag) points at when built
  warning  pip-hashes          pip install -r <file> without --require-hashes: what pip downloads
                               is not checked against hashes

A comment line `# xtask: allow(<rule>[, <rule>...]) <why>` allows those rules for the next
instruction (or for the one whose continuation lines it sits among). arch-suffix,
ignored-dockerfile, image-name and syntax cannot be allowed.";

/// One finding, at a file relative to the images root (and a line of it).
/// What its message quotes of the file is an escaped excerpt
/// ([`crate::model::excerpt`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: String,
    pub line: Option<usize>,
    pub level: Level,
    pub rule: &'static str,
    pub message: String,
}

impl Diagnostic {
    pub(super) fn new(path: &str, line: Option<usize>, rule: &'static str, message: String) -> Diagnostic {
        let level = RULES.iter().find(|r| r.name == rule).map_or(Level::Error, |r| r.level);
        Diagnostic { path: path.to_string(), line, level, rule, message }
    }

    /// `path:line: level: message [rule]`, as compilers print, escaped
    /// for a terminal: the path is a file's name too.
    pub fn render(&self, root: &str) -> String {
        let line = self.line.map(|l| format!(":{l}")).unwrap_or_default();
        escape(&format!("{root}/{}{line}: {}: {} [{}]", self.path, self.level.as_str(), self.message, self.rule))
    }
}

/// The rules about what a RUN instruction's commands do.
pub(super) fn run_rules(ins: &Instruction, walk: &mut Walk) {
    let facts = shell::facts(ins);
    for (line, command, pin, packages) in facts.unpinned {
        walk.add(
            line,
            UNPINNED_PACKAGES,
            format!("{command} of unpinned packages: {}; pin them ({pin})", excerpt(&packages.join(", "))),
        );
    }
    for (line, fetch, shell) in facts.piped {
        walk.add(
            line,
            CURL_PIPE_SHELL,
            format!(
                "`{fetch} … | {shell}`: a script fetched at build time runs unverified; download it, check its \
                 sha256, then run it"
            ),
        );
    }
    for line in facts.build_time {
        walk.add(
            line,
            BUILD_TIME,
            "`date` writes the build time into the image: no two builds are the same; use SOURCE_DATE_EPOCH \
             (`ARG SOURCE_DATE_EPOCH`, then `date -d \"@$SOURCE_DATE_EPOCH\"`) or leave the time out"
                .into(),
        );
    }
    if !facts.commit_checked_out {
        for line in facts.clones {
            walk.add(
                line,
                GIT_CLONE_BRANCH,
                "git clone takes whatever the branch (or tag) points at when the image is built; check a commit \
                 out in the same RUN (`git checkout <commit>`, or `git clone --revision <commit>`)"
                    .into(),
            );
        }
    }
    for (line, files) in facts.unhashed {
        walk.add(
            line,
            PIP_HASHES,
            format!(
                "pip install -r {} without --require-hashes: what pip downloads is not checked; give each \
                 requirement its --hash (pip-compile --generate-hashes) and add --require-hashes",
                excerpt(&files)
            ),
        );
    }
    if let (Some(line), false) = (facts.apt_update, facts.lists_removed) {
        walk.add(
            line,
            APT_LISTS,
            "apt-get update without `rm -rf /var/lib/apt/lists/*` in the same RUN: the lists stay in the layer \
             and go stale"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule is in `check --help`, with its level.
    #[test]
    fn help_lists_every_rule() {
        for rule in &RULES {
            let line = format!("  {:<8} {:<19} ", rule.level.as_str(), rule.name);
            assert!(RULES_HELP.contains(&line), "{line:?} is not in the help");
        }
        assert_eq!(RULES_HELP.matches("\n  error ").count() + RULES_HELP.matches("\n  warning ").count(), RULES.len());
        assert!(RULES_HELP.lines().all(|l| l.chars().count() <= 100), "{RULES_HELP}");
    }

    /// The rules that `verify` finds the reasons for: each finding's line
    /// and rule, and what allows one.
    #[test]
    fn the_build_time_clones_of_branches_and_unhashed_requirements() {
        let text = "\
FROM scratch
RUN date > /stamp
RUN date
RUN date -d \"@$SOURCE_DATE_EPOCH\" > /s && date -ur /etc/hostname > /r && date 2>/dev/null >/dev/null
RUN echo \"built $(date +%s)\" > /b
RUN STAMP=`date` && echo $STAMP | tee /x
RUN date +%s | sha256sum > /h
RUN sh -c 'date >> /log'
RUN git clone https://example.com/y.git /y
RUN git clone https://example.com/y.git /y && git -C /y checkout 0123abcd
RUN git clone --revision 0123abcd https://example.com/y.git && git clone -b \"$REF\" x && git checkout \"$REF\"
RUN pip install -r requirements.txt
RUN pip install --require-hashes -r requirements.txt && python3 -m pip install -rdev.txt
# xtask: allow(build-time) the stamp is what the image is for
RUN date > /built
";
        let settings = crate::config::Settings::for_tests("x.example", "r.example/cache");
        let tree = super::super::walk::Tree {
            settings: &settings,
            available: std::collections::HashMap::new(),
            build_args: std::collections::HashMap::new(),
        };
        let contents = super::super::context::Contents::default();
        let found: Vec<(usize, &str)> = tree
            .dockerfile("a/Dockerfile", text, &[crate::model::Arch::X86_64], &contents)
            .iter()
            .map(|d| (d.line.unwrap_or(0), d.rule))
            .collect();
        assert_eq!(
            found,
            [
                (2, BUILD_TIME),
                (5, BUILD_TIME),
                (6, BUILD_TIME),
                (7, BUILD_TIME),
                (8, BUILD_TIME),
                (9, GIT_CLONE_BRANCH),
                (12, PIP_HASHES),
                (13, PIP_HASHES),
            ]
        );
        let pip = tree.dockerfile("a/Dockerfile", text, &[crate::model::Arch::X86_64], &contents).remove(6);
        assert_eq!(
            pip.render("images"),
            "images/a/Dockerfile:12: warning: pip install -r requirements.txt without --require-hashes: what pip \
             downloads is not checked; give each requirement its --hash (pip-compile --generate-hashes) and add \
             --require-hashes [pip-hashes]"
        );
    }
}
