//! observer's integration tests: one test binary (as aya's `integration-test`), one module
//! per part of the product, each tested end to end against the real `observer` binary, the
//! live kernel and real runtimes (run as root, `--test-threads=1`). A test's name is
//! `<module>::<test>`, e.g. `tree::orphans_are_adopted_by_the_subreaper`; filter by module
//! with `cargo test ... --test it -- tree::`. The opening comment of each module says what it
//! proves; `common` holds the helpers (its agent wraps observer-harness, the agent harness
//! `cargo xtask bench` uses too).
//!
//! The VM matrix (`cargo xtask vm-test`) runs this same binary inside each guest, the
//! modules listed in `VM_MODULES` of xtask/src/vm/mod.rs.

// An end-to-end test reads as one scenario from setup to the last assertion; the
// 80-line limit (clippy.toml) holds for the product and the xtask, not these stories.
#![allow(clippy::too_many_lines)]

mod common;

mod bad_input;
mod bounds;
mod config;
mod cost;
mod credentials;
mod cri;
mod deploy;
mod escapes;
mod events;
mod exe_hash;
mod exec_sessions;
mod export;
mod forensics;
mod hardening;
mod hostile_cgroups;
mod image;
mod launcher;
mod launcher_defaults;
mod metrics;
mod oci;
mod otlp;
mod pid_reuse;
mod pods;
mod resilience;
mod runtimes;
mod scale;
mod seed;
mod stalls;
mod store;
mod systemd;
mod tree;
mod truth;
mod web;
