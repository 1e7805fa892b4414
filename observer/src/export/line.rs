//! One exported item as one JSON line, `schema` first: an event is /v1/events' object
//! (`views::event_line::EventJson`), a history entry is `observer history`'s
//! (`views::endings::EndedView`) with the container it belonged to.

use serde::Serialize;

use super::Item;
use crate::{
    host::clock::boot_now_ns,
    views::{
        endings::{ended_view, EndedView},
        event_line::EventJson,
    },
};

pub(crate) const EVENT_SCHEMA: &str = "observer.event/v1";
pub(crate) const HISTORY_SCHEMA: &str = "observer.history/v1";

#[derive(Serialize)]
struct HistoryLine<'a> {
    schema: &'static str,
    runtime: &'a str,
    container_id: &'a str,
    #[serde(flatten)]
    entry: EndedView,
}

/// Appends `item` and a newline to `out`; false (nothing appended) when it would not
/// serialize.
pub(super) fn write(out: &mut Vec<u8>, item: &Item) -> bool {
    let start = out.len();
    let r = match item {
        Item::Event(ev) => {
            // EventJson's object with the schema spliced in as its first member.
            out.extend_from_slice(b"{\"schema\":\"");
            out.extend_from_slice(EVENT_SCHEMA.as_bytes());
            out.extend_from_slice(b"\",");
            let body = out.len();
            let r = serde_json::to_writer(&mut *out, &EventJson::new(ev));
            debug_assert!(r.is_err() || out[body] == b'{');
            out.remove(body);
            r
        }
        Item::History(h) => {
            let (key, e) = &**h;
            serde_json::to_writer(
                &mut *out,
                &HistoryLine {
                    schema: HISTORY_SCHEMA,
                    runtime: key.runtime.as_str(),
                    container_id: &key.id,
                    entry: ended_view(e, boot_now_ns()),
                },
            )
        }
    };
    if r.is_err() {
        out.truncate(start);
        return false;
    }
    out.push(b'\n');
    true
}
