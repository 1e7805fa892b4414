//! The JSON line → log record mapping, on lines as the sinks write them (the record's
//! bytes read back with OpenTelemetry's generated types).

use opentelemetry_proto::tonic::{
    common::v1::any_value::Value as Any,
    logs::v1::{LogRecord, ScopeLogs},
};
use prost::Message;

use super::*;

/// The record `write` makes of `line`, decoded.
fn log_record(line: &[u8], unix_offset_ns: u64, now_unix_ns: u64) -> Option<LogRecord> {
    let mut out = b"before".to_vec();
    if !write(
        &mut out,
        &mut Scratch::default(),
        line,
        unix_offset_ns,
        now_unix_ns,
    ) {
        assert_eq!(out, b"before", "nothing appended");
        return None;
    }
    let mut scope = ScopeLogs::decode(&out[b"before".len()..]).expect("protobuf");
    assert_eq!(scope.log_records.len(), 1);
    scope.log_records.pop()
}

fn attrs(r: &LogRecord) -> std::collections::BTreeMap<String, Any> {
    r.attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.clone().and_then(|v| v.value).expect("a value"),
            )
        })
        .collect()
}

fn s(v: &str) -> Any {
    Any::StringValue(v.into())
}

#[test]
fn a_history_line_of_an_oom_kill_maps_to_semantic_conventions_and_observer_names() {
    let line = br#"{"schema":"observer.history/v2","container_id":"c0ffee","container_name":"web","runtime":"containerd","pod":"web-0","pod_namespace":"shop","pod_uid":"u-1","pid":41180,"ns_pid":1,"comm":"tail","argv":["tail","/dev/zero"],"exe":"/bin/tail","parents":[{"pid":41170,"comm":"sh"}],"adopted_from":null,"start_time_ns":1000,"end_time_ns":5000,"duration_s":0.1,"exit_code":137,"signal":"SIGKILL","core_dumped":false,"failed":true,"killed_by":{"signal":"SIGKILL","signo":9,"result":"delivered","si_code":0,"group":true,"time_ns":4900,"ago_s":0.5,"sender":{"pid":0,"ns_pid":null,"comm":"tail","origin":"kernel","container_id":null,"runtime":null}},"oom":{"time_ns":4900,"total_vm_kb":100,"anon_rss_kb":90,"file_rss_kb":1,"shmem_rss_kb":0,"oom_score_adj":0,"trigger_pid":41180,"trigger_comm":"tail","memory_limit_bytes":8388608,"memory_bytes":8380000},"killed_with_namespace":null,"ignored":[]}"#;
    let r = log_record(line, 1_000_000, 7).unwrap();
    assert_eq!(r.time_unix_nano, 1_005_000, "end time, on the Unix clock");
    assert_eq!(r.observed_time_unix_nano, 7);
    assert_eq!(r.severity_text, "WARN", "a failed process");
    assert_eq!(r.event_name, "observer.process.ended");
    assert_eq!(
        r.body.as_ref().and_then(|b| b.value.clone()),
        Some(s(std::str::from_utf8(line).unwrap()))
    );
    let a = attrs(&r);
    for (k, v) in [
        ("observer.schema", s("observer.history/v2")),
        ("container.id", s("c0ffee")),
        ("container.name", s("web")),
        ("container.runtime", s("containerd")),
        ("k8s.pod.name", s("web-0")),
        ("k8s.namespace.name", s("shop")),
        ("k8s.pod.uid", s("u-1")),
        ("process.pid", Any::IntValue(41180)),
        ("process.executable.path", s("/bin/tail")),
        ("process.executable.name", s("tail")),
        ("process.command_line", s("tail /dev/zero")),
        ("process.exit.code", Any::IntValue(137)),
        ("observer.ns_pid", Any::IntValue(1)),
        ("observer.signal.name", s("SIGKILL")),
        ("observer.signal.number", Any::IntValue(9)),
        ("observer.signal.result", s("delivered")),
        ("observer.signal.sender.origin", s("kernel")),
        ("observer.signal.sender.pid", Any::IntValue(0)),
        ("observer.oom.anon_rss_kb", Any::IntValue(90)),
        ("observer.oom.memory_limit_bytes", Any::IntValue(8_388_608)),
        ("observer.oom.trigger_comm", s("tail")),
        ("observer.failed", Any::BoolValue(true)),
        ("process.parent_pid", Any::IntValue(41170)),
    ] {
        assert_eq!(a.get(k), Some(&v), "{k}");
    }
    assert!(
        !a.contains_key("observer.adopted_from")
            && !a.contains_key("observer.signal.sender.ns_pid"),
        "nulls are left out"
    );
    assert!(matches!(
        a.get("process.command_args"),
        Some(Any::ArrayValue(v)) if v.values.len() == 2
    ));
    assert!(matches!(a.get("observer.parents"), Some(Any::ArrayValue(v))
        if matches!(&v.values[0].value, Some(Any::KvlistValue(_)))));
}

#[test]
fn a_signal_event_puts_its_sender_under_observer_signal_sender() {
    let line = br#"{"schema":"observer.event/v2","container_id":"c0ffee","container_name":"web","runtime":"docker","pod":null,"pod_namespace":null,"pod_uid":null,"type":"signal","time_ns":10,"cpu":0,"pid":5,"tid":5,"ppid":4,"ns_pids":[5,1],"ns":{"pid":4026532771},"cgroup_id":9,"start_time_ns":1,"comm":"sleep","uid":0,"gid":0,"signal":"SIGTERM","signo":15,"code":0,"group":true,"result":"ignored","sender":{"pid":77,"tid":77,"comm":"containerd-shim","pidns":4026531836,"cgroup_id":1,"start_time_ns":2}}"#;
    let r = log_record(line, 0, 0).unwrap();
    assert_eq!(r.event_name, "observer.signal");
    assert_eq!(r.severity_text, "INFO");
    let a = attrs(&r);
    for (k, v) in [
        ("observer.type", s("signal")),
        ("observer.signal.name", s("SIGTERM")),
        ("observer.signal.number", Any::IntValue(15)),
        ("observer.signal.result", s("ignored")),
        ("observer.signal.sender.pid", Any::IntValue(77)),
        ("observer.signal.sender.comm", s("containerd-shim")),
        ("process.parent_pid", Any::IntValue(4)),
        ("observer.ns.pid", Any::IntValue(4_026_532_771)),
        ("container.runtime", s("docker")),
    ] {
        assert_eq!(a.get(k), Some(&v), "{k}");
    }
    assert!(matches!(a.get("observer.ns_pids"), Some(Any::ArrayValue(v)) if v.values.len() == 2));
    assert!(!a.contains_key("k8s.pod.name"), "not in a pod");
}

#[test]
fn an_oom_event_puts_its_facts_under_observer_oom_and_is_a_warning() {
    let line = br#"{"schema":"observer.event/v2","type":"oom","time_ns":10,"cpu":0,"pid":5,"tid":5,"ppid":0,"ns_pids":[],"ns":{},"cgroup_id":0,"start_time_ns":0,"comm":"","uid":0,"gid":0,"victim_pid":5,"total_vm_kb":100,"anon_rss_kb":90,"file_rss_kb":null,"shmem_rss_kb":null,"oom_score_adj":0}"#;
    let r = log_record(line, 0, 0).unwrap();
    assert_eq!(r.severity_text, "WARN");
    let a = attrs(&r);
    assert_eq!(a.get("observer.oom.victim_pid"), Some(&Any::IntValue(5)));
    assert_eq!(a.get("observer.oom.anon_rss_kb"), Some(&Any::IntValue(90)));
    assert_eq!(a.get("observer.cgroup_id"), Some(&Any::IntValue(0)));
    assert!(log_record(b"not json", 0, 0).is_none());
}

#[test]
fn an_execs_executable_hash_is_the_semantic_conventions_sha256_attribute() {
    let hash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let line = format!(
        r#"{{"schema":"observer.event/v2","type":"exec","time_ns":5,"pid":7,"ppid":1,"comm":"true","filename":"/bin/true","argv":["true"],"exe_sha256":"{hash}"}}"#
    );
    let a = attrs(&log_record(line.as_bytes(), 0, 7).unwrap());
    assert_eq!(a.get("process.executable.hash.sha256"), Some(&s(hash)));
    // Null (with its reason) is no attribute of that name.
    let line = br#"{"schema":"observer.event/v2","type":"exec","time_ns":5,"pid":7,"ppid":1,"comm":"true","filename":"/bin/true","argv":["true"],"exe_sha256":null,"exe_hash_reason":"gone"}"#;
    let a = attrs(&log_record(line, 0, 7).unwrap());
    assert!(!a.contains_key("process.executable.hash.sha256"));
    assert_eq!(a.get("observer.exe_hash_reason"), Some(&s("gone")));
}

#[test]
fn an_exec_sessions_entered_goes_under_observer_exec() {
    let line = br#"{"schema":"observer.history/v2","pid":900,"ns_pid":7,"comm":"sh","exit_code":3,"end_time_ns":5000,"entered":{"via":"docker exec","by":[{"pid":812,"comm":"runc"},{"pid":790,"comm":"containerd-shim"}],"time_ns":4000,"root_pid":900,"root":true}}"#;
    let a = attrs(&log_record(line, 0, 0).unwrap());
    assert_eq!(a.get("observer.exec.via"), Some(&s("docker exec")));
    assert_eq!(a.get("observer.exec.time_ns"), Some(&Any::IntValue(4000)));
    assert_eq!(a.get("observer.exec.root_pid"), Some(&Any::IntValue(900)));
    assert_eq!(a.get("observer.exec.root"), Some(&Any::BoolValue(true)));
    let Some(Any::ArrayValue(by)) = a.get("observer.exec.by") else {
        panic!("by as a list: {a:?}");
    };
    assert_eq!(by.values.len(), 2);
    assert!(!a.keys().any(|k| k.starts_with("observer.entered")));
}
