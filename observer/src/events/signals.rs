//! Signal numbers, names and the kernel's verdicts, as `signal:signal_generate` reports
//! them; the `--signals` set the loader hands to the kernel side.

use observer_common::signal_bit;

/// Linux x86-64/arm64 signal names, index = number (1..=31; 32.. are real-time).
const NAMES: [&str; 32] = [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// Signals whose default action is to end (terminate or dump core) or stop a process;
/// real-time signals from SIGRTMIN+2 on (glibc keeps 32 and 33 for itself: thread
/// cancellation and setuid broadcasts).
pub(crate) const DEFAULT_MASK: u64 = {
    let ignore_or_continue = [17u32, 18, 23, 28, 32, 33]; // CHLD CONT URG WINCH, glibc's
    let mut m = 0u64;
    let mut s = 1;
    while s <= 64 {
        let mut skip = false;
        let mut i = 0;
        while i < ignore_or_continue.len() {
            if ignore_or_continue[i] == s {
                skip = true;
            }
            i += 1;
        }
        if !skip {
            m |= signal_bit(s);
        }
        s += 1;
    }
    m
};

/// The name of signal `sig` (`SIGTERM`, `SIGRTMIN+3`), or its number.
pub(crate) fn name(sig: u32) -> String {
    match sig {
        1..=31 => NAMES[sig as usize].to_string(),
        32..=64 => format!("SIGRTMIN+{}", sig - 32),
        _ => sig.to_string(),
    }
}

/// A signal by name (`TERM`, `SIGTERM`, `sigterm`, `RTMIN+3`) or number.
pub(crate) fn parse(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rt) = bare.strip_prefix("RTMIN+") {
        return rt.parse::<u32>().ok().filter(|n| *n <= 32).map(|n| 32 + n);
    }
    if bare == "RTMIN" {
        return Some(32);
    }
    (1..32).find(|&i| NAMES[i][3..] == *bare).map(|i| i as u32)
}

/// A `--signals` list that does not say a set of signals.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignalSetError {
    #[error(
        "unknown signal `{0}` (a name such as TERM or SIGKILL, a number 1-64, `default` or `all`)"
    )]
    Unknown(String),
    #[error("`{0}` selects no signal")]
    Empty(String),
}

/// `--signals`: a comma-separated list of signals (names or numbers), `default` (the set
/// above), `all`, and `-NAME` to leave one out, applied left to right.
pub(crate) fn parse_mask(spec: &str) -> Result<u64, SignalSetError> {
    let mut mask = 0u64;
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (remove, item) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let bits = match item.to_ascii_lowercase().as_str() {
            "default" => DEFAULT_MASK,
            "all" => u64::MAX,
            _ => signal_bit(parse(item).ok_or_else(|| SignalSetError::Unknown(item.to_string()))?),
        };
        if remove {
            mask &= !bits;
        } else {
            mask |= bits;
        }
    }
    if mask == 0 {
        return Err(SignalSetError::Empty(spec.to_string()));
    }
    Ok(mask)
}

/// The kernel's verdict on a generated signal (TRACE_SIGNAL_* in include/trace/events/signal.h).
pub(crate) fn result_name(result: u32) -> &'static str {
    match result {
        0 => "delivered",
        1 => "ignored",
        2 => "already_pending",
        3 => "overflow",
        4 => "lost_info",
        _ => "unknown",
    }
}

/// Who raised a signal, from its si_code: a process (kill, tkill, sigqueue...) or the kernel.
pub(crate) fn from_kernel(code: i32) -> bool {
    // SI_KERNEL (0x80) and the positive fault codes (SEGV_MAPERR...); SI_USER is 0, the
    // other user codes negative.
    code > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sets() {
        assert_eq!(parse("TERM"), Some(15));
        assert_eq!(parse("sigkill"), Some(9));
        assert_eq!(parse("RTMIN+3"), Some(35));
        assert_eq!(parse("17"), Some(17));
        assert_eq!(parse("65"), None);
        assert_eq!(parse("NOPE"), None);
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(34), "SIGRTMIN+2");
        assert!(DEFAULT_MASK & signal_bit(15) != 0 && DEFAULT_MASK & signal_bit(19) != 0);
        assert_eq!(DEFAULT_MASK & signal_bit(17), 0, "SIGCHLD");
        assert_eq!(DEFAULT_MASK & signal_bit(33), 0, "glibc's");
        assert_eq!(
            parse_mask("TERM,KILL").unwrap(),
            signal_bit(15) | signal_bit(9)
        );
        assert_eq!(
            parse_mask("default,-ALRM").unwrap(),
            DEFAULT_MASK & !signal_bit(14)
        );
        assert!(parse_mask("TERM,BOGUS")
            .unwrap_err()
            .to_string()
            .contains("BOGUS"));
        assert!(parse_mask("TERM,-TERM").is_err());
    }
}
