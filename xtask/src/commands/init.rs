//! `init`: writes the settings file from a legacy images Makefile, so that a
//! project moving to this tool keeps its registry, its local names, its
//! non-test images and, with the `gvisor` tag scheme, every tag already pushed;
//! and has git ignore `target/`, where cargo builds the tool.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::{split_legacy_list, FileConfig, Overrides, Settings};
use crate::model::{escape, excerpt};

/// The settings a legacy Makefile holds; `None` where it does not set one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Legacy {
    pub remote_image_prefix: Option<String>,
    pub local_image_prefix: Option<String>,
    pub non_test_images: Option<Vec<String>>,
}

/// The variables `init` takes from the legacy Makefile.
const WANTED: [&str; 3] = ["REMOTE_IMAGE_PREFIX", "LOCAL_IMAGE_PREFIX", "NON_TEST_IMAGES"];

/// How deep variables may refer to one another, and how long a value may
/// grow as they are expanded: a legacy Makefile's settings need a few levels
/// and a few dozen bytes, and past these a file made to exhaust the reader
/// would overflow its stack or double its value at every level.
const MAX_DEPTH: usize = 32;
const MAX_VALUE: usize = 64 * 1024;

/// Built-in values for what the legacy Makefile does not set.
const DEFAULT_REMOTE: &str = "localhost:5000/images";
const DEFAULT_LOCAL: &str = "gvisor.dev/images";

/// Reads `from`, writes the settings file `to` (refusing to replace it unless
/// `force`), adds `target/` to the workspace's `.gitignore` unless it is
/// there, and says on stderr what it wrote. `workspace` and `cwd` anchor the
/// check that the written file resolves.
pub fn run(from: &Path, to: &Path, force: bool, workspace: &Path, cwd: &Path) -> Result<()> {
    let shown_from = from.display();
    let text = std::fs::read(from).with_context(|| format!("cannot read the legacy Makefile {shown_from}"))?;
    let text = String::from_utf8_lossy(&text);
    if text.contains("_xtask_") {
        bail!(
            "{shown_from} is this tool's Makefile shim, not a legacy Makefile: run init before copying the shim over it, \
             or give it the legacy file (`git show HEAD:{shown_from} > legacy.mk`)"
        );
    }
    let legacy = parse(&text).with_context(|| format!("cannot take the settings from {shown_from}"))?;
    if legacy == Legacy::default() {
        bail!("{shown_from} sets none of {}: is it the legacy images Makefile?", WANTED.join(", "));
    }
    let toml = render(&legacy, &shown_from.to_string());
    let file: FileConfig = toml::from_str(&toml).context("the settings written would not parse")?;
    Settings::resolve(file, Overrides::default(), workspace, cwd)
        .with_context(|| format!("{shown_from} sets a value the tool cannot use"))?;

    let shown_to = to.strip_prefix(cwd).unwrap_or(to).display().to_string();
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut out = if force {
        std::fs::File::create(to)
    } else {
        std::fs::OpenOptions::new().write(true).create_new(true).open(to)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!("{shown_to} already exists: pass --force to overwrite it"),
        _ => anyhow::anyhow!("cannot write {shown_to}: {e}"),
    })?;
    out.write_all(toml.as_bytes()).with_context(|| format!("cannot write {shown_to}"))?;

    let from_file = |set: bool| if set { String::new() } else { format!(" (not set in {shown_from}: the default)") };
    eprintln!("wrote {shown_to} from {shown_from}:");
    eprintln!(
        "  remote_image_prefix = {}{}",
        quoted(legacy.remote_image_prefix.as_deref().unwrap_or(DEFAULT_REMOTE)),
        from_file(legacy.remote_image_prefix.is_some())
    );
    eprintln!(
        "  local_image_prefix = {}{}",
        quoted(legacy.local_image_prefix.as_deref().unwrap_or(DEFAULT_LOCAL)),
        from_file(legacy.local_image_prefix.is_some())
    );
    eprintln!(
        "  non_test_images = {}{}",
        list(legacy.non_test_images.as_deref().unwrap_or_default()),
        from_file(legacy.non_test_images.is_some())
    );
    eprintln!("  tag_scheme = \"gvisor\": the legacy tags, so the images already pushed stay valid");
    ignore_target(&workspace.join(".gitignore"), cwd)
}

/// Adds `target/` to an ignore file (creating it) unless a line of it
/// already ignores cargo's target directory; says so when it does.
fn ignore_target(file: &Path, cwd: &Path) -> Result<()> {
    let shown = file.strip_prefix(cwd).unwrap_or(file).display().to_string();
    let existing = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => bail!("cannot read {shown}: {e}"),
    };
    let Some(line) = target_line(&existing) else { return Ok(()) };
    // Appended, so that the rest of the file stays byte for byte.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut out| out.write_all(line.as_bytes()))
        .with_context(|| format!("cannot add target/ to {shown}: add it by hand"))?;
    eprintln!("added target/ to {shown}: cargo builds the tool there");
    Ok(())
}

/// What to append to an ignore file so that it ignores `target/`: nothing
/// when a line already does.
fn target_line(existing: &[u8]) -> Option<&'static str> {
    let ignored = existing.split(|&b| b == b'\n').map(|l| l.trim_ascii()).any(|l| {
        let l = l.strip_prefix(b"**/").or_else(|| l.strip_prefix(b"/")).unwrap_or(l);
        l == b"target" || l == b"target/"
    });
    match ignored {
        true => None,
        false if existing.is_empty() || existing.ends_with(b"\n") => Some("target/\n"),
        false => Some("\ntarget/\n"),
    }
}

/// The settings file for what the legacy Makefile sets.
pub fn render(legacy: &Legacy, from: &str) -> String {
    let remote = legacy.remote_image_prefix.as_deref().unwrap_or(DEFAULT_REMOTE);
    let local = legacy.local_image_prefix.as_deref().unwrap_or(DEFAULT_LOCAL);
    let non_test = legacy.non_test_images.as_deref().unwrap_or_default();
    format!(
        r#"# Defaults for `cargo xtask`, written by `cargo xtask init` from {from}.
# Every setting can be overridden by its environment variable or its --flag
# (flag wins over environment, environment over this file).

# Where the image directories live, relative to the workspace root. (IMAGES_DIR)
images_dir = "images"

# Where shared cache images are pulled from and pushed to; the architecture is
# appended to each repository: <prefix>/<path>_<arch>:<tag>. (REMOTE_IMAGE_PREFIX)
remote_image_prefix = {remote}

# The canonical local name tests refer to: <prefix>/<path>:<tag> and :latest.
# (LOCAL_IMAGE_PREFIX)
local_image_prefix = {local}

# "gvisor": bit for bit the legacy Makefile's tags, so the images already in the
# registry stay valid. "content" also covers modes, symlinks, .dockerignore,
# build arguments and bases, at the cost of one full rebuild and push. (TAG_SCHEME)
tag_scheme = "gvisor"

# Images that are not test images: an entry matches an image when it occurs in
# the image's name or path. (NON_TEST_IMAGES, entries separated by \|)
non_test_images = {non_test}

# "docker" or "podman". (IMAGES_ENGINE)
engine = "docker"
"#,
        remote = quoted(remote),
        local = quoted(local),
        non_test = list(non_test),
    )
}

/// A TOML basic string: JSON's escapes are all valid TOML.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", "))
}

/// Takes the wanted variables from a Makefile's assignments (`=`, `:=`,
/// `::=`, `?=`, `+=`, with `export` or `override` before them), expanding
/// references to other variables the file sets. A wanted variable set inside a
/// conditional, by a shell command or through a function is an error, since
/// its value depends on more than the file.
pub fn parse(text: &str) -> Result<Legacy> {
    let mut values: HashMap<String, (usize, Value)> = HashMap::new();
    let mut conditional_depth = 0usize;
    let mut define_depth = 0usize;
    for (line_no, line) in logical_lines(text) {
        if line.starts_with('\t') {
            continue; // a recipe line
        }
        let line = strip_comment(&line);
        let words = strip_directives(line.trim());
        let first = words.split_whitespace().next().unwrap_or("");
        if define_depth > 0 {
            match first {
                "define" => define_depth += 1,
                "endef" => define_depth -= 1,
                _ => {}
            }
            continue;
        }
        match first {
            "define" => {
                define_depth += 1;
                continue;
            }
            "ifeq" | "ifneq" | "ifdef" | "ifndef" => {
                conditional_depth += 1;
                continue;
            }
            "endif" => {
                conditional_depth = conditional_depth.saturating_sub(1);
                continue;
            }
            "else" => continue,
            _ => {}
        }
        let Some((name, op, value)) = assignment(words) else { continue };
        if conditional_depth > 0 {
            if WANTED.contains(&name) {
                bail!("line {line_no}: {name} is set inside a conditional: set it in the settings file by hand");
            }
            continue;
        }
        let value = value.trim().to_string();
        let new = match op {
            "?=" if values.contains_key(name) => continue,
            "+=" => match values.get(name) {
                Some((_, Value::Text(old))) if !value.is_empty() => Value::Text(format!("{old} {value}")),
                Some((_, old)) => old.clone(),
                None => Value::Text(value),
            },
            "!=" => Value::Shell,
            _ => Value::Text(value),
        };
        values.insert(name.to_string(), (line_no, new));
    }
    let get = |name: &str| -> Result<Option<String>> {
        let Some((line_no, _)) = values.get(name) else { return Ok(None) };
        match expand(&mut vec![name.to_string()], &values) {
            Ok(value) => Ok(Some(value)),
            Err((fault, why)) if fault == name => bail!("line {line_no}: {name} {why}"),
            Err((fault, why)) => bail!("line {line_no}: {name} depends on {}, which {why}", excerpt(&fault)),
        }
    };
    Ok(Legacy {
        remote_image_prefix: get("REMOTE_IMAGE_PREFIX")?,
        local_image_prefix: get("LOCAL_IMAGE_PREFIX")?,
        non_test_images: get("NON_TEST_IMAGES")?.map(|list| split_legacy_list(&list)),
    })
}

#[derive(Clone, Debug)]
enum Value {
    Text(String),
    /// Set with `!=`: the output of a shell command.
    Shell,
}

/// Lines joined across backslash-newlines (as make does: the backslash, the
/// newline and the blanks around them become one space), each with the
/// number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut line) = match current.take() {
            Some((start, mut acc)) => {
                acc.push(' ');
                acc.push_str(raw.trim_start());
                (start, acc)
            }
            None => (i + 1, raw.to_string()),
        };
        let backslashes = line.len() - line.trim_end_matches('\\').len();
        if backslashes % 2 == 1 {
            line.pop();
            let kept = line.trim_end().len();
            line.truncate(kept);
            current = Some((start, line));
        } else {
            out.push((start, line));
        }
    }
    out.extend(current);
    out
}

/// The line up to its comment; `\#` is a literal `#`.
fn strip_comment(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'#') => {
                out.push('#');
                chars.next();
            }
            '#' => break,
            c => out.push(c),
        }
    }
    out
}

fn strip_directives(mut line: &str) -> &str {
    loop {
        let rest = ["export", "override", "private"]
            .iter()
            .find_map(|d| line.strip_prefix(d).filter(|r| r.starts_with([' ', '\t'])));
        match rest {
            Some(rest) => line = rest.trim_start(),
            None => return line,
        }
    }
}

/// `NAME op value` when the line is a plain variable assignment (not a rule
/// or a target-specific assignment).
fn assignment(line: &str) -> Option<(&str, &str, &str)> {
    let eq = line.find('=')?;
    let before = &line[..eq];
    let op_start = before.trim_end_matches(':').len();
    let (name_end, op) = if op_start < before.len() {
        let colons = before.len() - op_start;
        if colons > 3 {
            return None;
        }
        (op_start, &line[op_start..=eq])
    } else if let Some(p) = before.strip_suffix(['?', '+', '!']) {
        (p.len(), &line[p.len()..=eq])
    } else {
        (eq, "=")
    };
    let name = line[..name_end].trim();
    let plain = !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == ':' || c == '$' || c == '#');
    plain.then(|| (name, op, &line[eq + 1..]))
}

/// A variable's value with references to the file's other variables
/// expanded. The error names the variable at fault (`chain` holds those being
/// expanded, outermost first) and says why.
fn expand(chain: &mut Vec<String>, values: &HashMap<String, (usize, Value)>) -> Result<String, (String, String)> {
    let name = chain.last().expect("a variable to expand").clone();
    let fault = |why: String| Err((name.clone(), why));
    let text = match values.get(&name) {
        Some((_, Value::Text(text))) => text,
        Some((_, Value::Shell)) => return fault("is set by a shell command (`!=`)".to_string()),
        None => unreachable!("only variables the file sets are expanded"),
    };
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let close = match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
                continue;
            }
            Some('(') => ')',
            Some('{') => '}',
            _ => return fault(format!("uses `{}`, which init cannot evaluate", excerpt(rest.trim()))),
        };
        let Some(end) = after.find(close) else {
            return fault(format!("uses `{}`, which init cannot evaluate", excerpt(rest.trim())));
        };
        let reference = &after[..=end];
        let inner = &after[1..end];
        if inner.is_empty() || inner.contains(|c: char| c.is_whitespace() || c == ',' || c == '$' || c == ':') {
            return fault(format!("uses `{}`, which init cannot evaluate", excerpt(&format!("${reference}"))));
        }
        if !values.contains_key(inner) {
            return fault(format!("refers to `{}`, which the file does not set", excerpt(&format!("${reference}"))));
        }
        if chain.iter().any(|n| n == inner) {
            return Err((
                chain[0].clone(),
                format!("depends on a cycle of variables: {} -> {}", escape(&chain.join(" -> ")), escape(inner)),
            ));
        }
        if chain.len() >= MAX_DEPTH {
            let why = format!("refers to variables more than {MAX_DEPTH} deep: set it in the settings file by hand");
            return Err((chain[0].clone(), why));
        }
        chain.push(inner.to_string());
        out.push_str(&expand(chain, values)?);
        chain.pop();
        if out.len() > MAX_VALUE {
            let why =
                "grows past 64 KiB as its variables are expanded: set it in the settings file by hand".to_string();
            return Err((chain[0].clone(), why));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assignments_of_every_flavour() {
        let text = "\
# Settings of the image rules.\n\
override REMOTE_IMAGE_PREFIX ?= registry.example.net/team/images # the cache\n\
export LOCAL_IMAGE_PREFIX:=example.org/local\n\
NON_TEST_IMAGES = tools\\|gpu/big \\\n\
\t\\|compatibility/gitea/runner\n";
        assert_eq!(
            parse(text).unwrap(),
            Legacy {
                remote_image_prefix: Some("registry.example.net/team/images".into()),
                local_image_prefix: Some("example.org/local".into()),
                non_test_images: Some(strings(&["tools", "gpu/big", "compatibility/gitea/runner"])),
            }
        );
    }

    #[test]
    fn later_assignments_win_and_conditional_ones_do_not() {
        let text = "\
REMOTE_IMAGE_PREFIX := first.example/a\n\
REMOTE_IMAGE_PREFIX ?= ignored.example/b\n\
REMOTE_IMAGE_PREFIX ::= second.example/c\n\
NON_TEST_IMAGES := a\n\
NON_TEST_IMAGES += \\|b\n";
        let legacy = parse(text).unwrap();
        assert_eq!(legacy.remote_image_prefix.as_deref(), Some("second.example/c"));
        assert_eq!(legacy.local_image_prefix, None);
        assert_eq!(legacy.non_test_images, Some(strings(&["a", "b"])));
    }

    #[test]
    fn references_to_the_files_own_variables_are_expanded() {
        let text = "\
PROJECT := ci-images\n\
HOST = registry.example.net\n\
REMOTE_IMAGE_PREFIX ?= ${HOST}/$(PROJECT)\n";
        assert_eq!(parse(text).unwrap().remote_image_prefix.as_deref(), Some("registry.example.net/ci-images"));
    }

    #[test]
    fn rules_recipes_defines_and_target_variables_are_not_assignments() {
        let text = "\
load-%: register-cross ## Pull or build.\n\
\tREMOTE_IMAGE_PREFIX=wrong.example/x docker pull $*\n\
push-%: REMOTE_IMAGE_PREFIX = wrong.example/y\n\
define rule =\n\
LOCAL_IMAGE_PREFIX := wrong.example/z\n\
endef\n\
LOCAL_IMAGE_PREFIX ?= right.example/local\n\
hash = $(shell cd images && find $(1) -type f)\n";
        assert_eq!(
            parse(text).unwrap(),
            Legacy { local_image_prefix: Some("right.example/local".into()), ..Legacy::default() }
        );
    }

    /// `V0 = <value>`, `V1 = …` up to `V<n-1>`, `{next}` in the value
    /// standing for the number of the next line's variable.
    fn chain(n: usize, value: &str) -> String {
        (0..n).map(|i| format!("V{i} = {}\n", value.replace("{next}", &(i + 1).to_string()))).collect()
    }

    #[test]
    fn values_that_depend_on_more_than_the_file_are_refused() {
        let deep = format!("{}V100000 = x\nREMOTE_IMAGE_PREFIX = $(V0)\n", chain(100_000, "$(V{next})"));
        let long_shell = format!("REMOTE_IMAGE_PREFIX = $(shell echo \x1b[2K{})\n", "x".repeat(200));
        // 80 characters at most: 22 for `$(shell echo \u{1b}[2K`, and the `…`.
        let cut = format!(
            "line 1: REMOTE_IMAGE_PREFIX uses `$(shell echo \\u{{1b}}[2K{}…`, which init cannot evaluate",
            "x".repeat(57)
        );
        let doubling = format!("{}V30 = x\nREMOTE_IMAGE_PREFIX = $(V0)\n", chain(30, "$(V{next})$(V{next})"));
        let cases = [
            (
                "ifeq ($(ARCH),aarch64)\nREMOTE_IMAGE_PREFIX := arm.example/x\nendif\n",
                "line 2: REMOTE_IMAGE_PREFIX is set inside a conditional: set it in the settings file by hand",
            ),
            ("LOCAL_IMAGE_PREFIX != cat prefix.txt\n", "line 1: LOCAL_IMAGE_PREFIX is set by a shell command (`!=`)"),
            (
                "REMOTE_IMAGE_PREFIX ?= $(shell gcloud config get project)/images\n",
                "line 1: REMOTE_IMAGE_PREFIX uses `$(shell gcloud config get project)`, which init cannot evaluate",
            ),
            (
                "REMOTE_IMAGE_PREFIX ?= $(REGISTRY)/images\n",
                "line 1: REMOTE_IMAGE_PREFIX refers to `$(REGISTRY)`, which the file does not set",
            ),
            (
                "A = $(B)\nB = $(A)\nREMOTE_IMAGE_PREFIX = $(A)\n",
                "line 3: REMOTE_IMAGE_PREFIX depends on a cycle of variables: REMOTE_IMAGE_PREFIX -> A -> B -> A",
            ),
            (
                "HOST != hostname\nREMOTE_IMAGE_PREFIX = $(HOST)/images\n",
                "line 2: REMOTE_IMAGE_PREFIX depends on HOST, which is set by a shell command (`!=`)",
            ),
            (
                "REMOTE_IMAGE_PREFIX = registry.example.net/$(1)\n",
                "line 1: REMOTE_IMAGE_PREFIX refers to `$(1)`, which the file does not set",
            ),
            // What the file holds is quoted escaped, and cut.
            (
                "E\x1b[2K = $(F)\nREMOTE_IMAGE_PREFIX = $(E\x1b[2K)\n",
                "line 2: REMOTE_IMAGE_PREFIX depends on E\\u{1b}[2K, which refers to `$(F)`, which the file does not set",
            ),
            (long_shell.as_str(), cut.as_str()),
            // Made to overflow the stack, or to double at every level.
            (
                deep.as_str(),
                "line 100002: REMOTE_IMAGE_PREFIX refers to variables more than 32 deep: set it in the settings file \
                 by hand",
            ),
            (
                doubling.as_str(),
                "line 32: REMOTE_IMAGE_PREFIX grows past 64 KiB as its variables are expanded: set it in the settings \
                 file by hand",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn target_is_ignored_once() {
        assert_eq!(target_line(b""), Some("target/\n"));
        assert_eq!(target_line(b"*.log\n"), Some("target/\n"));
        assert_eq!(target_line(b"*.log"), Some("\ntarget/\n"));
        assert_eq!(target_line(b"# build output: target/\n/targets\nsub/target/\n"), Some("target/\n"));
        let ignored: [&[u8]; 5] =
            [b"target/\n", b"/target\n", b"*.o\r\n  /target/  \r\n", b"**/target", b"\xff\ntarget\n"];
        for text in ignored {
            assert_eq!(target_line(text), None, "{}", String::from_utf8_lossy(text));
        }

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".gitignore");
        ignore_target(&file, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "target/\n");
        std::fs::write(&file, b"*.log\n\xff").unwrap();
        for _ in 0..2 {
            ignore_target(&file, dir.path()).unwrap();
            assert_eq!(std::fs::read(&file).unwrap(), b"*.log\n\xff\ntarget/\n");
        }
    }

    #[test]
    fn rendered_file_parses_to_the_values() {
        let legacy = Legacy {
            remote_image_prefix: Some("r.example:5000/x".into()),
            local_image_prefix: None,
            non_test_images: Some(strings(&["a/b", "q\"uote"])),
        };
        let file: FileConfig = toml::from_str(&render(&legacy, "tools/images.mk")).unwrap();
        assert_eq!(file.remote_image_prefix.as_deref(), Some("r.example:5000/x"));
        assert_eq!(file.local_image_prefix.as_deref(), Some(DEFAULT_LOCAL));
        assert_eq!(file.non_test_images, Some(strings(&["a/b", "q\"uote"])));
        assert_eq!(file.tag_scheme.as_deref(), Some("gvisor"));
        assert_eq!(file.images_dir.as_deref(), Some("images"));
        assert_eq!(file.engine.as_deref(), Some("docker"));
    }
}
