//! Text that comes from outside (files, directory names, a registry's
//! answers) as it may reach a terminal: every character a terminal would
//! act on (ESC, CR, a newline, …) or that hides or reorders text is shown as
//! an escape, so that no name can erase a line, move the cursor or pass for
//! another; and a quote of such text is cut to a short excerpt.

/// The most characters of outside text a message quotes.
pub const EXCERPT_CHARS: usize = 80;

/// `text` with control characters written as Rust escapes (`\n`, `\r`,
/// `\t`, `\u{1b}`) and Unicode's invisible formatting characters (the
/// bidirectional overrides, zero-width characters, line and paragraph
/// separators) as `\u{…}`. Everything else, backslashes included, is kept:
/// the point is that what is shown is all there is, not that it reads back.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(c, &mut out);
    }
    out
}

/// `text` escaped as [`escape`] does, and cut (ending with `…`) so that
/// it shows no more than [`EXCERPT_CHARS`] characters.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    // Characters shown so far, and where to cut to leave room for the `…`.
    let (mut shown, mut cut) = (0, 0);
    for c in text.chars() {
        let before = out.len();
        push_escaped(c, &mut out);
        shown += out[before..].chars().count();
        if shown < EXCERPT_CHARS {
            cut = out.len();
        }
        if shown > EXCERPT_CHARS {
            out.truncate(cut);
            out.push('…');
            return out;
        }
    }
    out
}

fn push_escaped(c: char, out: &mut String) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else if invisible(c) {
        out.extend(c.escape_unicode());
    } else {
        out.push(c);
    }
}

/// Format characters that change how the text around them shows, or show
/// as nothing: the Arabic letter mark, zero-width characters and the
/// left-to-right and right-to-left marks, line and paragraph separators,
/// bidirectional embeddings, overrides and isolates, word joiners and
/// invisible operators, the byte-order mark, interlinear annotations.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn what_a_terminal_acts_on_is_shown() {
        assert_eq!(escape("new\nline\ttab\r"), "new\\nline\\ttab\\r");
        // A tag that erased the line and wrote one of its own.
        assert_eq!(escape("v1\u{1b}[2K\rtotal: 0 deleted"), "v1\\u{1b}[2K\\rtotal: 0 deleted");
        assert_eq!(escape("nul\0del\u{7f}csi\u{9b}"), "nul\\u{0}del\\u{7f}csi\\u{9b}");
        assert_eq!(escape("admin\u{202e}txt.exe"), "admin\\u{202e}txt.exe");
        assert_eq!(escape("zero\u{200b}width\u{feff}"), "zero\\u{200b}width\\u{feff}");
        // What is plain stays as it is.
        assert_eq!(escape("$(touch x) é \\n `a` 日本"), "$(touch x) é \\n `a` 日本");
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("short"), "short");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = "y".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&long), format!("{}…", "y".repeat(EXCERPT_CHARS - 1)));
        // An escape is never cut in two.
        let escapes = "\u{1b}".repeat(20);
        assert_eq!(excerpt(&escapes), format!("{}…", "\\u{1b}".repeat(13)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the text, no control or invisible character is left,
        /// escaping twice changes nothing, and an excerpt is an escaped
        /// prefix no longer than the limit.
        #[test]
        fn escaped_text_is_inert(text in any::<String>()) {
            let escaped = escape(&text);
            prop_assert!(!escaped.chars().any(|c| c.is_control() || invisible(c)), "{escaped:?}");
            prop_assert_eq!(escape(&escaped), escaped.clone());
            let short = excerpt(&text);
            prop_assert!(short.chars().count() <= EXCERPT_CHARS, "{short:?}");
            let kept = short.strip_suffix('…').unwrap_or(&short);
            prop_assert!(escaped.starts_with(kept), "{short:?} of {escaped:?}");
            prop_assert_eq!(short == escaped, escaped.chars().count() <= EXCERPT_CHARS);
        }
    }
}
