//! Writing command output to stdout the way Unix filters do. Rust ignores SIGPIPE, so a
//! closed pipe (`observer tree x | head -1`) surfaces as an EPIPE error, and `print!` would
//! panic on it. Every command writes through here instead: a closed stdout ends the process
//! by SIGPIPE, as `ps`, `cat` or `seq` end, so the shell sees status 141 and prints nothing.

use std::io::{self, Write};

/// Writes all of `bytes` to stdout and flushes. A closed pipe ends the process (see
/// [`die_of_sigpipe`]); other errors are returned.
pub(crate) fn write(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    check(out.write_all(bytes).and_then(|()| out.flush()))
}

/// `write` for text.
pub(crate) fn print(s: &str) -> io::Result<()> {
    write(s.as_bytes())
}

/// Passes `r` through, ending the process by SIGPIPE when it is a closed-pipe error.
pub(crate) fn check<T>(r: io::Result<T>) -> io::Result<T> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => die_of_sigpipe(),
        r => r,
    }
}

/// Whether an error chain holds a closed-pipe error.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Ends the process as a C program whose reader went away: by SIGPIPE with its default
/// action (no core, nothing printed); the shell reports 128 + 13.
pub(crate) fn die_of_sigpipe() -> ! {
    // SAFETY: restoring a signal's default action and raising it has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Only reached if the signal is blocked: the same status the shell would show.
    std::process::exit(128 + libc::SIGPIPE)
}
