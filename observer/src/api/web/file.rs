//! The `--web-config` file: TLS and authentication for the agent's TCP listeners, in the
//! format of Prometheus exporters' `web-config.yml` (prometheus/exporter-toolkit), so a
//! fleet's existing file and its Prometheus scrape settings carry over:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # or `cert:` with the PEM inline; relative to this file
//!   key_file: server.key           # or `key:`
//!   client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default), VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12             # TLS12 (default) or TLS13; max_version likewise
//! http_server_config:
//!   headers: { Strict-Transport-Security: max-age=31536000 }
//! basic_auth_users:                # user: bcrypt hash (htpasswd -nBC 10 user)
//!   prometheus: $2y$10$...
//! bearer_tokens:                   # observer's addition: name: bcrypt hash of the token
//!   fleet: $2y$10$...
//! ```
//!
//! Every key is checked: a misspelt one, or an exporter-toolkit key observer does not
//! implement (cipher_suites, curve_preferences, …), stops the agent with the key's name
//! instead of being silently ignored.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::anyhow;
use serde::Deserialize;

/// What the file says, checked for shape (serde) but not yet loaded.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebFile {
    pub(crate) tls_server_config: Option<TlsFile>,
    pub(crate) http_server_config: Option<HttpFile>,
    pub(crate) basic_auth_users: Option<BTreeMap<String, String>>,
    pub(crate) bearer_tokens: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) client_auth_type: Option<String>,
    pub(crate) client_ca_file: Option<PathBuf>,
    pub(crate) min_version: Option<String>,
    pub(crate) max_version: Option<String>,
    // exporter-toolkit keys observer does not implement: accepted by the parser only to be
    // refused by name (`unsupported`).
    cipher_suites: Option<serde::de::IgnoredAny>,
    prefer_server_cipher_suites: Option<serde::de::IgnoredAny>,
    curve_preferences: Option<serde::de::IgnoredAny>,
    client_allowed_sans: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFile {
    pub(crate) http2: Option<bool>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
}

/// Which client certificates the TLS listener asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    None,
    /// A client may present a certificate; one it presents must verify.
    VerifyIfGiven,
    Require,
}

/// Where the server certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CertSource {
    /// Files, read again when they change (a rotated certificate needs no restart).
    Files { cert: PathBuf, key: PathBuf },
    /// PEM text in the config file itself.
    Inline { cert: String, key: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) cert: CertSource,
    pub(crate) client_auth: ClientAuth,
    pub(crate) client_ca: Option<PathBuf>,
    /// Offer TLS 1.2 (as well as 1.3).
    pub(crate) tls12: bool,
    /// Offer TLS 1.3 (as well as, or instead of, 1.2).
    pub(crate) tls13: bool,
}

/// The response headers exporter-toolkit lets a web config set (the same list, so a file
/// valid there is valid here).
const HEADERS: &[&str] = &[
    "Strict-Transport-Security",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// The settings, checked: what `super::Web::load` turns into a TLS acceptor and a gate.
#[derive(Debug, Default)]
pub(crate) struct WebSettings {
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) users: BTreeMap<String, String>,
    pub(crate) tokens: BTreeMap<String, String>,
}

/// Parses and checks a web config; `dir` is where relative paths start (the file's own
/// directory, as exporter-toolkit does).
pub(crate) fn parse(text: &str, dir: &Path) -> anyhow::Result<WebSettings> {
    let f: WebFile = if text.trim().is_empty() {
        WebFile::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            // The parser's message with a source snippet: its first line says what and where.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default();
            anyhow!("{}", first.strip_prefix("error: ").unwrap_or(first))
        })?
    };
    let mut out = WebSettings {
        users: f.basic_auth_users.unwrap_or_default(),
        tokens: f.bearer_tokens.unwrap_or_default(),
        ..Default::default()
    };
    for (user, hash) in &out.users {
        if user.is_empty() || user.contains(':') {
            return Err(anyhow!(
                "basic_auth_users: `{user}` cannot be a user name (empty, or has a `:`)"
            ));
        }
        check_hash(&format!("basic_auth_users.{user}"), hash)?;
    }
    for (name, hash) in &out.tokens {
        check_hash(&format!("bearer_tokens.{name}"), hash)?;
    }
    if let Some(h) = f.http_server_config {
        if h.http2 == Some(true) {
            return Err(anyhow!("http_server_config.http2: observer serves HTTP/1.1 only; remove the key or set it to false"));
        }
        for (name, value) in h.headers.unwrap_or_default() {
            let Some(known) = HEADERS.iter().find(|k| k.eq_ignore_ascii_case(&name)) else {
                return Err(anyhow!(
                    "http_server_config.headers: `{name}` cannot be set (allowed: {})",
                    HEADERS.join(", ")
                ));
            };
            if axum::http::HeaderValue::from_str(&value).is_err() {
                return Err(anyhow!(
                    "http_server_config.headers.{known}: not a valid header value"
                ));
            }
            out.headers.push((known.to_string(), value));
        }
    }
    if let Some(t) = f.tls_server_config {
        out.tls = Some(tls(t, dir)?);
    }
    Ok(out)
}

fn check_hash(key: &str, hash: &str) -> anyhow::Result<()> {
    hash.parse::<bcrypt::HashParts>().map(|_| ()).map_err(|e| {
        anyhow!("{key}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\"`")
    })
}

fn tls(t: TlsFile, dir: &Path) -> anyhow::Result<TlsSettings> {
    let unsupported = [
        ("cipher_suites", t.cipher_suites.is_some()),
        (
            "prefer_server_cipher_suites",
            t.prefer_server_cipher_suites.is_some(),
        ),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(anyhow!(
            "tls_server_config.{key}: not supported by observer (rustls chooses among its \
             safe defaults); remove the key"
        ));
    }
    let rel = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
    let cert = match (t.cert_file, t.key_file, t.cert, t.key) {
        (Some(c), Some(k), None, None) => CertSource::Files {
            cert: rel(c),
            key: rel(k),
        },
        (None, None, Some(cert), Some(key)) => CertSource::Inline { cert, key },
        (None, None, None, None) => {
            return Err(anyhow!(
                "tls_server_config: needs cert_file and key_file (or cert and key)"
            ))
        }
        _ => {
            return Err(anyhow!(
                "tls_server_config: give cert_file with key_file, or cert with key (one pair)"
            ))
        }
    };
    let client_auth = match t.client_auth_type.as_deref() {
        None | Some("NoClientCert") => ClientAuth::None,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::Require,
        Some(x @ ("RequestClientCert" | "RequireAnyClientCert")) => {
            return Err(anyhow!(
                "tls_server_config.client_auth_type: {x} accepts certificates nobody verified; \
                 observer offers VerifyClientCertIfGiven and RequireAndVerifyClientCert"
            ))
        }
        Some(x) => {
            return Err(anyhow!(
                "tls_server_config.client_auth_type: unknown `{x}` (NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ))
        }
    };
    let client_ca = t.client_ca_file.map(rel);
    match (client_auth, &client_ca) {
        (ClientAuth::None, Some(_)) => {
            return Err(anyhow!("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert \
                 (set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven)"))
        }
        (ClientAuth::VerifyIfGiven | ClientAuth::Require, None) => {
            return Err(anyhow!("tls_server_config: client_auth_type verifies client certificates: it needs client_ca_file"))
        }
        _ => {}
    }
    let min = version("min_version", t.min_version.as_deref(), 12)?;
    let max = version("max_version", t.max_version.as_deref(), 13)?;
    if min > max {
        return Err(anyhow!(
            "tls_server_config: min_version is above max_version"
        ));
    }
    Ok(TlsSettings {
        cert,
        client_auth,
        client_ca,
        tls12: min <= 12,
        tls13: max >= 13,
    })
}

fn version(key: &str, v: Option<&str>, default: u8) -> anyhow::Result<u8> {
    match v {
        None => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(x @ ("TLS10" | "TLS11")) => Err(anyhow!(
            "tls_server_config.{key}: {x} is not offered (TLS 1.2 and 1.3 only)"
        )),
        Some(x) => Err(anyhow!(
            "tls_server_config.{key}: unknown `{x}` (TLS12 or TLS13)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X1rW2oHRrvHGE5Ds8NS7XuXk9LYUGHK7hqVNYBdWSKx8iLcp6WV7u";

    fn err(text: &str) -> String {
        parse(text, Path::new("/etc/observer"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn exporter_toolkit_files_parse_with_paths_relative_to_the_file() {
        let s = parse(
            &format!(
                "tls_server_config:\n  cert_file: a.crt\n  key_file: /k/a.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\nbasic_auth_users:\n  prom: {HASH}\nhttp_server_config:\n  headers:\n    x-frame-options: deny\n"
            ),
            Path::new("/etc/observer"),
        )
        .unwrap();
        let t = s.tls.unwrap();
        assert_eq!(
            t.cert,
            CertSource::Files {
                cert: "/etc/observer/a.crt".into(),
                key: "/k/a.key".into()
            }
        );
        assert_eq!(t.client_ca, Some("/etc/observer/ca.crt".into()));
        assert_eq!(t.client_auth, ClientAuth::Require);
        assert!(!t.tls12 && t.tls13);
        assert_eq!(s.users["prom"], HASH);
        assert_eq!(s.headers, [("X-Frame-Options".into(), "deny".into())]);
        // Auth alone, and an empty file, are fine (plain HTTP).
        assert!(
            parse(&format!("basic_auth_users:\n  a: {HASH}\n"), Path::new("/"))
                .unwrap()
                .tls
                .is_none()
        );
        assert!(parse("", Path::new("/")).unwrap().users.is_empty());
    }

    #[test]
    fn every_mistake_names_its_key() {
        for (text, says) in [
            ("tls_server_config:\n  cert_fil: a\n", "unknown field `cert_fil`"),
            ("basic_auth_user:\n  a: b\n", "unknown field `basic_auth_user`"),
            ("basic_auth_users:\n  alice: secret\n", "basic_auth_users.alice: not a bcrypt hash"),
            ("bearer_tokens:\n  ci: x\n", "bearer_tokens.ci: not a bcrypt hash"),
            ("tls_server_config:\n  cert_file: a\n", "one pair"),
            ("tls_server_config:\n  min_version: TLS12\n", "needs cert_file"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n", "cipher_suites: not supported"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n", "nobody verified"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Foo\n", "unknown `Foo`"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n", "client_auth_type is NoClientCert"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n", "needs client_ca_file"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n", "TLS11 is not offered"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n", "above max_version"),
            ("http_server_config:\n  http2: true\n", "HTTP/1.1 only"),
            ("http_server_config:\n  headers:\n    Set-Cookie: a\n", "`Set-Cookie` cannot be set"),
            ("basic_auth_users: [a]\n", "line 1 column 19"),
            ("- a\n", "line 1 column 1: expected mapping"),
        ] {
            let e = err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
        // The parser says where, on one line.
        let e = err("basic_auth_users:\n  a: b\nfoo: 1\n");
        assert!(e.contains("line 3") && !e.contains('\n'), "{e}");
        let e = err("tls_server_config:\n  cert_fil: a\n");
        assert!(e.contains("line 2") && !e.contains('\n'), "{e}");
    }
}
