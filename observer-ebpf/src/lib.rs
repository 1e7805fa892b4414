// Only here so that `observer` can name this crate as a build-dependency (aya-template's
// arrangement); the programs live in the `observer` binary target, src/main.rs.
#![no_std]
