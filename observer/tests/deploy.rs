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
    assert_eq!(alerts.len(), 4, "{alerts:?}");
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
    std::env::var("OBSERVER_BIN").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release/observer")
            .display()
            .to_string()
    })
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

#[test]
fn the_debian_package_holds_everything_and_lintian_finds_nothing() {
    let deb = deb();
    let d = deb.to_str().unwrap();
    let field = |f: &str| cmd("dpkg-deb", &["-f", d, f]).1.trim().to_string();
    assert_eq!(field("Package"), "observer");
    assert_eq!(field("Architecture"), "amd64");
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

    // The files are the ones in deploy/, the binary is static and runs.
    let dir = std::env::temp_dir().join(format!("observer-deb-{}", std::process::id()));
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
    let (_, ldd) = cmd("ldd", &[bin.to_str().unwrap()]);
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "{ldd}"
    );
    let (ok, version) = cmd(bin.to_str().unwrap(), &["--version"]);
    assert!(
        ok && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
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

    // No error and no warning (the overrides in deploy/debian/lintian-overrides say why).
    let (ok, out) = cmd("lintian", &["--fail-on", "error,warning", d]);
    assert!(ok, "lintian:\n{out}");
    assert!(
        !out.contains("E: ") && !out.contains("W: "),
        "lintian:\n{out}"
    );
}
