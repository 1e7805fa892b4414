//! Presentation: how events and process state are rendered for people and programs. Pure:
//! a view is built from the data it is handed — table snapshots, decoded events, and the
//! facts only the host has (live /proc facts, cgroup resources, runtime names), which the
//! API reads before it builds a view (api/assemble.rs) — and reads nothing itself.

pub mod events;
pub mod history;
pub mod lists;
pub mod metrics;
pub mod model;
pub mod pods;
pub mod select;
pub mod status;
pub mod text;
pub mod tree;
pub mod why;

#[cfg(test)]
pub(crate) mod tests;
