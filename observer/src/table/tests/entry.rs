//! The process entry: small, and sharing its command line and namespaces with its
//! parent's rather than holding copies (the process map is the agent's biggest allocation).

use super::{exec, fork, table, task, HOST_NS, TICK};
use crate::table::Process;

/// The process map is the agent's biggest allocation (65,536 buckets at 50,000 processes):
/// an entry holds its command line by reference, not 258 bytes inline.
#[test]
fn a_process_entry_is_small_and_a_fork_shares_its_parents_command_line() {
    let size = std::mem::size_of::<Process>();
    assert!(size <= 256, "a Process is {size} bytes");
    let mut tb = table();
    tb.apply(&fork(100, task(1, &[100], HOST_NS, TICK, "sh")));
    tb.apply(&exec(
        100,
        task(1, &[100], HOST_NS, TICK, "sh"),
        "/bin/sh",
        &["sh", "-c", "x"],
    ));
    tb.apply(&fork(200, task(100, &[200], HOST_NS, 2 * TICK, "sh")));
    let (parent, child) = (&tb.get(100).unwrap().argv, &tb.get(200).unwrap().argv);
    assert_eq!(child.args(), ["sh", "-c", "x"]);
    assert!(
        child.shares(parent),
        "the child's command line is its parent's buffer"
    );
}

#[test]
fn a_command_line_is_cut_at_its_bound_and_an_empty_one_is_empty() {
    use crate::table::process::Bounded;
    let long = [b'a'; 300];
    assert_eq!(Bounded::<256>::from_bytes(&long).bytes(), &long[..256]);
    assert!(Bounded::<256>::from_bytes(b"").is_empty());
    assert!(Bounded::<256>::default().args().is_empty());
    assert_eq!(Bounded::<256>::from_bytes(b"a\0b\0").args(), ["a", "b"]);
    assert_eq!(
        Bounded::<4>::from_bytes(b"ab"),
        Bounded::<4>::from_bytes(b"ab")
    );
}
