//! Presentation: how events and process state are rendered for people and programs.

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
pub(crate) mod escape_tests;
