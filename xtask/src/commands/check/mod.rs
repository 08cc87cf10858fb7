//! `check`: hazards to reproducibility and correctness in the images'
//! Dockerfiles and build contexts, found before anything is built. Reads
//! files only: no engine, no registry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::catalog::discovery::{discover_lenient, walk_error, Catalog};
use crate::catalog::dockerfile::{self, Instruction};
use crate::catalog::dockerignore::DockerIgnore;
use crate::config::Settings;
use crate::model::Arch;
use crate::model::{ImageRef, Parts};

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

pub const RULES: [Rule; 11] = [
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
];

const BASE_TAG: &str = "base-tag";
const CATALOG_NAME: &str = "catalog-name";
const ARCH_SUFFIX: &str = "arch-suffix";
const IGNORED_DOCKERFILE: &str = "ignored-dockerfile";
const ADD_CHECKSUM: &str = "add-checksum";
const MISSING_SOURCE: &str = "missing-source";
const SYNTAX: &str = "syntax";
const BASE_DIGEST: &str = "base-digest";
const UNPINNED_PACKAGES: &str = "unpinned-packages";
const CURL_PIPE_SHELL: &str = "curl-pipe-shell";
const APT_LISTS: &str = "apt-lists";

/// `check --help`'s list of rules; no line is wider than clap's help (100 columns).
pub const RULES_HELP: &str = "\
Rules (errors fail the check; warnings do too with --deny-warnings):
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

A comment line `# xtask: allow(<rule>[, <rule>...]) <why>` allows those rules for the next
instruction (or for the one whose continuation lines it sits among). arch-suffix,
ignored-dockerfile and syntax cannot be allowed.";

/// One finding, at a file relative to the images root (and a line of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: String,
    pub line: Option<usize>,
    pub level: Level,
    pub rule: &'static str,
    pub message: String,
}

impl Diagnostic {
    fn new(path: &str, line: Option<usize>, rule: &'static str, message: String) -> Diagnostic {
        let level = RULES.iter().find(|r| r.name == rule).map_or(Level::Error, |r| r.level);
        Diagnostic { path: path.to_string(), line, level, rule, message }
    }

    /// `path:line: level: message [rule]`, as compilers print.
    pub fn render(&self, root: &str) -> String {
        let line = self.line.map(|l| format!(":{l}")).unwrap_or_default();
        format!("{root}/{}{line}: {}: {} [{}]", self.path, self.level.as_str(), self.message, self.rule)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
    /// How many Dockerfiles were read.
    pub dockerfiles: usize,
    /// Directories left out because their names cannot make image names.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.diagnostics.iter().filter(|d| d.level == level).count()
    }
}

/// Runs `check`; returns the exit status.
pub fn run(settings: &Settings, names: &[String], json: bool, deny_warnings: bool) -> Result<i32> {
    let report = check(settings, names)?;
    for reason in &report.skipped {
        eprintln!("warning: skipped: {reason}");
    }
    let cwd = std::env::current_dir()?;
    let root = match settings.images_dir.strip_prefix(&cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => settings.images_dir.display().to_string(),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let shown: Vec<Diagnostic> =
            report.diagnostics.iter().map(|d| Diagnostic { path: format!("{root}/{}", d.path), ..d.clone() }).collect();
        #[derive(serde::Serialize)]
        struct Document<'a> {
            schema: u32,
            findings: &'a [Diagnostic],
        }
        serde_json::to_writer_pretty(&mut out, &Document { schema: crate::report::SCHEMA, findings: &shown })?;
        writeln!(out)?;
    } else {
        for d in &report.diagnostics {
            writeln!(out, "{}", d.render(&root))?;
        }
    }
    out.flush()?;
    let (errors, warnings) = (report.count(Level::Error), report.count(Level::Warning));
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let files = plural(report.dockerfiles, "Dockerfile");
    if errors + warnings == 0 {
        eprintln!("checked {files}: no problems");
    } else {
        let denied = if deny_warnings && warnings > 0 { " (warnings denied)" } else { "" };
        eprintln!("checked {files}: {}, {}{denied}", plural(errors, "error"), plural(warnings, "warning"));
    }
    Ok(if errors > 0 || (deny_warnings && warnings > 0) { crate::model::EXIT_FAILURE } else { 0 })
}

/// Checks the Dockerfile of every image (or of the images and groups
/// named) for every architecture, and each one's build context.
pub fn check(settings: &Settings, names: &[String]) -> Result<Report> {
    let catalogs: Vec<Catalog> =
        Arch::ALL.iter().map(|&arch| discover_lenient(&settings.images_dir, arch)).collect::<Result<_>>()?;
    let mut report =
        Report { skipped: catalogs[0].invalid.iter().map(|i| i.reason.clone()).collect(), ..Report::default() };
    let selected = if names.is_empty() { None } else { Some(select(&catalogs, names)?) };
    // Each Dockerfile the tool would build from, with the architectures it serves.
    let mut files: BTreeMap<(String, String), Vec<Arch>> = BTreeMap::new();
    for catalog in &catalogs {
        for image in &catalog.images {
            if selected.as_ref().is_none_or(|s| s.contains(&image.path)) {
                files.entry((image.path.clone(), image.dockerfile.clone())).or_default().push(catalog.arch);
            }
        }
    }
    let available: HashMap<Arch, HashSet<String>> =
        catalogs.iter().map(|c| (c.arch, c.images.iter().map(|i| i.path.clone()).collect())).collect();
    let tree = Tree { settings, available, build_args: dockerfile::build_args(&settings.build_args) };
    let mut contexts: HashMap<String, BuildContext> = HashMap::new();
    for ((path, name), arches) in &files {
        if !contexts.contains_key(path) {
            contexts.insert(path.clone(), BuildContext::read(&settings.images_dir.join(path))?);
        }
        let context = &contexts[path];
        let file = settings.images_dir.join(path).join(name);
        let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        report.dockerfiles += 1;
        let rel = format!("{path}/{name}");
        report.diagnostics.extend(tree.dockerfile(&rel, &String::from_utf8_lossy(&bytes), arches, context));
        if let Some(line) = context.ignore.as_ref().and_then(|i| i.excluded_by(Path::new(name))) {
            report.diagnostics.push(Diagnostic::new(
                &format!("{path}/.dockerignore"),
                Some(line),
                IGNORED_DOCKERFILE,
                format!(
                    "excludes {name}, the image's own Dockerfile: remove the pattern, or re-include it with `!{name}`"
                ),
            ));
        }
        if let Some(e) = &context.ignore_error {
            report.diagnostics.push(Diagnostic::new(&format!("{path}/.dockerignore"), None, SYNTAX, e.clone()));
        }
    }
    report.diagnostics.extend(arch_suffixes(&settings.images_dir, selected.as_ref())?);
    report
        .diagnostics
        .sort_by(|a, b| (&a.path, a.line, a.rule, &a.message).cmp(&(&b.path, b.line, b.rule, &b.message)));
    report.diagnostics.dedup();
    Ok(report)
}

/// The paths of the images `names` select for any architecture.
fn select(catalogs: &[Catalog], names: &[String]) -> Result<HashSet<String>> {
    let mut paths = HashSet::new();
    let mut first_error = None;
    for catalog in catalogs {
        match catalog.select_available(names) {
            Ok((chosen, _)) => paths.extend(chosen.iter().map(|&i| catalog[i].path.clone())),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) if paths.is_empty() => Err(e),
        _ => Ok(paths),
    }
}

/// Architecture spellings a `Dockerfile.<suffix>` may hold by mistake, with
/// the tool's own name for the architecture where it has one.
const ARCH_SPELLINGS: [(&str, Option<&str>); 29] = [
    ("x86_64", Some("x86_64")),
    ("amd64", Some("x86_64")),
    ("x86-64", Some("x86_64")),
    ("x64", Some("x86_64")),
    ("aarch64", Some("aarch64")),
    ("arm64", Some("aarch64")),
    ("arm64v8", Some("aarch64")),
    ("armv8", Some("aarch64")),
    ("arm", None),
    ("armhf", None),
    ("armel", None),
    ("armv6", None),
    ("armv7", None),
    ("arm32v6", None),
    ("arm32v7", None),
    ("i386", None),
    ("i686", None),
    ("386", None),
    ("x86", None),
    ("ppc64le", None),
    ("ppc64", None),
    ("s390x", None),
    ("riscv64", None),
    ("mips", None),
    ("mipsle", None),
    ("mips64", None),
    ("mips64le", None),
    ("loong64", None),
    ("loongarch64", None),
];

/// `Dockerfile.<suffix>` files whose suffix spells an architecture the tool
/// does not know by that name: discovery never uses them.
fn arch_suffixes(root: &Path, selected: Option<&HashSet<String>>) -> Result<Vec<Diagnostic>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).min_depth(2).sort_by_file_name() {
        let entry = entry.map_err(walk_error)?;
        let Some(suffix) = entry.file_name().to_str().and_then(|n| n.strip_prefix("Dockerfile.")) else { continue };
        if entry.file_type().is_dir() || Arch::ALL.iter().any(|a| a.as_str() == suffix) {
            continue;
        }
        let Some((_, canonical)) = ARCH_SPELLINGS.iter().find(|(s, _)| s.eq_ignore_ascii_case(suffix)) else {
            continue;
        };
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let dir = rel.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
        if selected.is_some_and(|s| !s.contains(&dir)) {
            continue;
        }
        let message = match canonical {
            Some(arch) => format!(
                "Dockerfile.{suffix} is never used: the tool calls this architecture {arch}; rename it Dockerfile.{arch}"
            ),
            None => format!(
                "Dockerfile.{suffix} is never used: {suffix} is not an architecture the tool builds for (x86_64, aarch64)"
            ),
        };
        out.push(Diagnostic::new(&rel.to_string_lossy(), None, ARCH_SUFFIX, message));
    }
    Ok(out)
}

// ---- build contexts ---------------------------------------------------------------

/// What an image's build context holds: every path in it, and those the
/// engine receives (not excluded by `.dockerignore`), with their ancestors.
#[derive(Default)]
struct BuildContext {
    ignore: Option<DockerIgnore>,
    ignore_error: Option<String>,
    on_disk: HashSet<String>,
    included: HashSet<String>,
    /// Excluded directories not walked (nothing under them can be re-included).
    pruned: Vec<String>,
}

enum Found {
    Included,
    Excluded,
    Missing,
}

impl BuildContext {
    fn read(dir: &Path) -> Result<BuildContext> {
        let mut context = BuildContext::default();
        match DockerIgnore::load(dir) {
            Ok(ignore) => context.ignore = Some(ignore),
            Err(e) => context.ignore_error = Some(format!("{:#}", e)),
        }
        let ignore = context.ignore.take().unwrap_or_default();
        let mut walk = walkdir::WalkDir::new(dir).follow_links(false).min_depth(1).into_iter();
        while let Some(entry) = walk.next() {
            let entry = entry.map_err(walk_error)?;
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let name = rel.to_string_lossy().into_owned();
            context.on_disk.insert(name.clone());
            if ignore.excluded(rel) {
                if entry.file_type().is_dir() && ignore.prunes() {
                    context.pruned.push(name);
                    walk.skip_current_dir();
                }
                continue;
            }
            let mut path = Some(name.as_str());
            while let Some(p) = path {
                if !context.included.insert(p.to_string()) {
                    break;
                }
                path = p.rsplit_once('/').map(|(parent, _)| parent);
            }
        }
        context.ignore = Some(ignore);
        Ok(context)
    }

    /// Whether a COPY or ADD source (`/`-separated, relative to the context,
    /// wildcards as the builder matches them) names anything the engine gets.
    fn find(&self, source: &str) -> Found {
        let mut parts: Vec<&str> = Vec::new();
        for part in source.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let path = parts.join("/");
        if path.is_empty() {
            return Found::Included;
        }
        let under_pruned = |p: &str| self.pruned.iter().any(|d| p == d || p.starts_with(&format!("{d}/")));
        if path.contains(['*', '?', '[']) {
            let Ok(glob) = globset::GlobBuilder::new(&path).literal_separator(true).build() else {
                return Found::Missing;
            };
            let glob = glob.compile_matcher();
            if self.included.iter().any(|p| glob.is_match(p)) {
                return Found::Included;
            }
            if self.on_disk.iter().any(|p| glob.is_match(p)) {
                return Found::Excluded;
            }
            return Found::Missing;
        }
        if self.included.contains(&path) {
            Found::Included
        } else if self.on_disk.contains(&path) || under_pruned(&path) {
            Found::Excluded
        } else {
            Found::Missing
        }
    }
}

// ---- Dockerfiles ---------------------------------------------------------------------

/// What a Dockerfile is judged against.
struct Tree<'a> {
    settings: &'a Settings,
    /// Image paths, per architecture.
    available: HashMap<Arch, HashSet<String>>,
    build_args: HashMap<String, String>,
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
struct Walk<'a> {
    rel: &'a str,
    arches: &'a [Arch],
    escape: char,
    /// Variables in scope for FROM: global `ARG`s and the automatic platform ones.
    global: HashMap<String, String>,
    /// Variables in scope in the current stage.
    vars: HashMap<String, String>,
    /// Names of the stages so far, lower case.
    stages: Vec<String>,
    found: Vec<Diagnostic>,
}

impl Walk<'_> {
    fn add(&mut self, line: usize, rule: &'static str, message: String) {
        self.found.push(Diagnostic::new(self.rel, Some(line), rule, message));
    }
}

impl Tree<'_> {
    /// Every finding in one Dockerfile (`rel`, relative to the images root),
    /// used for `arches`, whose context is `context`.
    fn dockerfile(&self, rel: &str, text: &str, arches: &[Arch], context: &BuildContext) -> Vec<Diagnostic> {
        let file = dockerfile::parse(text);
        let mut walk = Walk {
            rel,
            arches,
            escape: file.escape,
            global: HashMap::new(),
            vars: HashMap::new(),
            stages: Vec::new(),
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
                    walk.add(*line, SYNTAX, format!("no rule `{rule}` can be allowed: use {}", names.join(", ")));
                }
            }
            let keyword = ins.keyword.as_str();
            if !KEYWORDS.contains(&keyword) {
                walk.add(ins.line, SYNTAX, format!("unknown instruction `{}`", ins.keyword));
            } else if !seen_from && keyword != "FROM" && keyword != "ARG" {
                walk.add(ins.line, SYNTAX, format!("{keyword} before the first FROM: only ARG may come before it"));
            }
            match keyword {
                "ARG" => self.arg(ins, seen_from, &mut walk),
                "ENV" => {
                    for (name, value) in dockerfile::assignments("ENV", ins.args(), walk.escape) {
                        match value.and_then(|v| dockerfile::substitute(&v, &walk.vars, walk.escape)) {
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
                "COPY" | "ADD" => self.copy(ins, context, &mut walk),
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
            let scope = if seen_from { &walk.vars } else { &walk.global };
            let value = self
                .build_args
                .get(&name)
                .cloned()
                .or_else(|| default.and_then(|d| dockerfile::substitute(&d, scope, walk.escape)))
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
        if let Some(reference) = dockerfile::substitute(&reference.text, &walk.global, walk.escape) {
            self.base(&reference, ins.line, false, walk);
        }
        let name = match words.as_slice() {
            [_, as_, name, ..] if as_.text.eq_ignore_ascii_case("as") => name.text.to_ascii_lowercase(),
            _ => String::new(),
        };
        walk.stages.push(name);
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
        if let Some(path) = under(&format!("localhost/{}", self.settings.local_prefix), reference) {
            let local = ImageRef::local_repository(self.settings, path);
            walk.add(
                line,
                CATALOG_NAME,
                format!(
                    "{how} {reference}: podman's spelling of the local name; use {local}, which every engine finds"
                ),
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
                        "{how} {reference}: the cache registry's name for the catalog image {path}, which is not built \
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
                format!(
                    "{how} {reference} has no tag: it means `latest`, which moves; name a version (and its digest)"
                ),
            ),
            Some("latest") => {
                walk.add(line, BASE_TAG, format!("{how} {reference}: `latest` moves; name a version (and its digest)"))
            }
            Some(_) => walk.add(
                line,
                BASE_DIGEST,
                format!("{how} {reference} has no digest: its tag can be pushed again; append @sha256:<digest>"),
            ),
        }
    }

    /// A base named under the local prefix: an image of the catalog for
    /// every architecture the Dockerfile serves, and in a FROM line.
    fn catalog_base(&self, reference: &str, path: &str, line: usize, copied: bool, walk: &mut Walk) {
        let local = |p: &str| ImageRef::local_repository(self.settings, p);
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
        let message = if by_name != path && self.is_image(&by_name) {
            format!("FROM {reference}: `{path}` is an image name, not its path; use its local name {}", local(&by_name))
        } else if missing.len() < walk.arches.len() || self.is_image(path) {
            format!(
                "FROM {reference}: {path} is not an image for {}: add a Dockerfile for it there, or fix the FROM line",
                missing.join(" or ")
            )
        } else {
            format!(
                "FROM {reference}: no image {path} in {}: add it, or fix the FROM line",
                self.settings.images_dir.display()
            )
        };
        walk.add(line, CATALOG_NAME, message);
    }

    fn is_image(&self, path: &str) -> bool {
        self.available.values().any(|s| s.contains(path))
    }

    fn copy(&self, ins: &Instruction, context: &BuildContext, walk: &mut Walk) {
        let keyword = ins.keyword.as_str();
        if let Some(from) = ins.flag("from").and_then(|f| f.value.as_deref()) {
            let from = dockerfile::substitute(from, &walk.vars, walk.escape);
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
            let remote = ["http://", "https://", "git@", "git://"].iter().any(|p| source.starts_with(p));
            if remote {
                if keyword == "COPY" {
                    walk.add(*line, MISSING_SOURCE, format!("COPY cannot fetch {source}: use ADD with --checksum"));
                } else if ins.flag("checksum").is_none() {
                    walk.add(
                        *line,
                        ADD_CHECKSUM,
                        format!("ADD {source} without --checksum: what it serves can change; add --checksum=sha256:<digest>"),
                    );
                }
                continue;
            }
            let Some(path) = dockerfile::substitute(source, &walk.vars, walk.escape) else { continue };
            match context.find(&path) {
                Found::Included => {}
                Found::Excluded => walk.add(
                    *line,
                    MISSING_SOURCE,
                    format!("{keyword} {source}: .dockerignore excludes it from the build context"),
                ),
                Found::Missing => {
                    walk.add(*line, MISSING_SOURCE, format!("{keyword} {source}: not in the build context"))
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

// ---- RUN: the shell commands -------------------------------------------------------

const SHELLS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ash", "ksh", "mksh"];

/// What a RUN's commands do that the rules care about.
#[derive(Default)]
struct Facts {
    /// (line, command, pin form, packages) of each install with unpinned packages.
    unpinned: Vec<(usize, &'static str, &'static str, Vec<String>)>,
    /// (line, fetcher, shell) of each `curl … | sh`.
    piped: Vec<(usize, String, String)>,
    apt_update: Option<usize>,
    lists_removed: bool,
}

fn run_rules(ins: &Instruction, walk: &mut Walk) {
    // A cache or tmpfs mount keeps the lists out of the layer.
    let lists_mounted = ins.flags.iter().any(|f| {
        f.name == "mount"
            && f.value.as_deref().is_some_and(|v| {
                v.split(',').any(|kv| {
                    kv.split_once('=').is_some_and(|(k, p)| {
                        matches!(k, "target" | "dst" | "destination")
                            && matches!(p.trim_end_matches('/'), "/var/lib/apt" | "/var/lib/apt/lists")
                    })
                })
            })
    });
    let mut facts = Facts { lists_removed: lists_mounted, ..Facts::default() };
    match ins.exec_form() {
        Some(words) => {
            let words: Vec<ShellWord> =
                words.into_iter().map(|text| ShellWord { text, at: 0, dynamic: false }).collect();
            command_facts(&words, &|_| ins.line, &mut facts, 0);
        }
        None => {
            let args = ins.args();
            let tokens = shell_tokens(args);
            script_facts(&tokens, &|at| ins.line_at(at), &mut facts, 0);
            // A RUN whose command is only a heredoc (or a shell reading one)
            // runs the heredoc as its script.
            let first = pipelines(&tokens).into_iter().flatten().next().unwrap_or_default();
            let program = command_words(&first).map(|(p, _)| p);
            if program.is_none() || program.is_some_and(|p| SHELLS.contains(&p)) {
                for heredoc in &ins.heredocs {
                    let shebang = heredoc.body.lines().next().and_then(|l| l.strip_prefix("#!"));
                    if shebang.is_some_and(|s| !SHELLS.iter().any(|sh| s.split_whitespace().any(|w| w.ends_with(sh)))) {
                        continue;
                    }
                    let line_of =
                        |at: usize| heredoc.line + heredoc.body[..at.min(heredoc.body.len())].matches('\n').count();
                    script_facts(&shell_tokens(&heredoc.body), &line_of, &mut facts, 0);
                }
            }
        }
    }
    for (line, command, pin, packages) in facts.unpinned {
        walk.add(
            line,
            UNPINNED_PACKAGES,
            format!("{command} of unpinned packages: {}; pin them ({pin})", packages.join(", ")),
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

/// A shell word: its text with quotes removed, where it starts, and
/// whether it holds an expansion (`$x`, `$(…)`, `` `…` ``), whose value is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ShellWord {
    text: String,
    at: usize,
    dynamic: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(ShellWord),
    Pipe,
    /// `&&`, `||`, `;`, `&`, a newline.
    End,
}

/// Splits a shell script into words and separators. Redirections and their
/// targets are dropped, as are comments and `\`-newlines.
fn shell_tokens(script: &str) -> Vec<Token> {
    let chars: Vec<(usize, char)> = script.char_indices().collect();
    let next = |i: usize| chars.get(i + 1).map(|(_, c)| *c);
    let mut tokens = Vec::new();
    let mut word: Option<ShellWord> = None;
    let mut drop_next = false;
    fn finish(word: &mut Option<ShellWord>, tokens: &mut Vec<Token>, drop_next: &mut bool) {
        if let Some(w) = word.take() {
            if !std::mem::take(drop_next) {
                tokens.push(Token::Word(w));
            }
        }
    }
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            ' ' | '\t' | '\r' => {
                finish(&mut word, &mut tokens, &mut drop_next);
                i += 1;
            }
            '\n' | ';' => {
                finish(&mut word, &mut tokens, &mut drop_next);
                tokens.push(Token::End);
                i += 1;
            }
            '\\' => {
                if let Some(n) = next(i).filter(|n| *n != '\n') {
                    word_at(&mut word, at).text.push(n);
                }
                i += 2;
            }
            '#' if word.is_none() => {
                while i < chars.len() && chars[i].1 != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                let w = word_at(&mut word, at);
                i += 1;
                while i < chars.len() && chars[i].1 != '\'' {
                    w.text.push(chars[i].1);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                let w = word_at(&mut word, at);
                i += 1;
                while i < chars.len() && chars[i].1 != '"' {
                    let c = chars[i].1;
                    if c == '\\' && next(i).is_some_and(|n| "\"\\$`\n".contains(n)) {
                        if next(i) != Some('\n') {
                            w.text.push(next(i).unwrap_or_default());
                        }
                        i += 2;
                        continue;
                    }
                    w.dynamic |= c == '$' || c == '`';
                    w.text.push(c);
                    i += 1;
                }
                i += 1;
            }
            '$' | '`' => {
                let w = word_at(&mut word, at);
                w.dynamic = true;
                w.text.push(c);
                let (open, close) = match (c, next(i)) {
                    ('`', _) => ('`', '`'),
                    (_, Some('(')) => ('(', ')'),
                    (_, Some('{')) => ('{', '}'),
                    _ => {
                        i += 1;
                        continue;
                    }
                };
                if c == '$' {
                    w.text.push(open);
                    i += 1;
                }
                i += 1;
                let mut depth = 1;
                while i < chars.len() && depth > 0 {
                    let c = chars[i].1;
                    if c == close && open != close {
                        depth -= 1;
                    } else if c == open && open != close {
                        depth += 1;
                    } else if c == close {
                        depth = 0;
                    }
                    w.text.push(c);
                    i += 1;
                }
            }
            '&' | '|' if next(i) == Some(c) => {
                finish(&mut word, &mut tokens, &mut drop_next);
                tokens.push(Token::End);
                i += 2;
            }
            '|' => {
                finish(&mut word, &mut tokens, &mut drop_next);
                tokens.push(Token::Pipe);
                i += if next(i) == Some('&') { 2 } else { 1 };
            }
            '&' if next(i) == Some('>') => {
                finish(&mut word, &mut tokens, &mut drop_next);
                i += 2;
                while i < chars.len() && chars[i].1 == '>' {
                    i += 1;
                }
                drop_next = true;
            }
            '&' => {
                finish(&mut word, &mut tokens, &mut drop_next);
                tokens.push(Token::End);
                i += 1;
            }
            '(' | ')' => {
                finish(&mut word, &mut tokens, &mut drop_next);
                i += 1;
            }
            '<' | '>' => {
                // `2>`: the digits name a descriptor, not a word.
                if word.as_ref().is_some_and(|w| !w.text.is_empty() && w.text.bytes().all(|b| b.is_ascii_digit())) {
                    word = None;
                }
                finish(&mut word, &mut tokens, &mut drop_next);
                while i < chars.len() && matches!(chars[i].1, '<' | '>' | '|' | '-') {
                    i += 1;
                }
                // `>&2`, `<&-`: a descriptor, not a target.
                if i < chars.len() && chars[i].1 == '&' {
                    i += 1;
                    while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == '-') {
                        i += 1;
                    }
                } else {
                    drop_next = true;
                }
            }
            _ => {
                word_at(&mut word, at).text.push(c);
                i += 1;
            }
        }
    }
    finish(&mut word, &mut tokens, &mut drop_next);
    tokens
}

/// The word being read, started at `at` if there is none.
fn word_at(word: &mut Option<ShellWord>, at: usize) -> &mut ShellWord {
    word.get_or_insert_with(|| ShellWord { at, ..ShellWord::default() })
}

/// The pipelines of a script, each a list of simple commands' words.
fn pipelines(tokens: &[Token]) -> Vec<Vec<Vec<ShellWord>>> {
    let mut all = Vec::new();
    let mut pipeline: Vec<Vec<ShellWord>> = Vec::new();
    let mut command: Vec<ShellWord> = Vec::new();
    for token in tokens {
        match token {
            Token::Word(w) => command.push(w.clone()),
            Token::Pipe => pipeline.push(std::mem::take(&mut command)),
            Token::End => {
                pipeline.push(std::mem::take(&mut command));
                all.push(std::mem::take(&mut pipeline));
            }
        }
    }
    pipeline.push(command);
    all.push(pipeline);
    all.into_iter()
        .map(|p| p.into_iter().filter(|c| !c.is_empty()).collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A simple command's program (its file name) and arguments, past shell
/// keywords, variable assignments and wrappers such as `sudo` and `env`.
fn command_words(words: &[ShellWord]) -> Option<(&str, &[ShellWord])> {
    const KEYWORDS: [&str; 12] = ["if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "time", "exec"];
    const WRAPPERS: [&str; 5] = ["sudo", "env", "nice", "nohup", "command"];
    const VALUED: [&str; 6] = ["-u", "-g", "-n", "-C", "-D", "-U"];
    let mut rest = words;
    let mut wrapped = false;
    loop {
        let (first, tail) = rest.split_first()?;
        let text = first.text.as_str();
        let assignment = text.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        });
        if KEYWORDS.contains(&text) || assignment {
            rest = tail;
        } else if wrapped && text.starts_with('-') {
            rest = if VALUED.contains(&text) { tail.get(1..).unwrap_or_default() } else { tail };
        } else if WRAPPERS.contains(&text) {
            wrapped = true;
            rest = tail;
        } else {
            let program = text.rsplit('/').next().unwrap_or(text);
            return Some((program, tail));
        }
    }
}

/// The non-option words of `args`: options in `valued` take the next word.
fn operands<'a>(args: &'a [ShellWord], valued: &[&str]) -> Vec<&'a ShellWord> {
    let mut out = Vec::new();
    let mut words = args.iter();
    let mut options = true;
    while let Some(w) = words.next() {
        if options && w.text == "--" {
            options = false;
        } else if options && w.text.starts_with('-') && w.text.len() > 1 {
            if valued.contains(&w.text.as_str()) {
                words.next();
            }
        } else {
            out.push(w);
        }
    }
    out
}

fn script_facts(tokens: &[Token], line_of: &dyn Fn(usize) -> usize, facts: &mut Facts, depth: usize) {
    for pipeline in pipelines(tokens) {
        for (i, words) in pipeline.iter().enumerate() {
            command_facts(words, line_of, facts, depth);
            let Some((fetch @ ("curl" | "wget"), _)) = command_words(words) else { continue };
            let shell = pipeline[i + 1..].iter().filter_map(|c| command_words(c)).find(|(p, _)| SHELLS.contains(p));
            if let Some((shell, _)) = shell {
                facts.piped.push((line_of(words[0].at), fetch.to_string(), shell.to_string()));
            }
        }
    }
}

fn command_facts(words: &[ShellWord], line_of: &dyn Fn(usize) -> usize, facts: &mut Facts, depth: usize) {
    let Some((program, args)) = command_words(words) else { return };
    let line = line_of(words[0].at);
    // `sh -c '…'`: the script it runs.
    if SHELLS.contains(&program) && depth < 3 {
        let flag =
            args.iter().position(|w| w.text.starts_with('-') && !w.text.starts_with("--") && w.text.contains('c'));
        if let Some(script) = flag.and_then(|f| args[f + 1..].iter().find(|w| !w.text.starts_with('-'))) {
            let base = script.at;
            let text = &script.text;
            let nested = |at: usize| line_of(base) + text[..at.min(text.len())].matches('\n').count();
            script_facts(&shell_tokens(text), &nested, facts, depth + 1);
        }
        return;
    }
    if program == "rm" && args.iter().any(|w| w.text.starts_with("/var/lib/apt/lists")) {
        facts.lists_removed = true;
    }
    let (command, pin, packages): (&'static str, &'static str, Vec<&ShellWord>) = match program {
        "apt-get" | "apt" | "aptitude" => {
            let ops = operands(
                args,
                &["-o", "-c", "-t", "--option", "--config-file", "--target-release", "--default-release"],
            );
            match ops.first().map(|w| w.text.as_str()) {
                Some("update") => {
                    facts.apt_update = facts.apt_update.or(Some(line));
                    return;
                }
                Some("distclean" | "dist-clean") => {
                    facts.lists_removed = true;
                    return;
                }
                Some("install") => {
                    let unpinned = ops[1..]
                        .iter()
                        .filter(|w| !w.text.contains('=') && !local_file(&w.text) && !w.text.ends_with('-'))
                        .copied()
                        .collect();
                    (if program == "apt-get" { "apt-get install" } else { "apt install" }, "name=version", unpinned)
                }
                _ => return,
            }
        }
        "apk" => {
            let valued = [
                "-X",
                "--repository",
                "-t",
                "--virtual",
                "--arch",
                "-p",
                "--root",
                "--keys-dir",
                "--cache-dir",
                "--repositories-file",
                "--cache-max-age",
            ];
            let ops = operands(args, &valued);
            if ops.first().map(|w| w.text.as_str()) != Some("add") {
                return;
            }
            let unpinned =
                ops[1..].iter().filter(|w| !w.text.contains(['=', '~']) && !local_file(&w.text)).copied().collect();
            ("apk add", "name=version", unpinned)
        }
        _ if is_pip(program, args).is_some() => {
            let args = is_pip(program, args).unwrap_or_default();
            let ops = operands(args, &PIP_VALUED);
            if ops.first().map(|w| w.text.as_str()) != Some("install") {
                return;
            }
            let unpinned = ops[1..]
                .iter()
                .filter(|w| !w.text.contains("==") && !w.text.contains('@') && !local_file(&w.text))
                .copied()
                .collect();
            ("pip install", "name==version", unpinned)
        }
        "npm" => {
            let valued = [
                "--prefix",
                "--registry",
                "--cache",
                "--userconfig",
                "--globalconfig",
                "-w",
                "--workspace",
                "--omit",
                "--include",
                "--loglevel",
                "--tag",
                "--before",
            ];
            let ops = operands(args, &valued);
            if !matches!(ops.first().map(|w| w.text.as_str()), Some("install" | "i" | "add" | "in" | "isntall")) {
                return;
            }
            let unpinned = ops[1..].iter().filter(|w| !npm_pinned(&w.text)).copied().collect();
            ("npm install", "name@version", unpinned)
        }
        _ => return,
    };
    let unpinned: Vec<String> = packages.into_iter().filter(|w| !w.dynamic).map(|w| w.text.clone()).collect();
    if !unpinned.is_empty() {
        facts.unpinned.push((line, command, pin, unpinned));
    }
}

const PIP_VALUED: [&str; 40] = [
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-e",
    "--editable",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "-t",
    "--target",
    "--prefix",
    "--root",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--trusted-host",
    "--cache-dir",
    "--src",
    "--upgrade-strategy",
    "--progress-bar",
    "--log",
    "--timeout",
    "--retries",
    "--proxy",
    "--cert",
    "--client-cert",
    "-C",
    "--config-settings",
    "--global-option",
    "--no-binary",
    "--only-binary",
    "--report",
    "--python",
    "--exists-action",
    "--use-feature",
    "--keyring-provider",
];

/// pip's arguments, for `pip…` and `python… -m pip`.
fn is_pip<'a>(program: &str, args: &'a [ShellWord]) -> Option<&'a [ShellWord]> {
    let versioned = |name: &str, base: &str| {
        name.strip_prefix(base).is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    if versioned(program, "pip") {
        return Some(args);
    }
    if versioned(program, "python") {
        if let [m, module, rest @ ..] = args {
            if m.text == "-m" && versioned(&module.text, "pip") {
                return Some(rest);
            }
        }
    }
    None
}

/// A package argument that is a file or URL, not a name: pinned by what it is.
fn local_file(arg: &str) -> bool {
    arg.starts_with(['.', '/', '~'])
        || arg.contains("://")
        || [".deb", ".apk", ".whl", ".tar.gz", ".tgz", ".zip"].iter().any(|e| arg.ends_with(e))
}

/// `name@1.2.3` (or `@scope/name@1.2.3`): an exact version. Files, URLs
/// and git repositories are left alone.
fn npm_pinned(arg: &str) -> bool {
    if local_file(arg) || arg.starts_with("git") || arg.starts_with("github:") || arg.starts_with("file:") {
        return true;
    }
    if arg.contains('/') && !arg.starts_with('@') {
        return true;
    }
    let Some((_, version)) = arg[1..].rsplit_once('@') else { return false };
    let version = version.trim_start_matches(['v', '=']);
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<Vec<Vec<String>>> {
        pipelines(&shell_tokens(script))
            .into_iter()
            .map(|p| p.into_iter().map(|c| c.into_iter().map(|w| w.text).collect()).collect())
            .collect()
    }

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn shell_words_and_pipelines() {
        assert_eq!(
            texts("a 'b c' \"d $x\" e\\ f && g | h 2>&1 > /dev/null; i # comment | j\nk <<EOF\n"),
            vec![vec![v(&["a", "b c", "d $x", "e f"])], vec![v(&["g"]), v(&["h"])], vec![v(&["i"])], vec![v(&["k"])],]
        );
        assert_eq!(texts("a $(b | c) `d` || e &>log &"), vec![vec![v(&["a", "$(b | c)", "`d`"])], vec![v(&["e"])]]);
        assert_eq!(texts("a \\\n  b"), vec![vec![v(&["a", "b"])]]);
    }

    #[test]
    fn commands_past_wrappers() {
        let words = |s: &str| -> Vec<ShellWord> {
            pipelines(&shell_tokens(s)).into_iter().flatten().next().unwrap_or_default()
        };
        let program = |s: &str| command_words(&words(s)).map(|(p, a)| (p.to_string(), a.len()));
        assert_eq!(
            program("DEBIAN_FRONTEND=x sudo -u me env A=1 /usr/bin/apt-get install y"),
            Some(("apt-get".into(), 2))
        );
        assert_eq!(program("if true"), Some(("true".into(), 0)));
        assert_eq!(program("A=1"), None);
    }

    #[test]
    fn pins() {
        for pinned in ["a@1.2.3", "@s/a@1.2.3-rc.1", "./x", "x.tgz", "user/repo", "git+https://x"] {
            assert!(npm_pinned(pinned), "{pinned}");
        }
        for unpinned in ["a", "a@^1.2.3", "a@latest", "@s/a", "a@1.2"] {
            assert!(!npm_pinned(unpinned), "{unpinned}");
        }
        assert_eq!(
            dockerfile::build_args(&v(&["--build-arg", "A=1", "--build-arg=B=2=3", "--no-cache", "--build-arg", "C"])),
            {
                let mut m = HashMap::new();
                m.insert("A".to_string(), "1".to_string());
                m.insert("B".to_string(), "2=3".to_string());
                m
            }
        );
    }

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
}
