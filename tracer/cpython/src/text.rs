//! Text that a target controls, made safe for a line of text output. Function and file names
//! (`co_name`, `co_filename`), module globals and dict keys, paths of open files, `comm` (set
//! with prctl), the paths of executables: a traced process chooses them all, and tracer prints
//! them as root on a terminal and into files that other tools parse. A control character there
//! could retitle or repaint the terminal (ESC, BEL), forge a line of the summary (a newline), or
//! make a flame graph invalid XML. Every text output (stderr, stdout, summary.txt, folded stacks,
//! SVG) escapes such text here, and nowhere else: the escape is visible (`\x1b`, `\n`), never a
//! silent removal, so what the target named can still be recognised. JSON, Prometheus and the
//! live view escape by their own formats.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a line-oriented file as is: C0 controls (newlines
/// included), DEL, C1 controls, and the Unicode characters that break or reorder a line (line
/// and paragraph separators, bidirectional embeddings, overrides and isolates).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

fn escape_where(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) && !keep(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One piece of target-controlled text for one line: every unsafe character escaped, newlines
/// included, so that it never spans two lines.
pub fn clean(s: &str) -> Cow<'_, str> {
    escape_where(s, |_| false)
}

/// A whole text of tracer's own (the summary, a message) whose pieces were cleaned: its own
/// line breaks are kept; any other control character left is escaped (the last guard before a
/// terminal or a file).
pub fn clean_lines(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c == '\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_visibly() {
        assert_eq!(clean("plain (app.py:3)"), "plain (app.py:3)");
        assert!(matches!(clean("кэш"), Cow::Borrowed(_)));
        assert_eq!(
            clean("fn\x1b]0;TITLE\x07\nforged"),
            "fn\\x1b]0;TITLE\\x07\\nforged"
        );
        assert_eq!(clean("a\rb\tc\x7f"), "a\\rb\\tc\\x7f");
        assert_eq!(clean("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(clean("ab\u{202e}cd\u{2028}"), "ab\\u{202e}cd\\u{2028}");
    }

    #[test]
    fn whole_texts_keep_their_own_lines() {
        assert_eq!(
            clean_lines("line one\nline \x1b[2Jtwo\n"),
            "line one\nline \\x1b[2Jtwo\n"
        );
        for s in ["a\nb", "\x1b", "\u{85}", "\u{2029}"] {
            assert!(!clean(s).chars().any(unsafe_char));
        }
    }
}
