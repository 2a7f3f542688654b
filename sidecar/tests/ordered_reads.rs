//! Reads of the memcached ordered store that transfer only what they need: a get or the start
//! of a listing asks memcached for the root record's CAS token, and takes the whole record only
//! when it changed. These tests check that a cached record is never used once stale (another
//! store instance, i.e. another sidecar, changed the database between two gets) and count what
//! memcached sends for a warm get in a large database.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::sync::Arc;

use futures::TryStreamExt;
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemcachedOrderedStore, OrderedStore, TreeConfig,
};
use zenko_memcached_testkit::Memcached;

use ordered_common::{Counting, all, db, items, open, small_pages};

/// Every change another instance makes shows in this instance's next get and listing, in
/// small and multi-level trees: puts, overwrites with values of the same length (a root record
/// of the same size), deletes, and a database emptied and filled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_changed_by_another_instance_between_gets_is_seen() {
    let server = Memcached::start(&[]);
    for config in [TreeConfig::default(), small_pages()] {
        let reader = open(&server, config).await;
        let writer = open(&server, config).await;
        let db = db(if config == small_pages() {
            "deep"
        } else {
            "flat"
        });
        let mut batch = Batch::default();
        for i in 0..300 {
            batch = batch.put(format!("k{i:03}"), format!("v0-{i:03}"));
        }
        writer.write(&db, batch).await.unwrap();
        for round in 1..=20u32 {
            // Warm the reader's cached root on the current version.
            assert_eq!(
                reader.get(&db, "k007").await.unwrap().as_deref(),
                Some(format!("v{}-007", round - 1).as_str())
            );
            let key = format!("k{:03}", (round * 37) % 300);
            let mut batch = Batch::default().put("k007", format!("v{round}-007"));
            batch = match round % 3 {
                0 => batch.delete(key.clone()),
                _ => batch.put(key.clone(), format!("v{round}-{}", &key[1..])),
            };
            writer.write(&db, batch).await.unwrap();
            assert_eq!(
                reader.get(&db, "k007").await.unwrap().as_deref(),
                Some(format!("v{round}-007").as_str()),
                "round {round}"
            );
            let expected = writer.get(&db, &key).await.unwrap();
            assert_eq!(reader.get(&db, &key).await.unwrap(), expected, "{key}");
            assert_eq!(all(&reader, &db).await, all(&writer, &db).await);
        }
        // Emptied, then filled again: the first key's value differs from the cached one.
        let keys: Vec<String> = all(&writer, &db)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        reader.get(&db, "k007").await.unwrap();
        let mut batch = Batch::default();
        for key in &keys {
            batch = batch.delete(key.clone());
        }
        writer.write(&db, batch).await.unwrap();
        assert_eq!(reader.get(&db, "k007").await.unwrap(), None);
        assert!(all(&reader, &db).await.is_empty());
        writer
            .write(&db, Batch::default().put("k007", "again"))
            .await
            .unwrap();
        assert_eq!(
            reader.get(&db, "k007").await.unwrap().as_deref(),
            Some("again")
        );
    }
}

/// A reader's cached root goes stale while its own get is under way, many times over: gets
/// racing a writer that keeps rewriting every key never return a value older than the last
/// one acknowledged before the get started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_racing_another_writer_never_go_back_in_time() {
    let server = Memcached::start(&[]);
    let reader = open(&server, small_pages()).await;
    let writer = open(&server, small_pages()).await;
    let db = db("race");
    let put_all = |round: u32| {
        let mut batch = Batch::default();
        for i in 0..200 {
            batch = batch.put(format!("k{i:03}"), format!("{round:06}"));
        }
        batch
    };
    writer.write(&db, put_all(0)).await.unwrap();
    let acknowledged = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writing = {
        let (writer, db, acknowledged) = (writer.clone(), db.clone(), acknowledged.clone());
        tokio::spawn(async move {
            for round in 1..=150u32 {
                writer.write(&db, put_all(round)).await.unwrap();
                acknowledged.store(round, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut gets = 0;
    while !writing.is_finished() {
        let floor = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
        let key = format!("k{:03}", gets % 200);
        let value = reader.get(&db, &key).await.unwrap().unwrap();
        let round: u32 = value.parse().unwrap();
        assert!(
            round >= floor,
            "{key} read round {round} after {floor} was acknowledged"
        );
        gets += 1;
    }
    writing.await.unwrap();
    assert_eq!(
        reader.get(&db, "k199").await.unwrap().as_deref(),
        Some("000150")
    );
    assert!(gets > 50, "only {gets} gets ran during the writes");
}

/// A warm get reads one small item (the root record's token) and nothing else, and a get right
/// after this instance's own commit reads the new root record at once, without a token first.
#[tokio::test]
async fn a_warm_get_reads_only_the_roots_token() {
    let server = Memcached::start(&[]);
    let counting = Counting::new(items(&server).await);
    let store = MemcachedOrderedStore::open(counting.clone(), small_pages())
        .await
        .unwrap();
    let db = db("counted");
    let mut batch = Batch::default();
    for i in 0..500 {
        batch = batch.put(format!("k{i:03}"), format!("v{i}"));
    }
    store.write(&db, batch).await.unwrap();
    // The first get after the commit: the root record, and pages the commit did not cache.
    store.get(&db, "k250").await.unwrap();
    let (reads, writes) = counting.total();
    for i in 0..50 {
        assert!(
            store
                .get(&db, &format!("k{:03}", 240 + i % 20))
                .await
                .unwrap()
                .is_some()
        );
    }
    let (after_reads, after_writes) = counting.total();
    assert_eq!((after_reads - reads, after_writes - writes), (50, 0));
    store
        .write(&db, Batch::default().put("k250", "new"))
        .await
        .unwrap();
    let (reads, _) = counting.total();
    assert_eq!(
        store.get(&db, "k250").await.unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(
        counting.total().0 - reads,
        1,
        "one read of the new root record"
    );
}

/// The target: a warm get of one 1 KiB value in a database of 100,000 keys makes
/// memcached send at most 8 KiB (`bytes_written`), where reading the whole root record cost
/// about 73 KB; the start of a listing likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_get_in_a_database_of_100000_keys_costs_memcached_under_8_kib() {
    let server = Memcached::start_with(["-m", "1024", "-M", "-I", "1m"].map(String::from).to_vec());
    let store = open(&server, TreeConfig::default()).await;
    let db = db("bench");
    let value = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    for start in (0..100_000).step_by(5_000) {
        let mut batch = Batch::default();
        for i in start..start + 5_000 {
            batch = batch.put(format!("object/{i:08}"), value.clone());
        }
        store.write(&db, batch).await.unwrap();
    }
    let key = |n: u64| format!("object/{:08}", n * 7919 % 100_000);
    // What the whole root record costs: a fresh instance's first get reads it (and a page).
    let sent = server.stat("bytes_written").unwrap();
    let fresh = open(&server, TreeConfig::default()).await;
    assert!(fresh.get(&db, &key(0)).await.unwrap().is_some());
    let first_get = server.stat("bytes_written").unwrap() - sent;
    println!("first get of a fresh instance in 100,000 keys: {first_get} bytes sent");
    assert!(first_get > 32 * 1024, "{first_get}");
    // Warm: the root record and the pages the gets will read.
    for n in 0..100 {
        assert_eq!(
            store.get(&db, &key(n)).await.unwrap().as_deref(),
            Some(value.as_str())
        );
    }
    let sent = server.stat("bytes_written").unwrap();
    for n in 0..100 {
        store.get(&db, &key(n)).await.unwrap();
    }
    // One `stats` answer is in the count too, spread over the gets.
    let per_get = (server.stat("bytes_written").unwrap() - sent) / 100;
    println!("warm get in 100,000 keys: {per_get} bytes sent by memcached per get");
    assert!(per_get <= 8 * 1024, "{per_get} bytes per get");

    let sent = server.stat("bytes_written").unwrap();
    for n in 0..20 {
        let first = store
            .scan(
                &db,
                KeyRange {
                    lower: std::ops::Bound::Included(key(n)),
                    upper: std::ops::Bound::Unbounded,
                },
                false,
            )
            .await
            .unwrap()
            .try_next()
            .await
            .unwrap();
        assert_eq!(first.map(|(k, _)| k), Some(key(n)));
    }
    let per_listing = (server.stat("bytes_written").unwrap() - sent) / 20;
    println!("start of a warm listing in 100,000 keys: {per_listing} bytes sent per listing");
    assert!(per_listing <= 8 * 1024, "{per_listing} bytes per listing");
}
