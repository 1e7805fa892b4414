//! What an OpenTelemetry log record of an exported item is, whichever way it is written:
//! the protobuf field numbers, the record's head (time, severity, body) and event name,
//! and the attribute names of the line's members (OpenTelemetry's semantic conventions
//! where one exists, `observer.<key>` otherwise). The typed encoder the sink uses
//! (`typed.rs`) and the tree builder the tests hold it to (`reference.rs`) share them.

use opentelemetry_proto::tonic::logs::v1::SeverityNumber;

use super::wire::{self, LEN, VARINT};

/// ScopeLogs' field of records; LogRecord's fields.
pub(super) const SCOPE_LOG_RECORDS: u8 = 2;
pub(super) const TIME: u8 = 1;
pub(super) const SEVERITY: u8 = 2;
pub(super) const SEVERITY_TEXT: u8 = 3;
pub(super) const BODY: u8 = 5;
pub(super) const ATTRIBUTES: u8 = 6;
pub(super) const OBSERVED_TIME: u8 = 11;
pub(super) const EVENT_NAME: u8 = 12;
/// AnyValue's fields (a oneof); KeyValue's; ArrayValue's and KeyValueList's `values`.
pub(super) const STRING: u8 = 1;
pub(super) const BOOL: u8 = 2;
pub(super) const INT: u8 = 3;
pub(super) const DOUBLE: u8 = 4;
pub(super) const ARRAY: u8 = 5;
pub(super) const KVLIST: u8 = 6;
pub(super) const KEY: u8 = 1;
pub(super) const VALUE: u8 = 2;
pub(super) const VALUES: u8 = 1;

/// What kind of line the members come from: a few keys mean different things.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Signal,
    Oom,
    Exit,
    OtherEvent,
    History,
}

/// A record's fields before its attributes: time (none when 0, as prost leaves it),
/// severity, and the body — an AnyValue of one string, the line, whose length is known.
pub(super) fn head(out: &mut Vec<u8>, time: u64, warn: bool, line: &[u8]) {
    if time != 0 {
        wire::fixed64(out, TIME, time);
    }
    let (severity, severity_text) = if warn {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    wire::key(out, SEVERITY, VARINT);
    wire::varint(out, severity as u64);
    wire::bytes(out, SEVERITY_TEXT, severity_text.as_bytes());
    wire::key(out, BODY, LEN);
    wire::varint(
        out,
        (1 + wire::varint_len(line.len() as u64) + line.len()) as u64,
    );
    wire::bytes(out, STRING, line);
}

/// `observer.<type>`, or `observer.process.ended` for a history entry (no `type`).
pub(super) fn event_name(out: &mut Vec<u8>, event_type: Option<&str>) {
    let (prefix, rest) = match event_type {
        Some(t) => ("observer.", t),
        None => ("observer.process.ended", ""),
    };
    wire::key(out, EVENT_NAME, LEN);
    wire::varint(out, (prefix.len() + rest.len()) as u64);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(rest.as_bytes());
}

pub(super) fn kind_of(event_type: Option<&str>) -> Kind {
    match event_type {
        Some("signal") => Kind::Signal,
        Some("oom") => Kind::Oom,
        Some("exit") => Kind::Exit,
        Some(_) => Kind::OtherEvent,
        None => Kind::History,
    }
}

/// The attribute name of member `path`, in parts (written one after the other, no name is
/// made).
pub(super) fn attribute_name(kind: Kind, path: &str) -> [&str; 3] {
    let semconv = match path {
        "pid" => "process.pid",
        "ppid" => "process.parent_pid",
        "comm" => "process.executable.name",
        "filename" | "exe" => "process.executable.path",
        "exe_sha256" => "process.executable.hash.sha256",
        "exit_code" => "process.exit.code",
        "container_id" => "container.id",
        "container_name" => "container.name",
        "runtime" => "container.runtime",
        "pod" => "k8s.pod.name",
        "pod_namespace" => "k8s.namespace.name",
        "pod_uid" => "k8s.pod.uid",
        "schema" => "observer.schema",
        "type" => "observer.type",
        _ => {
            let (group, rest) = observer_name(kind, path);
            return ["observer.", group, rest];
        }
    };
    [semconv, "", ""]
}

/// observer's own names (after `observer.`, in two parts): a signal's facts under `signal.`
/// (its sender under `signal.sender.`), an OOM kill's under `oom.`, an exec session's under
/// `exec.`, the rest as they are.
pub(super) fn observer_name(kind: Kind, path: &str) -> (&'static str, &str) {
    fn signal_fact(k: &str) -> &str {
        match k {
            "signal" => "name",
            "signo" => "number",
            k => k,
        }
    }
    match (kind, path) {
        (Kind::Signal, "signal" | "signo" | "code" | "group" | "result") => {
            ("signal.", signal_fact(path))
        }
        (Kind::Signal, p) if p.starts_with("sender.") => ("signal.", p),
        (Kind::Exit, "signal") => ("signal.", "number"),
        (Kind::History, "signal") => ("signal.", "name"),
        (Kind::History, p) if p.starts_with("killed_by.") => {
            ("signal.", signal_fact(&p["killed_by.".len()..]))
        }
        (Kind::Oom, p) if p != "time_ns" && !is_task_field(p) => ("oom.", p),
        // An exec session's `entered` (`via`, `by`, `time_ns`, `root_pid`, `root`).
        (_, p) if p.starts_with("entered.") => ("exec.", &p["entered.".len()..]),
        (_, p) => ("", p),
    }
}

/// The members every event has (the OOM event's task fields are the victim's).
pub(super) fn is_task_field(p: &str) -> bool {
    matches!(
        p,
        "cpu" | "tid" | "ns_pids" | "cgroup_id" | "start_time_ns" | "uid" | "gid" | "read_error"
    ) || p.starts_with("ns.")
}

/// An AnyValue's int_value, after the AnyValue's key.
pub(super) fn int(out: &mut Vec<u8>, i: i64) {
    let v = i as u64;
    wire::varint(out, 1 + wire::varint_len(v) as u64);
    wire::key(out, INT, VARINT);
    wire::varint(out, v);
}

/// A KeyValue's key: a plain proto3 string, left out when empty (as prost leaves it).
pub(super) fn key_field(out: &mut Vec<u8>, key: &str) {
    if !key.is_empty() {
        wire::bytes(out, KEY, key.as_bytes());
    }
}
