//! observer: an eBPF-backed container process observer.
//!
//! Layers, data flowing one way: `probes` (load/attach, BTF offsets) → `events` (ring buffer
//! → typed events) → `table` (process and container state; `containers` attributes cgroup
//! paths, `intern` stores shared strings once) → `views` (how things are shown) →
//! `api`/`agent`/`cli` (transport, the agent's loop, commands). `launcher` stands apart;
//! `stdout` serves every command. The imports do not all follow this order yet (e.g.
//! `containers` and `probes::seed` use `table::scan`, `views` and `agent` use each other):
//! docs/architecture.md lists them.

pub mod agent;
pub mod api;
pub mod cli;
pub mod containers;
pub mod events;
pub mod host;
pub mod intern;
pub mod launcher;
pub mod probes;
pub mod stdout;
pub mod table;
pub mod views;
