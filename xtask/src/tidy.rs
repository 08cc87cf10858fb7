//! Repository rules the compiler does not keep: how long a source file may
//! grow, and which layers may name which. The README's "Where the code
//! lives" says the same rules in words (that it places every folder is the
//! integration suite's `tidy` to check: the unit tests travel with the
//! sources into projects that have no such README).

use std::path::{Path, PathBuf};

/// Lines a source file may have before its tests.
const MAX_LINES: usize = 600;

/// (where, what it may never name): a folder (`catalog/`) or a file
/// (`planning.rs`) under `xtask/src`, and the modules it must not use.
const NEVER: &[(&str, &[&str])] = &[
    ("catalog/", &["engine", "registry", "process", "git"]),
    ("planning.rs", &["engine", "registry", "process", "git"]),
    ("report/", &["engine", "registry", "execute"]),
    ("execute/", &["report"]),
    ("engine/", &["catalog"]),
    ("registry/", &["catalog"]),
    ("model/", &["catalog", "engine", "registry", "git", "process", "execute", "report", "commands", "cli"]),
];

/// The commands, none of which may name another (nor the command line).
const COMMANDS: &[&str] =
    &["check", "gc", "images", "init", "listing", "manifest", "pin", "prune", "register_cross", "status", "verify"];

/// Every `.rs` file under `dir`, as paths relative to it, in order.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("the source tree can be read"))
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| e.path().strip_prefix(dir).expect("under the source tree").to_path_buf())
        .collect();
    files.sort();
    files
}

/// The code of a file before its `#[cfg(test)]` module.
fn code(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The lines of `text` that name the module `module` under `root` (`crate`
/// or `super`): `root::module`, or `module` in a `use root::{…}` group.
/// Comments are not code.
fn names(text: &str, root: &str, module: &str) -> Vec<usize> {
    let path = format!("{root}::{module}");
    let group = format!("use {root}::{{");
    let mut found = Vec::new();
    let mut in_group = false;
    for (n, line) in code(text).lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        if line.trim_start().starts_with(&group) {
            in_group = true;
        }
        let named = line.match_indices(&path).any(|(at, _)| !is_ident_char(line[at + path.len()..].chars().next()))
            || (in_group && words(line).any(|w| w == module));
        if named {
            found.push(n + 1);
        }
        if in_group && line.contains("};") {
            in_group = false;
        }
    }
    found
}

fn is_ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

/// What breaks the rules in one file, `path` relative to `xtask/src`.
fn problems(path: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines = code(text).lines().count();
    if lines > MAX_LINES {
        out.push(format!("{path}: {lines} lines before its tests, more than {MAX_LINES}: split it by concern"));
    }
    let never = NEVER.iter().filter(|(place, _)| path == *place || (place.ends_with('/') && path.starts_with(place)));
    for (place, modules) in never {
        for module in *modules {
            for line in names(text, "crate", module) {
                out.push(format!("{path}:{line}: names `{module}`, which `{place}` may never use"));
            }
        }
    }
    if let Some(rest) = path.strip_prefix("commands/") {
        let own = rest.split(['/', '.']).next().unwrap_or(rest);
        if COMMANDS.contains(&own) {
            for other in COMMANDS.iter().filter(|c| **c != own) {
                let mut lines = names(text, "crate", &format!("commands::{other}"));
                lines.extend(names(text, "super", other));
                for line in lines {
                    out.push(format!("{path}:{line}: the command `{own}` names the command `{other}`"));
                }
            }
            for line in names(text, "crate", "cli") {
                out.push(format!("{path}:{line}: the command `{own}` names the command line (`cli`)"));
            }
        }
    }
    out
}

#[test]
fn sources_keep_their_size_and_their_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    let files = sources(&root);
    assert!(files.len() > 20, "the source tree was not found at {}", root.display());
    for file in files {
        let text = std::fs::read_to_string(root.join(&file)).expect("a source file can be read");
        all.extend(problems(&file.to_string_lossy(), &text));
    }
    assert!(all.is_empty(), "the repository rules are broken:\n{}", all.join("\n"));
}

#[test]
fn the_rules_catch_what_they_are_for() {
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    assert_eq!(problems("engine/fake.rs", &long).len(), 1);
    let tested = format!("fn f() {{}}\n#[cfg(test)]\nmod tests {{\n{long}}}\n");
    assert_eq!(problems("engine/fake.rs", &tested), Vec::<String>::new());

    let text = "use crate::model::Arch;\nuse crate::engine::Engine;\n// crate::registry in a comment\n";
    assert_eq!(
        problems("catalog/tagging.rs", text),
        ["catalog/tagging.rs:2: names `engine`, which `catalog/` may never use"]
    );
    assert_eq!(
        problems("planning.rs", "use crate::{\n    model::Arch,\n    process::Processes,\n};\n"),
        ["planning.rs:3: names `process`, which `planning.rs` may never use"]
    );
    assert_eq!(problems("catalog/x.rs", "use crate::engines::Fine;\nuse crate::gitignore;\n"), Vec::<String>::new());
    assert_eq!(problems("commands/execute_like.rs", "use crate::engine::Engine;\n"), Vec::<String>::new());
    assert_eq!(problems("execute/job.rs", "use crate::report::Reporter;\n").len(), 1);

    assert_eq!(
        problems("commands/status.rs", "use super::prune::removals;\nuse crate::cli::Cli;\n"),
        [
            "commands/status.rs:1: the command `status` names the command `prune`",
            "commands/status.rs:2: the command `status` names the command line (`cli`)",
        ]
    );
    assert_eq!(problems("commands/check/rules.rs", "use crate::commands::gc::Options;\n").len(), 1);
    assert_eq!(problems("commands/images.rs", "use super::{observe, RunArgs};\n"), Vec::<String>::new());
    assert_eq!(problems("commands/images.rs", "use super::{observe, status};\n").len(), 1);
}
