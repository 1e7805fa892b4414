//! What ships in deploy/ is checked by the tools that consume it: the Prometheus scrape
//! config and rules by promtool (`check config`, `check rules`, and `test rules` unit tests
//! in which every alert fires and stays quiet when it should). `cargo xtask test` passes a
//! promtool with Kubernetes service discovery in OBSERVER_PROMTOOL (Debian 12's has none).

use std::{path::PathBuf, process::Command};

fn deploy(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn promtool(args: &[&str]) -> String {
    let bin = std::env::var("OBSERVER_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&bin)
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{bin} {args:?}:\n{text}");
    text
}

#[test]
fn prometheus_config_and_rules_pass_promtool_and_every_alert_is_unit_tested() {
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    promtool(&["check", "rules", "observer.rules.yml"]);
    let out = promtool(&["test", "rules", "observer.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a test where it fires (exp_alerts with labels) and one where it does not.
    let rules = std::fs::read_to_string(deploy("prometheus/observer.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/observer.rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    for a in alerts {
        let blocks: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|b| b.contains(&format!("alertname: {a}\n")))
            .collect();
        assert!(
            blocks.iter().any(|b| b.contains("exp_labels:")),
            "{a}: no test where it fires"
        );
        assert!(
            blocks.iter().any(|b| b.contains("exp_alerts: []")),
            "{a}: no test where it stays quiet"
        );
    }
}

fn observer_bin() -> String {
    std::env::var("OBSERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_observer").to_string())
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definitions() {
    let out = Command::new(observer_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["agent", "tree", "--metrics-listen", "--print-config"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    let check = Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(check.success(), "bash -n rejects the completion script");
    for shell in ["zsh", "fish"] {
        let out = Command::new(observer_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("agent"));
    }
    let out = Command::new(observer_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is refused");

    let dir = std::env::temp_dir().join(format!("observer-test-man-{}", std::process::id()));
    let out = Command::new(observer_bin())
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let pages: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let texts: Vec<String> = pages
        .iter()
        .map(|p| std::fs::read_to_string(dir.join(p)).unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    for want in [
        "observer.1",
        "observer-agent.1",
        "observer-tree.1",
        "observer-run.1",
    ] {
        assert!(
            pages.iter().any(|p| p == want),
            "{want} missing from {pages:?}"
        );
    }
    assert!(
        !pages.iter().any(|p| p.contains("__")),
        "a hidden command got a page"
    );
    for t in &texts {
        assert!(
            t.starts_with(".ie") || t.contains(".TH "),
            "not roff: {}",
            &t[..80.min(t.len())]
        );
    }
}

/// The .deb `cargo xtask package` built (`cargo xtask test` passes it in OBSERVER_DEB).
fn deb() -> PathBuf {
    PathBuf::from(std::env::var("OBSERVER_DEB").expect(
        "OBSERVER_DEB: build the package with `cargo xtask package` (cargo xtask test does)",
    ))
}

fn cmd(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The packages `cargo xtask package` built beside OBSERVER_DEB (the host's machine's):
/// observer_<version>-1_<arch>.deb for amd64 and, when `--arch arm64` built it, arm64.
fn debs() -> Vec<(PathBuf, &'static str)> {
    let deb = deb();
    let dir = deb.parent().unwrap();
    let name = |arch: &str| format!("observer_{}-1_{arch}.deb", env!("CARGO_PKG_VERSION"));
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    assert_eq!(deb.file_name().unwrap().to_str(), Some(name(host).as_str()));
    let mut all = vec![(deb.clone(), host)];
    for other in ["amd64", "arm64"].into_iter().filter(|a| *a != host) {
        if dir.join(name(other)).is_file() {
            all.push((dir.join(name(other)), other));
        }
    }
    all
}

#[test]
fn the_debian_package_holds_everything_and_lintian_finds_nothing() {
    for (deb, arch) in debs() {
        eprintln!("checking {}", deb.display());
        let d = deb.to_str().unwrap();
        package_fields_and_contents(d, arch);
        package_files(d, arch);
        // No error and no warning (the overrides in deploy/debian/lintian-overrides say why).
        let (ok, out) = cmd("lintian", &["--fail-on", "error,warning", d]);
        assert!(ok, "lintian:\n{out}");
        assert!(
            !out.contains("E: ") && !out.contains("W: "),
            "lintian:\n{out}"
        );
    }
}

/// The control fields, and every file a user looks for.
fn package_fields_and_contents(d: &str, arch: &str) {
    let field = |f: &str| cmd("dpkg-deb", &["-f", d, f]).1.trim().to_string();
    assert_eq!(field("Package"), "observer");
    assert_eq!(field("Architecture"), arch);
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));

    let (ok, list) = cmd("dpkg-deb", &["-c", d]);
    assert!(ok, "{list}");
    let mut want = vec![
        "./usr/bin/observer".to_string(),
        "./usr/lib/systemd/system/observer.service".into(),
        "./etc/observer/config.toml".into(),
        "./usr/share/bash-completion/completions/observer".into(),
        "./usr/share/zsh/vendor-completions/_observer".into(),
        "./usr/share/fish/vendor_completions.d/observer.fish".into(),
        "./usr/share/man/man1/observer.1.gz".into(),
        "./usr/share/doc/observer/copyright".into(),
        "./usr/share/doc/observer/changelog.Debian.gz".into(),
    ];
    for sub in [
        "agent",
        "tree",
        "ps",
        "containers",
        "zombies",
        "events",
        "run",
    ] {
        want.push(format!("./usr/share/man/man1/observer-{sub}.1.gz"));
    }
    for w in &want {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {w}"))),
            "{w} not in the package:\n{list}"
        );
    }
}

/// The files are the ones in deploy/; the binary is static, for the package's machine, and
/// (on this machine's) runs; the unit is enabled.
fn package_files(d: &str, arch: &str) {
    // The files are the ones in deploy/, the binary is static and runs.
    let dir = std::env::temp_dir().join(format!("observer-deb-{arch}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, out) = cmd("dpkg-deb", &["-x", d, dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    let same = |packaged: &str, source: &str| {
        assert_eq!(
            std::fs::read(dir.join(packaged)).unwrap(),
            std::fs::read(deploy(source)).unwrap(),
            "{packaged} differs from deploy/{source}"
        );
    };
    same(
        "usr/lib/systemd/system/observer.service",
        "systemd/observer.service",
    );
    same("etc/observer/config.toml", "config.toml");
    let bin = dir.join("usr/bin/observer");
    let (ok, headers) = cmd("readelf", &["-W", "-h", "-l", bin.to_str().unwrap()]);
    assert!(ok && !headers.contains("INTERP"), "not static: {headers}");
    let machine = if arch == "arm64" { "AArch64" } else { "X86-64" };
    assert!(
        headers
            .lines()
            .any(|l| l.trim().starts_with("Machine:") && l.contains(machine)),
        "not an {arch} binary: {headers}"
    );
    if cfg!(target_arch = "aarch64") == (arch == "arm64") {
        let (ok, version) = cmd(bin.to_str().unwrap(), &["--version"]);
        assert!(
            ok && version.contains(env!("CARGO_PKG_VERSION")),
            "{version}"
        );
    }
    let completion = dir.join("usr/share/bash-completion/completions/observer");
    let (ok, out) = cmd("bash", &["-n", completion.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, conffiles) = cmd(
        "sh",
        &[
            "-c",
            &format!("dpkg-deb --ctrl-tarfile {d} | tar xO ./conffiles"),
        ],
    );
    assert!(
        ok && conffiles.trim() == "/etc/observer/config.toml",
        "{conffiles}"
    );
    let (ok, postinst) = cmd(
        "sh",
        &[
            "-c",
            &format!("dpkg-deb --ctrl-tarfile {d} | tar xO ./postinst"),
        ],
    );
    assert!(
        ok && postinst.contains("deb-systemd-helper enable observer.service"),
        "the package enables the unit: {postinst}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The venv `cargo xtask test` makes with the Kubernetes validators (OBSERVER_KUBE_VENV).
fn kube_venv() -> PathBuf {
    PathBuf::from(std::env::var("OBSERVER_KUBE_VENV").expect(
        "OBSERVER_KUBE_VENV: the venv with kubernetes-validate (cargo xtask test makes it)",
    ))
}

/// A YAML manifest as JSON (PyYAML from the validators' venv: no YAML crate needed here).
fn manifest(name: &str) -> serde_json::Value {
    let path = deploy(&format!("kubernetes/{name}"));
    let (ok, out) = cmd(
        kube_venv().join("python").to_str().unwrap(),
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn kubernetes_manifests_are_valid_and_agree_with_the_image_unit_and_agent() {
    let venv = kube_venv();
    let dir = deploy("kubernetes");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "daemonset.yaml",
            "namespace.yaml",
            "service.yaml",
            "serviceaccount.yaml",
            "servicemonitor.yaml"
        ]
    );
    for n in &names {
        let path = dir.join(n);
        let (ok, out) = if n == "servicemonitor.yaml" {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/it/tools/validate_servicemonitor.py");
            cmd(
                venv.join("python").to_str().unwrap(),
                &[script.to_str().unwrap(), path.to_str().unwrap()],
            )
        } else {
            cmd(
                venv.join("kubernetes-validate").to_str().unwrap(),
                &["--strict", path.to_str().unwrap()],
            )
        };
        assert!(
            ok && !out.contains("WARN") && !out.contains("ERROR"),
            "{n}: {out}"
        );
    }

    let ds = manifest("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(c["image"], format!("observer:{version}"));
    let containerfile =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Containerfile"))
            .unwrap();
    assert!(
        containerfile.contains(&format!("-t observer:{version} ")),
        "{containerfile}"
    );
    // The node's name for OTLP records (k8s.node.name) from the downward API.
    let node = c["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "NODE_NAME"))
        .expect("NODE_NAME in the container's env");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    // The metrics listener: flag, container port, probes, scrape annotations, Service, monitor.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "agent");
    let listen = args
        .windows(2)
        .find(|w| w[0] == "--metrics-listen")
        .expect("--metrics-listen")[1];
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(containerfile.contains(&format!("EXPOSE {port}")));
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics");
    }
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], port.to_string());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let svc = manifest("service.yaml");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["ports"][0]["port"], port);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let sm = manifest("servicemonitor.yaml");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let app = &ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"];
    assert_eq!(&svc["spec"]["selector"]["app.kubernetes.io/name"], app);
    assert_eq!(
        &sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        app
    );
    let prom = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    assert!(prom.contains(&format!("regex: {}", app.as_str().unwrap())));

    // The capabilities are the systemd unit's.
    let unit = std::fs::read_to_string(deploy("systemd/observer.service")).unwrap();
    let unit_caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let sc = &c["securityContext"];
    let added: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(added, unit_caps);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");

    // Mounts: the kernel's file systems and every runtime directory the agent reads by
    // default (deploy/config.toml), read-only from the host; the socket's directory writable.
    let config = std::fs::read_to_string(deploy("config.toml")).unwrap();
    let mut want: Vec<String> = ["/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing"]
        .map(String::from)
        .to_vec();
    for key in ["docker_root", "containerd_state", "storage_root"] {
        let line = config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} = ")))
            .unwrap_or_else(|| panic!("{key} in deploy/config.toml"));
        want.extend(line.split('"').skip(1).step_by(2).map(String::from));
    }
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    for path in &want {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(m["readOnly"], true, "{path}");
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        assert_eq!(
            v["hostPath"]["path"],
            path.as_str(),
            "{path} comes from the host"
        );
    }
    let socket_dir = config
        .lines()
        .find_map(|l| l.strip_prefix("# socket = "))
        .map(|s| s.trim_matches('"').rsplit_once('/').unwrap().0.to_string())
        .unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == socket_dir.as_str() && m["readOnly"].is_null()));
    // The history store's directory: the node's own, writable, and systemd's StateDirectory.
    let state_dir = config
        .lines()
        .find_map(|l| l.strip_prefix("# state_dir = "))
        .map(|s| s.trim_matches('"').to_string())
        .expect("state_dir in deploy/config.toml");
    let m = mounts
        .iter()
        .find(|m| m["mountPath"] == state_dir.as_str())
        .unwrap_or_else(|| panic!("{state_dir} not mounted"));
    assert!(m["readOnly"].is_null(), "{state_dir} is written");
    let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
    assert_eq!(
        v["hostPath"]["path"],
        state_dir.as_str(),
        "kept on the node"
    );
    let unit = std::fs::read_to_string(deploy("systemd/observer.service")).unwrap();
    let name = state_dir.strip_prefix("/var/lib/").unwrap();
    assert!(
        unit.lines().any(|l| l == format!("StateDirectory={name}")),
        "the unit's StateDirectory is {state_dir}"
    );
}
