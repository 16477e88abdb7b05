//! Text from the ledger or the event stream, made safe to print. Model names, endpoints, key
//! names and reasons come from clients: in a terminal a control character could set the window
//! title or clear the screen, a newline could forge a table row, and in a spreadsheet a cell
//! that starts with `=` is a formula. JSON output prints the values exactly and never comes here.

use std::borrow::Cow;

/// Characters that change how a terminal shows text rather than being text: C0 and C1 controls,
/// DEL, and the bidi overrides and isolates that can reorder what follows them.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` for a table or a text line: each unsafe character written as a Rust escape (`\u{1b}`,
/// `\n`, `\t`), the rest as is.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One CSV cell of text: a value a spreadsheet would run as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`, as OWASP's CSV-injection guidance
/// says; then it is quoted if it holds a comma, a quote or a line break.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = s.contains([',', '"', '\n', '\r']);
    if !formula && !quote {
        return Cow::Borrowed(s);
    }
    let text = if formula {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    };
    if quote {
        Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_kept() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
        assert_eq!(printable(hostile), "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J");
        assert_eq!(printable("a\nb\tc\u{9b}d"), "a\\nb\\tc\\u{9b}d");
        assert_eq!(printable("x\u{202E}y"), "x\\u{202e}y");
        assert!(matches!(printable("gpt-4o ü 模型"), Cow::Borrowed(_)));
    }

    #[test]
    fn formula_cells_are_neutralised_and_quoted_when_needed() {
        assert_eq!(
            csv_cell("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        for lead in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(
                csv_cell(lead).trim_start_matches('"').starts_with('\''),
                "{lead:?}"
            );
        }
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
        assert!(matches!(csv_cell("gpt-4o"), Cow::Borrowed(_)));
    }
}
