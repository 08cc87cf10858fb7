//! The shell commands of a RUN instruction, read from its shell words
//! ([`super::words`]): what they do that the rules care about (installs,
//! fetches piped to a shell, apt's lists, the build time written into the
//! image, clones of a branch, requirement files installed without hashes).

use super::words::{command_words, line_index, line_starts, operands, pipelines, shell_tokens, ShellToken, ShellWord};
use crate::catalog::dockerfile::Instruction;

const SHELLS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ash", "ksh", "mksh"];

/// What a RUN's commands do that the rules care about.
#[derive(Default)]
pub(super) struct Facts {
    /// (line, command, pin form, packages) of each install with unpinned packages.
    pub(super) unpinned: Vec<(usize, &'static str, &'static str, Vec<String>)>,
    /// (line, fetcher, shell) of each `curl … | sh`.
    pub(super) piped: Vec<(usize, String, String)>,
    pub(super) apt_update: Option<usize>,
    pub(super) lists_removed: bool,
    /// Lines of each `date` whose output stays in the image: written to a
    /// file, piped on, or substituted into a word.
    pub(super) build_time: Vec<usize>,
    /// Lines of each `git clone` that names no commit.
    pub(super) clones: Vec<usize>,
    /// Whether the RUN checks a commit out (`git checkout <commit>`, or
    /// one held in a variable).
    pub(super) commit_checked_out: bool,
    /// (line, requirement files) of each `pip install -r` without `--require-hashes`.
    pub(super) unhashed: Vec<(usize, String)>,
}

/// What the commands of a RUN instruction do.
pub(super) fn facts(ins: &Instruction) -> Facts {
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
                words.into_iter().map(|text| ShellWord { text, ..ShellWord::default() }).collect();
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
                    let starts = line_starts(&heredoc.body);
                    let line_of = |at: usize| heredoc.line + line_index(&starts, at);
                    script_facts(&shell_tokens(&heredoc.body), &line_of, &mut facts, 0);
                }
            }
        }
    }
    facts
}

fn script_facts(tokens: &[ShellToken], line_of: &dyn Fn(usize) -> usize, facts: &mut Facts, depth: usize) {
    for pipeline in pipelines(tokens) {
        let programs: Vec<Option<&str>> = pipeline.iter().map(|c| command_words(c).map(|(p, _)| p)).collect();
        // The first shell at or after each command, read from the end: one pass
        // however long the pipeline.
        let mut shells: Vec<Option<&str>> = vec![None; programs.len() + 1];
        for i in (0..programs.len()).rev() {
            shells[i] = programs[i].filter(|p| SHELLS.contains(p)).or(shells[i + 1]);
        }
        for (i, words) in pipeline.iter().enumerate() {
            command_facts(words, line_of, facts, depth);
            if let Some(("date", args)) = command_words(words) {
                if (words[0].to_file || i + 1 < pipeline.len()) && !fixed_date(args) {
                    facts.build_time.push(line_of(words[0].at));
                }
            }
            let Some(fetch @ ("curl" | "wget")) = programs[i] else { continue };
            if let Some(shell) = shells[i + 1] {
                facts.piped.push((line_of(words[0].at), fetch.to_string(), shell.to_string()));
            }
        }
    }
}

fn command_facts(words: &[ShellWord], line_of: &dyn Fn(usize) -> usize, facts: &mut Facts, depth: usize) {
    // `$(date)` or `` `date` `` in any word, an assignment's too: its value
    // goes on into what the command does.
    for word in words.iter().filter(|w| w.dynamic) {
        for body in substitutions(&word.text) {
            let mut commands = pipelines(&shell_tokens(body)).into_iter().flatten();
            if commands.any(|c| matches!(command_words(&c), Some(("date", args)) if !fixed_date(args))) {
                facts.build_time.push(line_of(word.at));
            }
        }
    }
    let Some((program, args)) = command_words(words) else { return };
    let line = line_of(words[0].at);
    // `sh -c '…'`: the script it runs.
    if SHELLS.contains(&program) && depth < 3 {
        let flag =
            args.iter().position(|w| w.text.starts_with('-') && !w.text.starts_with("--") && w.text.contains('c'));
        if let Some(script) = flag.and_then(|f| args[f + 1..].iter().find(|w| !w.text.starts_with('-'))) {
            let base = line_of(script.at);
            let starts = line_starts(&script.text);
            let nested = |at: usize| base + line_index(&starts, at);
            script_facts(&shell_tokens(&script.text), &nested, facts, depth + 1);
        }
        return;
    }
    if program == "rm" && args.iter().any(|w| w.text.starts_with("/var/lib/apt/lists")) {
        facts.lists_removed = true;
    }
    if program == "git" {
        git_facts(args, line, facts);
        return;
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
            let files = requirement_files(args);
            if !files.is_empty() && !args.iter().any(|w| w.text == "--require-hashes") {
                facts.unhashed.push((line, files.join(", ")));
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

/// `git clone` of what a branch (or tag) points at, and a commit checked
/// out after it.
fn git_facts(args: &[ShellWord], line: usize, facts: &mut Facts) {
    let ops = operands(args, &["-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env"]);
    let names_commit = |w: &&ShellWord| {
        w.dynamic || (w.text.len() >= 7 && w.text.len() <= 64 && w.text.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    match ops.first().map(|w| w.text.as_str()) {
        Some("clone") if !args.iter().any(|w| w.text == "--revision" || w.text.starts_with("--revision=")) => {
            facts.clones.push(line)
        }
        Some("checkout" | "switch" | "reset" | "fetch") if ops[1..].iter().any(names_commit) => {
            facts.commit_checked_out = true
        }
        _ => {}
    }
}

/// The requirement files of `pip install` (`-r file`, `--requirement file`,
/// `-rfile`, `--requirement=file`).
fn requirement_files(args: &[ShellWord]) -> Vec<String> {
    let mut files = Vec::new();
    let mut words = args.iter();
    while let Some(w) = words.next() {
        let text = w.text.as_str();
        if text == "-r" || text == "--requirement" {
            files.extend(words.next().map(|f| f.text.clone()));
        } else if let Some(file) = text.strip_prefix("--requirement=") {
            files.push(file.to_string());
        } else if let Some(file) = text.strip_prefix("-r").filter(|f| !f.is_empty() && !text.starts_with("--")) {
            files.push(file.to_string());
        }
    }
    files
}

/// Whether `date`'s arguments name the time it prints (`-d`, `--date`,
/// `-r`, `--reference`, `-f`, `--file`), rather than the time it runs.
fn fixed_date(args: &[ShellWord]) -> bool {
    args.iter().any(|w| match w.text.strip_prefix("--") {
        Some(long) => ["date", "reference", "file"].iter().any(|o| long == *o || long.starts_with(&format!("{o}="))),
        // `-I` takes the rest of its word as its own argument (`-Iseconds`).
        None => w
            .text
            .strip_prefix('-')
            .is_some_and(|short| short.chars().take_while(|c| *c != 'I').any(|c| matches!(c, 'd' | 'r' | 'f'))),
    })
}

/// The scripts of a word's command substitutions, `$(…)` and `` `…` ``
/// (not `$((…))`, arithmetic).
fn substitutions(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'(') && bytes.get(i + 2) != Some(&b'(') {
            let (start, mut depth, mut j) = (i + 2, 1, i + 2);
            while j < bytes.len() && depth > 0 {
                match bytes[j] {
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            out.push(&text[start..if depth == 0 { j - 1 } else { j }]);
            i = j;
        } else if bytes[i] == b'`' {
            let start = i + 1;
            let end = text[start..].find('`').map_or(text.len(), |k| start + k);
            out.push(&text[start..end]);
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

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
    // A scope's `@` (`@scope/name`) is not a version's.
    let name_and_version = arg.strip_prefix('@').unwrap_or(arg);
    let Some((_, version)) = name_and_version.rsplit_once('@') else { return false };
    let version = version.trim_start_matches(['v', '=']);
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::dockerfile::arbitrary;

    #[test]
    fn pins() {
        for pinned in ["a@1.2.3", "@s/a@1.2.3-rc.1", "./x", "x.tgz", "user/repo", "git+https://x"] {
            assert!(npm_pinned(pinned), "{pinned}");
        }
        for unpinned in ["a", "a@^1.2.3", "a@latest", "@s/a", "a@1.2", "", "é", "@"] {
            assert!(!npm_pinned(unpinned), "{unpinned}");
        }
    }

    proptest::proptest! {
        #![proptest_config(arbitrary::config())]

        /// Any RUN is read without a panic, in its shell form, its exec
        /// form and its heredocs, and each finding is on one of its lines.
        #[test]
        fn any_run_is_read(script in arbitrary::text(arbitrary::SHELL, 32)) {
            let text = format!("FROM x\nRUN {script}\n");
            let lines = text.split('\n').count();
            let file = crate::catalog::dockerfile::parse(&text);
            for ins in &file.instructions {
                let facts = facts(ins);
                let mut found: Vec<usize> = facts.unpinned.iter().map(|u| u.0).collect();
                found.extend(facts.piped.iter().map(|p| p.0));
                found.extend(facts.apt_update);
                found.extend(&facts.build_time);
                found.extend(&facts.clones);
                found.extend(facts.unhashed.iter().map(|u| u.0));
                for line in found {
                    proptest::prop_assert!(line >= ins.line && line <= lines, "{line} in {ins:?}");
                }
            }
            let _ = pipelines(&shell_tokens(&script));
        }
    }
}
