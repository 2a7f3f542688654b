//! Concurrency of the memcached ordered store: scans read one snapshot while writes go on,
//! two store instances (two sidecars) writing one database lose no acknowledged write, and
//! preconditions make read-modify-write safe across them.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use futures::{StreamExt, TryStreamExt};
use zenko_memcached_sidecar::ordered::{Batch, KeyRange, OrderedError, OrderedStore};
use zenko_memcached_testkit::Memcached;

use ordered_common::{all, db, open, small_pages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_sees_its_snapshot_while_writes_continue() {
    let server = Memcached::start(&[]);
    let store = open(&server, small_pages()).await;
    let db = db("snap");
    let mut batch = Batch::default();
    for i in 0..500 {
        batch = batch.put(format!("k{i:04}"), format!("old{i}"));
    }
    store.write(&db, batch).await.unwrap();
    for reverse in [false, true] {
        let mut scan = store.scan(&db, KeyRange::all(), reverse).await.unwrap();
        let mut seen = vec![scan.next().await.unwrap().unwrap()];
        // Rewrite, delete and add everything, from another instance too.
        let other = open(&server, small_pages()).await;
        for i in 0..500 {
            let batch = if i % 3 == 0 {
                Batch::default().delete(format!("k{i:04}"))
            } else {
                Batch::default().put(format!("k{i:04}"), format!("new{i}"))
            };
            other
                .write(&db, batch.put(format!("k{i:04}x"), "added"))
                .await
                .unwrap();
        }
        seen.extend(scan.try_collect::<Vec<_>>().await.unwrap());
        assert_eq!(seen.len(), 500);
        assert!(seen.iter().all(|(_, v)| v.starts_with("old")));
        if reverse {
            assert_eq!(seen[0].0, "k0499");
        }
        // Back to the old state for the second round.
        let mut batch = Batch::default();
        for i in 0..500 {
            batch = batch
                .put(format!("k{i:04}"), format!("old{i}"))
                .delete(format!("k{i:04}x"));
        }
        store.write(&db, batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_acknowledged_write() {
    let server = Memcached::start(&[]);
    let first = open(&server, small_pages()).await;
    let second = open(&server, small_pages()).await;
    let db = db("shared");
    let mut tasks = Vec::new();
    for (name, store) in [("p", first.clone()), ("q", second.clone())] {
        for task in 0..6 {
            let store = store.clone();
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..60 {
                    let key = format!("{name}{task}-{i:03}");
                    store
                        .write(&db, Batch::default().put(key, "v"))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let content = all(&first, &db).await;
    assert_eq!(content.len(), 2 * 6 * 60);
    assert_eq!(all(&second, &db).await, content);
}

/// Increment a counter by read, then write with the read value as precondition.
async fn increment(
    store: &dyn OrderedStore,
    db: &zenko_memcached_sidecar::ordered::Sublevel,
) -> u32 {
    let mut conflicts = 0;
    loop {
        let current = store.get(db, "counter").await.unwrap();
        let next = current.as_deref().map_or(0, |v| v.parse::<u64>().unwrap()) + 1;
        let batch = Batch::default()
            .expect("counter", current)
            .put("counter", next.to_string());
        match store.write(db, batch).await {
            Ok(()) => return conflicts,
            Err(OrderedError::Conflict) => conflicts += 1,
            Err(error) => panic!("{error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_serialize_read_modify_write_across_instances() {
    let server = Memcached::start(&[]);
    let first = open(&server, small_pages()).await;
    let second = open(&server, small_pages()).await;
    let db = db("counter");
    let mut tasks = Vec::new();
    for store in [first.clone(), second.clone()] {
        for _ in 0..4 {
            let store = store.clone();
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..25 {
                    conflicts += increment(&store, &db).await;
                }
                conflicts
            }));
        }
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    assert_eq!(
        first.get(&db, "counter").await.unwrap().as_deref(),
        Some("200")
    );
    assert!(conflicts > 0, "the test did not exercise conflicts");

    // A failed precondition changes nothing, also for the batch's other keys.
    let stale = Batch::default()
        .expect("counter", Some("7".into()))
        .put("counter", "0")
        .put("other", "x");
    assert!(matches!(
        first.write(&db, stale).await,
        Err(OrderedError::Conflict)
    ));
    assert_eq!(second.get(&db, "other").await.unwrap(), None);
    let absent = Batch::default().expect("other", None).put("other", "y");
    second.write(&db, absent).await.unwrap();
    assert_eq!(first.get(&db, "other").await.unwrap().as_deref(), Some("y"));
}
