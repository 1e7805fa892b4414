//! Presentation: how events and process state are rendered for people and programs. Pure:
//! a view is built from the data it is handed — table snapshots, decoded events, and the
//! facts only the host has (live /proc facts, cgroup resources, runtime names), which the
//! API reads before it builds a view (api/assemble.rs) — and reads nothing itself.

mod control_check;
pub(crate) mod credentials;
pub(crate) mod endings;
pub mod event_line;
pub(crate) mod lists;
pub(crate) mod metrics;
pub mod model;
pub(crate) mod pods;
pub(crate) mod select;
pub(crate) mod sessions;
pub(crate) mod status;
pub mod text;
pub mod tree;
pub(crate) mod why;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tree_tests;
