use observer_common::*;

use super::*;

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a padding-free repr(C) wire type.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn task(level: u32, pids: &[u32]) -> TaskInfo {
    let mut ns_pids = [0; MAX_PID_LEVELS];
    ns_pids[..pids.len()].copy_from_slice(pids);
    let mut comm = [0u8; COMM_LEN];
    comm[..5].copy_from_slice(b"sleep");
    TaskInfo {
        start_time_ns: 123_456,
        cgroup_id: 4242,
        ppid: 10,
        uid: 1000,
        gid: 1001,
        pid_level: level,
        ns_pids,
        ns: [1, 2, 3, 4, 5, 6, 7, 8, 9],
        flags: 0,
        comm,
    }
}

fn header(kind: EventKind, tgid: u32, pid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        cpu: 1,
        ktime_ns: 99,
        tgid,
        pid,
    }
}

#[test]
fn fork_record_decodes_with_namespace_pid_chain() {
    let ev = ForkEvent {
        header: header(EventKind::Fork, 79054, 79054),
        task: task(1, &[79054, 7]),
        parent_tid: 79020,
        is_thread: 0,
    };
    let decoded = Event::decode(&bytes_of(&ev)).unwrap();
    assert_eq!(decoded, Event::Fork(ev));
    assert_eq!(decoded.kind(), EventKind::Fork);
    assert_eq!(decoded.header().tgid, 79054);
    assert_eq!(decoded.task().unwrap().ns_pids(), &[79054, 7]);
    assert_eq!(decoded.task().unwrap().comm_str(), "sleep");
}

#[test]
fn exec_record_carries_filename_and_args() {
    let mut ev = ExecEvent {
        header: header(EventKind::Exec, 5, 5),
        task: task(0, &[5]),
        old_tid: 5,
        args_len: 0,
        filename: [0; FILENAME_LEN],
        args: [0; ARGS_LEN],
        // SAFETY: plain integers: all zeroes is a valid value.
        ..unsafe { std::mem::zeroed() }
    };
    ev.filename[..9].copy_from_slice(b"/bin/true");
    let args = b"sleep\x000.3\x00";
    ev.args[..args.len()].copy_from_slice(args);
    ev.args_len = args.len() as u32;
    let Event::Exec(d) = Event::decode(&bytes_of(&ev)).unwrap() else {
        panic!("not exec")
    };
    assert_eq!(c_str(&d.filename), "/bin/true");
    assert_eq!(
        split_args(&d.args, d.args_len as usize).collect::<Vec<_>>(),
        ["sleep", "0.3"]
    );
}

#[test]
fn truncated_argv_without_final_nul_keeps_last_fragment() {
    let buf = b"sh\0-c\0echo hi";
    assert_eq!(
        split_args(buf, buf.len()).collect::<Vec<_>>(),
        ["sh", "-c", "echo hi"]
    );
    assert_eq!(split_args(buf, 0).count(), 0);
}

#[test]
fn short_and_unknown_records_are_rejected() {
    assert_eq!(Event::decode(&[0u8; 10]), Err(DecodeError::Short(10)));
    let mut h = bytes_of(&header(EventKind::Fork, 1, 1));
    h[0] = 99;
    assert_eq!(Event::decode(&h), Err(DecodeError::UnknownKind(99)));
    let h = bytes_of(&header(EventKind::Exit, 1, 1));
    assert_eq!(
        Event::decode(&h),
        Err(DecodeError::Size {
            kind: EventKind::Exit,
            got: 24,
            want: size_of::<ExitEvent>()
        })
    );
}

#[test]
fn records_padded_by_the_ring_buffer_still_decode() {
    let ev = FreeEvent {
        header: header(EventKind::Free, 3, 4),
        task: task(0, &[3]),
    };
    let mut b = bytes_of(&ev);
    b.extend_from_slice(&[0xaa; 8]);
    assert_eq!(Event::decode(&b).unwrap(), Event::Free(ev));
}

#[test]
fn exit_status_decodes_code_and_signal() {
    assert_eq!(
        exit_status(7 << 8),
        ExitStatus {
            code: Some(7),
            signal: None,
            core_dumped: false
        }
    );
    assert_eq!(
        exit_status(9),
        ExitStatus {
            code: None,
            signal: Some(9),
            core_dumped: false
        }
    );
    assert_eq!(
        exit_status(0x80 | 11),
        ExitStatus {
            code: None,
            signal: Some(11),
            core_dumped: true
        }
    );
}

#[test]
fn pid_chain_is_empty_once_detached_and_capped_when_deep() {
    let mut t = task(0, &[]);
    assert!(t.ns_pids().is_empty());
    t = task(12, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(t.ns_pids().len(), MAX_PID_LEVELS);
}

#[test]
fn kind_names_round_trip() {
    for k in EventKind::ALL {
        assert_eq!(kind_from_name(k.name()), Some(k));
        assert_eq!(EventKind::from_u32(k as u32), Some(k));
    }
    assert_eq!(kind_from_name("clone"), None);
}
