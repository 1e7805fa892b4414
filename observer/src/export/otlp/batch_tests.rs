//! Batching against a collector on a local port: records wait for the batch to fill or for
//! the delay, and go at once when the agent closes the queue.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

use super::{run, OtlpConfig, Sink, BATCH};
use crate::{
    containers::names::StateDirs,
    events::Event,
    export::{origin::SinkNames, queue, Counts, Item},
};

fn free(pid: u32) -> Item {
    // SAFETY: a record of plain integers: all zeroes is a valid value.
    let mut ev: observer_common::FreeEvent = unsafe { std::mem::zeroed() };
    ev.header.kind = observer_common::EventKind::Free as u32;
    ev.header.tgid = pid;
    Item::Event(Event::Free(ev), None, None, None)
}

/// A collector that answers 200 to every request: the records of each, and when it came.
fn collector() -> (String, mpsc::Receiver<(usize, Instant)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                loop {
                    let mut len = 0;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let req = ExportLogsServiceRequest::decode(&body[..]).unwrap();
                    let n = req.resource_logs[0].scope_logs[0].log_records.len();
                    let _ = tx.send((n, Instant::now()));
                    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (url, rx)
}

#[test]
fn records_wait_for_a_full_batch_or_the_delay_and_go_at_once_when_the_queue_closes() {
    let (url, requests) = collector();
    let mut sink = Sink::new(&OtlpConfig {
        endpoint: url,
        timeout: Duration::from_secs(5),
        ..OtlpConfig::default()
    })
    .unwrap();
    let delay = Duration::from_millis(600);
    sink.delay = delay;
    let (tx, inbox) = queue::bounded(4 * BATCH);
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let sink_thread = std::thread::spawn(move || {
        run(inbox, sink, &c, &mut SinkNames::new(StateDirs::default()));
    });
    let wait = |what| requests.recv_timeout(Duration::from_secs(10)).expect(what);

    // Two drains 100 ms apart: one request, after the delay.
    let t = Instant::now();
    tx.offer(&queue::Drained::new((1..=2).map(free).collect()), &counts);
    std::thread::sleep(Duration::from_millis(100));
    tx.offer(&queue::Drained::new((3..=5).map(free).collect()), &counts);
    let (n, at) = wait("the delayed batch");
    assert_eq!(n, 5, "both drains in one request");
    assert!(at - t >= delay, "sent after {:?}", at - t);

    // A drain of more than a batch: a full batch at once, the rest after the delay.
    let t = Instant::now();
    let many: Vec<Item> = (0..=BATCH as u32).map(free).collect();
    tx.offer(&queue::Drained::new(many), &counts);
    let (n, at) = wait("the full batch");
    assert_eq!(n, BATCH);
    assert!(
        at - t < delay,
        "a full batch waits for nothing: {:?}",
        at - t
    );
    let (n, at) = wait("the rest");
    assert_eq!(n, 1);
    assert!(at - t >= delay, "{:?}", at - t);

    // The agent stops: what waits goes without waiting for the delay.
    let t = Instant::now();
    tx.offer(&queue::Drained::new(vec![free(9)]), &counts);
    std::thread::sleep(Duration::from_millis(50));
    drop(tx);
    let (n, at) = wait("the last batch");
    assert_eq!(n, 1);
    assert!(at - t < delay, "not held at shutdown: {:?}", at - t);
    sink_thread.join().unwrap();
    let sent = counts.sent.load(std::sync::atomic::Ordering::Relaxed);
    let dropped = counts.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((sent, dropped), (5 + BATCH as u64 + 1 + 1, 0));
}
