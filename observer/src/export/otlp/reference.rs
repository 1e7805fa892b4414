//! The reference the typed encoder (`typed.rs`) is held to: the mapping as it was first
//! written, a JSON line parsed into a serde_json tree and made into a `LogRecord` of
//! OpenTelemetry's generated types, then encoded by prost. Clear and slow (~20 µs a record
//! with its allocations), kept for tests only: `equivalence_tests/typed.rs` proves the
//! typed encoder's bytes are this path's bytes, item for item and on hostile input.

use std::borrow::Cow;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{
        any_value::Value as Any, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use serde_json::{Map, Value};

/// What kind of line the members come from: a few keys mean different things.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signal,
    Oom,
    Exit,
    OtherEvent,
    History,
}

/// The record of one JSON `line` (without its newline); `unix_offset_ns` turns the boot
/// clock of its times into Unix time; `now_unix_ns` is when it was observed.
pub(super) fn log_record(line: &[u8], unix_offset_ns: u64, now_unix_ns: u64) -> Option<LogRecord> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    let kind = kind_of(&obj);
    let time = match kind {
        Kind::History => obj.get("end_time_ns"),
        _ => obj.get("time_ns"),
    }
    .and_then(Value::as_u64)
    .map_or(0, |t| t.saturating_add(unix_offset_ns));
    let warn = match kind {
        Kind::Oom => true,
        Kind::History => obj.get("failed") == Some(&Value::Bool(true)),
        _ => false,
    };
    let (severity, severity_text) = if warn {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    let event_name = match obj.get("type").and_then(Value::as_str) {
        Some(t) => format!("observer.{t}"),
        None => "observer.process.ended".to_string(),
    };
    let mut attributes = Vec::with_capacity(obj.len() + 8);
    for (k, v) in &obj {
        put(&mut attributes, kind, k, v);
    }
    // A history entry names its parent first in its chain (none for a container's PID 1,
    // whose parent is outside it).
    if let Some(ppid) = obj.get("parents").and_then(|p| p.get(0)?.get("pid")) {
        attributes.push(kv("process.parent_pid", any(ppid)));
    }
    Some(LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: now_unix_ns,
        severity_number: severity as i32,
        severity_text: severity_text.to_string(),
        body: Some(string(String::from_utf8_lossy(line).into_owned())),
        attributes,
        event_name,
        ..LogRecord::default()
    })
}

fn kind_of(obj: &Map<String, Value>) -> Kind {
    match obj.get("type").and_then(Value::as_str) {
        Some("signal") => Kind::Signal,
        Some("oom") => Kind::Oom,
        Some("exit") => Kind::Exit,
        Some(_) => Kind::OtherEvent,
        None => Kind::History,
    }
}

/// Member `path` (dotted below the top) with value `v`, as attributes.
fn put(out: &mut Vec<KeyValue>, kind: Kind, path: &str, v: &Value) {
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                put(out, kind, &format!("{path}.{k}"), v);
            }
        }
        _ if path == "argv" => {
            let args: Vec<&str> = v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push(kv("process.command_line", string(args.join(" "))));
            out.push(kv("process.command_args", any(v)));
        }
        _ => {
            out.push(kv(&name(kind, path), any(v)));
        }
    }
}

/// The attribute name of member `path`.
fn name(kind: Kind, path: &str) -> Cow<'static, str> {
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
        _ => return Cow::Owned(observer_name(kind, path)),
    };
    Cow::Borrowed(semconv)
}

/// observer's own names: a signal's facts under `observer.signal.` (its sender under
/// `observer.signal.sender.`), an OOM kill's under `observer.oom.`, an exec session's under
/// `observer.exec.`, the rest as they are.
fn observer_name(kind: Kind, path: &str) -> String {
    let signal_fact = |k: &str| match k {
        "signal" => "name".to_string(),
        "signo" => "number".to_string(),
        k => k.to_string(),
    };
    let rest = match (kind, path) {
        (Kind::Signal, "signal" | "signo" | "code" | "group" | "result") => {
            format!("signal.{}", signal_fact(path))
        }
        (Kind::Signal, p) if p.starts_with("sender.") => format!("signal.{p}"),
        (Kind::Exit, "signal") => "signal.number".to_string(),
        (Kind::History, "signal") => "signal.name".to_string(),
        (Kind::History, p) if p.starts_with("killed_by.") => {
            format!("signal.{}", signal_fact(&p["killed_by.".len()..]))
        }
        (Kind::Oom, p) if p != "time_ns" && !is_task_field(p) => format!("oom.{p}"),
        // An exec session's `entered` (`via`, `by`, `time_ns`, `root_pid`, `root`).
        (_, p) if p.starts_with("entered.") => format!("exec.{}", &p["entered.".len()..]),
        (_, p) => p.to_string(),
    };
    format!("observer.{rest}")
}

/// The members every event has (the OOM event's task fields are the victim's).
fn is_task_field(p: &str) -> bool {
    matches!(
        p,
        "cpu" | "tid" | "ns_pids" | "cgroup_id" | "start_time_ns" | "uid" | "gid" | "read_error"
    ) || p.starts_with("ns.")
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn string(s: String) -> AnyValue {
    AnyValue {
        value: Some(Any::StringValue(s)),
    }
}

/// A JSON value as OpenTelemetry's: integers stay integers, objects in arrays become
/// key-value lists.
fn any(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(Any::BoolValue(*b)),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Any::IntValue(i),
            (None, Some(u)) => Any::IntValue(i64::try_from(u).unwrap_or(i64::MAX)),
            _ => Any::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(Any::StringValue(s.clone())),
        Value::Array(a) => Some(Any::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        })),
        Value::Object(m) => Some(Any::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| kv(k, any(v))).collect(),
        })),
    };
    AnyValue { value }
}

/// The request the sink sent for `log_records`, as it was built.
pub(super) fn request(
    resource: &Resource,
    log_records: Vec<LogRecord>,
) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "observer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                log_records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}
