//! Basic and bearer authentication for the TCP listeners (`--web-config`). Passwords and
//! tokens are stored as bcrypt hashes; a bcrypt check costs tens of milliseconds by design,
//! so a credential that verified once is remembered by its SHA-256 (as exporter-toolkit
//! caches), and a Prometheus scraping every 15 s pays bcrypt once, not per scrape. Checks
//! run on a blocking thread, never on the agent's event loop. An unknown user costs the same
//! bcrypt as a known one, so timing does not tell which users exist.
//!
//! `/healthz` and `/readyz` answer without credentials (kubelet and load-balancer probes
//! carry none; they say nothing but "up" and "ready").

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine;

/// Remembered credentials at most; all are forgotten when full (then re-verified).
const CACHE_MAX: usize = 1024;

pub(crate) struct Credentials {
    users: BTreeMap<String, String>,
    tokens: BTreeMap<String, String>,
    /// A hash of the configured cost, checked for unknown users (equal timing).
    dummy: String,
    /// SHA-256 of a credential that verified → who it is.
    verified: Mutex<HashMap<[u8; 32], Arc<str>>>,
    /// Held while bcrypt runs: one check at a time, at most one core for all clients.
    bcrypt: Mutex<()>,
    /// Failed checks per client address (throttle.rs).
    pub(crate) throttle: super::throttle::Throttle,
}

/// A request's credentials as sent.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    Basic { user: String, password: Vec<u8> },
    Bearer(Vec<u8>),
}

impl Credentials {
    pub(crate) fn new(users: BTreeMap<String, String>, tokens: BTreeMap<String, String>) -> Self {
        let cost = users
            .values()
            .chain(tokens.values())
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("observer: no such user", cost).unwrap_or_default();
        Credentials {
            users,
            tokens,
            dummy,
            verified: Mutex::default(),
            bcrypt: Mutex::default(),
            throttle: Default::default(),
        }
    }

    /// The schemes to name in `WWW-Authenticate` on a 401.
    pub(crate) fn challenges(&self) -> Vec<HeaderValue> {
        let mut v = Vec::new();
        if !self.users.is_empty() {
            v.push(HeaderValue::from_static("Basic realm=\"observer\""));
        }
        if !self.tokens.is_empty() {
            v.push(HeaderValue::from_static("Bearer realm=\"observer\""));
        }
        v
    }

    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        if !self.users.is_empty() {
            parts.push(format!("basic auth: {}", count(self.users.len(), "user")));
        }
        if !self.tokens.is_empty() {
            parts.push(format!("bearer: {}", count(self.tokens.len(), "token")));
        }
        parts.join(", ")
    }

    /// Whether the request carries credentials at all (a request without them costs no
    /// bcrypt: refused, never throttled).
    pub(crate) fn presents(headers: &HeaderMap) -> bool {
        presented(headers).is_some()
    }

    /// Who the request's credentials belong to if they verified before (cheap: no bcrypt).
    pub(crate) fn remembered(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let key = fingerprint(&presented(headers)?);
        self.lock().get(&key).cloned()
    }

    /// Who the request's credentials belong to, or None (missing, malformed, wrong).
    /// Blocking: bcrypt.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let presented = presented(headers)?;
        let key = fingerprint(&presented);
        if let Some(who) = self.lock().get(&key) {
            return Some(who.clone());
        }
        let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(|p| p.into_inner());
        let who: Option<&str> = match &presented {
            Presented::Basic { user, password } => match self.users.get_key_value(user) {
                Some((name, hash)) => verify(password, hash).then_some(name.as_str()),
                None => {
                    verify(password, &self.dummy);
                    None
                }
            },
            Presented::Bearer(token) => self
                .tokens
                .iter()
                .find(|(_, hash)| verify(token, hash))
                .map(|(name, _)| name.as_str()),
        };
        let who: Arc<str> = who?.into();
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, who.clone());
        Some(who)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<str>>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn verify(secret: &[u8], hash: &str) -> bool {
    bcrypt::verify(secret, hash).unwrap_or(false)
}

/// The Authorization header's credentials (RFC 7617 Basic, RFC 6750 Bearer).
fn presented(headers: &HeaderMap) -> Option<Presented> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let split = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(split);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = raw.iter().position(|&b| b == b':')?;
        let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
        Some(Presented::Basic {
            user,
            password: raw[colon + 1..].to_vec(),
        })
    } else if scheme.eq_ignore_ascii_case(b"bearer") && !rest.is_empty() {
        Some(Presented::Bearer(rest.to_vec()))
    } else {
        None
    }
}

fn fingerprint(p: &Presented) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    match p {
        Presented::Basic { user, password } => {
            ctx.update(b"basic\0");
            ctx.update(user.as_bytes());
            ctx.update(b"\0");
            ctx.update(password);
        }
        Presented::Bearer(t) => {
            ctx.update(b"bearer\0");
            ctx.update(t);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn basic_and_bearer_are_checked_against_bcrypt_hashes_and_remembered() {
        let users = BTreeMap::from([(
            "prom".to_string(),
            bcrypt::hash("pw:with colon", 4).unwrap(),
        )]);
        let tokens = BTreeMap::from([("ci".to_string(), bcrypt::hash("tok", 4).unwrap())]);
        let c = Credentials::new(users, tokens);
        let ok = headers(&format!("Basic {}", b64("prom:pw:with colon")));
        assert_eq!(c.check(&ok).as_deref(), Some("prom"));
        assert_eq!(c.lock().len(), 1);
        assert_eq!(c.check(&ok).as_deref(), Some("prom"));
        assert_eq!(c.check(&headers("bearer  tok ")).as_deref(), Some("ci"));
        for bad in [
            format!("Basic {}", b64("prom:pw")),
            format!("Basic {}", b64("nobody:pw:with colon")),
            format!("Basic {}", b64("prom")),
            "Basic !!!".to_string(),
            "Bearer tik".to_string(),
            "Bearer ".to_string(),
            "Digest x".to_string(),
            "tok".to_string(),
        ] {
            assert_eq!(c.check(&headers(&bad)), None, "{bad}");
        }
        assert_eq!(c.check(&HeaderMap::new()), None);
        // Failures are not remembered.
        assert_eq!(c.lock().len(), 2);
        assert_eq!(c.challenges().len(), 2);
    }
}
