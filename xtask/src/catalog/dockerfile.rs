//! Dockerfiles as BuildKit reads them: parser directives, instructions and
//! their flags, line continuations (comment and empty lines inside one are
//! dropped), heredocs, `# xtask: allow(...)` comments, and the variable
//! substitution of `ARG` and `ENV`. Pure: text in, instructions out.

use std::collections::HashMap;

use crate::model::excerpt;

/// A parsed Dockerfile.
#[derive(Debug, Default)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
    /// The escape character: `\`, or `` ` `` when the `escape` directive says.
    pub escape: char,
    /// What BuildKit would refuse, by line.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// One instruction, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper case: `FROM`, `RUN`, …
    pub keyword: String,
    /// The line it starts on, from 1.
    pub line: usize,
    /// The `--name[=value]` words before the arguments (FROM, RUN, COPY, ADD).
    pub flags: Vec<Flag>,
    /// Everything after the keyword, continuation lines joined.
    rest: String,
    /// Where the arguments start in `rest`, after the flags.
    args_at: usize,
    /// (offset in `rest`, line): where each joined piece came from.
    spans: Vec<(usize, usize)>,
    pub heredocs: Vec<Heredoc>,
    /// Rules allowed by `# xtask: allow(...)` comments before the
    /// instruction or among its lines, each with the comment's line.
    pub allowed: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The lines between the marker's line and the delimiter, each ending with `\n`.
    pub body: String,
    /// The line of the body's first line.
    pub line: usize,
}

/// What every `xtask` comment must look like.
const ALLOW_FORM: &str = "`# xtask: allow(<rule>[, <rule>…])`";

impl Instruction {
    /// The arguments, after the flags.
    pub fn args(&self) -> &str {
        &self.rest[self.args_at..]
    }

    /// The line holding the byte at `offset` in [`Instruction::args`].
    pub fn line_at(&self, offset: usize) -> usize {
        let at = self.args_at + offset;
        let after = self.spans.partition_point(|(start, _)| *start <= at);
        after.checked_sub(1).map_or(self.line, |i| self.spans[i].1)
    }

    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// The JSON (exec) form's words, when the arguments are one.
    pub fn exec_form(&self) -> Option<Vec<String>> {
        let args = self.args().trim();
        args.starts_with('[').then(|| serde_json::from_str(args).ok()).flatten()
    }

    pub fn allows(&self, rule: &str) -> bool {
        self.allowed.iter().any(|(r, _)| r == rule)
    }
}

/// Parses a Dockerfile. Never fails: what BuildKit would refuse is listed
/// in [`Dockerfile::problems`], and the rest is still read.
pub fn parse(text: &str) -> Dockerfile {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut file = Dockerfile { escape: '\\', ..Dockerfile::default() };
    let mut i = 0;
    // Parser directives: `# name=value` lines before anything else.
    while let Some((name, value)) = lines.get(i).and_then(|l| directive(l)) {
        if name == "escape" {
            match value.as_str() {
                "\\" => file.escape = '\\',
                "`" => file.escape = '`',
                other => file.problems.push(Problem {
                    line: i + 1,
                    message: format!("invalid escape directive `{}`: use \\ or `", excerpt(other)),
                }),
            }
        }
        i += 1;
    }
    let mut allowed = Vec::new();
    while i < lines.len() {
        let (number, line) = (i + 1, lines[i]);
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            allow_comment(trimmed, number, &mut allowed, &mut file.problems);
            continue;
        }
        let keyword_len = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let keyword = trimmed[..keyword_len].to_ascii_uppercase();
        let (first, mut continues) = continuation(trimmed[keyword_len..].trim_start(), file.escape);
        let mut rest = first.to_string();
        let mut spans = vec![(0, number)];
        while continues && i < lines.len() {
            let (number, line) = (i + 1, lines[i]);
            i += 1;
            let trimmed = line.trim_start();
            if trimmed.starts_with('#') {
                allow_comment(trimmed, number, &mut allowed, &mut file.problems);
                continue;
            }
            if trimmed.is_empty() {
                continue;
            }
            let (piece, more) = continuation(line, file.escape);
            spans.push((rest.len(), number));
            rest.push_str(piece);
            continues = more;
        }
        let (flags, args_at) =
            if matches!(keyword.as_str(), "FROM" | "RUN" | "COPY" | "ADD") { flags(&rest) } else { (Vec::new(), 0) };
        let mut instruction = Instruction {
            keyword,
            line: number,
            flags,
            rest,
            args_at,
            spans,
            heredocs: Vec::new(),
            allowed: std::mem::take(&mut allowed),
        };
        if matches!(instruction.keyword.as_str(), "RUN" | "COPY" | "ADD") && instruction.exec_form().is_none() {
            for (name, strip_tabs) in heredoc_markers(instruction.args(), file.escape) {
                let start = i;
                let end = (i..lines.len()).find(|&j| {
                    let l = if strip_tabs { lines[j].trim_start_matches('\t') } else { lines[j] };
                    l == name
                });
                let Some(end) = end else {
                    let name = excerpt(&name);
                    file.problems.push(Problem {
                        line: instruction.line,
                        message: format!("heredoc `{name}` is never closed: end it with a line holding `{name}` alone"),
                    });
                    i = lines.len();
                    break;
                };
                let mut body = String::new();
                for l in &lines[start..end] {
                    body.push_str(if strip_tabs { l.trim_start_matches('\t') } else { l });
                    body.push('\n');
                }
                instruction.heredocs.push(Heredoc { name, body, line: start + 1 });
                i = end + 1;
            }
        }
        file.instructions.push(instruction);
    }
    file
}

/// A parser directive line, `# name=value`, its name lower case.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.trim().to_string()))
}

/// A line less its trailing escape character, and whether it had one.
fn continuation(line: &str, escape: char) -> (&str, bool) {
    let end = line.trim_end();
    match end.strip_suffix(escape) {
        Some(kept) => (kept, true),
        None => (line, false),
    }
}

/// Reads `# xtask: allow(a, b) why` into `allowed`; an `xtask:` comment of
/// any other form is a problem.
fn allow_comment(comment: &str, line: usize, allowed: &mut Vec<(String, usize)>, problems: &mut Vec<Problem>) {
    let Some(rest) = comment.trim_start_matches('#').trim_start().strip_prefix("xtask:") else { return };
    let rules = rest.trim_start().strip_prefix("allow(").and_then(|r| r.split_once(')')).map(|(rules, _)| rules);
    let names: Vec<&str> =
        rules.map(|r| r.split([',', ' ', '\t']).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if names.is_empty() {
        problems.push(Problem { line, message: format!("malformed xtask comment: write {ALLOW_FORM}") });
        return;
    }
    allowed.extend(names.into_iter().map(|n| (n.to_string(), line)));
}

/// The leading `--name[=value]` words, and where the arguments start.
fn flags(rest: &str) -> (Vec<Flag>, usize) {
    let mut flags = Vec::new();
    let mut at = 0;
    loop {
        let skipped = rest[at..].len() - rest[at..].trim_start().len();
        let word_at = at + skipped;
        let word = rest[word_at..].split(char::is_whitespace).next().unwrap_or("");
        let Some(flag) = word.strip_prefix("--").filter(|f| !f.is_empty()) else {
            return (flags, word_at);
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        flags.push(Flag { name, value });
        at = word_at + word.len();
    }
}

/// The heredocs an instruction's arguments open, in order: each delimiter
/// (quotes removed) and whether `<<-` strips leading tabs. A marker is a
/// word of its own: `<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`.
fn heredoc_markers(args: &str, escape: char) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for word in words(args, escape) {
        let rest = word.raw.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = rest.strip_prefix("<<") else { continue };
        let (strip_tabs, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let name: String = rest.chars().filter(|c| *c != '"' && *c != '\'').collect();
        if !name.is_empty() && !rest.contains('<') {
            out.push((name, strip_tabs));
        }
    }
    out
}

/// A word of an instruction's arguments: as written, and with its quotes
/// removed; `at` is its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub raw: String,
    pub text: String,
    pub at: usize,
}

/// Splits arguments into words at blanks outside quotes, as BuildKit does
/// for FROM, COPY, ADD, ARG and ENV. The escape character quotes the next
/// one, except before `$`, where it stays for [`substitute`] to read.
pub fn words(args: &str, escape: char) -> Vec<Word> {
    let mut out = Vec::new();
    let mut chars = args.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut text = String::new();
        let mut quote: Option<char> = None;
        let mut end = args.len();
        while let Some(&(at, c)) = chars.peek() {
            match quote {
                None if c.is_whitespace() => {
                    end = at;
                    break;
                }
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == escape && quote != Some('\'') => {
                    chars.next();
                    match chars.peek() {
                        Some(&(_, '$')) => text.extend([escape, '$']),
                        Some(&(_, next)) => text.push(next),
                        None => {}
                    }
                }
                _ => text.push(c),
            }
            chars.next();
        }
        out.push(Word { raw: args[start..end].to_string(), text, at: start });
    }
    out
}

/// `ARG` and `ENV` arguments as (name, value) pairs: `A=1 B="two words"`,
/// `ARG NAME` (no value), or ENV's old `NAME value with blanks`.
pub fn assignments(keyword: &str, args: &str, escape: char) -> Vec<(String, Option<String>)> {
    let words = words(args, escape);
    if keyword == "ENV" && words.first().is_some_and(|w| !w.text.contains('=')) && words.len() > 1 {
        let value = args[words[1].at..].trim_end();
        let value = self::words(value, escape).into_iter().map(|w| w.text).collect::<Vec<_>>().join(" ");
        return vec![(words[0].text.clone(), Some(value))];
    }
    words
        .into_iter()
        .map(|w| match w.text.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (w.text, None),
        })
        .collect()
}

/// How deep `${…}` may nest in one substitution: no Dockerfile needs more,
/// and text nested thousands deep exists only to exhaust whoever reads it.
pub const MAX_NESTING: usize = 32;

/// A substitution nested deeper than [`MAX_NESTING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooDeep;

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "variables substituted within each other more than {MAX_NESTING} deep (`${{A:-${{B:-…}}}}`): nest fewer"
        )
    }
}

/// Replaces `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}`
/// with their values from `vars`. `None` when one has no known value (an
/// `ARG` with no default, given only at build time), or uses another form.
/// One pass over the text, however it nests; nesting deeper than
/// [`MAX_NESTING`] is an error.
pub fn substitute(text: &str, vars: &HashMap<String, String>, escape: char) -> Result<Option<String>, TooDeep> {
    let chars: Vec<char> = text.chars().collect();
    let mut reader = Substitution { chars: &chars, at: 0, vars, escape };
    reader.text(0, false)
}

/// A substitution being read: each character is read once.
struct Substitution<'a> {
    chars: &'a [char],
    at: usize,
    vars: &'a HashMap<String, String>,
    escape: char,
}

impl Substitution<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Text with its variables replaced, up to the end or, `inside` a
    /// `${…}` at `depth`, up to its closing brace (read too). `None` when
    /// a value is unknown; the text is read to its end all the same, so
    /// that what follows is read where it starts.
    fn text(&mut self, depth: usize, inside: bool) -> Result<Option<String>, TooDeep> {
        let mut out = Some(String::new());
        // Braces of the text itself inside a `${…}`: `${A:-{x}}` is `{x}`.
        let mut braces = 0usize;
        while let Some(c) = self.peek() {
            self.at += 1;
            match c {
                _ if c == self.escape && self.peek() == Some('$') => {
                    self.at += 1;
                    append(&mut out, Some("$"));
                }
                '{' if inside => {
                    braces += 1;
                    append(&mut out, Some("{"));
                }
                '}' if inside && braces == 0 => return Ok(out),
                '}' if inside => {
                    braces -= 1;
                    append(&mut out, Some("}"));
                }
                '$' if self.peek() == Some('{') => {
                    self.at += 1;
                    let value = self.braced(depth + 1)?;
                    append(&mut out, value.as_deref());
                }
                '$' => {
                    let name = self.name();
                    let vars = self.vars;
                    append(&mut out, if name.is_empty() { Some("$") } else { vars.get(&name).map(String::as_str) });
                }
                c => append(&mut out, Some(c.encode_utf8(&mut [0; 4]))),
            }
        }
        // A `${` never closed.
        Ok(if inside { None } else { out })
    }

    /// A variable name, read.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
            self.at += 1;
        }
        name
    }

    /// What follows a `${`, up to its closing brace.
    fn braced(&mut self, depth: usize) -> Result<Option<String>, TooDeep> {
        if depth > MAX_NESTING {
            return Err(TooDeep);
        }
        let name = self.name();
        let value = self.vars.get(&name).filter(|v| !v.is_empty());
        match (self.peek(), self.chars.get(self.at + 1)) {
            (Some('}'), _) => {
                self.at += 1;
                Ok(self.vars.get(&name).cloned())
            }
            (Some(':'), Some('-')) => {
                self.at += 2;
                let default = self.text(depth, true)?;
                Ok(value.cloned().or(default))
            }
            (Some(':'), Some('+')) => {
                self.at += 2;
                let alternative = self.text(depth, true)?;
                Ok(match value {
                    Some(_) => alternative,
                    None if self.vars.contains_key(&name) => Some(String::new()),
                    None => None,
                })
            }
            // Another form (`${A#x}`, `${A/x/y}`): its value is not worked out.
            _ => {
                self.text(depth, true)?;
                Ok(None)
            }
        }
    }
}

/// Appends a piece of a substitution; once one is unknown, so is the whole.
fn append(out: &mut Option<String>, piece: Option<&str>) {
    match (out.as_mut(), piece) {
        (Some(text), Some(piece)) => text.push_str(piece),
        _ => *out = None,
    }
}

/// The `NAME=value` pairs of `--build-arg` options (`DOCKER_BUILD_ARGS`).
pub fn build_args(args: &[String]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let pair = match word.strip_prefix("--build-arg") {
            Some("") => words.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some((name, value)) = pair.and_then(|p| p.split_once('=')) {
            out.insert(name.to_string(), value.to_string());
        }
    }
    out
}

/// The image each stage is built `FROM`, with the global `ARG`s' values
/// (`build_args` over their defaults) substituted. A reference that still
/// names a variable with no value is left out; a substitution nested too
/// deep is the problem of its line.
pub fn from_references(file: &Dockerfile, build_args: &HashMap<String, String>) -> Result<Vec<String>, Problem> {
    let mut global: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    let mut seen_from = false;
    for ins in &file.instructions {
        let too_deep = |e: TooDeep| Problem { line: ins.line, message: e.to_string() };
        match ins.keyword.as_str() {
            "ARG" if !seen_from => {
                for (name, default) in assignments("ARG", ins.args(), file.escape) {
                    let value = match build_args.get(&name) {
                        Some(given) => Some(given.clone()),
                        None => default
                            .map(|d| substitute(&d, &global, file.escape))
                            .transpose()
                            .map_err(too_deep)?
                            .flatten(),
                    };
                    match value {
                        Some(v) => global.insert(name, v),
                        None => global.remove(&name),
                    };
                }
            }
            "FROM" => {
                seen_from = true;
                if let Some(reference) = words(ins.args(), file.escape).into_iter().next() {
                    out.extend(substitute(&reference.text, &global, file.escape).map_err(too_deep)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (keyword, line, flags, args, heredocs as (name, body, line)) of an instruction.
    type Shape = (String, usize, Vec<String>, String, Vec<(String, String, usize)>);

    fn shape(text: &str) -> Vec<Shape> {
        let file = parse(text);
        assert_eq!(file.problems, [], "{text}");
        file.instructions
            .iter()
            .map(|i| {
                let flags = i
                    .flags
                    .iter()
                    .map(|f| match &f.value {
                        Some(v) => format!("{}={v}", f.name),
                        None => f.name.clone(),
                    })
                    .collect();
                let heredocs = i.heredocs.iter().map(|h| (h.name.clone(), h.body.clone(), h.line)).collect();
                (i.keyword.clone(), i.line, flags, i.args().to_string(), heredocs)
            })
            .collect()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn instructions_flags_and_continuations() {
        let text = "# syntax=docker/dockerfile:1\n\
                    ARG V=1\n\
                    from --platform=$BUILDPLATFORM base:${V} AS b\n\
                    \n\
                    RUN --mount=type=cache,target=/x --network=none apt-get update \\\n\
                    \x20   # a comment inside is dropped\n\
                    \n\
                    \x20 && echo done\n\
                    COPY --link a b /dst/\n\
                    run echo trailing \\   \n\
                    \x20 spaces\n";
        assert_eq!(
            shape(text),
            vec![
                (s("ARG"), 2, vec![], s("V=1"), vec![]),
                (s("FROM"), 3, vec![s("platform=$BUILDPLATFORM")], s("base:${V} AS b"), vec![]),
                (
                    s("RUN"),
                    5,
                    vec![s("mount=type=cache,target=/x"), s("network=none")],
                    s("apt-get update   && echo done"),
                    vec![]
                ),
                (s("COPY"), 9, vec![s("link")], s("a b /dst/"), vec![]),
                (s("RUN"), 10, vec![], s("echo trailing   spaces"), vec![]),
            ]
        );
    }

    #[test]
    fn lines_of_joined_pieces() {
        let file = parse("FROM x\nRUN a \\\n  b \\\n  # note\n  c\n");
        let run = &file.instructions[1];
        assert_eq!(run.args(), "a   b   c");
        let at = |w: &str| run.line_at(run.args().find(w).unwrap());
        assert_eq!((at("a"), at("b"), at("c")), (2, 3, 5));
    }

    #[test]
    fn heredocs() {
        let text = "FROM x\n\
                    RUN <<EOF\n\
                    apt-get update\n\
                    EOF\n\
                    COPY <<-\"A\" /a <<B /b\n\
                    \tone\n\
                    \tA\n\
                    two\n\
                    B\n\
                    RUN cat <<'X' > /f && echo \"<<not\"\n\
                    FROM y\n\
                    X\n\
                    ENV K=v\n";
        assert_eq!(
            shape(text),
            vec![
                (s("FROM"), 1, vec![], s("x"), vec![]),
                (s("RUN"), 2, vec![], s("<<EOF"), vec![(s("EOF"), s("apt-get update\n"), 3)]),
                (s("COPY"), 5, vec![], s("<<-\"A\" /a <<B /b"), vec![(s("A"), s("one\n"), 6), (s("B"), s("two\n"), 8)]),
                (s("RUN"), 10, vec![], s("cat <<'X' > /f && echo \"<<not\""), vec![(s("X"), s("FROM y\n"), 11)]),
                (s("ENV"), 13, vec![], s("K=v"), vec![]),
            ]
        );
    }

    #[test]
    fn unclosed_heredoc_is_a_problem() {
        let file = parse("FROM x\nRUN <<EOF\necho\n");
        assert_eq!(
            file.problems,
            [Problem { line: 2, message: s("heredoc `EOF` is never closed: end it with a line holding `EOF` alone") }]
        );
    }

    #[test]
    fn escape_directive() {
        let text = "# escape=`\nFROM x\nRUN a `\n  b\\\n";
        let file = parse(text);
        assert_eq!(file.escape, '`');
        assert_eq!(file.instructions[1].args(), "a   b\\");
        // After anything else, it is a comment.
        assert_eq!(parse("FROM x\n# escape=`\nRUN a `\n").instructions.len(), 2);
    }

    #[test]
    fn allow_comments() {
        let text = "FROM x\n# xtask: allow(apt-lists, unpinned-packages) because\nRUN a \\\n # xtask: allow(curl-pipe-shell)\n b\nRUN c\n";
        let file = parse(text);
        assert_eq!(file.problems, []);
        let allowed: Vec<Vec<(String, usize)>> = file.instructions.iter().map(|i| i.allowed.clone()).collect();
        assert_eq!(
            allowed,
            vec![vec![], vec![(s("apt-lists"), 2), (s("unpinned-packages"), 2), (s("curl-pipe-shell"), 4)], vec![]]
        );
        let bad = parse("FROM x\n# xtask: allow apt-lists\nRUN a\n");
        assert_eq!(
            bad.problems,
            [Problem { line: 2, message: format!("malformed xtask comment: write {ALLOW_FORM}") }]
        );
    }

    #[test]
    fn exec_form() {
        let file = parse("FROM x\nRUN [\"apt-get\", \"install\", \"git\"]\nRUN [not json\n");
        assert_eq!(file.instructions[1].exec_form(), Some(vec![s("apt-get"), s("install"), s("git")]));
        assert_eq!(file.instructions[2].exec_form(), None);
    }

    #[test]
    fn words_and_assignments() {
        let texts =
            |args: &str, escape: char| -> Vec<String> { words(args, escape).into_iter().map(|w| w.text).collect() };
        assert_eq!(texts(r#"a "b c" 'd e' f\ g \$x"#, '\\'), [s("a"), s("b c"), s("d e"), s("f g"), s("\\$x")]);
        assert_eq!(texts(r"C:\x\ `$y a` b", '`'), [s(r"C:\x\"), s("`$y"), s("a b")]);
        assert_eq!(
            assignments("ARG", r#"A=1 B="two words" C"#, '\\'),
            vec![(s("A"), Some(s("1"))), (s("B"), Some(s("two words"))), (s("C"), None)]
        );
        assert_eq!(assignments("ENV", "PATH /a:/b  c", '\\'), vec![(s("PATH"), Some(s("/a:/b c")))]);
    }

    #[test]
    fn from_lines() {
        let text = "ARG BASE=x.example/base\nARG TAG\nFROM ${BASE}:1 AS a\nFROM \\\n  a\nFROM y:$TAG\n\
                    RUN <<EOF\nFROM not/an/instruction\nEOF\n";
        let file = parse(text);
        assert_eq!(from_references(&file, &HashMap::new()).unwrap(), [s("x.example/base:1"), s("a")]);
        let args = build_args(&[s("--build-arg"), s("TAG=2"), s("--build-arg=BASE=z")]);
        assert_eq!(from_references(&file, &args).unwrap(), [s("z:1"), s("a"), s("y:2")]);
    }

    #[test]
    fn substitution() {
        let vars: HashMap<String, String> =
            [("A", "1"), ("EMPTY", "")].into_iter().map(|(k, v)| (s(k), s(v))).collect();
        let sub = |t: &str| substitute(t, &vars, '\\').unwrap();
        assert_eq!(sub("x:$A-${A}"), Some(s("x:1-1")));
        assert_eq!(sub("${B:-d$A}"), Some(s("d1")));
        assert_eq!(sub("${EMPTY:-d}"), Some(s("d")));
        assert_eq!(sub("${A:+yes}${EMPTY:+no}"), Some(s("yes")));
        assert_eq!(sub("\\$A $"), Some(s("$A $")));
        assert_eq!(sub("$B"), None);
        assert_eq!(sub("${A#x}"), None);
        assert_eq!(sub("${A"), None);
        // What the value does not need is read, not worked out.
        assert_eq!(sub("${A:-$B}${EMPTY:+${A#x}}"), Some(s("1")));
        assert_eq!(sub("${A#x}-${A}"), None);
        assert_eq!(sub("${A:-{x}}${B:-{x}}y"), Some(s("1{x}y")));
        assert_eq!(sub("${B:+$B}${EMPTY:+x}${B:-\\${A}}"), None);
        assert_eq!(sub("${EMPTY:+x}${B:-\\${A}}"), Some(s("${A}")));
    }

    /// `${A:-${A:-…}}`: as deep as [`MAX_NESTING`], and no deeper, in one
    /// pass over the text however deep it goes.
    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
        let vars = HashMap::new();
        assert_eq!(substitute(&nested(MAX_NESTING), &vars, '\\'), Ok(Some(s("x"))));
        assert_eq!(substitute(&nested(MAX_NESTING + 1), &vars, '\\'), Err(TooDeep));
        let started = std::time::Instant::now();
        assert_eq!(substitute(&nested(200_000), &vars, '\\'), Err(TooDeep));
        let file = parse(&format!("ARG A\nFROM a\nFROM {}\n", nested(200_000)));
        assert_eq!(from_references(&file, &vars).unwrap_err().line, 3);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        // Side by side, each as deep as allowed: read in one pass.
        let wide = nested(MAX_NESTING).repeat(20_000);
        assert_eq!(substitute(&wide, &vars, '\\').unwrap().map(|v| v.len()), Some(20_000));
        assert_eq!(
            TooDeep.to_string(),
            "variables substituted within each other more than 32 deep (`${A:-${B:-…}}`): nest fewer"
        );
    }

    proptest::proptest! {
        #![proptest_config(arbitrary::config())]

        /// Any text is read without a panic, and what is read of it holds
        /// together: lines in the file, words and heredocs in their text.
        #[test]
        fn any_text_is_read(text in arbitrary::text(arbitrary::DOCKERFILE, 64)) {
            let file = parse(&text);
            let lines = text.split('\n').count();
            let vars: HashMap<String, String> = [("A", "1"), ("B", "")].into_iter().map(|(k, v)| (s(k), s(v))).collect();
            for ins in &file.instructions {
                proptest::prop_assert!(ins.line >= 1 && ins.line <= lines);
                let args = ins.args();
                for (at, _) in args.char_indices() {
                    let line = ins.line_at(at);
                    proptest::prop_assert!(line >= ins.line && line <= lines, "{line} of {ins:?}");
                }
                for word in words(args, file.escape) {
                    proptest::prop_assert!(args[word.at..].starts_with(&word.raw));
                    let _ = substitute(&word.text, &vars, file.escape);
                }
                let _ = assignments(&ins.keyword, args, file.escape);
                let _ = ins.exec_form();
                for heredoc in &ins.heredocs {
                    proptest::prop_assert!(heredoc.line > ins.line && heredoc.line <= lines);
                }
            }
            for problem in &file.problems {
                proptest::prop_assert!(problem.line >= 1 && problem.line <= lines);
            }
            let _ = from_references(&file, &vars);
        }
    }
}

/// Text for property tests: the marks and words Dockerfiles and their
/// shell scripts are made of, mixed with any character, so that the odd
/// cases come often.
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;

    /// What Dockerfiles are made of.
    #[rustfmt::skip]
    pub(crate) const DOCKERFILE: &[&str] = &[
        "FROM ", "RUN ", "COPY ", "ADD ", "ARG ", "ENV ", "from ", "\n", "\r\n", " ", "\t", "\\", "\\\n", "`", "# ",
        "# escape=`\n", "# xtask: allow(", ")", "<<EOF", "<<-'EOF'", "EOF\n", "\tEOF\n", "${", "}", "$", ":-", ":+",
        "A", "B=", "=", "\"", "'", "[\"", "\", \"", "\"]", "--from=", "--mount=type=cache,target=/var/lib/apt ",
        "--platform=$BUILDPLATFORM ", " AS ", "x.example/a:1", "@sha256:", "npm install ", "apt-get install ",
        "curl -fsSL x | sh", "\u{1b}", "\0", "é", "日",
    ];

    /// What the shell scripts of RUN instructions are made of.
    #[rustfmt::skip]
    pub(crate) const SHELL: &[&str] = &[
        "npm install ", "npm i ", "apt-get install ", "apt-get update", "pip install ", "python3 -m pip install ",
        "apk add ", "rm -rf /var/lib/apt/lists", "curl -fsSL x", "wget -O- x", " | ", "sh", "bash -c ", "sh -c '",
        "sudo ", "env A=1 ", "'", "\"", "\"\"", "$(", ")", "`", "${", "}", "\\", "\\\n", "\n", ";", "&&", "||", "&",
        "2>&1", ">", "<<EOF\n", "EOF\n", "#", "é", "日", "@", "@1.2.3", "=", "-", "--", " ",
    ];

    /// A text of fewer than `pieces` pieces of `vocabulary` or single characters.
    pub(crate) fn text(vocabulary: &'static [&'static str], pieces: usize) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(vocabulary).prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..pieces).prop_map(|p| p.concat())
    }

    /// Few cases, each quick: these run with the unit tests.
    pub(crate) fn config() -> ProptestConfig {
        ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
    }
}
