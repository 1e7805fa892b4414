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
