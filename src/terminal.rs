//! Text for the operator's terminal. Dead letters, database rows and config values come
//! from outside, and a terminal obeys the control characters in what it prints: an
//! escape sequence in a dead letter's error could retitle the window, clear the screen
//! or rewrite the line above, and a bidi override could make `SELL` read as `LLES`.
//! Every command shows such text through [`escape`], or [`json`] for `--json`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;

/// Whether `c` changes how a terminal shows what follows instead of showing itself:
/// C0 controls, DEL, C1 controls, the bidi controls, and the line and paragraph
/// separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

/// `text` with every control character shown as a visible escape (`\n`, `\x1b`,
/// `\u{202e}`). Backslashes stay as they are, so JSON stays readable: the result is for
/// reading, not for parsing back.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `value` as pretty JSON that is safe on a terminal and means the same to a parser.
/// serde_json escapes C0 controls itself but writes DEL, C1 and bidi controls as they
/// are; these become `\uXXXX` escapes, which only ever occur inside JSON strings.
pub fn json(value: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(escape_json)
}

/// `value` as [`json`] does, on one line: a JSONL record for streams.
pub fn json_line(value: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string(value).map(escape_json)
}

/// serde_json's `text` with what it leaves unescaped written as `\uXXXX`.
fn escape_json(text: String) -> String {
    if !text.chars().any(is_unsafe_in_json) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_in_json(c) {
            // Every character escaped here is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// What serde_json leaves unescaped that [`is_unsafe`] refuses; its own line breaks stay.
fn is_unsafe_in_json(c: char) -> bool {
    is_unsafe(c) && c != '\n'
}

/// Cells aligned in columns under `header`, two spaces apart; the columns flagged in
/// `right` (numbers) are right-aligned. Every cell is shown through [`escape`].
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let cells: Vec<Vec<Cow<'_, str>>> = std::iter::once(header.iter().map(|h| escape(h)).collect())
        .chain(
            rows.iter()
                .map(|row| row.iter().map(|c| escape(c)).collect()),
        )
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "BTCUSDT rejected: insufficient balance (110007) — 0.005 @ 68 000 €";
        assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn every_kind_of_control_character_is_shown_escaped() {
        for (raw, shown) in [
            ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J"),
            ("a\rb\x08c\x00", "a\\rb\\x08c\\x00"),
            ("line\nnext\tcol", "line\\nnext\\tcol"),
            ("del\x7f", "del\\x7f"),
            ("c1 \u{9b}31m \u{85}", "c1 \\u{9b}31m \\u{85}"),
            ("buy \u{202e}LLES\u{202c}", "buy \\u{202e}LLES\\u{202c}"),
            (
                "\u{2066}\u{2069}\u{200f}\u{61c}",
                "\\u{2066}\\u{2069}\\u{200f}\\u{61c}",
            ),
            ("para\u{2029}", "para\\u{2029}"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_and_still_parses_to_the_same_value() {
        let value = serde_json::json!({
            "error": "\x1b[2J\x07 del\x7f c1\u{9b} bidi\u{202e}",
            "symbol": "BTCUSDT",
        });
        let text = json(&value).unwrap();
        assert!(!text.chars().any(is_unsafe_in_json), "{text:?}");
        assert!(text.contains("\\u007f") && text.contains("\\u009b") && text.contains("\\u202e"));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, value);
    }

    #[test]
    fn a_json_line_is_one_line_escaped_like_json_and_parses_to_the_same_value() {
        let value = serde_json::json!({
            "message": "line\nnext \x1b[2J del\x7f c1\u{9b} bidi\u{202e} para\u{2029}",
        });
        let line = json_line(&value).unwrap();
        assert!(!line.chars().any(is_unsafe), "{line:?}");
        assert!(line.contains("\\u007f") && line.contains("\\u202e") && line.contains("\\n"));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, value);
    }
}
