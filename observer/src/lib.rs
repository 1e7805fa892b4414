//! observer: an eBPF-backed container process observer.
//!
//! Layers, data flowing one way: `host` (reading /proc, cgroup files and the boot clock)
//! at the bottom; `probes` (load/attach, BTF offsets, the task iterators) → `events` (ring
//! buffer and iterator records → typed events and seed records) → `table` (process state;
//! `containers` attributes cgroup paths, `intern` stores shared strings once) → `views`
//! (pure: the data they are handed in, JSON shapes and text out) → `api` (HTTP: the
//! routes, assembling a view — the live facts read through `host`, then the view — the
//! listeners with their limits, TLS and credentials) → `export` (events and history
//! entries as JSON lines to a file or stdout, and as OpenTelemetry logs to a collector, off
//! the event loop), `store` (history entries on the node's disk, off the event loop, queried
//! by `api`) → `agent` (start-up and the event loop) and `cli` (commands). `launcher` stands
//! apart; `stdout` serves every command.
//!
//! The allowed imports between top-level modules, the one place they are written down
//! (`tests.rs` here reads this table and fails on any other `crate::` path; an entry with
//! `::` allows only that part of a module):
//!
//! | module | layer | may import |
//! |---|---|---|
//! | `stdout` | util | — |
//! | `intern` | state | — |
//! | `host` | reading the host | — |
//! | `events` | decode | `host` |
//! | `probes` | load | `events`, `host` |
//! | `containers` | state | `host`, `intern` |
//! | `table` | state | `containers`, `events`, `host`, `intern` |
//! | `views` | presentation (pure) | `table`, `events`, `containers::names::Meta`, `containers::pods`, `host::facts` |
//! | `store` | durable state | `table`, `containers`, `host`, `views::status` |
//! | `api` | transport | `views`, `table`, `containers`, `events`, `host`, `store` |
//! | `export` | sinks | `views`, `table`, `containers`, `events`, `host::clock` |
//! | `agent` | the agent | `api`, `export`, `store`, `views`, `table`, `containers`, `events`, `probes`, `host` |
//! | `launcher` | apart | `host`, `stdout`, `containers::cgroup::LAUNCHER_PARENT` |
//! | `cli` | commands | `agent`, `api`, `export`, `store`, `views`, `table`, `containers`, `events`, `probes`, `host`, `launcher`, `stdout` |
//!
//! `views` takes from `host` only the facts' types (`host::facts`), never a reader, and from
//! `containers` only the metadata type and the pure grouping into pods, never the name
//! resolver: a view reads nothing. `launcher` takes from `containers` only the cgroup parent
//! its containers live under, which attribution recognises.
//!
//! Interfaces: items are `pub(crate)` unless the binary (`main.rs`), the integration tests
//! or the fuzz targets use them; the modules below that are `pub` say which of those needs
//! them, and only the items on those paths are `pub`.

mod agent;
/// The router the `api_requests` fuzz target drives; the CLI's URL encoding, which the
/// tests' Prometheus client shares.
pub mod api;
/// The command line: `main` is the binary's entry point.
pub mod cli;
/// The parsers of cgroup paths and runtime state files, for the fuzz targets.
pub mod containers;
/// Decoding kernel records and argv buffers, for the fuzz targets.
pub mod events;
/// An event's line and OTLP request as the sinks make them, for the fuzz targets.
pub mod export;
/// The /proc parsers, for the fuzz targets.
pub mod host;
mod intern;
mod launcher;
/// The tracefs format-file parser, for the fuzz targets.
pub mod probes;
mod stdout;
mod store;
mod table;
/// The event line and the tree view, which the fuzz targets and the launcher test render.
pub mod views;

#[cfg(test)]
mod tests;
