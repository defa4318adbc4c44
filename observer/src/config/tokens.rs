//! `http.tokens_file`: bearer tokens that open the API door to callers off loopback. One
//! `name token` pair per line (`#` starts a comment); the name is what the audit records.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("http.tokens_file: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("http.tokens_file: {path} line {line}: {why}")]
    Bad {
        path: String,
        line: usize,
        why: &'static str,
    },
    #[error("http.tokens_file: {0} holds no token")]
    Empty(String),
}

/// Shortest token accepted (bytes): guessing must stay out of reach.
pub const MIN_TOKEN_LEN: usize = 24;

/// The accepted tokens, by name.
#[derive(Clone, Default)]
pub struct Tokens(Vec<(String, Vec<u8>)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a token never reaches a log.
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        if meta.len() > 1 << 20 {
            return Err(TokenError::Bad {
                path: shown,
                line: 0,
                why: "larger than 1 MiB",
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, TokenError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why| TokenError::Bad {
                path: origin.into(),
                line: i + 1,
                why,
            };
            let mut words = line.split_whitespace();
            let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("expected `name token`"));
            };
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
                || name.len() > 64
            {
                return Err(bad(
                    "a name is up to 64 letters, digits, '-', '_', '.', '@'",
                ));
            }
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "a token is at least 24 printable characters (e.g. `openssl rand -base64 32`)",
                ));
            }
            out.push((name.to_string(), token.as_bytes().to_vec()));
        }
        if out.is_empty() {
            return Err(TokenError::Empty(origin.into()));
        }
        Ok(Self(out))
    }

    /// The name of the token `presented` is, compared in constant time against every token
    /// (the time depends only on the lengths, never on where bytes differ).
    pub fn check(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.0 {
            if ct_eq(token, presented) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        diff |= usize::from(x ^ y);
    }
    // The optimiser must not turn the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_check_and_refuse_weak_ones() {
        let t = Tokens::parse(
            "# ops\nops  aaaaaaaaaaaaaaaaaaaaaaaaaaaa\nci bbbbbbbbbbbbbbbbbbbbbbbbbbbb # ci\n",
            "t",
        )
        .unwrap();
        assert_eq!(t.check(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaa"), Some("ops"));
        assert_eq!(t.check(b"bbbbbbbbbbbbbbbbbbbbbbbbbbbb"), Some("ci"));
        assert_eq!(t.check(b"aaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(t.check(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(t.check(b""), None);
        assert!(!format!("{t:?}").contains("aaaa"));
        for bad in [
            "ops short",
            "ops",
            "o p q",
            "bad/name aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "",
        ] {
            assert!(Tokens::parse(bad, "t").is_err(), "{bad:?}");
        }
    }
}
