//! observer: an eBPF-backed container process observer.
//!
//! Layers, data flowing one way: `probes` (load/attach, BTF offsets) → `events` (ring buffer
//! → typed events) → `table` (process and container state; `containers` attributes cgroup
//! paths) → `views` (how things are shown) → `api`/`cli` (transport, commands).

pub mod agent;
pub mod api;
pub mod cli;
pub mod containers;
pub mod events;
pub mod intern;
pub mod launcher;
pub mod probes;
pub mod stdout;
pub mod table;
pub mod views;
