//! A test-owned containerd driven through its CRI plugin (`io.containerd.grpc.v1.cri`) as
//! kubelet drives it: the Kubernetes CRI v1 gRPC API (k8s-cri over tonic) on a unix socket.
//!
//! Each [`Cri`] is a containerd of the test's own — its root, state, socket, config and
//! runc's state root in a directory of its own, started as the test's child — never the
//! machine's or another session's. Nothing can be pulled here, so its images are built
//! locally and imported into the `k8s.io` namespace: the sandbox image is a scratch image
//! holding one static `pause` (kubernetes' pause.c in a few lines, compiled with musl-gcc:
//! exits on SIGTERM/SIGINT, reaps its children), the container image is the busybox rootfs
//! the other runtime tests use. Pods run on the host network (no CNI) under kubelet's
//! cgroupfs layout, `/kubepods/burstable/pod<uid>`: on this cgroup-hybrid host containerd
//! (runc) makes `<parent>/<container id>` in every v1 hierarchy and in the unified one.
//!
//! Dropping it removes what it made, also when the test failed: its pod sandboxes (through
//! CRI while containerd still answers), then its containerd (SIGTERM to the pid it spawned,
//! SIGKILL after 10 s), then any shim still serving its socket (a shim names the containerd
//! address it serves in its argv), the mounts under its directory, the directory, the pods'
//! cgroups and those parents that did not exist before it. `OBSERVER_TEST_KEEP_CRI=1` keeps
//! the directory (containerd's log, the shims' logs) to look at after a failure.
#![allow(dead_code)]

use std::{
    cell::RefCell,
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{eventually, runtimes::ok};

mod images;
use images::{busybox_image, pause_image};

pub const PAUSE_IMAGE: &str = "localhost/observer-test/cri-pause:1";
pub const BUSYBOX_IMAGE: &str = "localhost/observer-test/cri-busybox:1";
/// kubelet's cgroupfs parent of a Burstable pod's cgroup.
const QOS_PARENT: &str = "kubepods/burstable";
const T: Duration = Duration::from_secs(60);

/// A pod sandbox the test made, with the config kubelet would pass again for its
/// containers.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    config: PodSandboxConfig,
}

/// A test-owned containerd with the CRI plugin.
pub struct Cri {
    dir: PathBuf,
    containerd: Child,
    rt: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    /// Sandboxes not removed yet, and every pod UID used (their cgroups).
    pods: RefCell<Vec<String>>,
    uids: RefCell<Vec<String>>,
    /// The cgroup parents (kubepods, kubepods/burstable) that did not exist before.
    made_parents: Vec<PathBuf>,
}

impl Cri {
    /// Starts a containerd of the test's own and imports the pause and busybox images.
    pub fn start() -> Cri {
        let dir = unique_dir();
        let made_parents = missing_parents();
        std::fs::write(dir.join("config.toml"), config_toml(&dir)).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let containerd = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd (Debian's containerd package)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sock = dir.join("containerd.sock");
        // The guard exists before anything can fail: a failed start cleans up too.
        let mut cri = Cri {
            client: None,
            dir,
            containerd,
            rt,
            pods: RefCell::new(Vec::new()),
            uids: RefCell::new(Vec::new()),
            made_parents,
        };
        eventually(T, "containerd's socket", || sock.exists().then_some(()));
        cri.client = Some(RuntimeServiceClient::new(cri.rt.block_on(connect(sock))));
        let v = eventually(T, "the CRI plugin to answer", || {
            cri.rt
                .block_on(cri.client().version(VersionRequest::default()))
                .ok()
        });
        eprintln!("cri: {:?}", v.into_inner());
        cri.import(&pause_image(&cri.dir));
        cri.import(&busybox_image(&cri.dir));
        cri
    }

    /// containerd's state directory (`--containerd-state` of the agent).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn import(&self, archive: &Path) {
        ok(Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive));
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("connected")
    }

    fn call<R>(&self, f: impl std::future::Future<Output = Result<R, tonic::Status>>) -> R {
        self.rt
            .block_on(f)
            .unwrap_or_else(|s| panic!("CRI call failed: {s}"))
    }

    /// `RunPodSandbox` as kubelet sends it for pod `namespace/name` whose containers share
    /// the pod's pid namespace (`pid` POD) or have their own (CONTAINER); host network.
    pub fn run_pod(&self, namespace: &str, name: &str, pid: NamespaceMode) -> Pod {
        let uid = new_uid();
        self.uids.borrow_mut().push(uid.clone());
        let log_dir = self.dir.join(format!("pods/{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // kubelet leaves a host-network pod's hostname empty (the node's).
            hostname: String::new(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            labels: pod_labels(namespace, name, &uid),
            annotations: HashMap::from([
                ("kubernetes.io/config.source".into(), "api".into()),
                (
                    "kubernetes.io/config.seen".into(),
                    "2026-12-05T00:00:00Z".into(),
                ),
            ]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{QOS_PARENT}/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(pid)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .call(self.client().run_pod_sandbox(req))
            .into_inner()
            .pod_sandbox_id;
        self.pods.borrow_mut().push(id.clone());
        Pod {
            id,
            name: name.into(),
            namespace: namespace.into(),
            uid,
            config,
        }
    }

    /// `CreateContainer` + `StartContainer` of busybox running `argv` in `pod`, as kubelet
    /// sends them; the container's id.
    pub fn run_container(&self, pod: &Pod, name: &str, argv: &[&str]) -> String {
        let mut labels = pod_labels(&pod.namespace, &pod.name, &pod.uid);
        labels.retain(|k, _| k.starts_with("io.kubernetes."));
        labels.insert("io.kubernetes.container.name".into(), name.into());
        let pid = pod_pid_mode(&pod.config);
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            command: argv.iter().map(|s| s.to_string()).collect(),
            envs: vec![KeyValue {
                key: "PATH".into(),
                value: "/bin".into(),
            }],
            labels,
            annotations: HashMap::from([
                ("io.kubernetes.container.restartCount".into(), "0".into()),
                (
                    "io.kubernetes.container.terminationMessagePath".into(),
                    "/dev/termination-log".into(),
                ),
            ]),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces(pid)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        std::fs::create_dir_all(Path::new(&pod.config.log_directory).join(name)).unwrap();
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .call(self.client().create_container(req))
            .into_inner()
            .container_id;
        self.call(self.client().start_container(StartContainerRequest {
            container_id: id.clone(),
        }));
        id
    }

    /// `ExecSync` (`kubectl exec` without a terminal): exit code, stdout, stderr.
    pub fn exec_sync(
        &self,
        container: &str,
        argv: &[&str],
        timeout_s: i64,
    ) -> (i32, String, String) {
        let r = self
            .call(self.client().exec_sync(ExecSyncRequest {
                container_id: container.into(),
                cmd: argv.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            }))
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    /// `StopContainer` with kubelet's grace period: the stop signal, then SIGKILL after
    /// `timeout_s`.
    pub fn stop_container(&self, container: &str, timeout_s: i64) {
        self.call(self.client().stop_container(StopContainerRequest {
            container_id: container.into(),
            timeout: timeout_s,
        }));
    }

    pub fn stop_pod(&self, pod: &Pod) {
        self.call(self.client().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        }));
    }

    pub fn remove_pod(&self, pod: &Pod) {
        self.call(self.client().remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        }));
        self.pods.borrow_mut().retain(|p| *p != pod.id);
    }

    /// The host pid of a container's PID 1, as containerd reports it (`verbose` status).
    pub fn container_pid(&self, container: &str) -> u32 {
        let r = self
            .call(self.client().container_status(ContainerStatusRequest {
                container_id: container.into(),
                verbose: true,
            }))
            .into_inner();
        pid_of_info(&r.info)
    }

    /// A container's image as containerd reports it (the reference it was created from).
    pub fn container_image(&self, container: &str) -> String {
        let r = self
            .call(self.client().container_status(ContainerStatusRequest {
                container_id: container.into(),
                verbose: false,
            }))
            .into_inner();
        r.status.and_then(|s| s.image).expect("an image").image
    }

    /// The host pid of a sandbox's pause process.
    pub fn sandbox_pid(&self, pod: &Pod) -> u32 {
        let r = self
            .call(self.client().pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.id.clone(),
                verbose: true,
            }))
            .into_inner();
        pid_of_info(&r.info)
    }

    /// Stops and removes every sandbox still there (best effort: the test may have failed
    /// half way).
    fn remove_all(&self) {
        if self.client.is_none() {
            return;
        }
        for id in self.pods.borrow().iter() {
            let mut c = self.client();
            let _ = self
                .rt
                .block_on(within(c.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })));
            let _ = self
                .rt
                .block_on(within(c.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })));
        }
    }

    fn stop_containerd(&mut self) {
        let pid = self.containerd.id() as i32;
        // SAFETY: kill(2) on the pid of our own child, not yet waited for.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.containerd.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
    }

    /// Shims serving this containerd (`containerd-shim-runc-v2 ... -address <our socket>`)
    /// that outlived their sandbox: SIGKILL, by pid.
    fn kill_own_shims(&self) {
        let sock = self.socket().to_string_lossy().into_owned();
        for pid in own_shims(&sock) {
            // SAFETY: kill(2); the shim names our private socket, so it is ours.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }

    fn unmount_own(&self) {
        let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|p| Path::new(p).starts_with(&self.dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let c = std::ffi::CString::new(p).unwrap();
            // SAFETY: umount2 of a mount point under our own directory.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }

    fn remove_cgroups(&self) {
        for root in cgroup_roots() {
            for uid in self.uids.borrow().iter() {
                let pod = root.join(QOS_PARENT).join(format!("pod{uid}"));
                // Container cgroups containerd left (it removes them with their task).
                if let Ok(rd) = std::fs::read_dir(&pod) {
                    for e in rd.flatten().filter(|e| e.path().is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&pod);
            }
        }
        for d in self.made_parents.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.remove_all();
        self.stop_containerd();
        self.kill_own_shims();
        // Killed shims leave their containers' processes; they die with their pid namespace
        // when its init goes, which SIGKILL of the shim's children does not cover: give the
        // kernel a moment, then unmount.
        std::thread::sleep(Duration::from_millis(200));
        self.unmount_own();
        if std::env::var_os("OBSERVER_TEST_KEEP_CRI").is_none_or(|v| v.is_empty()) {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cri: kept {}", self.dir.display());
        }
        self.remove_cgroups();
    }
}

/// `f` given 30 s (a timer made inside the runtime: `block_on(within(f))`).
async fn within<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(30), f).await.ok()
}

async fn connect(sock: PathBuf) -> Channel {
    Endpoint::from_static("http://[::]")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
        .expect("connect to containerd's socket")
}

fn pid_of_info(info: &HashMap<String, String>) -> u32 {
    let v: serde_json::Value =
        serde_json::from_str(info.get("info").expect("verbose info")).unwrap();
    v["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {v}")) as u32
}

fn namespaces(pid: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: pid as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn pod_pid_mode(c: &PodSandboxConfig) -> NamespaceMode {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| NamespaceMode::try_from(n.pid).ok())
        .unwrap_or(NamespaceMode::Container)
}

/// The labels kubelet puts on a sandbox (its own, then the pod's: `app`).
fn pod_labels(namespace: &str, name: &str, uid: &str) -> HashMap<String, String> {
    HashMap::from([
        ("io.kubernetes.pod.name".into(), name.into()),
        ("io.kubernetes.pod.namespace".into(), namespace.into()),
        ("io.kubernetes.pod.uid".into(), uid.into()),
        ("app".into(), name.into()),
    ])
}

/// A pod UID, random as kubelet's are (version 4 UUID: splitmix64 over the pid, the clock
/// and a counter).
fn new_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed = t ^ u64::from(std::process::id()) << 40 ^ N.fetch_add(1, Ordering::Relaxed) << 56;
    let (a, b) = (mix(seed), mix(seed ^ 0x9e37_79b9_7f4a_7c15));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        a >> 16 & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The test's directory, in the test-owned /run/observer-test. Short: runc's argv carries
/// it twice (`--root`, `--log`) before `exec` and the container id, and observer keeps the
/// first 256 bytes of an argv.
fn unique_dir() -> PathBuf {
    let d = PathBuf::from(format!("/run/observer-test/cri-{}", &new_uid()[..8]));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cgroup_roots() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// kubelet's QoS parents that do not exist yet (in any hierarchy): only those are removed.
fn missing_parents() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for root in cgroup_roots() {
        let mut d = root;
        for c in QOS_PARENT.split('/') {
            d = d.join(c);
            if !d.exists() {
                v.push(d.clone());
            }
        }
    }
    v
}

fn own_shims(sock: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = argv.split(|b| *b == 0).collect();
            argv.first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && argv
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == sock.as_bytes())
        })
        .collect()
}

fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # The sandbox's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which this host's root
  # lacks: containerd keeps scores at or above its own, as it does in a user namespace.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state, which would otherwise be /run/containerd/runc/k8s.io, shared.
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
    )
}
