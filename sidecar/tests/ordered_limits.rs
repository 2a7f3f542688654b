//! Limits of the memcached ordered store: memcached full (clear error, database unchanged, no
//! eviction), values of 10 MB and keys of a few KB over a 1 MiB item limit, a page cache that
//! stays under its cap, space of replaced data given back after the grace period, and scans
//! that outlive the grace period failing clearly.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use zenko_memcached_sidecar::items::ItemError;
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, OrderedError, OrderedStore, PageCacheConfig, TreeConfig,
};
use zenko_memcached_testkit::Memcached;

use ordered_common::{all, db, open, small_pages};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn memcached_full_fails_the_write_and_keeps_the_database() {
    let server = Memcached::start_with(args(&["-m", "8", "-M", "-I", "1m"]));
    let store = open(&server, TreeConfig::default()).await;
    let db = db("full");
    let value = "v".repeat(3000);
    let mut written = 0;
    let error = loop {
        let mut batch = Batch::default();
        for i in 0..20 {
            batch = batch.put(format!("k{:06}", written + i), value.clone());
        }
        match store.write(&db, batch).await {
            Ok(()) => written += 20,
            Err(error) => break error,
        }
        assert!(written < 100_000, "memcached never filled up");
    };
    assert!(
        matches!(error, OrderedError::Items(ItemError::Full)),
        "{error:?}"
    );
    assert!(written > 100);
    let fresh = open(&server, TreeConfig::default()).await;
    let content = all(&fresh, &db).await;
    assert_eq!(content.len(), written);
    assert!(
        content
            .iter()
            .enumerate()
            .all(|(i, (k, _))| *k == format!("k{i:06}"))
    );
    // A large value cannot land either, and leaves nothing behind.
    let big = Batch::default().put("big", "x".repeat(3 << 20));
    assert!(store.write(&db, big).await.is_err());
    assert_eq!(fresh.get(&db, "big").await.unwrap(), None);
    assert_eq!(all(&fresh, &db).await.len(), written);
    assert_eq!(server.stat("evictions"), Some(0));
}

#[tokio::test]
async fn ten_megabyte_values_and_long_keys_over_a_one_mebibyte_item_limit() {
    let server = Memcached::start_with(args(&["-m", "128", "-M", "-I", "1m"]));
    let store = open(&server, TreeConfig::default()).await;
    let db = db("large");
    let mut rng = StdRng::seed_from_u64(10);
    let big: String = (0..10 << 20)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    let long_key = format!("{}\u{0}end", "k".repeat(4000));
    store
        .write(
            &db,
            Batch::default()
                .put("big", big.clone())
                .put(long_key.clone(), "short"),
        )
        .await
        .unwrap();
    let fresh = open(&server, TreeConfig::default()).await;
    assert_eq!(
        fresh.get(&db, "big").await.unwrap().as_deref(),
        Some(big.as_str())
    );
    assert_eq!(
        fresh.get(&db, &long_key).await.unwrap().as_deref(),
        Some("short")
    );
    let listed = all(&fresh, &db).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].1.len(), big.len());
    // Preconditions compare out-of-line values too.
    let guarded = Batch::default()
        .expect("big", Some(big.clone()))
        .put("big", "small now");
    fresh.write(&db, guarded).await.unwrap();
    assert_eq!(
        store.get(&db, "big").await.unwrap().as_deref(),
        Some("small now")
    );
    let too_long = "k".repeat(200_000);
    assert!(
        store
            .write(&db, Batch::default().put(too_long, "v"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cache_stays_under_its_cap() {
    let server = Memcached::start(&[]);
    let config = TreeConfig {
        page_max_bytes: 4096,
        cache: PageCacheConfig {
            max_bytes: 32 << 10,
        },
        ..TreeConfig::default()
    };
    let store = open(&server, config).await;
    let db = db("cache");
    for round in 0..20 {
        let mut batch = Batch::default();
        for i in 0..100 {
            batch = batch.put(format!("k{:05}", round * 100 + i), "v".repeat(200));
        }
        store.write(&db, batch).await.unwrap();
        assert!(store.cache_stats().bytes <= 32 << 10);
    }
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..500 {
        let key = format!("k{:05}", rng.random_range(0..2000));
        assert!(store.get(&db, &key).await.unwrap().is_some());
        let stats = store.cache_stats();
        assert!(stats.bytes <= stats.max_bytes, "{stats:?}");
    }
    assert_eq!(all(&store, &db).await.len(), 2000);
    let stats = store.cache_stats();
    assert!(
        stats.pages > 2 && stats.bytes <= stats.max_bytes,
        "{stats:?}"
    );
}

/// Make memcached reclaim expired items now rather than when its crawler gets to them.
fn crawl(server: &Memcached) {
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.write_all(b"lru_crawler crawl all\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
}

fn short_grace() -> TreeConfig {
    TreeConfig {
        grace_period: Duration::from_secs(1),
        ..small_pages()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_pages_are_freed_at_once_or_after_the_scans_that_need_them() {
    let server = Memcached::start(&[]);
    let store = open(
        &server,
        TreeConfig {
            grace_period: Duration::from_secs(1),
            ..TreeConfig::default()
        },
    )
    .await;
    let db = db("reclaim");
    let write_all = |round: usize| {
        let store = store.clone();
        let db = db.clone();
        async move {
            for chunk in 0..30 {
                let mut batch = Batch::default();
                for i in 0..10 {
                    batch = batch.put(
                        format!("k{:04}", chunk * 10 + i),
                        format!("{round}").repeat(1024),
                    );
                }
                store.write(&db, batch).await.unwrap();
            }
        }
    };
    write_all(0).await;
    let stats = || {
        (
            server.stat("curr_items").unwrap(),
            server.stat("bytes").unwrap(),
        )
    };
    let (items_before, bytes_before) = stats();

    // No scan running: every commit frees what it replaced, memcached holds the live tree.
    for round in 1..6 {
        write_all(round).await;
    }
    let (items, bytes) = stats();
    assert!(
        items <= items_before + 2 && bytes < bytes_before + bytes_before / 10,
        "without scans: items {items_before} -> {items}, bytes {bytes_before} -> {bytes}"
    );

    // A scan running: replaced pages stay for it, and it reads its snapshot to the end.
    let mut scan = store.scan(&db, KeyRange::all(), false).await.unwrap();
    assert_eq!(scan.next().await.unwrap().unwrap().1, "5".repeat(1024));
    for round in 6..9 {
        write_all(round).await;
    }
    let (items_peak, bytes_peak) = stats();
    assert!(
        bytes_peak > bytes_before * 2,
        "with a scan: bytes {bytes_before} -> {bytes_peak}"
    );
    let rest: Vec<(String, String)> = scan.try_collect().await.unwrap();
    assert_eq!(rest.len(), 299);
    assert!(rest.iter().all(|(_, value)| *value == "5".repeat(1024)));

    // Once the scan is gone, memcached reclaims them after the grace period.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        crawl(&server);
        let (items, bytes) = stats();
        if items <= items_before + 5 && bytes < bytes_before + bytes_before / 4 {
            println!(
                "items {items_before} -> {items_peak} -> {items}, bytes {bytes_before} -> {bytes_peak} -> {bytes}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "items {items} (was {items_before}), bytes {bytes} (was {bytes_before})"
        );
    }
    assert_eq!(all(&store, &db).await.len(), 300);
    assert_eq!(
        store.get(&db, "k0123").await.unwrap(),
        Some("8".repeat(1024))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_older_than_the_grace_period_fails_clearly() {
    let server = Memcached::start(&[]);
    let store = open(&server, short_grace()).await;
    let db = db("expired");
    let mut batch = Batch::default();
    for i in 0..400 {
        batch = batch.put(format!("k{i:04}"), "old");
    }
    store.write(&db, batch).await.unwrap();
    let reader = open(&server, short_grace()).await;
    let mut scan = reader.scan(&db, KeyRange::all(), false).await.unwrap();
    assert_eq!(scan.next().await.unwrap().unwrap().1, "old");
    for i in 0..400 {
        store
            .write(&db, Batch::default().put(format!("k{i:04}"), "new"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    crawl(&server);
    let rest: Result<Vec<_>, _> = scan.try_collect().await;
    assert!(
        matches!(rest, Err(OrderedError::SnapshotExpired(_))),
        "{rest:?}"
    );
    assert!(all(&reader, &db).await.iter().all(|(_, v)| v == "new"));
}
