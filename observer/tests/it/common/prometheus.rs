//! A real Prometheus (Debian's `prometheus`) scraping for a test, on an ephemeral port with
//! its own storage; stopped and removed on drop.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{eventually, http_body, http_get};

const T: Duration = Duration::from_secs(60);

pub struct Prometheus {
    child: Child,
    pub addr: String,
    pub dir: PathBuf,
}

/// A body over plain HTTP.
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    http_get(addr, path).map(|r| http_body(&r))
}

impl Prometheus {
    /// Scrapes one plain-HTTP target every second (job `observer`).
    pub fn start(target: &str) -> Prometheus {
        Prometheus::start_with(&format!(
            "  - job_name: observer\n    static_configs:\n      - targets: ['{target}']\n"
        ))
    }

    /// Scrapes with `scrape_configs` (YAML list items, indented by two) every second.
    pub fn start_with(scrape_configs: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("observer-test-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package `prometheus`)");
        let p = Prometheus { child, addr, dir };
        eventually(T, "prometheus to be ready", || {
            get(&p.addr, "/-/ready")
                .ok()
                .filter(|b| b.contains("Ready"))
                .map(|_| ())
        });
        p
    }

    pub fn query(&self, expr: &str) -> Value {
        let body = get(
            &self.addr,
            &format!(
                "/api/v1/query?query={}",
                observer::api::client::urlencode(expr)
            ),
        )
        .expect("query");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].clone()
    }

    pub fn scalar(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        r.as_array()?.first()?["value"][1].as_str()?.parse().ok()
    }

    /// The active targets (/api/v1/targets): job, health and last error of each.
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let body = get(&self.addr, "/api/v1/targets?state=active").expect("targets");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        v["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                    s("health"),
                    s("lastError"),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
