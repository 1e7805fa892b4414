//! The agent's memory bounds: ended containers are evicted past their retention and over
//! --max-containers, and counted (status and /metrics); live ones are kept, listed and
//! answered for. Run as root (the launcher makes the containers).

use std::time::Duration;

use serde_json::Value;

use crate::common::{agent::*, launcher::Ctr, *};

#[test]
fn ended_containers_are_evicted_and_counted_live_ones_stay() {
    let agent = Agent::start(&["--max-containers", "3", "--container-retention", "1s"]);
    let tag = std::process::id() % 100_000;
    let live = Ctr::start(&format!("ev-live-{tag}"), &[], &["sleep", "100000"]);
    let ended: Vec<Ctr> = (0..5).map(|i| Ctr(format!("ev-{i}-{tag}"))).collect();
    for c in &ended {
        let out = observer()
            .args(["run", "--name", &c.0, "--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "observer run {}: {out:?}", c.0);
        let _ = observer().args(["rm", &c.0]).output();
    }
    let st = eventually(
        Duration::from_secs(30),
        "5 ended containers evicted",
        || {
            let st: Value =
                serde_json::from_str(&http_body(&agent.http_get("/v1/status"))).unwrap();
            (st["evictions"]["containers"].as_u64()? >= 5).then_some(st)
        },
    );
    assert!(
        st["retained"]["containers"].as_u64().unwrap() <= 3,
        "over --max-containers: {st:#}"
    );
    let metrics = agent.http_get("/metrics");
    let evicted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("observer_evictions_total{what=\"container\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        evicted >= Some(5.0),
        "observer_evictions_total: {evicted:?}"
    );
    // The live container was never evicted: still listed, its tree still answers.
    let (code, out, err) = agent.cli(&["containers", "--no-headers"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&live.0), "live container evicted: {out}");
    for c in &ended {
        assert!(!out.contains(&c.0), "{} still listed: {out}", c.0);
    }
    let tree = agent.json(&["tree", &live.0]);
    assert_eq!(tree["processes"][0]["comm"], "sleep", "{tree:#}");
}
