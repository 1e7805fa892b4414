//! `--redact-args REGEX`: secrets passed on command lines (tokens, passwords, connection
//! strings) are replaced before anything is stored or sent. The agent applies it to every
//! exec event as it leaves the ring buffer — before the table keeps its argv and before
//! /v1/events subscribers see it — and to every command line its /proc scans read. The
//! pattern is matched against each argument on its own, on bytes with ASCII classes
//! (`.` and `[^ ]` match any byte, so a secret that is not UTF-8 is masked too); what it
//! matches becomes `***`.

use observer_common::ARGS_LEN;
use regex::bytes::{Regex, RegexBuilder};

use super::Event;

pub(crate) const MASK: &[u8] = b"***";

#[derive(Clone, Debug)]
pub(crate) struct Redactor(Regex);

/// A `--redact-args` pattern that is not a regular expression.
#[derive(Debug, thiserror::Error)]
#[error("--redact-args: not a regular expression: {0}")]
pub(crate) struct BadPattern(regex::Error);

impl Redactor {
    pub(crate) fn new(pattern: &str) -> Result<Redactor, BadPattern> {
        RegexBuilder::new(pattern)
            .unicode(false)
            .build()
            .map(Redactor)
            .map_err(BadPattern)
    }

    /// A NUL-separated argv (the last argument may lack its NUL when it was cut), with
    /// every match masked; None when nothing matched.
    pub(crate) fn argv(&self, buf: &[u8]) -> Option<Vec<u8>> {
        if !self.0.is_match(buf) {
            return None;
        }
        let mut out = Vec::with_capacity(buf.len());
        let mut any = false;
        let mut args = buf.split(|&b| b == 0).peekable();
        while let Some(arg) = args.next() {
            let masked = self.0.replace_all(arg, MASK);
            any |= masked.as_ref() != arg;
            out.extend_from_slice(&masked);
            if args.peek().is_some() {
                out.push(0);
            }
        }
        any.then_some(out)
    }

    /// Masks an exec event's argv in place (cut to the record's capacity if masking made it
    /// longer, as the kernel cuts a long argv).
    pub(crate) fn event(&self, ev: &mut Event) {
        let Event::Exec(e) = ev else {
            return;
        };
        let len = (e.args_len as usize).min(ARGS_LEN);
        if let Some(new) = self.argv(&e.args[..len]) {
            let n = new.len().min(ARGS_LEN);
            e.args = [0; ARGS_LEN];
            e.args[..n].copy_from_slice(&new[..n]);
            e.args_len = n as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_masked_in_each_argument_and_the_rest_is_kept() {
        let r = Redactor::new(r"(?i)(password|token)=[^ ]*").unwrap();
        assert_eq!(
            r.argv(b"mysql\0--password=hunter2\0-h\0db\0").unwrap(),
            b"mysql\0--***\0-h\0db\0"
        );
        assert_eq!(
            r.argv(b"curl\0-H\0X TOKEN=abc rest\0").unwrap(),
            b"curl\0-H\0X *** rest\0"
        );
        assert_eq!(r.argv(b"sleep\x001\0"), None, "nothing to mask");
        // Not UTF-8, and a last argument cut without its NUL.
        assert_eq!(
            r.argv(b"\xff\0token=\xfe\xfd").unwrap(),
            b"\xff\0***".to_vec()
        );
        assert!(Redactor::new("(").is_err());
    }
}
