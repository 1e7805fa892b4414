//! Answering the API: every request already queued is answered from one state of the
//! table, so concurrent requests for the same view share one snapshot.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    api::Request,
    host::scan,
    table::{
        snapshot::{Scope, Snapshot},
        Table,
    },
};

/// `first` and every request queued behind it.
pub(super) fn batch(first: Request, queued: &mut mpsc::Receiver<Request>) -> Vec<Request> {
    let mut batch = vec![first];
    while let Ok(r) = queued.try_recv() {
        batch.push(r);
    }
    batch
}

/// The snapshots built for one batch, one per scope.
#[derive(Default)]
pub(super) struct Snapshots(Vec<(Scope, Arc<Snapshot>)>);

impl Snapshots {
    /// The batch's snapshot of `scope`, built on first use.
    pub(super) fn get(&mut self, table: &mut Table, scope: Scope) -> Arc<Snapshot> {
        if let Some((_, snap)) = self.0.iter().find(|(s, _)| *s == scope) {
            return snap.clone();
        }
        // Views must not count a reaped process whose free event is still due.
        table.reap_gone(scan::exists);
        let snap = Arc::new(table.snapshot(scope.clone()));
        self.0.push((scope, snap.clone()));
        snap
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::host::cgroupfs::CgroupFs;

    #[test]
    fn requests_for_one_scope_in_a_batch_share_one_snapshot() {
        let mut table = Table::new(1, CgroupFs::default());
        let mut built = Snapshots::default();
        let a = built.get(&mut table, Scope::All);
        let b = built.get(&mut table, Scope::All);
        let c = built.get(&mut table, Scope::Containers);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(built.0.len(), 2);
    }

    #[test]
    fn a_batch_takes_every_request_already_queued() {
        let (tx, mut rx) = mpsc::channel(8);
        for pid in [2, 3] {
            tx.try_send(Request::MemberOf(pid, oneshot::channel().0))
                .unwrap();
        }
        let first = Request::MemberOf(1, oneshot::channel().0);
        let pids: Vec<u32> = batch(first, &mut rx)
            .into_iter()
            .map(|r| match r {
                Request::MemberOf(pid, _) => pid,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(pids, [1, 2, 3]);
        assert!(rx.try_recv().is_err(), "nothing left behind");
    }
}
