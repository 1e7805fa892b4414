//! `--web-config`: TLS and credentials on the agent's TCP listeners, configured like a
//! Prometheus exporter. Certificates are made at test time with openssl, password hashes
//! with htpasswd (as exporter-toolkit's documentation makes them); the clients are curl
//! (OpenSSL) and a real Prometheus (Go's TLS) scraping over TLS. Run as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::common::{agent::*, prometheus::Prometheus, *};

const T: Duration = Duration::from_secs(60);

/// A directory of keys and certificates made for one test, removed on drop.
struct Pki(PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("observer-test-web-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki(dir);
        pki.ca("ca");
        pki.ca("rogue-ca");
        pki.leaf(
            "server",
            "ca",
            "ec",
            1,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        );
        pki.leaf("client", "ca", "ec", 2, "extendedKeyUsage=clientAuth");
        pki.leaf(
            "rogue-client",
            "rogue-ca",
            "ec",
            3,
            "extendedKeyUsage=clientAuth",
        );
        pki
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }

    fn openssl(&self, args: &[&str]) -> String {
        run(Command::new("openssl").current_dir(&self.0).args(args))
    }

    fn newkey(kind: &str) -> Vec<&'static str> {
        match kind {
            "rsa" => vec!["-newkey", "rsa:2048"],
            _ => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        }
    }

    fn ca(&self, name: &str) {
        let mut a = vec!["req", "-x509", "-nodes", "-days", "2"];
        a.extend(Self::newkey("ec"));
        let (key, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN=observer test {name}"),
        );
        a.extend(["-keyout", &key, "-out", &crt, "-subj", &subj]);
        self.openssl(&a);
    }

    /// A certificate `name` signed by `ca` with extensions `ext`.
    fn leaf(&self, name: &str, ca: &str, kind: &str, serial: u32, ext: &str) {
        let ext_file = format!("{name}.ext");
        std::fs::write(
            self.0.join(&ext_file),
            format!("basicConstraints=CA:FALSE\n{ext}\n"),
        )
        .unwrap();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/CN={name}");
        let mut a = vec!["req", "-nodes"];
        a.extend(Self::newkey(kind));
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        self.openssl(&a);
        let (ca_crt, ca_key, serial) =
            (format!("{ca}.crt"), format!("{ca}.key"), serial.to_string());
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &ext_file,
        ]);
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.0.join(name), text).unwrap();
        self.path(name)
    }
}

/// A bcrypt hash as `htpasswd -nbBC 10 user password` prints it ($2y$).
fn htpasswd(user: &str, password: &str) -> String {
    let out = run(Command::new("htpasswd").args(["-nbBC", "10", user, password]));
    out.trim().split_once(':').unwrap().1.to_string()
}

/// What curl got: (status code, "000" when no HTTP answer came; response headers; body).
fn curl(url: &str, args: &[&str]) -> (String, String, String) {
    let tmp = std::env::temp_dir().join(format!("observer-test-curl-{}", std::process::id()));
    let (h, b) = (tmp.with_extension("h"), tmp.with_extension("b"));
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-w",
            "%{http_code}",
            "-D",
        ])
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let r = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        read(&h).to_ascii_lowercase(),
        read(&b),
    );
    let _ = std::fs::remove_file(&h);
    let _ = std::fs::remove_file(&b);
    r
}

/// The serial number of the certificate the server at `addr` presents.
fn served_serial(pki: &Pki, addr: &str) -> String {
    run(Command::new("sh").current_dir(&pki.0).args([
        "-c",
        &format!("openssl s_client -connect {addr} -CAfile ca.crt </dev/null 2>/dev/null | openssl x509 -noout -serial"),
    ]))
    .trim()
    .to_string()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn tls_and_credentials_guard_both_listeners_and_prometheus_scrapes_over_tls() {
    let pki = Pki::new("main");
    let password = "correct horse battery staple";
    let token = "observer-fleet-token-5f1c2a";
    // Paths relative to the config file, as exporter-toolkit resolves them.
    let web = pki.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {}\n\
             bearer_tokens:\n  fleet: {}\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            htpasswd("prometheus", password),
            htpasswd("", token),
        ),
    );
    let agent = Agent::start(&["--web-config", &web, "--metrics-listen", "127.0.0.1:0"]);
    let metrics = agent.metrics.clone().expect("metrics listener");
    let ca = pki.path("ca.crt");
    let basic = format!("prometheus:{password}");
    let bearer = format!("Authorization: Bearer {token}");
    for addr in [&agent.http, &metrics] {
        let url = |p: &str| format!("https://{addr}{p}");
        // No credentials: 401 naming both schemes; health and readiness stay open.
        let (code, headers, _) = curl(&url("/metrics"), &["--cacert", &ca]);
        assert_eq!(code, "401", "{addr}");
        assert!(
            headers.contains("www-authenticate: basic realm=\"observer\""),
            "{headers}"
        );
        assert!(
            headers.contains("www-authenticate: bearer realm=\"observer\""),
            "{headers}"
        );
        assert_eq!(curl(&url("/healthz"), &["--cacert", &ca]).0, "200");
        assert_eq!(curl(&url("/readyz"), &["--cacert", &ca]).0, "200");
        // Right credentials, either kind.
        let (code, headers, body) = curl(&url("/metrics"), &["--cacert", &ca, "-u", &basic]);
        assert_eq!(code, "200", "{body}");
        assert!(body.contains("observer_processes "), "{body}");
        assert!(
            headers.contains("x-content-type-options: nosniff"),
            "{headers}"
        );
        let (code, _, body) = curl(&url("/metrics"), &["--cacert", &ca, "-H", &bearer]);
        assert_eq!(code, "200", "{body}");
        // Wrong ones.
        for args in [
            vec!["-u", "prometheus:wrong"],
            vec!["-u", "nobody:correct horse battery staple"],
            vec!["-H", "Authorization: Bearer not-the-token"],
        ] {
            let mut a = vec!["--cacert", ca.as_str()];
            a.extend(args.iter().copied());
            assert_eq!(curl(&url("/metrics"), &a).0, "401", "{args:?}");
        }
        // Plain HTTP gets no answer from a TLS listener; an unknown CA is refused by curl.
        assert_eq!(
            curl(&format!("http://{addr}/metrics"), &["-u", &basic]).0,
            "000"
        );
        let rogue = pki.path("rogue-ca.crt");
        assert_eq!(
            curl(&url("/metrics"), &["--cacert", &rogue, "-u", &basic]).0,
            "000"
        );
    }
    // The JSON API is behind the same credentials; the unix socket needs none.
    for path in ["/v1/status", "/v1/processes"] {
        let api = format!("https://{}{path}", agent.http);
        assert_eq!(curl(&api, &["--cacert", &ca]).0, "401");
        let (code, _, body) = curl(&api, &["--cacert", &ca, "-u", &basic]);
        assert_eq!(code, "200");
        assert!(body.starts_with(['{', '[']), "{body}");
    }
    let (code, out, err) = agent.cli(&["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());

    // A real Prometheus over TLS: basic auth and a bearer token succeed on both listeners;
    // a wrong password and an untrusted server certificate fail.
    let dir = &pki.0;
    std::fs::write(dir.join("password"), password).unwrap();
    std::fs::write(dir.join("wrong"), "wrong").unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    let job = |name: &str, target: &str, ca: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n{auth}    static_configs:\n      - targets: ['{target}']\n",
            pki.path(ca)
        )
    };
    let basic_auth = |file: &str| {
        format!(
            "    basic_auth:\n      username: prometheus\n      password_file: {}\n",
            pki.path(file)
        )
    };
    let token_auth = format!(
        "    authorization:\n      credentials_file: {}\n",
        pki.path("token")
    );
    let prom = Prometheus::start_with(
        &[
            job("basic", &metrics, "ca.crt", &basic_auth("password")),
            job("bearer", &metrics, "ca.crt", &token_auth),
            job("api", &agent.http, "ca.crt", &basic_auth("password")),
            job("wrong-password", &metrics, "ca.crt", &basic_auth("wrong")),
            job(
                "untrusted",
                &metrics,
                "rogue-ca.crt",
                &basic_auth("password"),
            ),
        ]
        .concat(),
    );
    // A scrape may time out (1 s, Prometheus's interval here) on a loaded machine: the
    // targets are asked until each is as it must be, and checked as they were last.
    let as_it_must_be = |(job, health, error): &(String, String, String)| match job.as_str() {
        "basic" | "bearer" | "api" => health == "up",
        "wrong-password" => health == "down" && error.contains("401"),
        "untrusted" => health == "down" && error.contains("certificate"),
        _ => false,
    };
    let targets = last_until(
        T,
        || prom.targets(),
        |t| t.len() == 5 && t.iter().all(as_it_must_be),
    );
    assert_eq!(targets.len(), 5, "{targets:?}");
    for (job, health, error) in &targets {
        match job.as_str() {
            "basic" | "bearer" | "api" => assert_eq!(health, "up", "{job}: {error}"),
            "wrong-password" => assert!(
                health == "down" && error.contains("401"),
                "{job}: {health} {error}"
            ),
            "untrusted" => assert!(
                health == "down" && error.contains("certificate"),
                "{job}: {health} {error}"
            ),
            other => panic!("unexpected job {other}"),
        }
    }
    let n = prom
        .scalar("observer_processes{job=\"basic\"}")
        .expect("scraped value");
    assert!(n > 10.0, "{n}");
    // The refusals are counted per listener (the wrong-password job's scrapes among them).
    let refused = eventually(T, "refusals in a scrape", || {
        prom.scalar("observer_api_unauthorized_total{job=\"basic\",listener=\"metrics\"}")
            .filter(|&v| v >= 2.0)
    });
    assert!(refused >= 2.0);
    let failed = prom
        .scalar("observer_api_tls_handshake_failures_total{job=\"basic\",listener=\"metrics\"}")
        .unwrap();
    assert!(failed >= 2.0, "plain HTTP and the rogue CA: {failed}");

    // A renewed certificate is served without a restart; a broken renewal keeps the last
    // good one in service.
    assert_eq!(served_serial(&pki, &metrics), "serial=01");
    pki.leaf(
        "renewed",
        "ca",
        "rsa",
        42,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    );
    for ext in ["key", "crt"] {
        std::fs::rename(
            dir.join(format!("renewed.{ext}")),
            dir.join(format!("server.{ext}")),
        )
        .unwrap();
    }
    assert_eq!(served_serial(&pki, &metrics), "serial=2A");
    std::fs::write(dir.join("server.key"), "not a key\n").unwrap();
    assert_eq!(served_serial(&pki, &metrics), "serial=2A");
    let (code, _, _) = curl(
        &format!("https://{metrics}/metrics"),
        &["--cacert", &ca, "-u", &basic],
    );
    assert_eq!(code, "200");
}

/// A process whose command line is the test's secret, killed on drop.
struct Secret(std::process::Child, String);

impl Secret {
    fn start() -> Secret {
        let argv0 = format!("observer-hidden-{}", std::process::id());
        let child = Command::new("bash")
            .args(["-c", &format!("exec -a {argv0} sleep 1000")])
            .spawn()
            .unwrap();
        Secret(child, argv0)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every route that shows processes (command lines, comm, cgroups, signals).
const VIEWS: &[&str] = &[
    "/v1/containers",
    "/v1/processes",
    "/v1/processes?container=x",
    "/v1/containers/x/tree",
    "/v1/pods",
    "/v1/pods/x/tree",
    "/v1/zombies",
    "/v1/containers/x/history",
    "/v1/why/1",
    "/v1/events",
    "/v1/signals",
];

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn process_views_answer_on_tcp_only_to_clients_that_authenticate() {
    let secret = Secret::start();
    // No --web-config: TCP serves health, readiness, metrics and the agent's status; every
    // process view is refused with where to find it, and nothing of a process leaks.
    let agent = Agent::start(&[]);
    for path in VIEWS {
        let r = agent.http_get(path);
        assert_eq!(status(&r), 403, "{path}: {r}");
        let body: serde_json::Value = serde_json::from_str(&http_body(&r)).unwrap();
        assert_eq!(body["error"], "forbidden", "{path}");
        let m = body["message"].as_str().unwrap();
        assert!(m.contains("--web-config"), "{m}");
        assert!(m.contains(&*agent.socket.to_string_lossy()), "{m}");
        assert!(!r.contains(&secret.1), "{path} leaks the command line");
    }
    for path in ["/healthz", "/readyz", "/metrics", "/v1/status"] {
        assert_eq!(status(&agent.http_get(path)), 200, "{path}");
    }
    assert_eq!(status(&agent.http_get("/nope")), 404);
    // The unix socket (root only) serves them, and the CLI reads them there.
    let ps = eventually(T, "the secret process over the socket", || {
        let r = agent.socket_get("/v1/processes");
        (status(&r) == 200 && r.contains(&secret.1)).then_some(r)
    });
    assert!(ps.contains(&secret.1));
    assert!(agent.cli(&["ps"]).1.contains(&secret.1));
    drop(agent);

    // A bearer token required on TCP: the views answer there to the token, and only to it.
    let agent = Agent::start_with_token(&[]);
    for path in VIEWS {
        let r = agent.http_get(path);
        assert_eq!(status(&r), 401, "{path}: {r}");
        assert!(!r.contains(&secret.1), "{path} leaks the command line");
    }
    let r = eventually(T, "the secret process over TCP with the token", || {
        let r = agent.http_get_with_token("/v1/processes");
        (status(&r) == 200 && r.contains(&secret.1)).then_some(r)
    });
    assert!(r.contains(&secret.1));
    assert_eq!(status(&agent.http_get("/metrics")), 401);
    assert_eq!(status(&agent.http_get("/healthz")), 200);
    drop(agent);

    // TLS alone authenticates nobody: still refused.
    let pki = Pki::new("tls-only");
    let web = pki.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let agent = Agent::start(&["--web-config", &web]);
    let ca = pki.path("ca.crt");
    let url = |p: &str| format!("https://{}{p}", agent.http);
    let (code, _, body) = curl(&url("/v1/processes"), &["--cacert", &ca]);
    assert_eq!(code, "403", "{body}");
    assert!(!body.contains(&secret.1));
    assert_eq!(curl(&url("/metrics"), &["--cacert", &ca]).0, "200");
}

#[test]
fn client_certificates_and_tls13_only() {
    let pki = Pki::new("mtls");
    // The certificate inline this time, with client certificates required.
    let indent = |f: &str| {
        std::fs::read_to_string(pki.0.join(f))
            .unwrap()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let web = pki.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n",
            indent("server.crt"),
            indent("server.key")
        ),
    );
    let metrics = free_addr();
    let agent = Agent::start(&["--web-config", &web, "--metrics-listen", &metrics]);
    let url = format!("https://{metrics}/metrics");
    let ca = pki.path("ca.crt");
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let (code, _, body) = curl(&url, &["--cacert", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("observer_processes "));
    // No client certificate, one from another CA, or TLS 1.2: no HTTP at all.
    assert_eq!(curl(&url, &["--cacert", &ca]).0, "000");
    let (rc, rk) = (pki.path("rogue-client.crt"), pki.path("rogue-client.key"));
    assert_eq!(
        curl(&url, &["--cacert", &ca, "--cert", &rc, "--key", &rk]).0,
        "000"
    );
    assert_eq!(
        curl(
            &url,
            &[
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "--tls-max",
                "1.2"
            ]
        )
        .0,
        "000"
    );
    // The API listener is under the same rule; a required client certificate
    // authenticates, so the process views answer there too.
    for path in ["/v1/status", "/v1/processes"] {
        let api = format!("https://{}{path}", agent.http);
        assert_eq!(curl(&api, &["--cacert", &ca]).0, "000");
        assert_eq!(
            curl(&api, &["--cacert", &ca, "--cert", &cert, "--key", &key]).0,
            "200",
            "{path}"
        );
    }
    // Prometheus with its client certificate.
    let prom = Prometheus::start_with(&format!(
        "  - job_name: mtls\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n      cert_file: {cert}\n      key_file: {key}\n    static_configs:\n      - targets: ['{metrics}']\n"
    ));
    eventually(T, "the mTLS target up", || {
        prom.scalar("up{job=\"mtls\"}").filter(|&v| v == 1.0)
    });
}

#[test]
fn a_bad_web_config_stops_the_agent_with_the_key_or_file_at_fault() {
    let pki = Pki::new("bad");
    let hash = htpasswd("a", "b");
    let socket =
        std::env::temp_dir().join(format!("observer-test-web-bad-{}.sock", std::process::id()));
    let cases: Vec<(String, String)> = vec![
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into(), pki.path("missing.crt")),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n".into(), "the key does not go with the certificate".into()),
        ("tls_server_config:\n  cert_file: web.yml\n  key_file: server.key\n".into(), "no PEM certificate".into()),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n".into(), "client_ca_file".into()),
        (format!("basic_auth_users:\n  a: {hash}\nbasic_auth_user:\n  b: {hash}\n"), "unknown field `basic_auth_user`".into()),
        ("basic_auth_users:\n  alice: plaintext\n".into(), "basic_auth_users.alice: not a bcrypt hash".into()),
    ];
    for (text, says) in cases {
        let web = pki.write("web.yml", &text);
        let out = observer()
            .args([
                "agent",
                "--web-config",
                &web,
                "--listen",
                "127.0.0.1:0",
                "--socket",
            ])
            .arg(&socket)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(&format!("web config {web}")), "{text}: {err}");
        assert!(err.contains(&says), "{text}: wanted {says:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!socket.exists(), "{text}: the agent started");
    }
    let out = observer()
        .args(["agent", "--web-config", "/nonexistent/web.yml", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("web config /nonexistent/web.yml: No such file"));
}
