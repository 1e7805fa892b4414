//! The OTLP sink's typed encoder (export/otlp/typed.rs) driven by any event: a kernel
//! record of any bytes (names, argv, paths, numbers a process controls) in a container
//! whose names are any text (a runtime's state file). The request decodes (valid
//! protobuf, every string valid UTF-8, no field outside its message), holds one record,
//! and its body is the JSON line made in the same pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::{events::Event, export::line_and_request};
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest, common::v1::any_value::Value,
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // The first bytes: the four names' lengths; then the names; the rest, the record.
    let Some((lens, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut names = [""; 4];
    let mut texts = Vec::new();
    for &n in lens {
        let (name, more) = rest.split_at(usize::from(n).min(rest.len()));
        texts.push(String::from_utf8_lossy(name));
        rest = more;
    }
    for (n, t) in names.iter_mut().zip(&texts) {
        *n = &**t;
    }
    let Ok(ev) = Event::decode(rest) else { return };
    let Some((line, request)) = line_and_request(&ev, names) else {
        return;
    };
    let req = ExportLogsServiceRequest::decode(&request[..]).expect("valid protobuf");
    let records = &req.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(records.len(), 1);
    let body = records[0].body.as_ref().and_then(|b| b.value.as_ref());
    assert!(matches!(body, Some(Value::StringValue(s)) if s.as_bytes() == &line[..]));
});
