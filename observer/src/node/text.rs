//! Names watched processes choose (file names, commands, cgroup and pod names) shown as text:
//! control characters, the backslash and bidirectional overrides escaped, so a name can neither
//! start a new line in a log or table, nor move the cursor or recolour a terminal, nor reorder
//! what is displayed. JSON output needs none of this (serde escapes); text output always does.

use std::fmt::{self, Write as _};

/// Displays a string with hostile characters escaped (`\\`, `\n`, `\t`, `\r`, `\xHH`, `\u{...}`).
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // Fast path: nothing to escape (and `{:<20}` padding applies).
        if !s.chars().any(needs_escape) {
            return f.pad(s);
        }
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            push_escaped(&mut out, c);
        }
        f.pad(&out)
    }
}

impl fmt::Debug for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `s` escaped for text output.
pub fn printable(s: &str) -> String {
    Printable(s).to_string()
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_bidi(c)
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x100 && needs_escape(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// A metric label value: control characters and bidirectional overrides escaped as text
/// (`\x1b`); quotes, backslashes and newlines are the exposition encoder's to escape.
pub fn label_value(s: &str) -> String {
    if !s
        .chars()
        .any(|c| (c.is_control() && c != '\n') || is_bidi(c))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\n' || c == '\\' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
}

/// A writer for text logs: each write is one formatted log line; every control character
/// except its final newline is written escaped, so a field holding a hostile name cannot start
/// a forged line or drive the terminal.
pub struct EscapingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        let text = String::from_utf8_lossy(body);
        let valid = matches!(text, std::borrow::Cow::Borrowed(_));
        if valid && !text.chars().any(|c| c.is_control() || is_bidi(c)) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        // Control characters (C0 and C1) and bidirectional overrides escaped, bytes that are not
        // UTF-8 replaced; backslashes are left as they are (a log line is not parsed back).
        let mut escaped = String::with_capacity(text.len() + 16);
        for c in text.chars() {
            if c.is_control() || is_bidi(c) {
                push_escaped(&mut escaped, c);
            } else {
                escaped.push(c);
            }
        }
        let mut out = escaped.into_bytes();
        out.extend_from_slice(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_characters_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(printable("/var/lib/ci/job-1"), "/var/lib/ci/job-1");
        assert_eq!(
            printable("a\\b\nc\td\re\x1b[31m\x7f\u{85}\u{202e}txt.exe"),
            "a\\\\b\\nc\\td\\re\\x1b[31m\\x7f\\x85\\u{202e}txt.exe"
        );
        assert_eq!(format!("{:<6}|", Printable("ab")), "ab    |");
        assert_eq!(format!("{:<6}|", Printable("a\n")), "a\\n   |");
        assert_eq!(printable("ünïcödé {}\"'"), "ünïcödé {}\"'");
        assert_eq!(label_value("q\"x\\y\n#\x1b"), "q\"x\\y\n#\\x1b");
        assert_eq!(label_value("plain"), "plain");
        use std::io::Write as _;
        let mut w = EscapingWriter(Vec::new());
        w.write_all(b"WARN lock guard path=/l/a\x1b[2J\nevil_series 1\n")
            .unwrap();
        assert_eq!(w.0, b"WARN lock guard path=/l/a\\x1b[2J\\nevil_series 1\n");
        // C1 controls, bidirectional overrides and bytes that are not UTF-8.
        let mut w = EscapingWriter(Vec::new());
        w.write_all("x=\u{9b}2J \u{202e}exe\n".as_bytes()).unwrap();
        w.write_all(b"y=\xff\x9b\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "x=\\x9b2J \\u{202e}exe\ny=\u{fffd}\u{fffd}\n"
        );
    }
}
