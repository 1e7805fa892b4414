//! Ring buffer records → typed events. The only place that interprets the kernel's bytes
//! (the task iterators' records of the start-up seed too: `seed.rs`): it checks the kind
//! and the length before copying a record out (records are `#[repr(C)]` integer-only
//! structs from observer-common, so any byte pattern is valid).

pub(crate) mod reader;
pub(crate) mod redact;
pub(crate) mod seed;
pub(crate) mod signals;

use std::mem::size_of;

use observer_common::{
    CgroupAttachEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, FreeEvent, NsEvent,
    OomEvent, SignalEvent, TaskInfo, MAX_PID_LEVELS,
};

/// A decoded record, copied out of the ring buffer. Variants differ in size (an exec record
/// carries 512 bytes of path and argv); boxing them would allocate per event.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Fork(ForkEvent),
    Exec(ExecEvent),
    Exit(ExitEvent),
    Free(FreeEvent),
    Setns(NsEvent),
    Unshare(NsEvent),
    CgroupAttach(CgroupAttachEvent),
    Signal(SignalEvent),
    Oom(OomEvent),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("unknown event type {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record has {got} bytes, expected {want}")]
    Size {
        kind: EventKind,
        got: usize,
        want: usize,
    },
}

/// Copies a `T` out of `bytes` (caller checked the length).
fn read<T: Copy>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked by the caller; T is a repr(C) integer-only wire type for which
    // every bit pattern is valid; read_unaligned needs no alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < size_of::<EventHeader>() {
            return Err(DecodeError::Short(bytes.len()));
        }
        let header: EventHeader = read(bytes);
        let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
        let want = kind.record_size();
        // The ring buffer may round a record up; it never shortens one.
        if bytes.len() < want {
            return Err(DecodeError::Size {
                kind,
                got: bytes.len(),
                want,
            });
        }
        Ok(match kind {
            EventKind::Fork => Event::Fork(read(bytes)),
            EventKind::Exec => Event::Exec(read(bytes)),
            EventKind::Exit => Event::Exit(read(bytes)),
            EventKind::Free => Event::Free(read(bytes)),
            EventKind::Setns => Event::Setns(read(bytes)),
            EventKind::Unshare => Event::Unshare(read(bytes)),
            EventKind::CgroupAttach => Event::CgroupAttach(read(bytes)),
            EventKind::Signal => Event::Signal(read(bytes)),
            EventKind::Oom => Event::Oom(read(bytes)),
        })
    }

    pub(crate) fn kind(&self) -> EventKind {
        match self {
            Event::Fork(_) => EventKind::Fork,
            Event::Exec(_) => EventKind::Exec,
            Event::Exit(_) => EventKind::Exit,
            Event::Free(_) => EventKind::Free,
            Event::Setns(_) => EventKind::Setns,
            Event::Unshare(_) => EventKind::Unshare,
            Event::CgroupAttach(_) => EventKind::CgroupAttach,
            Event::Signal(_) => EventKind::Signal,
            Event::Oom(_) => EventKind::Oom,
        }
    }

    pub(crate) fn header(&self) -> &EventHeader {
        match self {
            Event::Fork(e) => &e.header,
            Event::Exec(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::Free(e) => &e.header,
            Event::Setns(e) | Event::Unshare(e) => &e.header,
            Event::CgroupAttach(e) => &e.header,
            Event::Signal(e) => &e.header,
            Event::Oom(e) => &e.header,
        }
    }

    /// The task the event is about (the child for fork, the target for a signal); OOM
    /// records carry only the victim's pid.
    pub(crate) fn task(&self) -> Option<&TaskInfo> {
        Some(match self {
            Event::Fork(e) => &e.task,
            Event::Exec(e) => &e.task,
            Event::Exit(e) => &e.task,
            Event::Free(e) => &e.task,
            Event::Setns(e) | Event::Unshare(e) => &e.task,
            Event::CgroupAttach(e) => &e.task,
            Event::Signal(e) => &e.task,
            Event::Oom(_) => return None,
        })
    }
}

/// Parses an event type name as the CLI and JSON spell it.
pub(crate) fn kind_from_name(name: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| k.name() == name)
}

/// Userspace views of TaskInfo fields.
pub(crate) trait TaskInfoExt {
    /// PIDs from the host level to the task's own namespace (as many as were captured).
    fn ns_pids(&self) -> &[u32];
    fn comm_str(&self) -> std::borrow::Cow<'_, str>;
}

impl TaskInfoExt for TaskInfo {
    fn ns_pids(&self) -> &[u32] {
        let n = (self.pid_level as usize + 1).min(MAX_PID_LEVELS);
        if self.ns_pids[0] == 0 {
            // thread_pid already detached (free events): nothing was captured.
            return &[];
        }
        &self.ns_pids[..n]
    }

    fn comm_str(&self) -> std::borrow::Cow<'_, str> {
        c_str(&self.comm)
    }
}

/// The text before the first NUL; bytes that are not UTF-8 become U+FFFD, as /proc-based
/// views show them (a name is never cut short at its first odd byte).
pub(crate) fn c_str(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(c_bytes(bytes))
}

/// The bytes before the first NUL (all of them when there is none).
pub(crate) fn c_bytes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Splits a NUL-separated argv buffer (`len` bytes in use) into arguments.
pub fn split_args(buf: &[u8], len: usize) -> impl Iterator<Item = String> + '_ {
    let used = &buf[..len.min(buf.len())];
    let used = used.strip_suffix(&[0]).unwrap_or(used);
    used.split(|&b| b == 0)
        .filter(move |_| !used.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
}

/// Decoded wait(2) status of an exit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit status (0..255) when the task exited normally.
    pub(crate) code: Option<u8>,
    /// Terminating signal when killed.
    pub(crate) signal: Option<u8>,
    pub(crate) core_dumped: bool,
}

pub fn exit_status(raw: u32) -> ExitStatus {
    let sig = (raw & 0x7f) as u8;
    if sig == 0 {
        ExitStatus {
            code: Some(((raw >> 8) & 0xff) as u8),
            signal: None,
            core_dumped: false,
        }
    } else {
        ExitStatus {
            code: None,
            signal: Some(sig),
            core_dumped: raw & 0x80 != 0,
        }
    }
}

#[cfg(test)]
mod tests;
