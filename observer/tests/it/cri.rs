//! Kubernetes pods through a real CRI runtime: a test-owned containerd's CRI plugin driven
//! as kubelet drives it (tests/it/common/cri.rs) — pods with a shared pid namespace and
//! with one per container, `kubectl exec` (ExecSync: an exec session), and a pod deletion
//! whose container ignores SIGTERM (StopContainer with a grace period, then
//! StopPodSandbox). What observer says is compared with what containerd reports over CRI
//! and with /proc. Run as root.

use std::time::Duration;

use k8s_cri::v1::NamespaceMode;
use serde_json::Value;

use crate::common::{agent::*, cri::*, eventually, EventStream};

const T: Duration = Duration::from_secs(60);
const NS: &str = "observer-test";

fn agent_for(cri: &Cri) -> Agent {
    Agent::start(&["--containerd-state", cri.state_dir().to_str().unwrap()])
}

fn pod_of<'a>(pods: &'a Value, uid: &str) -> Option<&'a Value> {
    pods.as_array()?.iter().find(|p| p["uid"] == uid)
}

/// A container's tree within a pod tree, by container name.
fn container_in<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container"]["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {t:#}"))
}

/// `observer pods` lists `pod` as containerd has it: its Kubernetes names, the sandbox
/// first, then `containers`.
fn listed_as_containerd_has_it(agent: &Agent, pod: &Pod, containers: &[&str]) -> Value {
    let want = containers.len() + 1;
    let pods = eventually(T, "the pod with its sandbox and containers", || {
        let v = agent.json(&["pods"]);
        let n = pod_of(&v, &pod.uid)?["containers"].as_array()?.len();
        (n == want).then_some(v)
    });
    let p = pod_of(&pods, &pod.uid).unwrap().clone();
    assert_eq!(p["kind"], "kubernetes", "{p:#}");
    assert_eq!(p["name"], pod.name, "{p:#}");
    assert_eq!(p["namespace"], pod.namespace, "{p:#}");
    assert_eq!(p["id"], pod.uid, "{p:#}");
    let listed: Vec<&str> = p["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed[0], pod.id, "the sandbox first: {p:#}");
    assert_eq!(p["containers"][0]["sandbox"], true, "{p:#}");
    let mut rest: Vec<&str> = listed[1..].to_vec();
    rest.sort_unstable();
    let mut want: Vec<&str> = containers.to_vec();
    want.sort_unstable();
    assert_eq!(rest, want, "{p:#}");
    p
}

/// `observer tree <reference>` of a pod equals /proc, with the pause process and each
/// container's PID 1 where containerd says they are.
fn pod_tree_is_proc(agent: &Agent, cri: &Cri, pod: &Pod, reference: &str) -> Value {
    let mut last = String::new();
    let t = eventually(T, &format!("tree {reference} == /proc"), || {
        let t = agent.json(&["tree", reference]);
        let diffs = pod_tree_vs_proc(&t);
        last = format!("{diffs:?}");
        diffs.is_empty().then_some(t)
    });
    assert_eq!(t["pod"]["uid"], pod.uid, "{last}");
    let sandbox = &t["containers"][0];
    assert_eq!(sandbox["container"]["id"], pod.id, "{t:#}");
    let pause = cri.sandbox_pid(pod);
    assert_eq!(sandbox["container"]["init_pid"], pause, "{t:#}");
    let p = sandbox["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pause)
        .unwrap_or_else(|| panic!("pause not drawn: {t:#}"));
    assert_eq!(p["comm"], "pause");
    assert_eq!(p["ns_pid"], 1);
    t
}

#[test]
fn cri_pods_are_listed_and_drawn_as_containerd_and_proc_have_them() {
    let cri = Cri::start();
    let agent = agent_for(&cri);
    // One pod sharing its pid namespace, one whose containers have their own; in each, a
    // `sleep` that execs over its shell and so never reaps the child it leaves.
    let shared = cri.run_pod(NS, "shared", NamespaceMode::Pod);
    let web = cri.run_container(&shared, "web", &["sh", "-c", "sleep 0.2 & exec sleep 3000"]);
    let db = cri.run_container(&shared, "db", &["sh", "-c", "sleep 1000 & exec sleep 2000"]);
    let plain = cri.run_pod(NS, "plain", NamespaceMode::Container);
    let api = cri.run_container(&plain, "api", &["sh", "-c", "sleep 1000 & exec sleep 2000"]);
    let job = cri.run_container(&plain, "job", &["sleep", "3000"]);

    let p = listed_as_containerd_has_it(&agent, &shared, &[&web, &db]);
    let pause = cri.sandbox_pid(&shared);
    assert_eq!(
        p["shared_pidns"].as_u64(),
        Some(crate::common::ns_inode(pause, "pid"))
    );
    let p = listed_as_containerd_has_it(&agent, &plain, &[&api, &job]);
    assert!(p["shared_pidns"].is_null(), "{p:#}");

    for pod in [&shared, &plain] {
        for reference in [format!("{}/{}", pod.namespace, pod.name), pod.uid.clone()] {
            let t = pod_tree_is_proc(&agent, &cri, pod, &reference);
            for (name, id) in [("web", &web), ("db", &db), ("api", &api), ("job", &job)] {
                let Some(c) = t["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["container"]["id"] == *id)
                else {
                    continue;
                };
                assert_eq!(c["container"]["name"], name, "{c:#}");
                assert_eq!(c["container"]["init_pid"], cri.container_pid(id), "{c:#}");
            }
        }
    }
    let (code, text, err) = agent.cli(&["tree", &format!("{NS}/shared")]);
    assert_eq!(code, 0, "{err}");
    let head = format!("pod shared (kubernetes {}) ns {NS} ", &shared.uid[..12]);
    assert!(text.starts_with(&head), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("pause ("),
        "{text}"
    );
    // The sandbox's name is its id: drawn short.
    assert!(
        text.contains(&format!("  sandbox {}  ", &shared.id[..12])),
        "{text}"
    );
    assert!(!text.contains(&shared.id), "{text}");
    eprintln!("observer tree {NS}/shared:\n{text}");
    let (_, text, _) = agent.cli(&["tree", &format!("{NS}/plain")]);
    eprintln!("observer tree {NS}/plain:\n{text}");

    containers_are_named_as_containerd_has_them(
        &agent,
        &cri,
        &[
            (&web, "web", &shared),
            (&db, "db", &shared),
            (&api, "api", &plain),
            (&job, "job", &plain),
        ],
    );
    zombie_is_attributed_to_its_container_and_parent(&agent, &cri, &shared, &web);
    metrics_carry_pod_and_namespace(&agent, &[("web", "shared"), ("api", "plain")]);
    let (_, text, _) = agent.cli(&["pods"]);
    eprintln!("observer pods:\n{text}");

    for pod in [&shared, &plain] {
        cri.stop_pod(pod);
        cri.remove_pod(pod);
    }
    eventually(T, "the pods gone from `observer pods`", || {
        let v = agent.json(&["pods"]);
        (pod_of(&v, &shared.uid).is_none() && pod_of(&v, &plain.uid).is_none()).then_some(())
    });
}

/// `observer containers` names each container, its runtime, pod, namespace and image as
/// containerd has them.
fn containers_are_named_as_containerd_has_them(
    agent: &Agent,
    cri: &Cri,
    containers: &[(&str, &str, &Pod)],
) {
    let rows = agent.json(&["containers"]);
    for (id, name, pod) in containers {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == *id)
            .unwrap_or_else(|| panic!("{name} not listed: {rows:#}"));
        assert_eq!(row["name"], *name, "{row:#}");
        assert_eq!(row["runtime"], "containerd", "{row:#}");
        assert_eq!(row["pod"], pod.name, "{row:#}");
        assert_eq!(row["namespace"], pod.namespace, "{row:#}");
        assert_eq!(row["pod_uid"], pod.uid, "{row:#}");
        assert_eq!(row["image"], cri.container_image(id), "{row:#}");
        assert_eq!(row["init_pid"], cri.container_pid(id), "{row:#}");
    }
}

/// The `sleep 0.2` web's shell left is a zombie of web, under the `sleep 3000` that does
/// not reap it — not of the sandbox, whose pause reaps what it adopts.
fn zombie_is_attributed_to_its_container_and_parent(
    agent: &Agent,
    cri: &Cri,
    pod: &Pod,
    web: &str,
) {
    let init = cri.container_pid(web);
    let t = eventually(T, "web's zombie", || {
        let t = agent.json(&["tree", &format!("{}/{}", pod.namespace, pod.name)]);
        (container_in(&t, "web")["container"]["zombies"] == 1).then_some(t)
    });
    let c = container_in(&t, "web");
    let z = c["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["state"] == "Z")
        .unwrap_or_else(|| panic!("{c:#}"));
    assert_eq!(z["ppid"], init, "{z}");
    let f = proc_facts(z["pid"].as_u64().unwrap()).expect("in /proc");
    assert_eq!((f.state.as_str(), f.ppid), ("Z", u64::from(init)));
    assert_eq!(t["pod"]["sandbox_zombies"], 0, "{t:#}");
    let (_, text, _) = agent.cli(&["tree", "web"]);
    assert!(
        text.contains(&format!("not reaped by sleep ({init})")),
        "{text}"
    );
}

/// `/metrics` labels each container with its pod and Kubernetes namespace.
fn metrics_carry_pod_and_namespace(agent: &Agent, containers: &[(&str, &str)]) {
    let m = crate::common::http_body(&agent.http_get("/metrics"));
    for (name, pod) in containers {
        let line = m
            .lines()
            .find(|l| {
                l.starts_with("observer_container_processes")
                    && l.contains(&format!("container_name=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no processes gauge for {name}:\n{m}"));
        assert!(line.contains(&format!("pod=\"{pod}\"")), "{line}");
        assert!(line.contains(&format!("namespace=\"{NS}\"")), "{line}");
    }
}

/// The processes that led to `pid` from the fork and exec events seen: (pid, argv of its
/// last exec before the fork of the next, or "" when none was seen), `pid` first, up to the
/// first pid whose fork the stream did not see.
fn ancestry(stream: &EventStream, pid: u64) -> Vec<(u64, String)> {
    let mut chain = Vec::new();
    let mut at = pid;
    for _ in 0..16 {
        let argv = stream
            .all(|v| v["type"] == "exec" && v["pid"] == at)
            .last()
            .map(|v| {
                let a: Vec<&str> = v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap_or(""))
                    .collect();
                a.join(" ")
            })
            .unwrap_or_default();
        chain.push((at, argv));
        let forks =
            stream.all(|v| v["type"] == "fork" && v["pid"] == at && v["is_thread"] == false);
        match forks.last() {
            Some(f) => at = f["ppid"].as_u64().unwrap(),
            None => break,
        }
    }
    chain
}

#[test]
fn kubectl_exec_runs_under_the_shim_through_runc_exec_and_stays_in_the_history() {
    let cri = Cri::start();
    let agent = agent_for(&cri);
    let pod = cri.run_pod(NS, "exec", NamespaceMode::Container);
    let id = cri.run_container(&pod, "shell", &["sleep", "3000"]);
    let init = cri.container_pid(&id);
    let shim = proc_facts(init.into()).unwrap().ppid;
    eventually(T, "the agent to know the container", || {
        (agent.json(&["tree", "shell"])["container"]["init_pid"] == init).then_some(())
    });
    let mut stream = EventStream::start(&["--type", "fork,exec"]);
    // Long enough for the watcher's `tree` calls to catch it under the shim on a loaded
    // machine (runc exits only after the shell started).
    let script = "sleep 5; echo from-exec";
    // ExecSync blocks for the command's life: the tree is read meanwhile.
    let seen = std::thread::scope(|s| {
        let watch = s.spawn(|| {
            eventually(T, "the exec'd shell in the container's tree", || {
                let t = agent.json(&["tree", "shell"]);
                let procs = t["processes"].as_array()?;
                // Its host parent is runc until runc exits: then the shim, a subreaper.
                let p = procs.iter().find(|p| {
                    p["cmdline"] == format!("sh -c {script}") && p["ppid"].as_u64() == Some(shim)
                })?;
                (procs
                    .iter()
                    .any(|c| c["ppid"] == p["pid"] && c["comm"] == "sleep"))
                .then(|| p.clone())
            })
        });
        let (code, out, err) = cri.exec_sync(&id, &["sh", "-c", script], 30);
        assert_eq!((code, out.trim()), (0, "from-exec"), "{err}");
        watch.join().unwrap()
    });
    // In the container: its host parent the pod's shim, outside its pid namespace.
    assert_eq!(seen["ppid"].as_u64(), Some(shim), "{seen}");
    assert_eq!(seen["ns_ppid"], 0, "{seen}");
    assert!(seen["ns_pid"].as_u64().unwrap() > 1, "{seen}");
    let pid = seen["pid"].as_u64().unwrap();
    // An exec session (exec_sessions.rs has the other runtimes'): CRI Exec under a shim of
    // containerd's `k8s.io` namespace, by runc exec and that shim.
    let s = &seen["entered"];
    assert_eq!(
        (&s["via"], &s["root"]),
        (&"kubectl exec".into(), &true.into()),
        "{seen}"
    );
    assert_eq!(s["by"][0]["comm"], "runc", "{seen}");
    assert_eq!(s["by"][1]["pid"].as_u64(), Some(shim), "{seen}");

    // How it got there: containerd-shim → runc exec → the command.
    stream.wait_for(T, "the exec of the command", |v| {
        v["type"] == "exec" && v["pid"] == pid
    });
    let chain = ancestry(&stream, pid);
    eprintln!("ancestry of the exec'd shell: {chain:#?}");
    assert_eq!(chain.last().unwrap().0, shim, "{chain:#?}");
    assert_eq!(proc_facts(shim).unwrap().comm, "containerd-shim");
    assert!(
        chain.iter().any(|(_, argv)| {
            argv.split(' ').next().is_some_and(|a| a.ends_with("runc"))
                && argv.split(' ').any(|a| a == "exec")
                && argv.contains(&id)
        }),
        "no `runc exec` of the container between the shim and the command: {chain:#?}"
    );
    let _ = stream.stop();

    // After it ended, the container's history has it, with the status ExecSync returned.
    let e = eventually(T, "the exec'd shell in the history", || {
        agent.json(&["history", "shell"])["entries"]
            .as_array()?
            .iter()
            .find(|e| e["pid"] == pid)
            .cloned()
    });
    assert_eq!(e["comm"], "sh", "{e:#}");
    assert_eq!(e["exit_code"], 0, "{e:#}");
    assert_eq!(e["entered"], *s, "the history keeps its session: {e:#}");
    cri.stop_pod(&pod);
    cri.remove_pod(&pod);
}

/// kubelet deletes a pod: StopContainer with the grace period for each container, then
/// StopPodSandbox. A busybox `sleep` as its pid namespace's init has no SIGTERM handler:
/// the kernel drops the SIGTERM, containerd SIGKILLs it when the grace period ends.
#[test]
fn pod_deletion_names_the_container_that_ignored_sigterm_and_who_killed_it() {
    let cri = Cri::start();
    let agent = agent_for(&cri);
    let pod = cri.run_pod(NS, "stop", NamespaceMode::Container);
    let id = cri.run_container(&pod, "stubborn", &["sleep", "3000"]);
    let init = cri.container_pid(&id);
    eventually(T, "the agent to know PID 1", || {
        (agent.json(&["why", "stubborn"])["alive"] == true).then_some(())
    });
    let t = std::time::Instant::now();
    cri.stop_container(&id, 3);
    let took = t.elapsed();
    cri.stop_pod(&pod);
    let w = eventually(T, "PID 1's end in the history", || {
        let w = agent.json(&["why", "stubborn"]);
        (w["alive"] == false && !w["ended"].is_null()).then_some(w)
    });
    let e = &w["ended"];
    assert_eq!(e["pid"], init, "{w:#}");
    assert_eq!(e["ns_pid"], 1);
    assert_eq!(e["signal"], "SIGKILL");
    assert_eq!(e["exit_code"], 137);
    let p = crate::common::ignored_term_then_kill(&w, took, "StopContainer");
    eprintln!("observer why stubborn:\n{p}");
    pod_why_names_the_container(&agent, &pod, init);
    // Another pod of the same name, in another namespace: `stop` alone is ambiguous.
    let other = cri.run_pod("observer-test-2", "stop", NamespaceMode::Container);
    cri.run_container(&other, "idle", &["sleep", "3000"]);
    eventually(T, "the second pod", || {
        pod_of(&agent.json(&["pods"]), &other.uid).map(|_| ())
    });
    let (code, _, err) = agent.cli(&["why", "stop"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`stop` matches several"), "{err}");
    assert!(
        err.contains(&format!("{NS}/stop")) && err.contains("observer-test-2/stop"),
        "{err}"
    );
    cri.stop_pod(&other);
    cri.remove_pod(&other);
    // Removed by its runtime, its containers' histories still answer for the pod.
    cri.remove_pod(&pod);
    pod_why_names_the_container(&agent, &pod, init);
}

/// `observer why <namespace>/<name>` and `why <pod uid>` of a pod whose containers all
/// ended: which container ignored SIGTERM, who sent the SIGKILL and when, as `why
/// <container>` says it; an unknown pod is an error listing the candidates.
fn pod_why_names_the_container(agent: &Agent, pod: &Pod, init: u32) {
    let reference = format!("{}/{}", pod.namespace, pod.name);
    for r in [reference.as_str(), pod.uid.as_str()] {
        let w = eventually(T, &format!("why {r}"), || {
            let w = agent.json(&["why", r]);
            let n = w["containers"].as_array()?.len();
            (w["alive"] == false && n == 2).then_some(w)
        });
        let cs = w["containers"].as_array().unwrap();
        assert_eq!(cs[0]["sandbox"], true, "the sandbox first: {w:#}");
        assert_eq!(cs[0]["id"], pod.id, "{w:#}");
        let c = &cs[1];
        assert_eq!(c["name"], "stubborn", "{w:#}");
        let e = &c["why"]["ended"];
        assert_eq!(e["pid"], init, "{w:#}");
        assert_eq!(e["signal"], "SIGKILL", "{w:#}");
        let sender = e["killed_by"]["sender"]["comm"]
            .as_str()
            .unwrap()
            .to_string();
        let p = w["paragraph"].as_str().unwrap();
        let head = format!("Pod {reference} (kubernetes {}", &pod.uid[..12]);
        assert!(p.starts_with(&head), "{p}");
        assert!(p.contains("all its 2 containers ended"), "{p}");
        assert!(p.contains("Container stubborn ignored SIGTERM from"), "{p}");
        assert!(p.contains(&format!("; SIGKILL from {sender}")), "{p}");
        assert_eq!(p.matches("ignored").count(), 1, "only stubborn: {p}");
        let (code, text, err) = agent.cli(&["why", r]);
        assert_eq!(code, 0, "{err}");
        let flat = text.replace('\n', " ");
        assert!(
            flat.contains("Container stubborn ignored SIGTERM"),
            "{text}"
        );
        assert!(text.contains("\nstubborn: PID 1 of stubborn"), "{text}");
        eprintln!("observer why {r}:\n{text}");
    }
    let (code, _, err) = agent.cli(&["why", &format!("{}/nope", pod.namespace)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no container matches"), "{err}");
    assert!(
        err.contains(&format!("pod kubernetes {}", &pod.uid[..12])),
        "{err}"
    );
}

/// A pod whose containers ended before the agent restarted (the same `--state-dir`), and
/// that its runtime then removed: `why <namespace>/<pod>` answers from the history store
/// — the new agent never saw the pod — with its container's exit.
#[test]
fn why_of_a_pod_answers_from_the_store_after_an_agent_restart() {
    let cri = Cri::start();
    let state = crate::common::TempDir::new("cri-store", "state");
    let start = || {
        Agent::start(&[
            "--containerd-state",
            cri.state_dir().to_str().unwrap(),
            "--state-dir",
            state.0.to_str().unwrap(),
        ])
    };
    let first = start();
    let pod = cri.run_pod(NS, "stored", NamespaceMode::Container);
    cri.run_container(&pod, "brief", &["sh", "-c", "sleep 1; exit 4"]);
    let reference = format!("{NS}/stored");
    eventually(T, "the pod's containers ended", || {
        let w = first.json(&["why", "brief"]);
        (w["alive"] == false && w["ended"]["exit_code"] == 4).then_some(())
    });
    cri.stop_pod(&pod);
    eventually(T, "both containers ended", || {
        let w = first.json(&["why", &reference]);
        (w["alive"] == false).then_some(())
    });
    crate::store::all_committed(&first);
    drop(first.crash());
    cri.remove_pod(&pod);
    let second = start();
    let w = second.json(&["why", &reference]);
    let p = w["paragraph"].as_str().unwrap();
    assert!(p.contains("from the history store"), "{w:#}");
    assert!(p.contains(&format!("Pod {reference}")), "{p}");
    let cs = w["containers"].as_array().unwrap();
    let brief = cs
        .iter()
        .find(|c| c["name"] == "brief")
        .unwrap_or_else(|| panic!("the container brief: {w:#}"));
    assert_eq!(brief["why"]["alive"], false, "{w:#}");
    assert_eq!(brief["why"]["ended"]["exit_code"], 4, "{w:#}");
    assert_eq!(cs[0]["sandbox"], true, "the sandbox first: {w:#}");
    let (code, text, err) = second.cli(&["why", &reference]);
    assert_eq!(code, 0, "{err}");
    eprintln!("observer why {reference} after a restart:\n{text}");
}
