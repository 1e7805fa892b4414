//! OTLP/HTTP with protobuf bodies: one POST per batch to the collector's logs path, over
//! one kept-alive HTTP/1.1 connection (TLS with rustls when the URL says https). Its answer
//! is sorted the way the OTLP specification asks: 2xx is done (with the records a partial
//! success rejected), 429/502/503/504 and failed connections are tried again (after
//! `Retry-After` when the collector says), anything else is final for that batch.

use std::{sync::Arc, time::Duration};

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Bytes,
    client::conn::http1,
    header::{HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, HOST, RETRY_AFTER},
    Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use rustls::{pki_types::ServerName, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where the OTLP sink sends, and how (`--otlp-*`).
#[derive(Clone, Debug, Default)]
pub(crate) struct OtlpConfig {
    /// `http(s)://host:port` (the logs path `/v1/logs` is added) or the full URL.
    pub(crate) endpoint: String,
    /// PEM roots to verify the collector with (else the system's bundle).
    pub(crate) ca: Option<std::path::PathBuf>,
    /// `name=value` headers on every request (authentication).
    pub(crate) headers: Vec<String>,
    /// How long one request may take, connection included.
    pub(crate) timeout: Duration,
    /// Bodies are gzip-compressed (`Content-Encoding: gzip`).
    pub(crate) gzip: bool,
}

/// A collector's answer to one batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Taken; `rejected` of the records were not (a partial success).
    Sent { rejected: u64 },
    /// Worth trying again (after the delay the collector asked for, if any).
    Retry(String, Option<Duration>),
    /// Not worth trying again.
    Failed(String),
}

/// The connection's far end, parsed once at start.
pub(super) struct Client {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    /// The kept compressor (None: bodies go uncompressed).
    gzip: Option<super::gzip::Gzip>,
    conn: Option<http1::SendRequest<Full<Bytes>>>,
}

/// The system's CA bundles, where Debian, RHEL, SUSE and Alpine keep them.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl Client {
    /// Everything checked before the agent starts: the URL, the headers, the CA file.
    pub(super) fn new(cfg: &OtlpConfig) -> anyhow::Result<Client> {
        let uri = logs_uri(&cfg.endpoint)?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().context("the OTLP endpoint has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| anyhow!("OTLP endpoint host `{host}`: {e}"))?;
            Some((connector(cfg.ca.as_deref())?, name))
        } else {
            if cfg.ca.is_some() {
                bail!("--otlp-ca is given but the OTLP endpoint is not https");
            }
            None
        };
        let headers = cfg
            .headers
            .iter()
            .map(|h| header(h))
            .collect::<anyhow::Result<_>>()?;
        Ok(Client {
            uri,
            host,
            port,
            tls,
            headers,
            timeout: cfg.timeout,
            gzip: cfg.gzip.then(super::gzip::Gzip::default),
            conn: None,
        })
    }

    pub(super) fn url(&self) -> String {
        self.uri.to_string()
    }

    /// An encoded request as it is sent (compressed once, for every try).
    pub(super) fn body(&mut self, encoded: &[u8]) -> Bytes {
        match &mut self.gzip {
            Some(g) => Bytes::from(g.compress(encoded)),
            None => Bytes::copy_from_slice(encoded),
        }
    }

    /// Sends one encoded ExportLogsServiceRequest, within the timeout.
    pub(super) async fn post(&mut self, body: Bytes) -> Outcome {
        match tokio::time::timeout(self.timeout, self.try_post(body)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                self.conn = None;
                Outcome::Retry(format!("{e:#}"), None)
            }
            Err(_) => {
                // A collector that never answers: a new connection next time.
                self.conn = None;
                Outcome::Retry(format!("no answer within {:?}", self.timeout), None)
            }
        }
    }

    async fn try_post(&mut self, body: Bytes) -> anyhow::Result<Outcome> {
        // Origin-form (`/v1/logs`): the whole URL is for proxies.
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::post(path)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(HOST, self.authority())
            .body(Full::new(body))?;
        if self.gzip.is_some() {
            req.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (k, v) in &self.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        let conn = self.connected().await?;
        let resp = conn.send_request(req).await.context("sending")?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The answer is read whole (a connection is reused only after it), 1 MiB at most.
        let bytes = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?
            .to_bytes();
        Ok(outcome(status, &bytes, retry_after))
    }

    fn authority(&self) -> String {
        self.uri
            .authority()
            .map_or_else(|| self.host.clone(), |a| a.as_str().to_string())
    }

    /// The kept connection, or a new one.
    async fn connected(&mut self) -> anyhow::Result<&mut http1::SendRequest<Full<Bytes>>> {
        if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
            let _ = tcp.set_nodelay(true);
            let sender = match &self.tls {
                Some((tls, name)) => {
                    let s = tls
                        .connect(name.clone(), tcp)
                        .await
                        .context("TLS handshake")?;
                    handshake(s).await?
                }
                None => handshake(tcp).await?,
            };
            self.conn = Some(sender);
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.ready().await.context("connection")?;
        Ok(conn)
    }
}

async fn handshake<S>(io: S) -> anyhow::Result<http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `data` gzip-compressed at the fastest level: compression is the largest part of a
/// record's cost (docs/export.md, "What it costs"), and level 1 already makes a batch of
/// records a tenth of its size.
#[cfg(test)]
pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    super::gzip::Gzip::default().compress(data)
}

/// What a status and body say (OTLP/HTTP "Failures" and "Partial Success").
fn outcome(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    if status.is_success() {
        let rejected = ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0));
        return Outcome::Sent { rejected };
    }
    let what = format!(
        "{status}{}",
        std::str::from_utf8(body)
            .ok()
            .filter(|t| !t.is_empty() && t.len() < 200 && !t.contains(char::is_control))
            .map(|t| format!(": {t}"))
            .unwrap_or_default()
    );
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry(what, retry_after),
        _ => Outcome::Failed(what),
    }
}

/// The logs URL: a base URL without a path gets OTLP's `/v1/logs`.
fn logs_uri(endpoint: &str) -> anyhow::Result<Uri> {
    // user:password@ would go out in the Host header and into logs: refused, unechoed.
    let authority = endpoint.split("://").nth(1).unwrap_or(endpoint);
    if authority
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .contains('@')
    {
        bail!(
            "--otlp-endpoint: credentials in the URL are not supported; give them as a header \
             (--otlp-header 'Authorization: Basic …')"
        );
    }
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| anyhow!("--otlp-endpoint `{endpoint}`: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("--otlp-endpoint `{endpoint}`: http:// or https:// (OTLP/HTTP)"),
    }
    if matches!(uri.path(), "" | "/") && uri.query().is_none() {
        let base = endpoint.trim_end_matches('/');
        return format!("{base}/v1/logs")
            .parse()
            .map_err(|e| anyhow!("--otlp-endpoint `{endpoint}`: {e}"));
    }
    Ok(uri)
}

/// `name=value` (or `name: value`).
fn header(h: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    // At the first separator: `Authorization: Basic …==` keeps its base64 padding.
    let (k, v) = h
        .find(['=', ':'])
        .map(|i| (&h[..i], &h[i + 1..]))
        // Never echo the setting: it may be a credential without its name.
        .ok_or_else(|| anyhow!("--otlp-header: expected `name=value` or `name: value`"))?;
    let name = HeaderName::try_from(k.trim()).map_err(|e| anyhow!("--otlp-header name: {e}"))?;
    let mut value =
        HeaderValue::try_from(v.trim()).map_err(|e| anyhow!("--otlp-header `{k}` value: {e}"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// rustls with the ring provider and `ca`'s roots, or the system bundle's.
fn connector(ca: Option<&std::path::Path>) -> anyhow::Result<TlsConnector> {
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
            .find(|p| p.exists())
            .context("no CA bundle on this system for the https OTLP endpoint: give --otlp-ca")?,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| anyhow!("CA file {}: {e}", path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("CA file {}: no certificate in it", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_gets_the_logs_path_and_a_full_one_is_kept() {
        assert_eq!(
            logs_uri("http://127.0.0.1:4318").unwrap().to_string(),
            "http://127.0.0.1:4318/v1/logs"
        );
        assert_eq!(
            logs_uri("https://otel.example:4318/").unwrap().to_string(),
            "https://otel.example:4318/v1/logs"
        );
        assert_eq!(
            logs_uri("http://gw/otlp/v1/logs").unwrap().path(),
            "/otlp/v1/logs"
        );
        assert!(logs_uri("grpc://x:4317").is_err());
        let e = logs_uri("https://me:s3cret@otel.example:4318").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(
            logs_uri("http://gw/otlp/v1/logs?u=a@b").is_ok(),
            "an @ in the query"
        );
        assert!(logs_uri("not a url").is_err());
    }

    #[test]
    fn headers_are_name_value_and_hidden_from_debug_output() {
        let (k, v) = header("Authorization=Bearer abc=").unwrap();
        assert_eq!(k, "authorization");
        assert_eq!(v.to_str().unwrap(), "Bearer abc=");
        assert!(v.is_sensitive());
        assert!(header("X-Scope-OrgID: tenant-1").is_ok());
        let (k, v) = header("Authorization: Basic dXNlcjpwYXNz==").unwrap();
        assert_eq!(
            (k.as_str(), v.to_str().unwrap()),
            ("authorization", "Basic dXNlcjpwYXNz==")
        );
        assert!(header("novalue").is_err());
        assert!(header("bad name=x").is_err());
    }

    #[test]
    fn answers_are_sorted_as_the_otlp_specification_says() {
        let partial = ExportLogsServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                    rejected_log_records: 3,
                    error_message: "too old".into(),
                },
            ),
        }
        .encode_to_vec();
        assert_eq!(
            outcome(StatusCode::OK, &partial, None),
            Outcome::Sent { rejected: 3 }
        );
        assert_eq!(
            outcome(StatusCode::OK, b"", None),
            Outcome::Sent { rejected: 0 }
        );
        let later = Some(Duration::from_secs(2));
        assert!(matches!(
            outcome(StatusCode::TOO_MANY_REQUESTS, b"slow down", later),
            Outcome::Retry(w, d) if w.contains("slow down") && d == later
        ));
        assert!(matches!(
            outcome(StatusCode::SERVICE_UNAVAILABLE, b"", None),
            Outcome::Retry(..)
        ));
        assert!(matches!(
            outcome(StatusCode::UNAUTHORIZED, b"", None),
            Outcome::Failed(w) if w.contains("401")
        ));
    }

    #[test]
    fn a_post_is_origin_form_with_the_headers_and_a_protobuf_body() {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_lowercase());
            }
            (&s).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            head
        });
        let mut c = Client::new(&OtlpConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            headers: vec!["X-Scope-OrgID=t1".into()],
            timeout: Duration::from_secs(5),
            gzip: true,
            ..OtlpConfig::default()
        })
        .unwrap();
        let body = c.body(b"x");
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, "x");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(c.post(body));
        assert_eq!(out, Outcome::Sent { rejected: 0 });
        let head = server.join().unwrap();
        assert_eq!(head[0], "post /v1/logs http/1.1", "{head:?}");
        assert!(head.contains(&"content-type: application/x-protobuf".to_string()));
        assert!(head.contains(&"x-scope-orgid: t1".to_string()), "{head:?}");
        assert!(
            head.contains(&"content-encoding: gzip".to_string()),
            "{head:?}"
        );
        assert!(
            head.contains(&format!("host: 127.0.0.1:{port}")),
            "{head:?}"
        );
    }

    #[test]
    fn https_is_checked_before_the_agent_starts() {
        let cfg = OtlpConfig {
            endpoint: "http://127.0.0.1:4318".into(),
            ca: Some("/nonexistent/ca.pem".into()),
            ..OtlpConfig::default()
        };
        assert!(Client::new(&cfg).is_err(), "a CA for plain http");
        let cfg = OtlpConfig {
            endpoint: "https://127.0.0.1:4318".into(),
            ca: Some("/nonexistent/ca.pem".into()),
            ..OtlpConfig::default()
        };
        let e = Client::new(&cfg).err().unwrap().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
