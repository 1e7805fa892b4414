//! A JSON line read the way serde_json reads it into a `Value`, without building one: a
//! flat tape of nodes pointing into the line, kept from record to record (no allocation
//! once it has grown). Strings without escapes are the line's own bytes; escaped ones are
//! decoded into one scratch string. Numbers are kept as serde_json keeps them (u64,
//! negative i64, or f64); anything but a plain non-negative integer is read by serde_json
//! itself, so a float is the very f64 the tree had. What serde_json refuses (invalid
//! JSON, a lone surrogate, trailing bytes, nesting deeper than its 128) is refused.
//!
//! Why a parser of our own and not serde_json, for every record the OTLP sink sends:
//! cost. A `Value` is a `String` per key and per string and a `BTreeMap` per object,
//! allocated and freed again for each line — allocation and copying were about 40% of
//! the 16 µs a record took (issue #26, docs/export.md) — where this tape allocates
//! nothing once grown (`otlp_record_cost` in `equivalence_tests.rs` prints its cost).
//! serde_json's borrowing `Deserialize` cannot help: the line's members are open-ended (a
//! key added to the line must reach the collector without a change here), so it would
//! still be a map, and a borrowed `&str` fails on any escaped string.
//!
//! The line is the agent's own, but its values are not: argv, comm, paths and cgroup
//! names come from the processes watched, with any bytes in them. So nothing here
//! trusts the input: every read is bounds-checked (`get`, returning None), there is no
//! `unwrap` or index past what was checked, nesting is bounded as serde_json bounds it,
//! and `equivalence_tests.rs` holds the result to serde_json's own on damaged lines too
//! (cut short, bytes overwritten, inserted, removed): the same lines are taken, with the
//! same values.

/// A number as serde_json's `Number` holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Num {
    Pos(u64),
    Neg(i64),
    Float(f64),
}

/// A string: in the line (no escapes) or decoded into the scratch string.
#[derive(Clone, Copy, Debug)]
pub(super) struct Text {
    decoded: bool,
    start: u32,
    end: u32,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Num(Num),
    Str(Text),
    /// Its elements follow; `end` is the index after its last node.
    Arr {
        end: u32,
    },
    /// Its members follow, each a `Str` key then the value's nodes.
    Obj {
        end: u32,
    },
}

/// Lists and objects inside each other, at most: serde_json's default limit (128, of which
/// it allows 127).
const MAX_DEPTH: usize = 127;

/// The reusable parts of a parse.
#[derive(Default)]
pub(super) struct Tape {
    nodes: Vec<Node>,
    scratch: String,
}

/// A parsed line.
#[derive(Clone, Copy)]
pub(super) struct Doc<'a> {
    line: &'a str,
    nodes: &'a [Node],
    scratch: &'a str,
}

impl Tape {
    /// `line` as a tape of nodes (the first is the root), or None if it is not JSON.
    pub(super) fn parse<'a>(&'a mut self, line: &'a str) -> Option<Doc<'a>> {
        self.nodes.clear();
        self.scratch.clear();
        let mut p = Parser {
            s: line,
            b: line.as_bytes(),
            i: 0,
            nodes: &mut self.nodes,
            scratch: &mut self.scratch,
        };
        p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return None;
        }
        Some(Doc {
            line,
            nodes: &self.nodes,
            scratch: &self.scratch,
        })
    }
}

impl<'a> Doc<'a> {
    pub(super) fn node(&self, i: usize) -> Node {
        self.nodes[i]
    }

    pub(super) fn text(&self, t: Text) -> &'a str {
        let (s, e) = (t.start as usize, t.end as usize);
        if t.decoded {
            &self.scratch[s..e]
        } else {
            &self.line[s..e]
        }
    }

    /// The index after node `i` and everything inside it.
    pub(super) fn skip(&self, i: usize) -> usize {
        match self.nodes[i] {
            Node::Arr { end } | Node::Obj { end } => end as usize,
            _ => i + 1,
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    nodes: &'a mut Vec<Node>,
    scratch: &'a mut String,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        self.ws();
        let node = match *self.b.get(self.i)? {
            b'{' => return self.container(depth, b'}'),
            b'[' => return self.container(depth, b']'),
            b'"' => Node::Str(self.string()?),
            b'n' => self.word(b"null", Node::Null)?,
            b't' => self.word(b"true", Node::Bool(true))?,
            b'f' => self.word(b"false", Node::Bool(false))?,
            _ => Node::Num(self.number()?),
        };
        self.nodes.push(node);
        Some(())
    }

    fn word(&mut self, w: &[u8], node: Node) -> Option<Node> {
        if !self.b[self.i..].starts_with(w) {
            return None;
        }
        self.i += w.len();
        Some(node)
    }

    /// An object (`close` `}`) or an array (`]`), its opening byte at `i`.
    fn container(&mut self, depth: usize, close: u8) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let object = close == b'}';
        let at = self.nodes.len();
        self.nodes.push(Node::Null);
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
        } else {
            loop {
                if object {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let k = self.string()?;
                    self.nodes.push(Node::Str(k));
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                }
                self.value(depth + 1)?;
                self.ws();
                match *self.b.get(self.i)? {
                    b',' => self.i += 1,
                    c if c == close => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = u32::try_from(self.nodes.len()).ok()?;
        self.nodes[at] = if object {
            Node::Obj { end }
        } else {
            Node::Arr { end }
        };
        Some(())
    }

    /// A string, its opening quote at `i`.
    fn string(&mut self) -> Option<Text> {
        self.i += 1;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(Text {
                        decoded: false,
                        start: u32::try_from(start).ok()?,
                        end: u32::try_from(self.i - 1).ok()?,
                    });
                }
                b'\\' => return self.escaped(start),
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// The rest of a string with escapes, from `start`, decoded into the scratch string.
    fn escaped(&mut self, start: usize) -> Option<Text> {
        let from = self.scratch.len();
        let mut seg = start;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.scratch.push_str(&self.s[seg..self.i]);
                    self.i += 1;
                    return Some(Text {
                        decoded: true,
                        start: u32::try_from(from).ok()?,
                        end: u32::try_from(self.scratch.len()).ok()?,
                    });
                }
                b'\\' => {
                    self.scratch.push_str(&self.s[seg..self.i]);
                    self.i += 1;
                    let c = self.escape()?;
                    self.scratch.push(c);
                    seg = self.i;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// The character of the escape after a backslash.
    fn escape(&mut self) -> Option<char> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                if (0xdc00..0xe000).contains(&hi) {
                    return None;
                }
                if !(0xd800..0xdc00).contains(&hi) {
                    return char::from_u32(hi);
                }
                // A surrogate pair: the low half must follow at once.
                if self.b.get(self.i..self.i + 2)? != b"\\u" {
                    return None;
                }
                self.i += 2;
                let lo = self.hex4()?;
                if !(0xdc00..0xe000).contains(&lo) {
                    return None;
                }
                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.b.get(self.i..self.i + 4)?).ok()?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn number(&mut self) -> Option<Num> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
        }
        let tok = &self.b[start..self.i];
        if let Some(n) = plain_u64(tok) {
            return Some(Num::Pos(n));
        }
        // The rare rest (negative, fraction, exponent, beyond u64), as serde_json has it.
        let n: serde_json::Number = serde_json::from_slice(tok).ok()?;
        Some(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Num::Pos(u),
            (None, Some(i)) => Num::Neg(i),
            _ => Num::Float(n.as_f64()?),
        })
    }
}

/// Digits without a leading zero that fit a u64.
fn plain_u64(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || (tok[0] == b'0' && tok.len() > 1) {
        return None;
    }
    tok.iter().try_fold(0u64, |n, &c| {
        let d = c.wrapping_sub(b'0');
        (d < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_numbers_and_nesting_read_as_serde_json_reads_them() {
        let mut t = Tape::default();
        let line = r#" {"a":[1,-2,3.5,1e3,18446744073709551615,18446744073709551616],"b\"q":"x\u00e9\ud83d\ude00\n","c":{"d":null,"e":true},"f":[]} "#;
        let d = t.parse(line).unwrap();
        let Node::Obj { end } = d.node(0) else {
            panic!("an object")
        };
        assert_eq!(end as usize, 19);
        let nums: Vec<Num> = (3..9)
            .map(|i| match d.node(i) {
                Node::Num(n) => n,
                n => panic!("{n:?}"),
            })
            .collect();
        assert_eq!(
            nums,
            [
                Num::Pos(1),
                Num::Neg(-2),
                Num::Float(3.5),
                Num::Float(1000.0),
                Num::Pos(u64::MAX),
                Num::Float(18_446_744_073_709_551_616.0)
            ]
        );
        let (Node::Str(k), Node::Str(v)) = (d.node(9), d.node(10)) else {
            panic!("a key and a string")
        };
        assert_eq!((d.text(k), d.text(v)), ("b\"q", "xé😀\n"));
        assert_eq!(d.skip(2), 9, "the array and its elements");
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1}x",
            "01",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\u{1}\"",
            "nul",
            "-",
            "1.",
            "{1:2}",
            "\"\\x\"",
        ] {
            assert!(t.parse(bad).is_none(), "{bad:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad:?}"
            );
        }
        for (levels, ok) in [(127, true), (128, false)] {
            let deep = "[".repeat(levels) + &"]".repeat(levels);
            assert_eq!(t.parse(&deep).is_some(), ok, "{levels} levels");
            let theirs = serde_json::from_str::<serde_json::Value>(&deep);
            assert_eq!(theirs.is_ok(), ok, "serde_json: {levels} levels");
        }
    }
}
