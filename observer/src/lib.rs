//! observer: an eBPF-backed container process observer.
//!
//! Layers, data flowing one way: `probes` (load/attach, BTF offsets) → `events` (ring buffer
//! → typed events) → `views` (how things are shown) → `cli` (commands).

pub mod cli;
pub mod events;
pub mod probes;
pub mod views;
