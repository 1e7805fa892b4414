//! One exported item as one JSON line, `schema` first: an event is /v1/events' object
//! (`views::event_line::EventJson`), a history entry is `observer history`'s
//! (`views::endings::EndedView`); both with the container they came from and its names
//! (`origin::Names`; an event of a host process has none).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{origin::Names, otlp::typed::Records, Item};
use crate::{
    host::clock::boot_now_ns,
    views::{
        endings::{ended_view, EndedView},
        event_line::EventJson,
    },
};

/// v2: the container's names and pod (v1 had none), and `runtime` is the one the views
/// show (a CRI container's `containerd` or `crio` once its state is read, was `cri`).
pub(crate) const EVENT_SCHEMA: &str = "observer.event/v2";
pub(crate) const HISTORY_SCHEMA: &str = "observer.history/v2";

/// How long a drain's lines wait, all together, for their executables' hashes while the
/// workers compute them. Not per line: anyone can exec files of their own, each hashed for
/// up to 2 s at the workers' rate (a 256 MiB file touched before each run), and lines that
/// waited 2 s each stalled the drain's lines — which every sink reads, the file sink too —
/// by 2 s an exec: 256 such execs, 8 minutes of nothing exported but drops. A hash not
/// ready by then is `pending` on the line.
pub(super) const HASH_WAIT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct HistoryLine<'a> {
    schema: &'static str,
    #[serde(flatten)]
    names: &'a Names,
    #[serde(flatten)]
    entry: EndedView,
}

/// Appends `item` (from the container `names`) and a newline to `out`; false (nothing
/// appended) when it would not serialize.
#[cfg(test)]
pub(super) fn write(out: &mut Vec<u8>, item: &Item, names: Option<&Names>) -> bool {
    write_with(out, item, names, None, Instant::now() + HASH_WAIT)
}

/// `write`, and with `records` the item's OTLP record attributes, made from the same view
/// (the same executable hash, the same `ago_s`): none when the line was not made. A hash
/// being computed is waited for until `hashes_until`.
pub(super) fn write_with(
    out: &mut Vec<u8>,
    item: &Item,
    names: Option<&Names>,
    mut records: Option<&mut Records>,
    hashes_until: Instant,
) -> bool {
    let start = out.len();
    let wait = hashes_until.saturating_duration_since(Instant::now());
    let r = match item {
        Item::Event(ev, _, exe, session) => {
            let json = EventJson::new(ev)
                .with_exe_hash(exe.as_ref().map(|h| h.get(wait)))
                .with_session(session.as_deref());
            // EventJson's object with the schema and the names spliced in first.
            out.extend_from_slice(b"{\"schema\":\"");
            out.extend_from_slice(EVENT_SCHEMA.as_bytes());
            out.extend_from_slice(b"\",");
            let r = names
                .map_or(Ok(()), |n| splice(out, n, true))
                .and_then(|()| splice(out, &json, false));
            if let (Ok(()), Some(rec)) = (&r, records.as_deref_mut()) {
                rec.event(EVENT_SCHEMA, names, &json);
            }
            r
        }
        Item::History(h, _) => {
            if let Some(exe) = &h.1.exe_hash {
                let _ = exe.get(wait);
            }
            let none = Names::default();
            let line = HistoryLine {
                schema: HISTORY_SCHEMA,
                names: names.unwrap_or(&none),
                entry: ended_view(&h.1, boot_now_ns()),
            };
            let r = serde_json::to_writer(&mut *out, &line);
            if let (Ok(()), Some(rec)) = (&r, records.as_deref_mut()) {
                rec.history(HISTORY_SCHEMA, line.names, &line.entry);
            }
            r
        }
    };
    if r.is_err() {
        out.truncate(start);
        if let Some(rec) = records {
            rec.none();
        }
        return false;
    }
    out.push(b'\n');
    true
}

/// `v`'s object without its opening brace, so that its members go on the object `out`
/// is in; `more`: members follow (its closing brace becomes a comma).
fn splice<T: Serialize>(out: &mut Vec<u8>, v: &T, more: bool) -> serde_json::Result<()> {
    let at = out.len();
    serde_json::to_writer(&mut *out, v)?;
    debug_assert_eq!(out[at], b'{');
    out.remove(at);
    if more {
        // An empty object leaves nothing to add.
        let empty = out.len() == at + 1;
        match out.last_mut() {
            Some(_) if empty => {
                out.pop();
            }
            Some(c) => *c = b',',
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use observer_common::*;

    use super::*;
    use crate::{
        containers::{cgroup::Runtime, ContainerKey},
        events::Event,
        table::history::Ended,
    };

    fn exec() -> Event {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"true");
        let mut ns_pids = [0; MAX_PID_LEVELS];
        ns_pids[0] = 5;
        let task = TaskInfo {
            start_time_ns: 10,
            cgroup_id: 1,
            ppid: 4,
            uid: 0,
            gid: 0,
            pid_level: 0,
            ns_pids,
            ns: [0; NS_COUNT],
            flags: 0,
            comm,
        };
        let mut e = ExecEvent {
            header: EventHeader {
                kind: EventKind::Exec as u32,
                cpu: 0,
                ktime_ns: 11,
                tgid: 5,
                pid: 5,
            },
            task,
            old_tid: 5,
            args_len: 0,
            filename: [0; FILENAME_LEN],
            args: [0; ARGS_LEN],
            // SAFETY: plain integers: all zeroes is a valid value.
            ..unsafe { std::mem::zeroed() }
        };
        e.filename[..9].copy_from_slice(b"/bin/true");
        e.args[..12].copy_from_slice(b"/bin/true\0x\0");
        e.args_len = 12;
        Event::Exec(e)
    }

    #[test]
    fn an_event_line_is_the_events_route_object_with_the_schema_first() {
        let ev = exec();
        let mut out = b"previous\n".to_vec();
        assert!(write(&mut out, &Item::Event(ev, None, None, None), None));
        let line = std::str::from_utf8(&out[9..]).unwrap();
        assert!(line.starts_with("{\"schema\":\"observer.event/v2\",\"type\":\"exec\""));
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        let mut got: serde_json::Value = serde_json::from_str(line).unwrap();
        got.as_object_mut().unwrap().remove("schema");
        assert_eq!(got, serde_json::to_value(EventJson::new(&ev)).unwrap());
    }

    #[test]
    fn an_event_line_of_a_container_carries_its_names_after_the_schema() {
        let ev = exec();
        let names = Names {
            container_id: "c0ffee".into(),
            container_name: Some("web".into()),
            runtime: "containerd".into(),
            pod: Some("web-0".into()),
            pod_namespace: Some("shop".into()),
            pod_uid: None,
        };
        let mut out = Vec::new();
        assert!(write(
            &mut out,
            &Item::Event(ev, None, None, None),
            Some(&names)
        ));
        let line = std::str::from_utf8(&out).unwrap();
        assert!(
            line.starts_with("{\"schema\":\"observer.event/v2\",\"container_id\":\"c0ffee\","),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["container_name"], "web");
        assert_eq!(v["runtime"], "containerd");
        assert_eq!(v["pod"], "web-0");
        assert_eq!(v["pod_namespace"], "shop");
        assert!(v["pod_uid"].is_null() && v.get("pod_uid").is_some());
        assert_eq!(v["type"], "exec");
        assert_eq!(v["filename"], "/bin/true");
    }

    #[test]
    fn a_history_line_is_the_ended_process_with_its_container() {
        let key = ContainerKey::new(Runtime::Bare, "4026532771");
        let e = Ended {
            start_ns: 1,
            end_ns: 2,
            status: 7 << 8,
            ..Ended::fixture(9, "sh", b"sh\0-c\0exit 7\0", "/bin/sh")
        };
        let names = Names {
            container_id: key.id.clone(),
            runtime: "bare".into(),
            ..Names::default()
        };
        let origin = std::sync::Arc::new(crate::export::Origin::bare_for_tests(&key));
        let mut out = Vec::new();
        assert!(write(
            &mut out,
            &Item::History(Box::new((key, e)), origin),
            Some(&names)
        ));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], HISTORY_SCHEMA);
        assert_eq!(v["runtime"], "bare");
        assert_eq!(v["container_id"], "4026532771");
        assert_eq!(v["exit_code"], 7);
        assert_eq!(v["argv"], serde_json::json!(["sh", "-c", "exit 7"]));
        assert_eq!(out.last(), Some(&b'\n'));
    }
}
