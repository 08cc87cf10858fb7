//! Shell words: a script split into words (quotes removed, expansions
//! marked, redirections dropped but for whether a command's output goes to
//! a file), pipelines and simple commands, each command's program past shell
//! keywords, assignments and wrappers such as `sudo`, and where each word
//! sits in the script.

/// A shell word: its text with quotes removed, where it starts, and
/// whether it holds an expansion (`$x`, `$(…)`, `` `…` ``), whose value is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ShellWord {
    pub(super) text: String,
    pub(super) at: usize,
    pub(super) dynamic: bool,
    /// On a command's first word: the command's standard output goes to a
    /// file (`> /stamp`, `>> log`; not `/dev/null`).
    pub(super) to_file: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ShellToken {
    Word(ShellWord),
    Pipe,
    /// `&&`, `||`, `;`, `&`, a newline.
    End,
    /// The file the command's standard output is redirected to.
    Output(String),
}

/// Splits a shell script into words and separators. Redirections and their
/// targets are dropped, but for the target of standard output's, as are
/// comments and `\`-newlines.
pub(super) fn shell_tokens(script: &str) -> Vec<ShellToken> {
    let chars: Vec<(usize, char)> = script.char_indices().collect();
    let next = |i: usize| chars.get(i + 1).map(|(_, c)| *c);
    let mut tokens = Vec::new();
    let mut word: Option<ShellWord> = None;
    // The next word is a redirection's target: `Some(true)` for standard output's.
    let mut target: Option<bool> = None;
    fn finish(word: &mut Option<ShellWord>, tokens: &mut Vec<ShellToken>, target: &mut Option<bool>) {
        if let Some(w) = word.take() {
            match target.take() {
                None => tokens.push(ShellToken::Word(w)),
                Some(true) => tokens.push(ShellToken::Output(w.text)),
                Some(false) => {}
            }
        }
    }
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            ' ' | '\t' | '\r' => {
                finish(&mut word, &mut tokens, &mut target);
                i += 1;
            }
            '\n' | ';' => {
                finish(&mut word, &mut tokens, &mut target);
                tokens.push(ShellToken::End);
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
                finish(&mut word, &mut tokens, &mut target);
                tokens.push(ShellToken::End);
                i += 2;
            }
            '|' => {
                finish(&mut word, &mut tokens, &mut target);
                tokens.push(ShellToken::Pipe);
                i += if next(i) == Some('&') { 2 } else { 1 };
            }
            '&' if next(i) == Some('>') => {
                finish(&mut word, &mut tokens, &mut target);
                i += 2;
                while i < chars.len() && chars[i].1 == '>' {
                    i += 1;
                }
                target = Some(true);
            }
            '&' => {
                finish(&mut word, &mut tokens, &mut target);
                tokens.push(ShellToken::End);
                i += 1;
            }
            '(' | ')' => {
                finish(&mut word, &mut tokens, &mut target);
                i += 1;
            }
            '<' | '>' => {
                // `2>`: the digits name a descriptor, not a word.
                let descriptor = word
                    .as_ref()
                    .filter(|w| !w.text.is_empty() && w.text.bytes().all(|b| b.is_ascii_digit()))
                    .map(|w| w.text.clone());
                if descriptor.is_some() {
                    word = None;
                }
                let stdout = c == '>' && descriptor.as_deref().is_none_or(|d| d == "1");
                finish(&mut word, &mut tokens, &mut target);
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
                    target = Some(stdout);
                }
            }
            _ => {
                word_at(&mut word, at).text.push(c);
                i += 1;
            }
        }
    }
    finish(&mut word, &mut tokens, &mut target);
    tokens
}

/// The word being read, started at `at` if there is none.
fn word_at(word: &mut Option<ShellWord>, at: usize) -> &mut ShellWord {
    word.get_or_insert_with(|| ShellWord { at, ..ShellWord::default() })
}

/// The pipelines of a script, each a list of simple commands' words.
pub(super) fn pipelines(tokens: &[ShellToken]) -> Vec<Vec<Vec<ShellWord>>> {
    let mut all = Vec::new();
    let mut pipeline: Vec<Vec<ShellWord>> = Vec::new();
    let mut command: Vec<ShellWord> = Vec::new();
    let mut to_file = false;
    // A command ends: its first word says where its output went.
    let end = |command: &mut Vec<ShellWord>, to_file: &mut bool| {
        if let Some(first) = command.first_mut() {
            first.to_file = std::mem::take(to_file);
        }
        *to_file = false;
        std::mem::take(command)
    };
    for token in tokens {
        match token {
            ShellToken::Word(w) => command.push(w.clone()),
            ShellToken::Output(file) => {
                to_file |= !matches!(file.as_str(), "/dev/null" | "/dev/stdout" | "/dev/stderr")
            }
            ShellToken::Pipe => pipeline.push(end(&mut command, &mut to_file)),
            ShellToken::End => {
                pipeline.push(end(&mut command, &mut to_file));
                all.push(std::mem::take(&mut pipeline));
            }
        }
    }
    pipeline.push(end(&mut command, &mut to_file));
    all.push(pipeline);
    all.into_iter()
        .map(|p| p.into_iter().filter(|c| !c.is_empty()).collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A simple command's program (its file name) and arguments, past shell
/// keywords, variable assignments and wrappers such as `sudo` and `env`.
pub(super) fn command_words(words: &[ShellWord]) -> Option<(&str, &[ShellWord])> {
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
pub(super) fn operands<'a>(args: &'a [ShellWord], valued: &[&str]) -> Vec<&'a ShellWord> {
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

/// Where each line of `text` starts, as byte offsets.
pub(super) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect()
}

/// How many lines come before the one holding the byte at `at`.
pub(super) fn line_index(starts: &[usize], at: usize) -> usize {
    starts.partition_point(|start| *start <= at).saturating_sub(1)
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
}
