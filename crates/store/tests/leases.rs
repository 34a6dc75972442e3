//! Shard leases: an even split, take-over of expired leases, loss on renew,
//! release.

mod support;

use std::time::Duration;

use support::with_store;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn two_workers_split_eight_shards() {
    with_store(|store| async move {
        store.ensure_shards(8).await.expect("shards");
        store.ensure_shards(8).await.expect("idempotent");
        for worker in ["w1", "w2"] {
            store.heartbeat(worker, LONG).await.expect("heartbeat");
        }
        let live = store.live_workers(LONG).await.expect("live");
        assert_eq!(live, ["w1", "w2"]);
        let max = 8_usize.div_ceil(live.len());

        let (a, b) =
            tokio::join!(store.acquire_leases("w1", max, LONG), store.acquire_leases("w2", max, LONG));
        let (a, b) = (a.expect("acquire"), b.expect("acquire"));
        assert_eq!((a.len(), b.len()), (4, 4), "{a:?} {b:?}");
        assert!(a.iter().all(|shard| !b.contains(shard)));
        // Topping up again changes nothing.
        assert_eq!(store.acquire_leases("w1", max, LONG).await.expect("acquire"), a);

        let leases = store.list_leases().await.expect("list");
        assert_eq!(leases.len(), 8);
        assert!(leases.iter().all(|l| l.holder.is_some() && l.epoch == 1 && l.expires_at.is_some()));

        // Releasing gives a shard back, to whoever asks next.
        let shard = a[0];
        assert!(store.release_lease("w1", shard).await.expect("release"));
        assert!(!store.release_lease("w2", shard).await.expect("not w2's"), "only the holder releases");
        assert_eq!(store.renew_leases("w1", LONG).await.expect("renew"), a[1..]);
        let b = store.acquire_leases("w2", 5, LONG).await.expect("acquire");
        assert!(b.contains(&shard) && b.len() == 5);

        assert_eq!(store.release_all("w2").await.expect("release all"), b);
        let leases = store.list_leases().await.expect("list");
        assert_eq!(leases.iter().filter(|l| l.holder.is_none()).count(), 5);
        assert_eq!(leases.iter().find(|l| l.shard == shard).expect("lease").epoch, 2);
    })
    .await;
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_lost_by_its_holder() {
    with_store(|store| async move {
        store.ensure_shards(4).await.expect("shards");
        let short = Duration::from_millis(300);
        let held = store.acquire_leases("dying", 4, short).await.expect("acquire");
        assert_eq!(held, [0, 1, 2, 3]);
        // A live holder's leases are not taken.
        assert!(store.acquire_leases("heir", 4, LONG).await.expect("acquire").is_empty());

        tokio::time::sleep(short + Duration::from_millis(100)).await;
        let taken = store.acquire_leases("heir", 2, LONG).await.expect("acquire");
        assert_eq!(taken, [0, 1]);
        // The old holder finds it lost them all: two were taken, two expired.
        assert!(store.renew_leases("dying", LONG).await.expect("renew").is_empty());
        let leases = store.list_leases().await.expect("list");
        assert_eq!(leases[0].holder.as_deref(), Some("heir"));
        assert_eq!(leases[0].epoch, 2, "changing hands bumps the epoch");
        assert_eq!(store.renew_leases("heir", LONG).await.expect("renew"), [0, 1]);
        // The expired ones are free for the taking.
        assert_eq!(store.acquire_leases("heir", 4, LONG).await.expect("acquire"), [0, 1, 2, 3]);
    })
    .await;
}

#[tokio::test]
async fn silent_workers_are_forgotten() {
    with_store(|store| async move {
        let ttl = Duration::from_millis(300);
        store.heartbeat("old", ttl).await.expect("heartbeat");
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert!(store.live_workers(ttl).await.expect("live").is_empty());
        store.heartbeat("new", ttl).await.expect("heartbeat");
        assert_eq!(
            store.live_workers(Duration::from_secs(3600)).await.expect("live"),
            ["new"],
            "old was deleted"
        );
        store.deregister_worker("new").await.expect("deregister");
        assert!(store.live_workers(ttl).await.expect("live").is_empty());
    })
    .await;
}

fn fence(worker: &str, shard: u16, epoch: u64) -> store::LeaseFence {
    store::LeaseFence { worker_id: worker.to_owned(), shard, epoch }
}

/// Checks `fence` the way a batch does: in a transaction on a batch
/// connection, pipelined after `BEGIN`. Returns the open transaction.
async fn check_in_batch(
    batches: &store::Store,
    fence: &store::LeaseFence,
) -> (store::BatchTransaction, store::Result<()>) {
    let tx = batches.batch_transaction().await.expect("connection");
    let (begun, checked) = tokio::join!(tx.begin(), store::check_lease(tx.db(), fence));
    begun.expect("begin");
    (tx, checked)
}

#[tokio::test]
async fn a_batch_fence_holds_only_for_the_holder_under_its_epoch() {
    with_store(|store| async move {
        store.ensure_shards(2).await.expect("shards");
        let held = store.acquire_leases_with_epochs("w1", 1, LONG).await.expect("acquire");
        assert_eq!(held, [(0, 1)]);
        let batches =
            store::Store::connect_for_batches(&support::database_url(), store.schema(), 2).expect("connect");

        let (tx, checked) = check_in_batch(&batches, &fence("w1", 0, 1)).await;
        checked.expect("the holder, under its epoch");
        tx.commit().await.expect("commit");
        for (what, stale) in [
            ("an older epoch", fence("w1", 0, 0)),
            ("a newer epoch", fence("w1", 0, 2)),
            ("another worker", fence("w2", 0, 1)),
            ("a shard never held", fence("w1", 1, 1)),
        ] {
            let (_tx, checked) = check_in_batch(&batches, &stale).await;
            assert!(
                matches!(checked, Err(store::Error::LeaseLost { .. })),
                "{what} must not pass the fence: {checked:?}"
            );
        }

        // A lease that expired does not pass, even before anyone takes it.
        let short = Duration::from_millis(500);
        assert_eq!(store.acquire_leases_with_epochs("w2", 1, short).await.expect("acquire"), [(1, 1)]);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (_tx, checked) = check_in_batch(&batches, &fence("w2", 1, 1)).await;
        assert!(matches!(checked, Err(store::Error::LeaseLost { shard: 1, epoch: 1 })), "{checked:?}");
    })
    .await;
}

#[tokio::test]
async fn a_lease_checked_by_an_open_batch_cannot_be_taken_until_the_batch_ends() {
    with_store(|store| async move {
        store.ensure_shards(1).await.expect("shards");
        let short = Duration::from_millis(800);
        assert_eq!(store.acquire_leases_with_epochs("w1", 1, short).await.expect("acquire"), [(0, 1)]);
        let batches =
            store::Store::connect_for_batches(&support::database_url(), store.schema(), 2).expect("connect");
        let (tx, checked) = check_in_batch(&batches, &fence("w1", 0, 1)).await;
        checked.expect("held");

        // The lease expires while the batch is still open: the row is
        // share-locked, so a taker skips it rather than committing a new
        // holder under a batch that already passed the fence.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(store.acquire_leases("heir", 1, LONG).await.expect("acquire").is_empty());
        tx.commit().await.expect("the batch commits under the lease it checked");
        assert_eq!(store.acquire_leases_with_epochs("heir", 1, LONG).await.expect("acquire"), [(0, 2)]);
    })
    .await;
}
