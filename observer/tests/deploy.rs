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
