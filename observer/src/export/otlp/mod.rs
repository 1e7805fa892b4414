//! The OTLP sink (`--otlp-endpoint`): every exported item as an OpenTelemetry log record,
//! sent in batches with OTLP/HTTP protobuf to the fleet's collector.
//!
//! Why OpenTelemetry's generated protocol types (`opentelemetry-proto`) and a small client
//! of our own rather than the SDK's pipeline (`opentelemetry_sdk` BatchLogProcessor with
//! `opentelemetry-otlp`): the SDK's processor has a bounded queue of its own that drops
//! without telling us how many (`observer_export_dropped_total{sink="otlp"}` must count
//! every loss), its HTTP exporter brings reqwest (with a runtime and TLS stack of its own
//! next to the agent's hyper and rustls), and its retries are an experimental feature.
//! Here the sink is the file sink's model: the event loop offers into a bounded queue and
//! never waits; this thread (a current-thread runtime of its own) makes records of what
//! comes, up to BATCH per request or for DELAY (the SDK's batch processor's rule), and
//! sends them — retried with exponential backoff —
//! while the queue drops and counts what it cannot take. The record is the JSON line with
//! semantic-convention attributes (`schema.rs`), written as protobuf from the typed view the
//! line is made of, in the same pass (`typed.rs`), and put straight into the request
//! (`wire.rs`).

#[cfg(test)]
mod batch_tests;
mod client;
#[cfg(test)]
mod equivalence_tests;
mod gzip;
#[cfg(test)]
mod reference;
mod schema;
pub(super) mod typed;
mod typed_flat;
mod typed_ser;
mod wire;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use client::OtlpConfig;
use client::{Client, Outcome};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value as Any, AnyValue, KeyValue},
    resource::v1::Resource,
};

use super::{
    origin::{Names, SinkNames},
    Counts, Inbox,
};
use crate::{events::Event, host::clock::boot_now_ns};

/// Records per request: a batch is sent once it holds this many, or DELAY after its
/// first record, whichever comes first.
const BATCH: usize = 2048;
/// How long a batch waits for more records: the OpenTelemetry SDK's batch processor's
/// scheduled delay (`OTEL_BLRP_SCHEDULE_DELAY`, 1 s). Sending what waited at each drain
/// of the ring buffer made a storm of 16,000 events about 230 requests of 70 records,
/// and the requests (HTTP, a compressor's reset, the thread's wake-ups) cost more than
/// the records in them (docs/export.md, "What it costs").
const DELAY: Duration = Duration::from_secs(1);
/// Tries of one batch before it is dropped (and counted): about 15 s of backoff.
const ATTEMPTS: u32 = 6;
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between tries, also for a collector's `Retry-After`.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A started OTLP sink, before its thread runs.
pub(super) struct Sink {
    client: Client,
    batch: Batch,
    /// DELAY (shorter in tests).
    delay: Duration,
}

impl Sink {
    /// Checks the settings (URL, headers, CA file) so that a mistake stops the start.
    pub(super) fn new(cfg: &OtlpConfig) -> anyhow::Result<Sink> {
        Ok(Sink {
            client: Client::new(cfg)?,
            batch: Batch::new(&resource()),
            delay: DELAY,
        })
    }
}

/// A request being filled, kept from batch to batch, so that a record allocates nothing
/// once the buffer has grown.
struct Batch {
    request: wire::Request,
}

impl Batch {
    fn new(resource: &Resource) -> Batch {
        Batch {
            request: wire::Request::new(resource),
        }
    }

    /// Adds the record of an item: its JSON `line` (its newline is not the record's) and
    /// the attributes made with it.
    fn push(&mut self, line: &[u8], part: typed::Part, offset: u64, now: u64) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        self.request.push(|out| {
            typed::write(out, line, part, offset, now);
            true
        });
    }
}

/// The `otlp_records` fuzz target's way in: `ev`'s JSON line (without its newline) and
/// the OTLP request of its record, in a container named by `names` (id, name, pod, pod
/// namespace), made in one pass as a sink makes them; None when the event makes no line.
pub fn line_and_request(ev: &Event, names: [&str; 4]) -> Option<(Vec<u8>, Vec<u8>)> {
    let names = Names {
        container_id: names[0].into(),
        container_name: Some(names[1].into()),
        runtime: "containerd".into(),
        pod: Some(names[2].into()),
        pod_namespace: Some(names[3].into()),
        pod_uid: None,
    };
    let item = super::Item::Event(*ev, None, None, None);
    let mut line = Vec::new();
    let mut records = typed::Records::for_items(1);
    let made = super::line::write_with(
        &mut line,
        &item,
        Some(&names),
        Some(&mut records),
        std::time::Instant::now(),
    );
    records.made();
    let part = records.get(0).filter(|_| made)?;
    let mut batch = Batch::new(&resource());
    batch.push(&line, part, 1, 2);
    let request = batch.request.finish().to_vec();
    line.pop();
    Some((line, request))
}

/// The node: `k8s.node.name` from the DaemonSet's downward API (`NODE_NAME` or
/// `K8S_NODE_NAME`), and `host.name` — the node's name there too (the agent's pod has a
/// UTS namespace of its own, whose hostname is the pod's name), else the hostname.
fn resource() -> Resource {
    let mut attributes = vec![
        kv("service.name", "observer".into()),
        kv("service.version", env!("CARGO_PKG_VERSION").into()),
    ];
    let node = ["NODE_NAME", "K8S_NODE_NAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|n| !n.is_empty()));
    let host = node.clone().or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
    });
    if let Some(h) = host {
        attributes.push(kv("host.name", h));
    }
    if let Some(n) = node {
        attributes.push(kv("k8s.node.name", n));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

fn kv(key: &str, v: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(v)),
        }),
        ..KeyValue::default()
    }
}

/// The writer thread: until the agent drops the queue's sender.
pub(super) fn run(inbox: Inbox, sink: Sink, counts: &Counts, r: &mut SinkNames) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => rt.block_on(serve(inbox, sink, counts, r)),
        Err(e) => log::error!("export to OTLP: cannot start its runtime: {e}"),
    }
}

async fn serve(mut inbox: Inbox, mut sink: Sink, counts: &Counts, r: &mut SinkNames) {
    let mut failing = false;
    while inbox.wait().await {
        let unwritable = gather(&mut sink.batch, &mut inbox, r, sink.delay).await;
        Counts::add(&counts.dropped, unwritable);
        let n = sink.batch.request.len() as u64;
        if n == 0 {
            continue;
        }
        let body = sink.client.body(sink.batch.request.finish());
        match send(&mut sink.client, body).await {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                Counts::add(&counts.sent, n - rejected);
                Counts::add(&counts.dropped, rejected);
                if std::mem::take(&mut failing) {
                    log::warn!("export to {}: sending again", sink.client.url());
                }
            }
            Err(why) => {
                Counts::add(&counts.dropped, n);
                if !std::mem::replace(&mut failing, true) {
                    log::warn!(
                        "export to {}: {why}; records are dropped (counted in \
                         observer_export_dropped_total) until it works again",
                        sink.client.url()
                    );
                }
            }
        }
    }
}

/// A new request in `batch` with the records of what comes into `inbox` until it holds
/// BATCH, `delay` has passed since it began, or the agent closed the queue (it stops: what
/// waits goes at once); how many items would not make a record.
async fn gather(batch: &mut Batch, inbox: &mut Inbox, r: &mut SinkNames, delay: Duration) -> u64 {
    let until = tokio::time::Instant::now() + delay;
    batch.request.clear();
    let mut failed = fill(batch, inbox, r);
    while batch.request.len() < BATCH {
        match tokio::time::timeout_at(until, inbox.wait()).await {
            Ok(true) => failed += fill(batch, inbox, r),
            Ok(false) | Err(_) => break,
        }
    }
    failed
}

/// The records of what waits in `inbox`, added to `batch` until it holds BATCH; how many
/// items would not make a record.
fn fill(batch: &mut Batch, inbox: &mut Inbox, r: &mut SinkNames) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let offset = now.saturating_sub(boot_now_ns());
    let mut failed = 0;
    while let Some(next) = inbox.next() {
        match next.record(r) {
            Some((line, part)) => batch.push(line, part, offset, now),
            None => failed += 1,
        }
        if batch.request.len() >= BATCH {
            break;
        }
    }
    failed
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// Refused for good (a status or an error that trying again cannot mend).
    #[error("{0}")]
    Refused(String),
    /// Every attempt met an error worth trying again.
    #[error("{why} ({tries} tries)")]
    GaveUp { why: String, tries: u32 },
}

/// One batch, tried up to ATTEMPTS times: the records the collector rejected, or why it
/// could not be sent.
async fn send(client: &mut Client, body: Bytes) -> Result<u64, SendError> {
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match client.post(body.clone()).await {
            Outcome::Sent { rejected } => return Ok(rejected),
            Outcome::Failed(why) => return Err(SendError::Refused(why)),
            Outcome::Retry(why, _) if attempt >= ATTEMPTS => {
                return Err(SendError::GaveUp {
                    why,
                    tries: attempt,
                })
            }
            Outcome::Retry(why, after) => {
                log::debug!("export to {}: {why}; trying again", client.url());
                tokio::time::sleep(after.unwrap_or(delay).min(MAX_DELAY)).await;
                delay = (delay * 2).min(MAX_DELAY);
                attempt += 1;
            }
        }
    }
}
