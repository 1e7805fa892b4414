use super::*;

const ID: &str = "16dc7dabfae21e9e90c50928c94107f5b38dcc65cb88a12b3d695d2dc6b837e4";
const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
const UID_: &str = "0a1b2c3d_4e5f_6789_abcd_ef0123456789";

fn m(path: &str) -> (Runtime, String, Option<String>, Role) {
    let m = parse_path(path).unwrap_or_else(|| panic!("no match for {path}"));
    (m.runtime, m.id, m.pod_uid, m.role)
}

fn fixture(name: &str) -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroup/");
    std::fs::read_to_string(format!("{p}{name}")).unwrap()
}

#[test]
fn docker_cgroupfs_and_systemd_drivers() {
    assert_eq!(
        m(&format!("/docker/{ID}")),
        (Runtime::Docker, ID.into(), None, Role::Member)
    );
    assert_eq!(
        m(&format!("/system.slice/docker-{ID}.scope")),
        (Runtime::Docker, ID.into(), None, Role::Member)
    );
    // A non-hex child of /docker is not a container id.
    assert_eq!(parse_path("/docker/buildkit"), None);
}

#[test]
fn containerd_namespaces_and_cri_scopes() {
    let c = parse_path("/default/fxc").unwrap();
    assert_eq!(
        (c.runtime, c.id.as_str(), c.namespace.as_deref()),
        (Runtime::Containerd, "fxc", Some("default"))
    );
    let c = parse_path(&format!("/k8s.io/{ID}")).unwrap();
    assert_eq!(
        (c.runtime, c.namespace.as_deref()),
        (Runtime::Containerd, Some("k8s.io"))
    );
    // containerd's CRI scopes are kubelet's (under kubepods*): elsewhere only a name.
    assert_eq!(
        parse_path(&format!("/system.slice/cri-containerd-{ID}.scope")),
        None
    );
    // Unknown top-level directories are not containerd namespaces.
    assert_eq!(parse_path("/user.slice/session-1.scope"), None);
    assert_eq!(parse_path("/mygroup/child"), None);
}

#[test]
fn kubelet_systemd_slices_carry_the_pod_uid() {
    let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope");
    assert_eq!(
        m(&path),
        (
            Runtime::Containerd,
            ID.into(),
            Some(UID.into()),
            Role::Member
        )
    );
    let path = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope");
    assert_eq!(
        m(&path),
        (Runtime::Crio, ID.into(), Some(UID.into()), Role::Member)
    );
    let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope");
    assert_eq!(
        m(&path),
        (Runtime::Docker, ID.into(), Some(UID.into()), Role::Member)
    );
    let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope");
    assert_eq!(
        m(&path),
        (Runtime::Crio, ID.into(), Some(UID.into()), Role::Shim)
    );
}

#[test]
fn kubelet_cgroupfs_layout_without_runtime_prefix() {
    assert_eq!(
        m(&format!("/kubepods/burstable/pod{UID}/{ID}")),
        (Runtime::Cri, ID.into(), Some(UID.into()), Role::Member)
    );
    assert_eq!(
        m(&format!("/kubepods/pod{UID}/{ID}")),
        (Runtime::Cri, ID.into(), Some(UID.into()), Role::Member)
    );
    assert_eq!(
        m(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")).0,
        Runtime::Crio
    );
    // The pod cgroup itself is not a container.
    assert_eq!(parse_path(&format!("/kubepods/burstable/pod{UID}")), None);
}

#[test]
fn podman_and_conmon() {
    assert_eq!(
        m(&format!("/libpod_parent/libpod-{ID}")),
        (Runtime::Podman, ID.into(), None, Role::Member)
    );
    assert_eq!(
        m(&format!("/machine.slice/libpod-{ID}.scope")),
        (Runtime::Podman, ID.into(), None, Role::Member)
    );
    assert_eq!(
        m(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
        (Runtime::Podman, ID.into(), None, Role::Shim)
    );
    // podman's cgroupfs conmon cgroup is shared by all containers: no id, no match.
    assert_eq!(parse_path("/libpod_parent/conmon"), None);
}

#[test]
fn lxc_nspawn_and_launcher() {
    assert_eq!(
        m("/lxc.payload.web"),
        (Runtime::Lxc, "web".into(), None, Role::Member)
    );
    assert_eq!(
        m("/lxc.payload.web/system.slice/cron.service").0,
        Runtime::Lxc
    );
    assert_eq!(
        m("/lxc.monitor.web"),
        (Runtime::Lxc, "web".into(), None, Role::Shim)
    );
    assert_eq!(
        m("/lxc/web"),
        (Runtime::Lxc, "web".into(), None, Role::Member)
    );
    assert_eq!(
        m("/machine.slice/machine-my\\x2dbox.scope"),
        (Runtime::Nspawn, "my-box".into(), None, Role::Member)
    );
    assert_eq!(
        m("/observer/web"),
        (Runtime::Observer, "web".into(), None, Role::Member)
    );
    assert_eq!(parse_path("/observer"), None);
}

#[test]
fn innermost_runtime_wins_when_nested() {
    // A kind/k3s node running in docker: the inner containerd scope is the container.
    let inner = "a".repeat(64);
    let path = format!("/docker/{ID}/kubepods/besteffort/pod{UID}/cri-containerd-{inner}.scope");
    assert_eq!(
        m(&path),
        (Runtime::Containerd, inner, Some(UID.into()), Role::Member)
    );
}

#[test]
fn real_captures_from_this_machine() {
    let d = parse_file(&fixture("docker-cgroupfs-hybrid.cgroup")).unwrap();
    assert_eq!((d.runtime, d.id.as_str()), (Runtime::Docker, ID));
    let p = parse_file(&fixture("podman-cgroupfs-hybrid.cgroup")).unwrap();
    assert_eq!(
        (p.runtime, p.id.as_str()),
        (
            Runtime::Podman,
            "9a5450c1d6b75741c0b50d7168460cf3cb83165a39ef6623ad4211913122c813"
        )
    );
    let c = parse_file(&fixture("containerd-ctr-default-hybrid.cgroup")).unwrap();
    assert_eq!((c.runtime, c.id.as_str()), (Runtime::Containerd, "fxc"));
    assert_eq!(
        parse_file(&fixture("podman-conmon-cgroupfs-hybrid.cgroup")),
        None
    );
}

#[test]
fn v1_only_and_hybrid_files_fall_back_to_controller_lines() {
    // cgroup v1 only: no 0:: line.
    let v1 = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
    assert_eq!(parse_file(&v1).unwrap().runtime, Runtime::Docker);
    // Hybrid where only v1 hierarchies carry the container (v2 shows the service).
    let hybrid = format!(
        "1:name=systemd:/system.slice/docker-{ID}.scope\n0::/system.slice/docker.service\n"
    );
    assert_eq!(parse_file(&hybrid).unwrap().id, ID);
    // Pure v2 host.
    assert_eq!(
        parse_file(&format!("0::/system.slice/docker-{ID}.scope\n"))
            .unwrap()
            .id,
        ID
    );
    assert_eq!(
        parse_file("0::/user.slice/user-0.slice/session-3.scope\n"),
        None
    );
}

#[test]
fn cgroup_lines_parse() {
    assert_eq!(
        parse_line("0::/a/b"),
        Some(CgroupLine {
            hierarchy: 0,
            controllers: "",
            path: "/a/b"
        })
    );
    assert_eq!(parse_line("4:memory:/x:y").unwrap().path, "/x:y");
    assert_eq!(parse_line("garbage"), None);
}

#[test]
fn podman_pod_members_carry_the_pod_id() {
    // Captured here: `podman pod create` with the cgroupfs manager, then a member (v2 and v1
    // lines alike).
    let pod = "819899278f7f5cbadf809ebd9a9e8c190236f256f08c9c9883728da79c28b551";
    let m = parse_path(&format!("/libpod_parent/{pod}/libpod-{ID}")).unwrap();
    assert_eq!(
        (m.runtime, m.id.as_str(), m.pod_id.as_deref(), m.role),
        (Runtime::Podman, ID, Some(pod), Role::Member)
    );
    // The systemd driver's pod slice.
    let m = parse_path(&format!(
        "/machine.slice/machine-libpod_pod_{pod}.slice/libpod-{ID}.scope"
    ))
    .unwrap();
    assert_eq!(m.pod_id.as_deref(), Some(pod));
    let m = parse_path(&format!(
        "/machine.slice/machine-libpod_pod_{pod}.slice/libpod-conmon-{ID}.scope"
    ))
    .unwrap();
    assert_eq!((m.role, m.pod_id.as_deref()), (Role::Shim, Some(pod)));
    // Outside a pod: none.
    assert_eq!(
        parse_path(&format!("/libpod_parent/libpod-{ID}"))
            .unwrap()
            .pod_id,
        None
    );
    assert_eq!(
        parse_path(&format!("/machine.slice/libpod-{ID}.scope"))
            .unwrap()
            .pod_id,
        None
    );
    // conmon of a pod member (cgroupfs) sits in the pod's `conmon` cgroup: not a container.
    assert_eq!(parse_path(&format!("/libpod_parent/{pod}/conmon")), None);
}

/// Paths any user can make in a delegated subtree (a systemd user slice, rootless podman's
/// scopes) with the names runtimes use.
fn user_paths(id: &str) -> Vec<String> {
    let user = "/user.slice/user-1000.slice";
    let svc = "/user.slice/user-1000.slice/user@1000.service";
    vec![
        format!("{user}/docker-{id}.scope"),
        format!("{svc}/docker/{id}"),
        format!("{svc}/system.slice/docker-{id}.scope"),
        format!("{svc}/kubepods/besteffort/pod{UID}/{id}"),
        format!("{svc}/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{id}.scope"),
        format!("{svc}/machine.slice/libpod-{id}.scope"),
        format!("{svc}/libpod_parent/libpod-{id}"),
        format!("{svc}/default/{id}"),
        format!("{svc}/lxc.payload.{id}"),
        format!("{svc}/observer/{id}"),
        format!("{user}/session-3.scope/crio-{id}.scope"),
        format!("/mygroup/k8s.io/{id}"),
        format!("/system.slice/cron.service/docker/{id}"),
    ]
}

#[test]
fn container_names_outside_their_runtimes_parents_are_not_containers() {
    // The impersonation the review reproduced: `nobody` in
    // user.slice/user-1000.slice/docker-<64 hex>.scope was listed as a Docker container.
    for id in ["f".repeat(64).as_str(), ID] {
        for p in user_paths(id) {
            assert_eq!(parse_path(&p), None, "{p}");
            assert_eq!(parse_file(&format!("0::{p}\n")), None, "{p}");
            assert_eq!(parse_file(&format!("1:name=systemd:{p}\n0::/\n")), None);
        }
    }
}

#[test]
fn a_user_slice_holding_a_real_containers_id_does_not_join_it() {
    use crate::containers::{Registry, NO_PATH};
    let host = 100;
    let mut r = Registry::new(host);
    let real = r.intern_path(&format!("/docker/{ID}"));
    let c = r.attribute(real, 200, 1).unwrap();
    assert_eq!(r.get(c).unwrap().key.id, ID);
    for p in user_paths(ID) {
        let path = r.intern_path(&p);
        assert_ne!(path, NO_PATH);
        // In the host pid namespace: the host, not the container.
        assert_eq!(r.attribute(path, host, 1), None, "{p}");
        // In a pid namespace of its own: a bare container keyed by that namespace.
        let b = r.attribute(path, 300, 1).unwrap();
        assert_ne!(b, c, "{p}");
        assert_eq!(r.get(b).unwrap().key.runtime, Runtime::Bare, "{p}");
    }
    assert_eq!(r.get(c).unwrap().cgroup, real);
}

#[test]
fn layouts_are_anchored_where_the_runtimes_put_them() {
    // systemd-nspawn and podman scopes only under machine.slice; docker's under system.slice.
    assert_eq!(parse_path("/system.slice/machine-web.scope"), None);
    assert_eq!(
        parse_path(&format!("/system.slice/libpod-{ID}.scope")),
        None
    );
    assert_eq!(
        parse_path(&format!("/machine.slice/docker-{ID}.scope")),
        None
    );
    // Docker and podman ids are 64 hex.
    assert_eq!(parse_path("/system.slice/docker-web.scope"), None);
    assert_eq!(parse_path("/machine.slice/libpod-web.scope"), None);
    assert_eq!(parse_path("/libpod_parent/libpod-web"), None);
    // kubelet's tree: the container is the pod's child, never the pod or a stray name.
    assert_eq!(parse_path(&format!("/kubepods/besteffort/{ID}")), None);
    assert_eq!(
        parse_path(&format!("/kubepods/burstable/pod{UID}/web")),
        None
    );
    // cri-o's conmon in system.slice (conmon_cgroup = "system.slice") is its shim.
    assert_eq!(
        m(&format!("/system.slice/crio-conmon-{ID}.scope")),
        (Runtime::Crio, ID.into(), None, Role::Shim)
    );
    // A sub-cgroup a container makes inside its own stays that container's.
    assert_eq!(m(&format!("/docker/{ID}/init.scope")).1, ID);
    assert_eq!(m("/observer/web/sub").1, "web");
    // kind's kubelet (cgroup root /kubelet) inside a docker container.
    let inner = "c".repeat(64);
    let kind = format!(
        "/docker/{ID}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{inner}.scope"
    );
    assert_eq!(
        m(&kind),
        (Runtime::Containerd, inner, Some(UID.into()), Role::Member)
    );
}

#[test]
fn systemd_unescape_works_on_bytes() {
    // The name that crashed the agent: `\x` then one hex digit and a two-byte character.
    assert_eq!(systemd_unescape("\\xaé"), "\\xaé");
    assert_eq!(systemd_unescape("my\\x2dbox"), "my-box");
    // Escaped UTF-8 decodes as UTF-8; escaped bytes that are not UTF-8 become U+FFFD.
    assert_eq!(systemd_unescape("caf\\xc3\\xa9"), "café");
    assert_eq!(systemd_unescape("\\xff\\xfe"), "\u{fffd}\u{fffd}");
    // Not two hex digits: kept as written (from_str_radix took `+f`).
    for s in ["\\x+f", "\\x", "\\x2", "\\xg0", "\\\\x41", "é\\", "\\é"] {
        let u = systemd_unescape(s);
        assert!(!u.is_empty(), "{s:?}");
    }
    assert_eq!(systemd_unescape("\\x+f"), "\\x+f");
    assert_eq!(systemd_unescape("\\\\x41"), "\\A");
}

#[test]
fn hostile_names_never_panic_and_name_no_container() {
    let long = "x".repeat(255);
    let deep = vec!["d"; 50].join("/");
    let hostile = [
        "/machine.slice/machine-\\xaé.scope".to_string(),
        "/user.slice/machine-\\xaé.scope".to_string(),
        "machine-\\xaé.scope".to_string(),
        "/machine.slice/machine-\\x".to_string(),
        "/machine.slice/machine-\u{fffd}\u{fffd}.scope".to_string(),
        "/lxc.payload.a\u{1b}[2J".to_string(),
        "/lxc.payload.a\nb".to_string(),
        "/observer/\u{7f}".to_string(),
        format!("/user.slice/{long}/{deep}/{long}"),
        format!("/{deep}/docker-{ID}.scope"),
        "/".repeat(300),
        "é/é/é".to_string(),
    ];
    for p in &hostile {
        let _ = parse_path(p);
        let _ = parse_file(&format!("0::{p}\n"));
    }
    // The systemd escape of a non-UTF-8 name, where nspawn puts machines: a machine named
    // with U+FFFD, not a panic.
    let m = parse_path("/machine.slice/machine-\\xff.scope").unwrap();
    assert_eq!((m.runtime, m.id.as_str()), (Runtime::Nspawn, "\u{fffd}"));
    assert_eq!(
        parse_path("/machine.slice/machine-\\xaé.scope").unwrap().id,
        "\\xaé"
    );
    // Control characters (a terminal escape) or a `/` smuggled in by an escape: no container.
    assert_eq!(parse_path("/lxc.payload.a\u{1b}[2J"), None);
    assert_eq!(parse_path("/machine.slice/machine-a\\x1b.scope"), None);
    assert_eq!(parse_path("/machine.slice/machine-a\\x2fb.scope"), None);
    assert_eq!(parse_path(&format!("/{deep}/docker-{ID}.scope")), None);
}

#[test]
fn a_hierarchy_listed_twice_names_no_container() {
    // What a name with a newline makes of /proc/<pid>/cgroup (kernels before 4.16).
    let smuggled = format!("0::/user.slice/x\n0::/docker/{ID}\n");
    assert_eq!(ranked_lines(&smuggled), None);
    assert_eq!(parse_file(&smuggled), None);
    let smuggled_v1 = format!("4:memory:/user.slice/x\n4:memory:/docker/{ID}\n0::/\n");
    assert_eq!(parse_file(&smuggled_v1), None);
    let mut r = crate::containers::Registry::new(100);
    assert_eq!(r.intern_file(&smuggled), crate::containers::NO_PATH);
}
