//! Small text helpers for the CLI views: durations, sizes, colours (only on a terminal), and
//! the one way a view reaches a terminal: [`Escaped`], which makes every string in it safe.

use std::{borrow::Cow, ops::Deref};

use serde::{de::DeserializeOwned, Serialize};

#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub(crate) fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub(crate) fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
    pub(crate) fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
    pub(crate) fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
}

/// Text from a process (comm, argv, exe, container and pod names) made safe for a terminal:
/// on one line, every control character escaped (C0, DEL and C1, so neither an escape
/// sequence nor an 8-bit CSI reaches the operator's terminal), as `ps` does.
pub(crate) fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// A view whose every string (comm, argv, exe, paths, container, pod and namespace names,
/// and text built from them such as `why`'s paragraph) went through [`one_line`]. The text
/// renderers take only this, so neither a new view nor a new field of one can reach a
/// terminal unescaped: escaping is done once here, on the view's serde form, not at each
/// place a renderer formats a name. JSON output never goes through it (serde escapes
/// control characters in JSON strings by construction).
#[derive(Debug)]
pub struct Escaped<T>(T);

impl<T: Serialize + DeserializeOwned> Escaped<T> {
    /// A view built in this process (the agent renders trees as text). Only a view with
    /// a control character somewhere goes through its JSON form.
    pub(crate) fn new(view: T) -> Result<Self, serde_json::Error> {
        if super::control_check::is_clean(&view) {
            return Ok(Escaped(view));
        }
        let json = serde_json::to_vec(&view)?;
        match escaped_json(&json) {
            Cow::Borrowed(_) => Ok(Escaped(view)),
            Cow::Owned(json) => serde_json::from_slice(&json).map(Escaped),
        }
    }

    /// A view decoded from its JSON (the agent's answer), every string escaped.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(&escaped_json(json)).map(Escaped)
    }
}

impl<T> Deref for Escaped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// JSON text with every control character in its strings (and keys) rewritten as
/// [`one_line`] writes it — `\u001b` becomes the text `\x1b`, `\n` the two characters `\`
/// and `n` — and still JSON; borrowed when there is none, the common case. Hand-written
/// rather than a walk of a decoded `serde_json::Value` because that cost ten times the
/// decoding of a 1,000-process tree, and a view with one hostile name would cost it: the
/// rewrite only has to find `\b \f \n \r \t`, a `\u` escape of C0, DEL or C1, or a raw DEL
/// or C1 character. Outside strings JSON holds neither backslashes nor those bytes, and a
/// string's `\\` is skipped as a pair; the decoding itself stays serde_json's (an invalid
/// document is left for it to report).
fn escaped_json(json: &[u8]) -> Cow<'_, [u8]> {
    let control = |c: u32| c < 0x20 || (0x7f..=0x9f).contains(&c);
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < json.len() {
        let (len, code) = match json[i] {
            b'\\' => match json.get(i + 1) {
                Some(b'b') => (2, Some(0x08)),
                Some(b'f') => (2, Some(0x0c)),
                Some(b'n') => (2, Some(0x0a)),
                Some(b'r') => (2, Some(0x0d)),
                Some(b't') => (2, Some(0x09)),
                Some(b'u') => {
                    let hex = json
                        .get(i + 2..i + 6)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                    let c = hex
                        .and_then(|h| u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                    (6, c.filter(|&c| control(c)))
                }
                _ => (2, None),
            },
            0x7f => (1, Some(0x7f)),
            0xc2 => match json.get(i + 1) {
                Some(&b @ 0x80..=0x9f) => (2, Some(u32::from(b))),
                _ => (1, None),
            },
            _ => (1, None),
        };
        if let Some(c) = code {
            if out.is_empty() {
                out.reserve(json.len() + 64);
            }
            out.extend_from_slice(&json[copied..i]);
            match c {
                0x0a => out.extend_from_slice(b"\\\\n"),
                0x09 => out.extend_from_slice(b"\\\\t"),
                c => out.extend_from_slice(format!("\\\\x{c:02x}").as_bytes()),
            }
            copied = i + len;
        }
        i += len;
    }
    if out.is_empty() {
        return Cow::Borrowed(json);
    }
    out.extend_from_slice(&json[copied..]);
    Cow::Owned(out)
}

/// Text another process rendered (the agent's text trees) checked again before it reaches
/// the terminal: line breaks stay, and with `color` so do the colour sequences [`Style`]
/// writes (`ESC [ digits ; m`); every other control character is escaped as [`one_line`]
/// does. An agent of this version sends nothing else; an older or foreign one cannot do more.
pub(crate) fn rendered(s: &str, color: bool) -> String {
    let mut o = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let sgr = (color && c == '\x1b')
            .then(|| rest.strip_prefix("\x1b["))
            .flatten()
            .and_then(|r| {
                let n = r
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || *b == b';')
                    .count();
                (r.as_bytes().get(n) == Some(&b'm')).then_some(2 + n + 1)
            });
        let take = match sgr {
            Some(n) => {
                o.push_str(&rest[..n]);
                n
            }
            None if c == '\n' || !c.is_control() => {
                o.push(c);
                c.len_utf8()
            }
            None => {
                o.push_str(&one_line(c.encode_utf8(&mut [0; 4])));
                c.len_utf8()
            }
        };
        rest = &rest[take..];
    }
    o
}

/// 42s, 3m12s, 2h05m, 3d04h.
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// 512B, 1.2K, 3.4M, 1.0G.
pub(crate) fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// Lays out rows as left-aligned columns separated by two spaces (last column unpadded).
/// Every cell is escaped with [`one_line`]: tables show process-controlled text.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>], no_headers: bool) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c)).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    if !no_headers {
        line(headers.to_vec());
    }
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_like_ps() {
        assert_eq!(duration(42.9), "42s");
        assert_eq!(duration(192.0), "3m12s");
        assert_eq!(duration(7500.0), "2h05m");
        assert_eq!(duration(273600.0), "3d04h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(3 << 20), "3.0M");
        assert_eq!(one_line("sh -c\nsleep 1\x1b"), "sh -c\\nsleep 1\\x1b");
        assert_eq!(
            one_line("\x1b]0;PWNED\x07\x1b[2J"),
            "\\x1b]0;PWNED\\x07\\x1b[2J"
        );
        assert_eq!(one_line("a\u{9b}2Jb\x7f"), "a\\x9b2Jb\\x7f");
    }

    #[test]
    fn escaped_views_have_every_string_and_key_escaped() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct V {
            a: String,
            b: Vec<Option<String>>,
            m: std::collections::BTreeMap<String, u32>,
            n: f64,
        }
        let hostile = V {
            a: "\x1b[2J".into(),
            b: vec![None, Some("ok".into()), Some("a\nb\u{9b}".into())],
            m: [("k\x07".to_string(), 1)].into(),
            n: 0.5,
        };
        let want = V {
            a: "\\x1b[2J".into(),
            b: vec![None, Some("ok".into()), Some("a\\nb\\x9b".into())],
            m: [("k\\x07".to_string(), 1)].into(),
            n: 0.5,
        };
        let json = serde_json::to_vec(&hostile).unwrap();
        assert_eq!(*Escaped::<V>::from_json(&json).unwrap(), want);
        assert_eq!(*Escaped::new(hostile).unwrap(), want);
        let clean = V {
            a: "plain \"quoted\" \\ é".into(),
            b: vec![],
            m: Default::default(),
            n: 1.0,
        };
        let json = serde_json::to_vec(&clean).unwrap();
        assert_eq!(*Escaped::<V>::from_json(&json).unwrap(), clean);
        assert!(Escaped::<V>::from_json(b"{\"a\": 1}").is_err());
    }

    #[test]
    fn rewritten_json_strings_read_as_one_line_writes_them() {
        // Every character up to U+02FF, and the escapes JSON has for them, alone and
        // between others.
        for c in (0..0x300u32).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("a{c}\"\\{c}{c}b")] {
                let json = serde_json::to_vec(&s).unwrap();
                let got = Escaped::<String>::from_json(&json).unwrap();
                assert_eq!(*got, one_line(&s), "{c:?}");
                let borrowed = matches!(escaped_json(&json), Cow::Borrowed(_));
                assert_eq!(borrowed, !c.is_control(), "{c:?}");
            }
        }
        // The other ways JSON writes them: any case of \u, and raw DEL and C1 (which
        // serde_json leaves raw); escapes that are not control characters stay.
        for (json, want) in [
            (r#""\u001B\u007f\u009B\u0085""#, "\\x1b\\x7f\\x9b\\x85"),
            ("\"\u{7f}\u{9b}\"", "\\x7f\\x9b"),
            (r#""\\n \"q\" \/ \u00e9 \ud83d\ude00""#, "\\n \"q\" / é 😀"),
        ] {
            assert_eq!(
                *Escaped::<String>::from_json(json.as_bytes()).unwrap(),
                want
            );
        }
        // Broken escapes stay broken: the decoder reports them.
        for bad in [r#""\u+01b""#, r#""\u1""#, "\"\\"] {
            assert!(
                Escaped::<String>::from_json(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    /// `Escaped::new` looks for control characters in the view itself, not its JSON: both
    /// find the same ones, in strings, characters, keys and variant names alike, and a view
    /// with one comes out as its JSON route makes it.
    #[test]
    fn a_view_is_clean_exactly_when_its_json_has_nothing_to_escape() {
        #[derive(Serialize)]
        enum E {
            Unit,
            New(String),
            Tuple(u8, char),
            Struct { s: Option<String> },
        }
        #[derive(Serialize)]
        struct V {
            s: String,
            c: char,
            m: std::collections::BTreeMap<String, Vec<E>>,
            n: (u32, f64, Option<bool>),
        }
        let v = |x: &str| {
            let c = x.chars().next().unwrap_or('a');
            let e = vec![
                E::Unit,
                E::New(x.into()),
                E::Tuple(1, c),
                E::Struct { s: Some(x.into()) },
            ];
            [
                V {
                    s: x.into(),
                    c: 'a',
                    m: Default::default(),
                    n: (1, 0.5, None),
                },
                V {
                    s: "ok".into(),
                    c,
                    m: Default::default(),
                    n: (1, 0.5, Some(true)),
                },
                V {
                    s: "ok".into(),
                    c: 'a',
                    m: [(x.to_string(), vec![])].into(),
                    n: (1, 0.5, None),
                },
                V {
                    s: "ok".into(),
                    c: 'a',
                    m: [("k".to_string(), e)].into(),
                    n: (1, 0.5, None),
                },
            ]
        };
        for c in (0..0x300u32).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("a{c}\"\\{c}{c}b")] {
                for view in v(&s) {
                    let json = serde_json::to_vec(&view).unwrap();
                    let borrowed = matches!(escaped_json(&json), Cow::Borrowed(_));
                    assert_eq!(
                        super::super::control_check::is_clean(&view),
                        borrowed,
                        "{c:?}"
                    );
                }
            }
        }
        let hostile = "a\u{1b}[2J\u{9b}b".to_string();
        assert_eq!(*Escaped::new(hostile.clone()).unwrap(), one_line(&hostile));
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["PID", "COMMAND"],
            &[
                vec!["1".into(), "init".into()],
                vec!["12345".into(), "sleep 1".into()],
            ],
            false,
        );
        assert_eq!(t, "PID    COMMAND\n1      init\n12345  sleep 1\n");
        assert_eq!(table(&["A"], &[vec!["x".into()]], true), "x\n");
        assert_eq!(
            table(&["A"], &[vec!["\x1b[2Jx".into()]], true),
            "\\x1b[2Jx\n",
            "every cell is escaped"
        );
    }
}
