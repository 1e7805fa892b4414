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

/// A loop exec'ing one program (a shell's `while ...; do /bin/true; done`): each exec shares
/// the last one's command line and credentials rather than allocating its own.
#[test]
fn consecutive_execs_of_the_same_command_line_and_credentials_share_them() {
    let mut tb = table();
    tb.apply(&fork(100, task(1, &[100], HOST_NS, TICK, "sh")));
    for pid in [200, 201] {
        let t = task(100, &[pid], HOST_NS, 2 * TICK, "sh");
        tb.apply(&fork(pid, t));
        tb.apply(&exec(pid, t, "/bin/true", &["/bin/true"]));
    }
    let (a, b) = (tb.get(200).unwrap().clone(), tb.get(201).unwrap());
    assert_eq!(b.argv.args(), ["/bin/true"]);
    assert!(b.argv.shares(&a.argv), "one command line buffer");
    let (ca, cb) = (a.exec_cred.as_ref().unwrap(), b.exec_cred.as_ref().unwrap());
    assert!(std::sync::Arc::ptr_eq(ca, cb), "one credentials entry");
    // Another command line is its own.
    let t = task(100, &[202], HOST_NS, 3 * TICK, "sh");
    tb.apply(&fork(202, t));
    tb.apply(&exec(202, t, "/bin/true", &["/bin/true", "x"]));
    let c = tb.get(202).unwrap();
    assert_eq!(c.argv.args(), ["/bin/true", "x"]);
    assert!(!c.argv.shares(&a.argv));
    assert_eq!(tb.get(200).unwrap().argv.args(), ["/bin/true"]);
}
