//! The walk through a Dockerfile's instructions, with the variables in
//! scope at each, and the rules about its stages' bases and COPY and ADD
//! sources.

use std::collections::{HashMap, HashSet};

use super::context::{Contents, Presence};
use super::rules::{
    run_rules, Diagnostic, ADD_CHECKSUM, BASE_DIGEST, BASE_TAG, CATALOG_NAME, MISSING_SOURCE, RULES, SYNTAX,
};
use crate::catalog::dockerfile::{self, Instruction};
use crate::config::Settings;
use crate::model::{excerpt, Arch, ImageRef, Parts};

/// What a Dockerfile is judged against.
pub(super) struct Tree<'a> {
    pub(super) settings: &'a Settings,
    /// Image paths, per architecture.
    pub(super) available: HashMap<Arch, HashSet<String>>,
    pub(super) build_args: HashMap<String, String>,
}

const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The state of a walk through a Dockerfile's instructions.
pub(super) struct Walk<'a> {
    rel: &'a str,
    arches: &'a [Arch],
    escape: char,
    /// Variables in scope for FROM: global `ARG`s and the automatic platform ones.
    global: HashMap<String, String>,
    /// Variables in scope in the current stage.
    vars: HashMap<String, String>,
    /// Names of the stages so far, lower case.
    stages: HashSet<String>,
    found: Vec<Diagnostic>,
}

impl Walk<'_> {
    pub(super) fn add(&mut self, line: usize, rule: &'static str, message: String) {
        self.found.push(Diagnostic::new(self.rel, Some(line), rule, message));
    }

    /// `text` with the variables in scope substituted, the global ones
    /// (FROM's) or the stage's; a substitution nested too deep is a finding
    /// at `line`, and has no value.
    fn substitute(&mut self, text: &str, global: bool, line: usize) -> Option<String> {
        let vars = if global { &self.global } else { &self.vars };
        match dockerfile::substitute(text, vars, self.escape) {
            Ok(value) => value,
            Err(too_deep) => {
                self.add(line, SYNTAX, too_deep.to_string());
                None
            }
        }
    }
}

impl Tree<'_> {
    /// Every finding in one Dockerfile (`rel`, relative to the images root),
    /// used for `arches`, whose build context holds `contents`.
    pub(super) fn dockerfile(&self, rel: &str, text: &str, arches: &[Arch], contents: &Contents) -> Vec<Diagnostic> {
        let file = dockerfile::parse(text);
        let mut walk = Walk {
            rel,
            arches,
            escape: file.escape,
            global: HashMap::new(),
            vars: HashMap::new(),
            stages: HashSet::new(),
            found: Vec::new(),
        };

        // BuildKit's automatic platform arguments, where they have one value.
        if let [arch] = arches {
            let platform = arch.platform();
            walk.global.insert("TARGETPLATFORM".into(), platform.into());
            walk.global.insert("TARGETOS".into(), "linux".into());
            walk.global.insert("TARGETARCH".into(), arch.oci().into());
            walk.global.insert("TARGETVARIANT".into(), String::new());
        }
        let mut all: Vec<Diagnostic> =
            file.problems.iter().map(|p| Diagnostic::new(rel, Some(p.line), SYNTAX, p.message.clone())).collect();
        let mut seen_from = false;
        for ins in &file.instructions {
            walk.found.clear();
            for (rule, line) in &ins.allowed {
                if !RULES.iter().any(|r| r.name == rule && r.allowable) {
                    let names: Vec<&str> = RULES.iter().filter(|r| r.allowable).map(|r| r.name).collect();
                    let rule = excerpt(rule);
                    walk.add(*line, SYNTAX, format!("no rule `{rule}` can be allowed: use {}", names.join(", ")));
                }
            }
            let keyword = ins.keyword.as_str();
            if !KEYWORDS.contains(&keyword) {
                walk.add(ins.line, SYNTAX, format!("unknown instruction `{}`", excerpt(&ins.keyword)));
            } else if !seen_from && keyword != "FROM" && keyword != "ARG" {
                walk.add(ins.line, SYNTAX, format!("{keyword} before the first FROM: only ARG may come before it"));
            }
            match keyword {
                "ARG" => self.arg(ins, seen_from, &mut walk),
                "ENV" => {
                    for (name, value) in dockerfile::assignments("ENV", ins.args(), walk.escape) {
                        match value.and_then(|v| walk.substitute(&v, false, ins.line)) {
                            Some(v) => walk.vars.insert(name, v),
                            None => walk.vars.remove(&name),
                        };
                    }
                }
                "FROM" => {
                    seen_from = true;
                    self.from(ins, &mut walk);
                    walk.vars.clear();
                }
                "RUN" => run_rules(ins, &mut walk),
                "COPY" | "ADD" => self.copy(ins, contents, &mut walk),
                _ => {}
            }
            all.extend(walk.found.drain(..).filter(|d| d.rule == SYNTAX || !ins.allows(d.rule)));
        }
        if !seen_from {
            all.push(Diagnostic::new(rel, None, SYNTAX, "no FROM: a Dockerfile needs at least one stage".into()));
        }
        all
    }

    fn arg(&self, ins: &Instruction, seen_from: bool, walk: &mut Walk) {
        for (name, default) in dockerfile::assignments("ARG", ins.args(), walk.escape) {
            let value = self
                .build_args
                .get(&name)
                .cloned()
                .or_else(|| default.and_then(|d| walk.substitute(&d, !seen_from, ins.line)))
                .or_else(|| if seen_from { walk.global.get(&name).cloned() } else { None });
            let scope = if seen_from { &mut walk.vars } else { &mut walk.global };
            match value {
                Some(v) => scope.insert(name, v),
                None => scope.remove(&name),
            };
        }
    }

    fn from(&self, ins: &Instruction, walk: &mut Walk) {
        let words = dockerfile::words(ins.args(), walk.escape);
        let Some(reference) = words.first() else {
            walk.add(ins.line, SYNTAX, "FROM names no image".into());
            return;
        };
        if let Some(reference) = walk.substitute(&reference.text, true, ins.line) {
            self.base(&reference, ins.line, false, walk);
        }
        let name = match words.as_slice() {
            [_, as_, name, ..] if as_.text.eq_ignore_ascii_case("as") => name.text.to_ascii_lowercase(),
            _ => String::new(),
        };
        walk.stages.insert(name);
    }

    /// An image a stage is built on (`FROM`) or copies from (`COPY --from`).
    fn base(&self, reference: &str, line: usize, copied: bool, walk: &mut Walk) {
        let lower = reference.to_ascii_lowercase();
        if lower == "scratch" || walk.stages.contains(&lower) {
            return;
        }
        let how = if copied { "COPY --from" } else { "FROM" };
        if let Some(path) = under(&self.settings.local_prefix, reference) {
            self.catalog_base(reference, path, line, copied, walk);
            return;
        }
        let shown = excerpt(reference);
        if let Some(path) = under(&format!("localhost/{}", self.settings.local_prefix), reference) {
            let local = excerpt(&ImageRef::local_repository(self.settings, path));
            walk.add(
                line,
                CATALOG_NAME,
                format!("{how} {shown}: podman's spelling of the local name; use {local}, which every engine finds"),
            );
            return;
        }
        if let Some(rest) = under(&self.settings.remote_prefix, reference) {
            let path = Arch::ALL.iter().find_map(|a| rest.strip_suffix(&format!("_{a}"))).unwrap_or(rest);
            if self.is_image(path) {
                walk.add(
                    line,
                    CATALOG_NAME,
                    format!(
                        "{how} {shown}: the cache registry's name for the catalog image {path}, which is not built \
                         first; use its local name {}",
                        ImageRef::local_repository(self.settings, path)
                    ),
                );
                return;
            }
        }
        let Parts { tag, digest, .. } = Parts::of(reference);
        if digest.is_some() {
            return;
        }
        match tag {
            None => walk.add(
                line,
                BASE_TAG,
                format!("{how} {shown} has no tag: it means `latest`, which moves; name a version (and its digest)"),
            ),
            Some("latest") => {
                walk.add(line, BASE_TAG, format!("{how} {shown}: `latest` moves; name a version (and its digest)"))
            }
            Some(_) => walk.add(
                line,
                BASE_DIGEST,
                format!("{how} {shown} has no digest: its tag can be pushed again; append @sha256:<digest>"),
            ),
        }
    }

    /// A base named under the local prefix: an image of the catalog for
    /// every architecture the Dockerfile serves, and in a FROM line.
    fn catalog_base(&self, reference: &str, path: &str, line: usize, copied: bool, walk: &mut Walk) {
        // Only ever of a catalog image's path, which is a valid name.
        let local = |p: &str| ImageRef::local_repository(self.settings, p);
        let reference = excerpt(reference);
        if copied {
            if self.is_image(path) {
                walk.add(
                    line,
                    CATALOG_NAME,
                    format!(
                        "COPY --from {reference}: a catalog image copied from is not built first; name it in a stage \
                         (`FROM {}:latest AS {}`) and copy from the stage",
                        local(path),
                        path.rsplit('/').next().unwrap_or(path)
                    ),
                );
            }
            return;
        }
        let missing: Vec<&str> = walk
            .arches
            .iter()
            .filter(|a| !self.available.get(a).is_some_and(|s| s.contains(path)))
            .map(|a| a.as_str())
            .collect();
        if missing.is_empty() {
            return;
        }
        let by_name = path.replace('_', "/");
        let shown = excerpt(path);
        let message = if by_name != path && self.is_image(&by_name) {
            format!(
                "FROM {reference}: `{shown}` is an image name, not its path; use its local name {}",
                local(&by_name)
            )
        } else if missing.len() < walk.arches.len() || self.is_image(path) {
            format!(
                "FROM {reference}: {shown} is not an image for {}: add a Dockerfile for it there, or fix the FROM line",
                missing.join(" or ")
            )
        } else {
            format!(
                "FROM {reference}: no image {shown} in {}: add it, or fix the FROM line",
                self.settings.images_dir.display()
            )
        };
        walk.add(line, CATALOG_NAME, message);
    }

    fn is_image(&self, path: &str) -> bool {
        self.available.values().any(|s| s.contains(path))
    }

    fn copy(&self, ins: &Instruction, contents: &Contents, walk: &mut Walk) {
        let keyword = ins.keyword.as_str();
        if let Some(from) = ins.flag("from").and_then(|f| f.value.as_deref()) {
            let from = walk.substitute(from, false, ins.line);
            if let Some(from) = from.filter(|f| f.parse::<usize>().is_err()) {
                self.base(&from, ins.line, true, walk);
            }
            return;
        }
        let words: Vec<(String, usize)> = match ins.exec_form() {
            Some(words) => words.into_iter().map(|w| (w, ins.line)).collect(),
            None => {
                dockerfile::words(ins.args(), walk.escape).into_iter().map(|w| (w.text, ins.line_at(w.at))).collect()
            }
        };
        let Some((_, sources)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
            walk.add(ins.line, SYNTAX, format!("{keyword} needs a source and a destination"));
            return;
        };
        for (source, line) in sources {
            if source.starts_with("<<") {
                continue;
            }
            let shown = excerpt(source);
            let remote = ["http://", "https://", "git@", "git://"].iter().any(|p| source.starts_with(p));
            if remote {
                if keyword == "COPY" {
                    walk.add(*line, MISSING_SOURCE, format!("COPY cannot fetch {shown}: use ADD with --checksum"));
                } else if ins.flag("checksum").is_none() {
                    walk.add(
                        *line,
                        ADD_CHECKSUM,
                        format!(
                            "ADD {shown} without --checksum: what it serves can change; add --checksum=sha256:<digest>"
                        ),
                    );
                }
                continue;
            }
            let Some(path) = walk.substitute(source, false, *line) else { continue };
            match contents.find(&path) {
                Presence::Included => {}
                Presence::Excluded => walk.add(
                    *line,
                    MISSING_SOURCE,
                    format!("{keyword} {shown}: .dockerignore excludes it from the build context"),
                ),
                Presence::Missing => {
                    walk.add(*line, MISSING_SOURCE, format!("{keyword} {shown}: not in the build context"))
                }
            }
        }
    }
}

/// The path of a reference under `prefix/`, less its tag and digest.
fn under<'a>(prefix: &str, reference: &'a str) -> Option<&'a str> {
    let rest = reference.strip_prefix(prefix)?.strip_prefix('/')?;
    Some(Parts::of(rest).name)
}
