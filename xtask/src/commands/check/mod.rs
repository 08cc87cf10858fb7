//! `check`: hazards to reproducibility and correctness in the images'
//! Dockerfiles and build contexts, found before anything is built. Reads
//! files only: no engine, no registry.

mod arch_suffix;
mod context;
mod rules;
mod shell;
mod walk;
mod words;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use anyhow::{Context as _, Result};

use self::arch_suffix::arch_suffixes;
use self::context::Contents;
pub use self::rules::{Diagnostic, Level, Rule, RULES, RULES_HELP};
use self::walk::Tree;
use crate::catalog::discovery::{discover_lenient, paths_selected, Catalog};
use crate::catalog::dockerfile;
use crate::catalog::image_files;
use crate::config::Settings;
use crate::model::{escape, Arch};

#[derive(Debug, Default)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
    /// How many Dockerfiles were read.
    pub dockerfiles: usize,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.diagnostics.iter().filter(|d| d.level == level).count()
    }
}

/// Runs `check`; returns the exit status.
pub fn run(settings: &Settings, names: &[String], json: bool, deny_warnings: bool) -> Result<i32> {
    let report = check(settings, names)?;
    let root = super::shown_root(settings)?;
    let mut out = std::io::stdout().lock();
    if json {
        let shown: Vec<Diagnostic> =
            report.diagnostics.iter().map(|d| Diagnostic { path: format!("{root}/{}", d.path), ..d.clone() }).collect();
        crate::report::print_list("findings", &shown)?;
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
    let mut report = Report::default();
    let selected = if names.is_empty() { None } else { Some(paths_selected(&catalogs, names)?) };
    // What every `*-all-*` run fails on, with its path: a directory that
    // cannot make an image name (the same for every architecture).
    if selected.is_none() {
        report.diagnostics.extend(catalogs[0].invalid.iter().map(|bad| Diagnostic {
            path: bad.path.clone(),
            line: None,
            level: Level::Error,
            rule: rules::IMAGE_NAME,
            message: bad.reason.clone(),
        }));
    }
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
    let mut contents: HashMap<String, Contents> = HashMap::new();
    for ((path, name), arches) in &files {
        if !contents.contains_key(path) {
            contents.insert(path.clone(), Contents::read(&settings.images_dir.join(path))?);
        }
        let context = &contents[path];
        let dir = settings.images_dir.join(path);
        let bytes = image_files::read(&dir, name)?.with_context(|| {
            format!("cannot read {}: No such file or directory", escape(&dir.join(name).display().to_string()))
        })?;
        report.dockerfiles += 1;
        let rel = format!("{path}/{name}");
        report.diagnostics.extend(tree.dockerfile(&rel, &String::from_utf8_lossy(&bytes), arches, context));
        report.diagnostics.extend(context.ignore_findings(path, name));
    }
    report.diagnostics.extend(arch_suffixes(&settings.images_dir, selected.as_ref())?);
    report
        .diagnostics
        .sort_by(|a, b| (&a.path, a.line, a.rule, &a.message).cmp(&(&b.path, b.line, b.rule, &b.message)));
    report.diagnostics.dedup();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::dockerfile::arbitrary;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn build_args() {
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

    proptest::proptest! {
        #![proptest_config(arbitrary::config())]

        /// Any Dockerfile is checked without a panic, for one architecture
        /// or two, and each finding is on one of its lines.
        #[test]
        fn any_dockerfile_is_checked(
            head in arbitrary::text(arbitrary::DOCKERFILE, 48),
            run in arbitrary::text(arbitrary::SHELL, 16),
        ) {
            let text = format!("{head}\nRUN {run}\n");
            let settings = Settings::for_tests("x.example", "r.example/cache");
            let available = Arch::ALL.iter().map(|a| (*a, HashSet::from(["a".to_string()]))).collect();
            let tree = Tree { settings: &settings, available, build_args: HashMap::new() };
            let lines = text.split('\n').count();
            for arches in [&Arch::ALL[..1], &Arch::ALL[..]] {
                for d in tree.dockerfile("a/Dockerfile", &text, arches, &Contents::default()) {
                    proptest::prop_assert!(d.line.is_none_or(|l| l >= 1 && l <= lines), "{d:?}");
                }
            }
        }
    }
}
