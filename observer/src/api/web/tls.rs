//! The TLS side of `--web-config` (rustls with the ring provider: no OpenSSL in a static
//! binary). Everything is loaded and checked before the agent listens; a certificate given
//! as files is read again when the files change (checked at each handshake: two stat calls),
//! so cert-manager or a cron renewal needs no restart, and a broken renewal keeps the
//! previous certificate in service with a warning.

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::anyhow;
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::file::{CertSource, ClientAuth, TlsSettings};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor for `s`, or what is wrong with its files.
pub(crate) fn acceptor(s: &TlsSettings) -> anyhow::Result<TlsAcceptor> {
    let provider = provider();
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (s.tls12, &rustls::version::TLS12),
        (s.tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter_map(|(on, v)| on.then_some(v))
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| anyhow!("TLS versions: {e}"))?;
    let builder = match (s.client_auth, &s.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca).map_err(|e| anyhow!("client_ca_file {e}"))? {
                roots
                    .add(c)
                    .map_err(|e| anyhow!("client_ca_file {}: {e}", ca.display()))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone());
            if auth == ClientAuth::VerifyIfGiven {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| anyhow!("client_ca_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let resolver = Resolver::new(&s.cert, provider)?;
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Every certificate in a PEM file (at least one).
fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let at = |e: &dyn fmt::Display| anyhow!("{}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| at(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&e))?;
    if certs.is_empty() {
        return Err(at(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    what: &str,
) -> anyhow::Result<CertifiedKey> {
    CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| anyhow!("{what}: the key does not go with the certificate ({e})"))
}

fn load_files(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = certs(cert)?;
    let k = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            anyhow!("{}: no PEM private key in the file", key.display())
        }
        e => anyhow!("{}: {e}", key.display()),
    })?;
    certified(
        chain,
        k,
        provider,
        &format!("{} and {}", cert.display(), key.display()),
    )
}

/// What identifies a version of a file: inode, size, modification time.
type Stamp = [(u64, u64, i64, i64); 2];

fn stamp(cert: &Path, key: &Path) -> std::io::Result<Stamp> {
    let one = |p: &Path| -> std::io::Result<(u64, u64, i64, i64)> {
        let m = std::fs::metadata(p)?;
        Ok((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    };
    Ok([one(cert)?, one(key)?])
}

struct Current {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    /// The files' version that failed to load (not tried again until they change).
    failed: Option<Stamp>,
}

enum Resolver {
    Inline(Arc<CertifiedKey>),
    Files {
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
        current: Mutex<Current>,
    },
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolver::Inline(_) => f.write_str("inline certificate"),
            Resolver::Files { cert, key, .. } => {
                write!(f, "{} and {}", cert.display(), key.display())
            }
        }
    }
}

impl Resolver {
    fn new(src: &CertSource, provider: Arc<CryptoProvider>) -> anyhow::Result<Resolver> {
        Ok(match src {
            CertSource::Inline { cert, key } => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow!("tls_server_config.cert: {e}"))?;
                if chain.is_empty() {
                    return Err(anyhow!("tls_server_config.cert: no PEM certificate"));
                }
                let k = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| anyhow!("tls_server_config.key: {e}"))?;
                Resolver::Inline(Arc::new(certified(
                    chain,
                    k,
                    &provider,
                    "tls_server_config.cert and key",
                )?))
            }
            CertSource::Files { cert, key } => {
                let stamp = stamp(cert, key)
                    .map_err(|e| anyhow!("{} or {}: {e}", cert.display(), key.display()))?;
                let loaded = load_files(cert, key, &provider)?;
                Resolver::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                    provider,
                    current: Mutex::new(Current {
                        key: Arc::new(loaded),
                        stamp,
                        failed: None,
                    }),
                }
            }
        })
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (cert, key, provider, current) = match self {
            Resolver::Inline(k) => return Some(k.clone()),
            Resolver::Files {
                cert,
                key,
                provider,
                current,
            } => (cert, key, provider, current),
        };
        let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(now) = stamp(cert, key) {
            if now != cur.stamp && Some(now) != cur.failed {
                match load_files(cert, key, provider) {
                    Ok(k) => {
                        log::info!("TLS: loaded the changed certificate {}", cert.display());
                        cur.key = Arc::new(k);
                        cur.stamp = now;
                        cur.failed = None;
                    }
                    Err(e) => {
                        log::warn!("TLS: keeping the previous certificate: {e}");
                        cur.failed = Some(now);
                    }
                }
            }
        }
        Some(cur.key.clone())
    }
}
