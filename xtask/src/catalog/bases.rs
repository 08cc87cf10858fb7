//! The external bases of a Dockerfile, each where it is written: `FROM`
//! lines, `COPY --from` images, and the global `ARG` defaults a `FROM`
//! names whole (`ARG BASE=ubuntu:jammy`, `FROM ${BASE}`); the tag each
//! follows; and the text with some of them written otherwise. Pure: text
//! in, places and text out. The catalog's parser reads the instructions;
//! the words are then found again in the lines as written, so that an edit
//! touches the reference alone.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};

use crate::catalog::dockerfile::{self, Instruction};
use crate::model::{Arch, Parts, Reference};

/// What the catalog calls its own: images named under the local prefix,
/// and its images under the remote prefix. Neither is pinned.
pub struct Catalogued<'a> {
    pub local_prefix: &'a str,
    pub remote_prefix: &'a str,
    /// Every image path, for any architecture.
    pub paths: &'a HashSet<String>,
}

impl Catalogued<'_> {
    fn names(&self, reference: &str) -> bool {
        if under(self.local_prefix, reference).is_some()
            || under(&format!("localhost/{}", self.local_prefix), reference).is_some()
        {
            return true;
        }
        under(self.remote_prefix, reference).is_some_and(|rest| {
            let path = Arch::ALL.iter().find_map(|a| rest.strip_suffix(&format!("_{a}"))).unwrap_or(rest);
            self.paths.contains(path)
        })
    }
}

/// The path of a reference under `prefix/`, less its tag and digest.
fn under<'a>(prefix: &str, reference: &'a str) -> Option<&'a str> {
    let rest = reference.strip_prefix(prefix)?.strip_prefix('/')?;
    Some(Parts::of(rest).name)
}

/// One external base, where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The line the reference is on, from 1.
    pub line: usize,
    /// What names it: `FROM`, `COPY --from`, or `ARG <NAME>` for a default
    /// a `FROM` names by its variable.
    pub site: String,
    /// As written: `alpine:3.20`, `alpine:3.20@sha256:…`.
    pub reference: String,
    /// Where `reference` starts in the file, in bytes.
    pub at: usize,
    /// The `--platform` of the `FROM` that uses it, as written.
    pub platform: Option<String>,
}

/// Something about a line: why a base there cannot be pinned, or a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub bases: Vec<Base>,
    /// Bases that cannot be pinned where they are written.
    pub errors: Vec<Note>,
    pub warnings: Vec<Note>,
}

/// The external bases of a Dockerfile, in the order of the file; each place
/// once, however many `FROM`s use an `ARG`.
pub fn find(text: &str, own: &Catalogued) -> Found {
    let file = dockerfile::parse(text);
    let lines = lines(text);
    let mut walk = BaseWalk {
        own,
        lines: &lines,
        escape: file.escape,
        stages: stage_names(&file.instructions, file.escape),
        defaults: HashMap::new(),
        vars: HashMap::new(),
        found: Found::default(),
    };
    let mut seen_from = false;
    for ins in &file.instructions {
        match ins.keyword.as_str() {
            "ARG" if !seen_from => walk.global_arg(ins),
            "FROM" => {
                seen_from = true;
                walk.from(ins);
            }
            "COPY" => walk.copy(ins),
            _ => {}
        }
    }
    walk.found.bases.sort_by_key(|b| b.at);
    walk.found.bases.dedup_by_key(|b| b.at);
    walk.found
}

/// A word of an instruction where it stands in the file.
#[derive(Clone, Debug)]
struct Placed {
    line: usize,
    /// Its first byte in the file.
    at: usize,
    raw: String,
    /// Quotes and escapes removed.
    text: String,
}

struct BaseWalk<'a> {
    own: &'a Catalogued<'a>,
    lines: &'a [(usize, &'a str)],
    escape: char,
    /// Stage names, lower case: what `FROM` and `COPY --from` may name
    /// besides images.
    stages: HashSet<String>,
    /// The global `ARG`s with a default, each where its default is written.
    defaults: HashMap<String, Placed>,
    /// The global `ARG`s' values, for substitution.
    vars: HashMap<String, String>,
    found: Found,
}

impl BaseWalk<'_> {
    fn error(&mut self, line: usize, message: String) {
        self.found.errors.push(Note { line, message });
    }

    fn global_arg(&mut self, ins: &Instruction) {
        for word in placed_words(self.lines, ins, self.escape) {
            let (name, default) = match word.text.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (word.text.clone(), None),
            };
            let value = match default.as_deref().map(|d| dockerfile::substitute(d, &self.vars, self.escape)) {
                Some(Err(too_deep)) => {
                    self.error(word.line, format!("ARG {}: {too_deep}", shown(&word.raw)));
                    continue;
                }
                Some(Ok(value)) => value,
                None => None,
            };
            match (value, default) {
                (Some(value), Some(default)) => {
                    let skip = word.raw.find('=').map_or(0, |at| at + 1);
                    let placed = word.raw[skip..].find(&default).map(|pos| Placed {
                        at: word.at + skip + pos,
                        raw: default.clone(),
                        text: default,
                        line: word.line,
                    });
                    match placed {
                        Some(p) => self.defaults.insert(name.clone(), p),
                        None => self.defaults.remove(&name),
                    };
                    self.vars.insert(name, value);
                }
                _ => {
                    self.defaults.remove(&name);
                    self.vars.remove(&name);
                }
            }
        }
    }

    fn from(&mut self, ins: &Instruction) {
        let words = placed_words(self.lines, ins, self.escape);
        let Some(word) = words.into_iter().find(|w| !w.raw.starts_with("--")) else { return };
        let parsed = dockerfile::words(ins.args(), self.escape).into_iter().next().map(|w| w.text);
        if parsed.as_deref() != Some(word.text.as_str()) {
            self.unplaced(ins, "FROM");
            return;
        }
        let platform = ins.flag("platform").and_then(|f| f.value.clone());
        self.base(word, 0, "FROM", platform);
    }

    fn copy(&mut self, ins: &Instruction) {
        let Some(from) = ins.flag("from").and_then(|f| f.value.clone()) else { return };
        let words = placed_words(self.lines, ins, self.escape);
        let flags = words.into_iter().take_while(|w| w.raw.starts_with("--"));
        let word = flags.filter(|w| w.raw.starts_with("--from=")).last();
        match word {
            Some(word) if word.text.strip_prefix("--from=") == Some(from.as_str()) => {
                self.base(word, "--from=".len(), "COPY --from", None)
            }
            _ => self.unplaced(ins, "COPY --from"),
        }
    }

    fn unplaced(&mut self, ins: &Instruction, site: &str) {
        self.error(
            ins.line,
            format!("{site}: the image reference is split over lines: keep it whole on one line to pin it"),
        );
    }

    /// The base a word names, from byte `skip` of the word on.
    fn base(&mut self, word: Placed, skip: usize, site: &str, platform: Option<String>) {
        let value = &word.text[skip.min(word.text.len())..];
        if !value.contains('$') {
            if !self.is_external(value, site) {
                return;
            }
            match word.raw.get(skip..).and_then(|raw| raw.find(value)) {
                Some(pos) => self.push(word.line, site.to_string(), value.to_string(), word.at + skip + pos, platform),
                None => self.error(
                    word.line,
                    format!("{site} {}: written with quotes or escapes: write it plainly to pin it", shown(&word.raw)),
                ),
            }
            return;
        }
        let concrete = match dockerfile::substitute(value, &self.vars, self.escape) {
            Ok(concrete) => concrete,
            Err(too_deep) => return self.error(word.line, format!("{site} {}: {too_deep}", shown(value))),
        };
        let Some(concrete) = concrete else {
            self.found.warnings.push(Note {
                line: word.line,
                message: format!("{site} {}: a variable there has no default, so it is not pinned", shown(value)),
            });
            return;
        };
        if !self.is_external(&concrete, site) {
            return;
        }
        let default = whole_variable(value).and_then(|name| Some((name, self.defaults.get(name)?.clone())));
        match default {
            Some((name, arg)) if !arg.text.contains('$') => {
                self.push(arg.line, format!("ARG {name}"), arg.text, arg.at, platform)
            }
            _ => self.error(
                word.line,
                format!(
                    "{site} {}: the image is named through variables; put it whole in one global ARG's default \
                     (`ARG BASE=name:tag`, `FROM ${{BASE}}`), or in the {site} line, to pin it",
                    shown(value)
                ),
            ),
        }
    }

    fn push(&mut self, line: usize, site: String, reference: String, at: usize, platform: Option<String>) {
        let plain = reference.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
        if !plain || Reference::parse(&reference).is_err() {
            self.error(line, format!("{site} {reference:?} is not an image reference"));
            return;
        }
        self.found.bases.push(Base { line, site, reference, at, platform });
    }

    /// Whether a reference names an image outside the catalog: not
    /// `scratch`, a stage, a stage's number, or a catalog image.
    fn is_external(&self, reference: &str, site: &str) -> bool {
        let lower = reference.to_ascii_lowercase();
        let numbered = site == "COPY --from" && reference.parse::<usize>().is_ok();
        !(lower == "scratch" || numbered || self.stages.contains(&lower) || self.own.names(reference))
    }
}

/// `name:tag` of a reference as written, which its digest follows: `latest`
/// when it names no tag; none for a digest alone, which follows no tag.
pub fn followed(reference: &str) -> Option<String> {
    let parts = Parts::of(reference);
    match (parts.tag, parts.digest) {
        (None, Some(_)) => None,
        (tag, _) => Some(format!("{}:{}", parts.name, tag.unwrap_or("latest"))),
    }
}

/// `old`, written at byte `at`, becomes `new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub at: usize,
    pub old: String,
    pub new: String,
}

/// `text` with `edits` made; an edit whose `old` is not at its place is an
/// error (the file changed since it was read).
pub fn apply(text: &str, edits: &[Edit]) -> Result<String> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.at);
    let mut out = String::with_capacity(text.len() + edits.iter().map(|e| e.new.len()).sum::<usize>());
    let mut done = 0;
    for edit in sorted {
        let end = edit.at + edit.old.len();
        if edit.at < done || text.get(edit.at..end) != Some(edit.old.as_str()) {
            bail!("`{}` is not where it was read, at byte {}", edit.old, edit.at);
        }
        out.push_str(&text[done..edit.at]);
        out.push_str(&edit.new);
        done = end;
    }
    out.push_str(&text[done..]);
    Ok(out)
}

/// Text from the file as a terminal may show it: quoted and escaped when
/// it holds control characters.
fn shown(text: &str) -> String {
    if text.chars().any(char::is_control) {
        format!("{text:?}")
    } else {
        text.to_string()
    }
}

/// `NAME` of a reference that is `$NAME` or `${NAME}` and nothing else.
fn whole_variable(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('$')?;
    let name = match rest.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => rest,
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// The `AS` names of every stage, lower case.
fn stage_names(instructions: &[Instruction], escape: char) -> HashSet<String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .filter_map(|i| match dockerfile::words(i.args(), escape).as_slice() {
            [_, as_, name, ..] if as_.text.eq_ignore_ascii_case("as") => Some(name.text.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The lines of a file as the parser numbers them: where each starts, and
/// its text less the line ending (and, on the first, the byte order mark).
fn lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in text.split('\n') {
        out.push((start, piece.strip_suffix('\r').unwrap_or(piece)));
        start += piece.len() + 1;
    }
    if let Some(first) = out.first_mut() {
        if let Some(rest) = first.1.strip_prefix('\u{feff}') {
            *first = (first.0 + '\u{feff}'.len_utf8(), rest);
        }
    }
    out
}

/// The words of an instruction after its keyword (flags included), each
/// where it stands in the file: its lines are read again as the parser
/// joins them (a trailing escape continues it; comment and empty lines
/// among them are skipped).
fn placed_words(lines: &[(usize, &str)], ins: &Instruction, escape: char) -> Vec<Placed> {
    let mut out = Vec::new();
    let mut index = ins.line - 1;
    let Some(&(start, first)) = lines.get(index) else { return out };
    let trimmed = first.trim_start();
    let keyword_end = first.len() - trimmed.len() + trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let mut piece = (start + keyword_end, &first[keyword_end..]);
    loop {
        let (piece_start, text) = piece;
        let (kept, continues) = match text.trim_end().strip_suffix(escape) {
            Some(kept) => (kept, true),
            None => (text, false),
        };
        out.extend(dockerfile::words(kept, escape).into_iter().map(|w| Placed {
            line: index + 1,
            at: piece_start + w.at,
            raw: w.raw,
            text: w.text,
        }));
        if !continues {
            return out;
        }
        index += 1;
        while lines.get(index).is_some_and(|(_, l)| l.trim_start().is_empty() || l.trim_start().starts_with('#')) {
            index += 1;
        }
        let Some(&(start, line)) = lines.get(index) else { return out };
        piece = (start, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(paths: &HashSet<String>) -> Catalogued<'_> {
        Catalogued { local_prefix: "gvisor.dev/images", remote_prefix: "r.example:5000/cache", paths }
    }

    fn base(line: usize, site: &str, reference: &str, text: &str, platform: Option<&str>) -> Base {
        let at = text.match_indices(reference).map(|(at, _)| at).find(|&at| {
            let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
            text[..line_start].matches('\n').count() + 1 == line
        });
        Base {
            line,
            site: site.to_string(),
            reference: reference.to_string(),
            at: at.unwrap_or_else(|| panic!("{reference} is not on line {line}")),
            platform: platform.map(String::from),
        }
    }

    fn edit(at: usize, old: &str, new: &str) -> Edit {
        Edit { at, old: old.to_string(), new: new.to_string() }
    }

    fn note(line: usize, message: &str) -> Note {
        Note { line, message: message.to_string() }
    }

    #[test]
    fn every_form_of_a_base() {
        let text = "# syntax=docker/dockerfile:1\r\n\
                    ARG UNUSED=1 BASE=\"ubuntu:jammy\"\r\n\
                    ARG TOOLS=r.example/tools:2\r\n\
                    from --platform=linux/arm64 alpine:3.20 AS build\r\n\
                    FROM ${BASE} as run\r\n\
                    FROM $BASE\r\n\
                    FROM gvisor.dev/images/basic/hello:latest\r\n\
                    FROM localhost/gvisor.dev/images/basic/hello\r\n\
                    FROM r.example:5000/cache/basic/hello_x86_64:abc\r\n\
                    FROM r.example:5000/cache/other:1\r\n\
                    FROM build\r\n\
                    FROM scratch\r\n\
                    COPY --link --from=busybox:1.36@sha256:00 /bin/sh /sh\r\n\
                    COPY --from=build /a /b\r\n\
                    COPY --from=0 /a /b\r\n\
                    COPY --from=${TOOLS} /t /t\r\n\
                    RUN <<EOF\r\nFROM not:this\r\nEOF\r\n\
                    FROM \\\r\n  # a comment\r\n\r\n  --platform=$BUILDPLATFORM \\\r\n  debian:12\r\n";
        let paths = HashSet::from(["basic/hello".to_string()]);
        let found = find(text, &own(&paths));
        assert_eq!(
            found,
            Found {
                bases: vec![
                    base(2, "ARG BASE", "ubuntu:jammy", text, None),
                    base(3, "ARG TOOLS", "r.example/tools:2", text, None),
                    base(4, "FROM", "alpine:3.20", text, Some("linux/arm64")),
                    base(10, "FROM", "r.example:5000/cache/other:1", text, None),
                    base(13, "COPY --from", "busybox:1.36@sha256:00", text, None),
                    base(24, "FROM", "debian:12", text, Some("$BUILDPLATFORM")),
                ],
                errors: vec![],
                warnings: vec![],
            }
        );
    }

    #[test]
    fn what_cannot_be_pinned_where_it_is_written() {
        let text = "ARG REGISTRY=docker.io\nARG VERSION\nARG NESTED=${REGISTRY}/x:1\n\
                    FROM ${REGISTRY}/alpine:3\nFROM alpine:$VERSION\nFROM ${NESTED}\nFROM alp\\ine:3\n\
                    FROM alpine:\\\n3\nFROM bad|name\nFROM \"alpine:3\"\nFROM ${X\x1b}\n";
        let paths = HashSet::new();
        let found = find(text, &own(&paths));
        let through = |site: &str, value: &str| {
            format!(
                "{site} {value}: the image is named through variables; put it whole in one global ARG's default \
                 (`ARG BASE=name:tag`, `FROM ${{BASE}}`), or in the {site} line, to pin it"
            )
        };
        assert_eq!(found.bases, vec![base(11, "FROM", "alpine:3", text, None)]);
        assert_eq!(
            found.errors,
            vec![
                note(4, &through("FROM", "${REGISTRY}/alpine:3")),
                note(6, &through("FROM", "${NESTED}")),
                note(7, "FROM alp\\ine:3: written with quotes or escapes: write it plainly to pin it"),
                note(8, "FROM: the image reference is split over lines: keep it whole on one line to pin it"),
                note(10, "FROM \"bad|name\" is not an image reference"),
            ]
        );
        assert_eq!(
            found.warnings,
            vec![
                note(5, "FROM alpine:$VERSION: a variable there has no default, so it is not pinned"),
                note(12, "FROM \"${X\\u{1b}}\": a variable there has no default, so it is not pinned"),
            ]
        );
    }

    #[test]
    fn an_arg_used_twice_is_one_place() {
        let text = "\u{feff}ARG BASE=alpine:3.20\nFROM $BASE AS a\nFROM ${BASE}\nCOPY --from=${BASE} /x /x\n";
        let paths = HashSet::new();
        assert_eq!(find(text, &own(&paths)).bases, vec![base(1, "ARG BASE", "alpine:3.20", text, None)]);
    }

    #[test]
    fn escape_directive_and_continued_arg() {
        let text = "# escape=`\nARG A=1 `\n    BASE=alpine:3.20\nFROM `\n ${BASE}\n";
        let paths = HashSet::new();
        assert_eq!(find(text, &own(&paths)).bases, vec![base(3, "ARG BASE", "alpine:3.20", text, None)]);
    }

    #[test]
    fn followed_tags() {
        assert_eq!(followed("alpine:3@sha256:00").as_deref(), Some("alpine:3"));
        assert_eq!(followed("r.example:5000/a").as_deref(), Some("r.example:5000/a:latest"));
        assert_eq!(followed("alpine@sha256:00"), None);
    }

    #[test]
    fn edits_touch_their_bytes_alone() {
        let text = "ARG B=a:1\r\nfrom b:2 AS x\r\n";
        let edits = [edit(16, "b:2", "b:2@sha256:22"), edit(6, "a:1", "a:1@sha256:11")];
        assert_eq!(apply(text, &edits).unwrap(), "ARG B=a:1@sha256:11\r\nfrom b:2@sha256:22 AS x\r\n");
        assert_eq!(
            apply(text, &[edit(5, "a:1", "x")]).unwrap_err().to_string(),
            "`a:1` is not where it was read, at byte 5"
        );
    }

    #[test]
    fn whole_variables() {
        assert_eq!(whole_variable("$A_1"), Some("A_1"));
        assert_eq!(whole_variable("${B}"), Some("B"));
        assert_eq!(whole_variable("${B}:1"), None);
        assert_eq!(whole_variable("${B:-x}"), None);
        assert_eq!(whole_variable("$"), None);
    }
}
