//! Presentation: how events and process state are rendered for people and programs.

pub mod events;
