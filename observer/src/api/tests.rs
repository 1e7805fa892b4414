//! The routers without an agent behind them: what answers before ready, and what the
//! public TCP router refuses.

use tower_service::Service;

use super::*;

fn status_of(ready: bool, path: &str) -> StatusCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = router(detached_state(ready));
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        r.call(req).await.unwrap().status()
    })
}

#[test]
fn the_public_router_refuses_every_process_view_and_serves_the_rest() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = std::path::Path::new("/run/test/observer.sock");
    let call = |path: &str| {
        rt.block_on(async {
            let mut r = public_router(detached_state(true), socket);
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = r.call(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    for p in [
        "/v1/containers",
        "/v1/processes",
        "/v1/processes?container=x",
        "/v1/containers/x/tree?format=text",
        "/v1/pods",
        "/v1/pods/x/tree",
        "/v1/zombies",
        "/v1/containers/x/history",
        "/v1/why/1",
        "/v1/events",
        "/v1/signals",
        "/v1/../v1/processes",
    ] {
        let (status, body) = call(p);
        assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "forbidden");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains("--web-config") && m.contains("/run/test/observer.sock"),
            "{m}"
        );
    }
    assert_eq!(call("/healthz").0, StatusCode::OK);
    assert_eq!(call("/readyz").0, StatusCode::OK);
    assert_eq!(call("/nope").0, StatusCode::NOT_FOUND);
    // These need the table task, which a detached state lacks: answered, not refused.
    for p in ["/metrics", "/v1/status"] {
        assert_eq!(call(p).0, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    }
}

#[test]
fn before_ready_only_healthz_answers_and_readyz_says_503() {
    assert_eq!(status_of(false, "/healthz"), StatusCode::OK);
    for p in ["/readyz", "/v1/status", "/metrics", "/v1/processes"] {
        assert_eq!(status_of(false, p), StatusCode::SERVICE_UNAVAILABLE, "{p}");
    }
    assert_eq!(status_of(true, "/readyz"), StatusCode::OK);
    assert_eq!(status_of(true, "/healthz"), StatusCode::OK);
}

/// A table whose container ends between the service's first look (the registry) and its
/// second (the container's members): as when an OOM kill empties a container while
/// `observer history` resolves it.
type Ending = Box<dyn FnOnce(&mut crate::table::Table)>;

struct EndsAfterRegistry {
    table: std::cell::RefCell<crate::table::Table>,
    end: std::cell::RefCell<Option<Ending>>,
}

impl service::Source for EndsAfterRegistry {
    fn snapshot(&self, scope: Scope) -> Option<crate::table::snapshot::Snapshot> {
        let snap = self.table.borrow().snapshot(scope.clone());
        if scope == Scope::Registry {
            if let Some(end) = self.end.borrow_mut().take() {
                end(&mut self.table.borrow_mut());
            }
        }
        Some(snap)
    }
    fn member_of(&self, pid: u32) -> Option<u32> {
        self.table.borrow().get(pid).and_then(|p| p.container)
    }
}

#[test]
fn the_history_of_a_container_whose_last_process_ends_while_it_is_resolved_is_answered() {
    use crate::table::tests::{exit, fork, free, table, task, TICK};
    let pidns = 4026532300;
    let mut tb = table();
    tb.apply(&fork(700, task(10, &[700, 1], pidns, TICK, "tail")));
    let src = EndsAfterRegistry {
        table: tb.into(),
        end: Some(Box::new(move |tb: &mut crate::table::Table| {
            let t = task(10, &[700, 1], pidns, TICK, "tail");
            tb.apply(&exit(700, 700, t, 137, true, 2 * TICK));
            tb.apply(&free(700, t));
        }) as Ending)
        .into(),
    };
    let resolver =
        std::sync::Mutex::new(crate::containers::names::Resolver::new(Default::default()));
    let cgroupfs = CgroupFs::default();
    let mut ctx = assemble::ViewCtx {
        now_ns: 3 * TICK,
        resolver: &resolver,
        cgroupfs: &cgroupfs,
        cgroup_files: None,
        stat_files: None,
        store: None,
    };
    let query = pidns.to_string();
    let h = service::history(&src, &mut ctx, &query, &Default::default())
        .expect("the ended container's history, not an error");
    assert_eq!(h.id, query);
    assert_eq!(h.entries.len(), 1);
    assert_eq!(h.entries[0].pid, 700);
}

/// A view that waits for the history store (opening: a big file's check takes seconds)
/// leaves the name resolver free: the other views, the metrics and the store's writer name
/// containers through it (review item 6: the view held it from start to end).
#[test]
fn a_view_waiting_for_the_store_leaves_the_name_resolver_free() {
    use std::sync::{Arc, Mutex};

    use crate::containers::names::Resolver;
    let resolver = Arc::new(Mutex::new(Resolver::new(Default::default())));
    let store = crate::store::Store::new(crate::store::StoreConfig {
        dir: std::env::temp_dir().join("observer-never-opened"),
        limits: crate::store::Limits {
            disk_max: 1 << 20,
            retention_ns: 1,
        },
    });
    let (r, s) = (resolver.clone(), store.clone());
    let view = std::thread::spawn(move || {
        let src = EndsAfterRegistry {
            table: crate::table::tests::table().into(),
            end: None.into(),
        };
        let cgroupfs = CgroupFs::default();
        let mut ctx = assemble::ViewCtx {
            now_ns: 1,
            resolver: &r,
            cgroupfs: &cgroupfs,
            cgroup_files: None,
            stat_files: None,
            store: Some(&s),
        };
        service::history(&src, &mut ctx, "gone-before-a-restart", &Default::default()).is_err()
    });
    // The view is waiting for the store to open.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!view.is_finished(), "the view waits for the store");
    assert!(
        resolver.try_lock().is_ok(),
        "the resolver is free meanwhile"
    );
    store.fail_for_test();
    assert!(view.join().unwrap(), "nothing found, once the store failed");
}

/// `why <container> --boot N` (review item 4): by default from this boot when the container
/// ran in it, else from the latest boot it has records in, saying which; `--boot -1` from
/// the one before; a boot without a record of it is an error (the CLI exits 1 on it).
#[test]
fn why_answers_from_the_boot_asked_for_and_says_which() {
    use crate::{
        containers::{cgroup::Runtime, ContainerKey},
        host::clock::boot_now_ns,
        store::tests::{full, two_boots},
    };
    let dir = std::env::temp_dir().join(format!("observer-api-whyboot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = |id: &str| ContainerKey::new(Runtime::Docker, id);
    // A PID 1 that exited with `code` at `end` (on its boot's clock).
    let init = |pid: u32, code: u32, end: u64| {
        let mut e = full(pid, end);
        (e.ns_pid, e.status, e.signal) = (1, code << 8, None);
        e.chain = Box::new([]);
        e
    };
    let hour = 3_600_000_000_000;
    let now = boot_now_ns();
    // web ended in the boot before; db in both.
    let store = two_boots(
        &dir,
        &[
            (key("abcdef0123"), init(10, 7, hour)),
            (key("0123abcdef"), init(11, 1, hour)),
        ],
        &[(key("0123abcdef"), init(12, 2, now - 1_000_000_000))],
    );
    let src = EndsAfterRegistry {
        table: crate::table::tests::table().into(),
        end: None.into(),
    };
    let resolver =
        std::sync::Mutex::new(crate::containers::names::Resolver::new(Default::default()));
    let cgroupfs = CgroupFs::default();
    let mut ctx = assemble::ViewCtx {
        now_ns: now,
        resolver: &resolver,
        cgroupfs: &cgroupfs,
        cgroup_files: None,
        stat_files: None,
        store: Some(&store),
    };
    let mut why = |q: &str, boot| service::why(&src, &mut ctx, q, boot);
    for boot in [None, Some(-1)] {
        let w = why("ctr-abcdef0123", boot).unwrap();
        let e = w.ended.as_ref().unwrap();
        assert_eq!((e.exit_code, e.boot), (7, -1), "{boot:?}");
        assert!(
            w.paragraph.contains("host pid 10, boot -1)"),
            "{}",
            w.paragraph
        );
    }
    let w = why("ctr-0123abcdef", None).unwrap();
    assert_eq!(w.ended.as_ref().unwrap().exit_code, 2, "this boot's");
    assert!(!w.paragraph.contains("boot"), "{}", w.paragraph);
    let w = why("ctr-0123abcdef", Some(-1)).unwrap();
    assert_eq!(w.ended.as_ref().unwrap().exit_code, 1, "the boot before's");
    for boot in [0, -2] {
        match why("ctr-abcdef0123", Some(boot)) {
            Err(e @ service::ApiError::NotInBoot { .. }) => {
                let text = crate::views::tests::esc(e).explain();
                assert!(text.contains("it has records in boot -1"), "{text}");
            }
            other => panic!("boot {boot}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The answers (pids, the oldest end first) for the two generations of a bare container's
/// inode the table saw: the first's init 500 and its child 501, ended; then the second's
/// init 600, ended. The history store has their entries, after those `before` ended in a
/// table of its own: what an agent that ran before a restart stored, and this table never
/// saw. The first generation's key is the table's (generation 0), the second's starts at the
/// first's init's end.
fn generation_answers(before: impl FnOnce(&mut crate::table::Table, u32, u64)) -> [Vec<u32>; 2] {
    use crate::{
        containers::{cgroup::Runtime, ContainerKey},
        host::clock::boot_now_ns,
        store::{tests::two_boots, Gens},
        table::tests::{fork, table, task, TICK},
    };
    let pidns = 4026532300;
    let t0 = boot_now_ns().saturating_sub(60_000_000_000);
    let mut earlier = table();
    before(&mut earlier, pidns, t0);
    let mut tb = table();
    let (init, child) = (
        task(10, &[500, 1], pidns, t0, "init"),
        task(500, &[501, 2], pidns, t0 + TICK, "sh"),
    );
    tb.apply(&fork(500, init));
    tb.apply(&fork(501, child));
    end(&mut tb, 501, child, t0 + 2 * TICK);
    end(&mut tb, 500, init, t0 + 3 * TICK);
    let second = task(10, &[600, 1], pidns, t0 + 10 * TICK, "init2");
    tb.apply(&fork(600, second));
    end(&mut tb, 600, second, t0 + 11 * TICK);
    let first = ContainerKey::new(Runtime::Bare, pidns.to_string());
    let later = ContainerKey {
        generation: t0 + 3 * TICK,
        ..first.clone()
    };
    // The store has them all (its own rule makes generations of them), the earlier
    // agent's first.
    let mut before: Vec<_> = earlier.history().keys().cloned().collect();
    before.sort();
    let all: Vec<_> = before
        .iter()
        .map(|k| (&earlier, k))
        .chain([(&tb, &first), (&tb, &later)])
        .flat_map(|(t, k)| t.history().of(k).into_iter().flatten().cloned())
        .map(|e| (first.clone(), e))
        .collect();
    let dir = store_dir("gen");
    let store = two_boots(&dir, &[], &all);
    let src = EndsAfterRegistry {
        table: tb.into(),
        end: None.into(),
    };
    let resolver =
        std::sync::Mutex::new(crate::containers::names::Resolver::new(Default::default()));
    let cgroupfs = CgroupFs::default();
    let ctx = assemble::ViewCtx {
        now_ns: boot_now_ns(),
        resolver: &resolver,
        cgroupfs: &cgroupfs,
        cgroup_files: None,
        stat_files: None,
        store: Some(&store),
    };
    let pids = |k: &ContainerKey| -> Vec<u32> {
        let (d, _) = service::dated_entries(&src, &ctx, k, &Gens::All, None).unwrap();
        d.iter().map(|d| d.view.pid).collect()
    };
    let answers = [pids(&first), pids(&later)];
    let _ = std::fs::remove_dir_all(&dir);
    answers
}

/// A new directory for a store of one call's own: the tests run in parallel, and a store
/// file another test holds open does not open (two of them shared one and failed at times).
fn store_dir(name: &str) -> std::path::PathBuf {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("observer-api-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A process of `tb` ends at `at` and is reaped: its history entry.
fn end(tb: &mut crate::table::Table, pid: u32, t: observer_common::TaskInfo, at: u64) {
    use crate::table::tests::{exit, free};
    tb.apply(&exit(pid, pid, t, 0, true, at));
    tb.apply(&free(pid, t));
}

/// A bare container's earlier generation (its pid-namespace inode reused after its init
/// ended) answers with its own processes only: the history store's newest generation of the
/// inode is the later namespace's, and was merged into the earlier one's answer (`why` of
/// the earlier one's name named the later one's PID 1).
#[test]
fn an_earlier_generation_of_an_inode_is_not_answered_with_the_later_ones_entries() {
    let [first, later] = generation_answers(|_, _, _| {});
    assert_eq!((first, later), (vec![501, 500], vec![600]));
}

/// An earlier generation's entries that only the history store has (they ended before the
/// agent restarted: its table never saw them) are in its answer, once each beside the
/// table's: before, only the store's newest generation was read, the later namespace's,
/// and the earlier one's stored entries were missed. Those of a namespace before it with
/// the inode (its init ended before the restart: the table's first generation has no
/// lower bound) are not: it is under another init.
#[test]
fn an_earlier_generation_is_answered_with_the_entries_only_the_store_has() {
    use crate::table::tests::{fork, task, TICK};
    let [first, later] = generation_answers(|tb, pidns, t0| {
        let gone = task(10, &[400, 1], pidns, t0 - 20 * TICK, "init0");
        tb.apply(&fork(400, gone));
        end(tb, 400, gone, t0 - 15 * TICK);
        let init = task(10, &[500, 1], pidns, t0, "init");
        let child = task(500, &[502, 3], pidns, t0 + TICK / 2, "sh");
        tb.apply(&fork(500, init));
        tb.apply(&fork(502, child));
        end(tb, 502, child, t0 + TICK);
    });
    assert_eq!((first, later), (vec![502, 501, 500], vec![600]));
}

/// `history` and `why` of a bare container's generations (store::generation_tests's three:
/// `then` in the boot before, `first` and `second` in this one), stored by earlier agents:
/// the memory of this one has none of them, or only `ended` later namespaces of the inode.
/// For each query and boot: the answer's name and (pid, boot) of its entries; `why`'s PID 1
/// (pid, exit code, boot), or the boots a NotInBoot error lists.
type Answers = Vec<(
    Option<String>,
    Vec<(u32, i32)>,
    Result<(u32, i32, i32), Vec<i32>>,
)>;

fn generations_after_restart(ended: &[(u32, u64)], queries: &[(&str, Option<i32>)]) -> Answers {
    use crate::{
        host::clock::boot_now_ns,
        store::generation_tests::three_generations,
        table::tests::{fork, table, task},
        views::endings::HistoryFilter,
    };
    let dir = store_dir("genname");
    let store = three_generations(&dir);
    let mut tb = table();
    for &(pid, start) in ended {
        let t = task(10, &[pid, 1], 4026532300, start, "later");
        tb.apply(&fork(pid, t));
        end(&mut tb, pid, t, start + 1_000_000_000);
    }
    let src = EndsAfterRegistry {
        table: tb.into(),
        end: None.into(),
    };
    let resolver =
        std::sync::Mutex::new(crate::containers::names::Resolver::new(Default::default()));
    let cgroupfs = CgroupFs::default();
    let mut ctx = assemble::ViewCtx {
        now_ns: boot_now_ns(),
        resolver: &resolver,
        cgroupfs: &cgroupfs,
        cgroup_files: None,
        stat_files: None,
        store: Some(&store),
    };
    let mut out = Vec::new();
    for &(q, boot) in queries {
        let filter = HistoryFilter {
            boot,
            ..HistoryFilter::default()
        };
        let h = service::history(&src, &mut ctx, q, &filter).unwrap();
        let pids = h.entries.iter().map(|e| (e.pid, e.boot)).collect();
        let why = match service::why(&src, &mut ctx, q, boot) {
            Ok(w) => {
                let e = w.ended.expect("an ended PID 1");
                Ok((e.pid, e.exit_code, e.boot))
            }
            Err(service::ApiError::NotInBoot { boots, .. }) => Err(boots),
            Err(e) => panic!("why {q} {boot:?}: {e:?}"),
        };
        out.push((h.name, pids, why));
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Issue #26: after a restart, the agent's memory knowing no generation of a bare
/// container's inode, `history`/`why` of an earlier generation's name answered with the
/// store's newest generation's (`second`'s init 700). Each name answers with its own
/// generation, `--boot -1` included, and the inode with the newest.
#[test]
fn an_earlier_generations_name_answers_with_its_own_entries_after_a_restart() {
    let name = |n: &str| Some(n.to_string());
    let got = generations_after_restart(
        &[],
        &[
            ("first", None),
            ("first", Some(0)),
            ("then", None),
            ("then", Some(-1)),
            ("second", None),
            ("4026532300", None),
            ("4026532300", Some(-1)),
        ],
    );
    let want: Answers = vec![
        (name("first"), vec![(500, 0), (499, 0)], Ok((499, 2, 0))),
        (name("first"), vec![(500, 0), (499, 0)], Ok((499, 2, 0))),
        (name("then"), vec![(41, -1)], Ok((41, 1, -1))),
        (name("then"), vec![(41, -1)], Ok((41, 1, -1))),
        (name("second"), vec![(700, 0)], Ok((700, 3, 0))),
        (name("second"), vec![(700, 0)], Ok((700, 3, 0))),
        (name("second"), vec![(41, -1)], Ok((41, 1, -1))),
    ];
    assert_eq!(got, want);
    // A generation has no record in another's boot.
    let got = generations_after_restart(&[], &[("first", Some(-1)), ("then", Some(0))]);
    assert_eq!(got[0].2, Err(vec![0]));
    assert_eq!(got[1].2, Err(vec![-1]));
    assert!(got[0].1.is_empty() && got[1].1.is_empty(), "{got:?}");
}

/// The same when this agent's memory has a later namespace of the inode (its first
/// generation: the table's key is the store's key of the inode): an earlier generation's
/// name answers with that generation only, not with the memory's processes of the inode.
#[test]
fn an_earlier_generations_name_takes_nothing_from_a_later_namespace_in_memory() {
    let later = crate::host::clock::boot_now_ns() - 20_000_000_000;
    let got = generations_after_restart(
        &[(950, later)],
        &[("first", None), ("then", None), ("then", Some(0))],
    );
    assert_eq!(got[0].1, [(500, 0), (499, 0)], "{got:?}");
    assert_eq!(got[0].2, Ok((499, 2, 0)));
    assert_eq!(got[1].1, [(41, -1)], "{got:?}");
    assert_eq!(got[1].2, Ok((41, 1, -1)));
    // The memory's processes of the inode are not the boot's record of `then`.
    assert_eq!((&got[2].1[..], &got[2].2), (&[][..], &Err(vec![-1])));
}
