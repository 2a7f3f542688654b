//! Cost of the memcached ordered store in memcached operations per put, get and listing, on
//! a database of 100,000 keys with 1 KiB values (run with `cargo bench --bench ordered`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/ordered_common/mod.rs"]
mod ordered_common;

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemcachedOrderedStore, OrderedStore, TreeConfig,
};
use zenko_memcached_testkit::Memcached;

use ordered_common::{Counting, db, items};

const KEYS: usize = 100_000;

fn key(i: usize) -> String {
    format!("photos/2024/{i:08}.jpg")
}

fn report(what: &str, count: usize, before: (u64, u64), after: (u64, u64), started: Instant) {
    let reads = (after.0 - before.0) as f64 / count as f64;
    let writes = (after.1 - before.1) as f64 / count as f64;
    let micros = started.elapsed().as_micros() as f64 / count as f64;
    println!(
        "{what:<40} {count:>6} ops: {:.2} memcached ops each ({reads:.2} reads, {writes:.2} writes), {micros:.0} us each",
        reads + writes
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = Memcached::start_with(
        ["-m", "1024", "-M", "-I", "1m"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    let counting = Counting::new(items(&server).await);
    let store = MemcachedOrderedStore::open(counting.clone(), TreeConfig::default())
        .await
        .unwrap();
    let db = db("bench");
    let value = "v".repeat(1024);
    let started = Instant::now();
    let before = counting.total();
    for chunk in (0..KEYS).step_by(1000) {
        let mut batch = Batch::default();
        for i in chunk..chunk + 1000 {
            batch = batch.put(key(i), value.clone());
        }
        store.write(&db, batch).await.unwrap();
    }
    report(
        "load, batches of 1000 keys",
        KEYS,
        before,
        counting.total(),
        started,
    );
    println!(
        "memcached: {} items, {} bytes",
        server.stat("curr_items").unwrap(),
        server.stat("bytes").unwrap()
    );

    let mut rng = StdRng::seed_from_u64(7);
    // Warm the page cache, as a running sidecar's would be.
    let warm: Vec<(String, String)> = store
        .scan(&db, KeyRange::all(), false)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(warm.len(), KEYS);

    let count = 2000;
    let (before, started) = (counting.total(), Instant::now());
    for _ in 0..count {
        store
            .write(
                &db,
                Batch::default().put(key(rng.random_range(0..KEYS)), value.clone()),
            )
            .await
            .unwrap();
    }
    report("put, one writer", count, before, counting.total(), started);

    let (before, started) = (counting.total(), Instant::now());
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let store = store.clone();
            let db = db.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..count / 32 {
                    let k = key((task * 7919 + i * 104_729) % KEYS);
                    store
                        .write(&db, Batch::default().put(k, value.clone()))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    report(
        "put, 32 concurrent writers",
        count / 32 * 32,
        before,
        counting.total(),
        started,
    );

    let (before, started) = (counting.total(), Instant::now());
    for _ in 0..count {
        assert!(
            store
                .get(&db, &key(rng.random_range(0..KEYS)))
                .await
                .unwrap()
                .is_some()
        );
    }
    report("get, warm cache", count, before, counting.total(), started);

    let cold_counting = Counting::new(items(&server).await);
    let cold = Arc::new(
        MemcachedOrderedStore::open(cold_counting.clone(), TreeConfig::default())
            .await
            .unwrap(),
    );
    for reverse in [false, true] {
        let (before, started) = (cold_counting.total(), Instant::now());
        let start = key(rng.random_range(0..KEYS - 2000));
        let range = KeyRange {
            lower: std::ops::Bound::Included(start),
            upper: std::ops::Bound::Unbounded,
        };
        let listed: Vec<_> = cold
            .scan(&db, range, reverse)
            .await
            .unwrap()
            .take(1000)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1000);
        let after = cold_counting.total();
        println!(
            "list 1000 keys, cold cache{}: {} memcached reads, {} ms",
            if reverse { ", reverse" } else { "" },
            after.0 - before.0,
            started.elapsed().as_millis()
        );
    }
    let (before, started) = (cold_counting.total(), Instant::now());
    for _ in 0..200 {
        assert!(
            cold.get(&db, &key(rng.random_range(0..KEYS)))
                .await
                .unwrap()
                .is_some()
        );
    }
    report(
        "get, cache being filled",
        200,
        before,
        cold_counting.total(),
        started,
    );
    println!("page cache: {:?}", store.cache_stats());
}
