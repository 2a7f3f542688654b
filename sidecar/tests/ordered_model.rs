//! The memcached ordered store against the in-memory model: random puts, deletes, batches
//! with and without preconditions, gets and range scans with every bound kind, through two
//! store instances in turn, reopening them (cold cache) now and then, on trees several
//! levels deep.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::ops::Bound;

use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemoryOrderedStore, OrderedError, OrderedStore, Sublevel,
};
use zenko_memcached_testkit::Memcached;

use ordered_common::{all, db, open, small_pages};

const PREFIXES: [&str; 6] = ["a/", "a/x\u{0}", "b", "\u{e9}", "\u{1f600}", ""];

fn random_key(rng: &mut StdRng) -> String {
    let prefix = PREFIXES[rng.random_range(0..PREFIXES.len())];
    format!("{prefix}{:03}", rng.random_range(0..150u32))
}

fn random_value(rng: &mut StdRng) -> String {
    let len = if rng.random_bool(0.1) {
        rng.random_range(64..3000)
    } else {
        rng.random_range(0..64)
    };
    let fill = char::from(b'a' + rng.random_range(0..26u8));
    std::iter::repeat_n(fill, len).collect()
}

fn random_bound(rng: &mut StdRng) -> Bound<String> {
    match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(random_key(rng)),
        _ => Bound::Excluded(random_key(rng)),
    }
}

/// Whether a std `BTreeMap::range` accepts the bounds (it panics on inverted ranges).
fn valid(range: &KeyRange) -> bool {
    match (&range.lower, &range.upper) {
        (Bound::Included(l), Bound::Included(u)) => l <= u,
        (Bound::Excluded(l), Bound::Excluded(u)) => l < u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
            l <= u
        }
        _ => true,
    }
}

async fn scan(
    store: &dyn OrderedStore,
    db: &Sublevel,
    range: KeyRange,
    reverse: bool,
    limit: usize,
) -> Vec<(String, String)> {
    store
        .scan(db, range, reverse)
        .await
        .unwrap()
        .take(limit)
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_the_model() {
    let server = Memcached::start(&[]);
    let model = MemoryOrderedStore::default();
    // Two instances over the same memcached, used in turn: two sidecars on one database.
    let mut stores = [
        open(&server, small_pages()).await,
        open(&server, small_pages()).await,
    ];
    // ORDERED_MODEL_SEED explores other sequences; the default one is what CI runs.
    let seed = std::env::var("ORDERED_MODEL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let dbs = [db("one"), db("two")];
    let mut scans = 0;
    for step in 0..2500 {
        let db = &dbs[usize::from(rng.random_bool(0.2))];
        if step % 400 == 399 {
            stores[step % 2] = open(&server, small_pages()).await;
        }
        let store = &stores[usize::from(rng.random_bool(0.5))];
        match rng.random_range(0..100) {
            0..70 => {
                let mut batch = Batch::default();
                for _ in 0..rng.random_range(1..6) {
                    let key = random_key(&mut rng);
                    batch = if rng.random_bool(0.25) {
                        batch.delete(key)
                    } else {
                        batch.put(key, random_value(&mut rng))
                    };
                }
                if rng.random_bool(0.2) {
                    let key = random_key(&mut rng);
                    let current = model.get(db, &key).await.unwrap();
                    let expected = if rng.random_bool(0.5) {
                        current
                    } else {
                        Some(random_value(&mut rng))
                    };
                    batch = batch.expect(key, expected);
                }
                let want = model.write(db, batch.clone()).await;
                let got = store.write(db, batch).await;
                match (want, got) {
                    (Ok(()), Ok(()))
                    | (Err(OrderedError::Conflict), Err(OrderedError::Conflict)) => {}
                    (want, got) => panic!("step {step}: model {want:?}, store {got:?}"),
                }
            }
            70..80 => {
                let key = random_key(&mut rng);
                assert_eq!(
                    store.get(db, &key).await.unwrap(),
                    model.get(db, &key).await.unwrap(),
                    "step {step}: get {key:?}"
                );
            }
            _ => {
                scans += 1;
                let range = KeyRange {
                    lower: random_bound(&mut rng),
                    upper: random_bound(&mut rng),
                };
                let reverse = rng.random_bool(0.5);
                let limit = if rng.random_bool(0.5) {
                    rng.random_range(0..20)
                } else {
                    usize::MAX
                };
                let want = if valid(&range) {
                    scan(&model, db, range.clone(), reverse, limit).await
                } else {
                    Vec::new()
                };
                let got = scan(store, db, range.clone(), reverse, limit).await;
                assert_eq!(
                    got, want,
                    "step {step}: scan {range:?} reverse {reverse} limit {limit}"
                );
            }
        }
    }
    assert!(scans > 300);
    let store = &stores[0];
    for db in &dbs {
        assert_eq!(all(store, db).await, all(&model, db).await);
        assert_eq!(all(&stores[1], db).await, all(&model, db).await);
        assert_eq!(
            all(&open(&server, small_pages()).await, db).await,
            all(&model, db).await
        );
    }
    assert_eq!(
        store.databases().await.unwrap(),
        model.databases().await.unwrap()
    );
    let cache = store.cache_stats();
    assert!(cache.bytes <= cache.max_bytes, "{cache:?}");
}

#[tokio::test]
async fn deletes_shrink_the_tree_back() {
    let server = Memcached::start(&[]);
    let store = open(&server, small_pages()).await;
    let db = db("shrink");
    for chunk in 0..20 {
        let mut batch = Batch::default();
        for i in 0..50 {
            batch = batch.put(format!("k{:05}", chunk * 50 + i), "v".repeat(20));
        }
        store.write(&db, batch).await.unwrap();
    }
    assert_eq!(all(&store, &db).await.len(), 1000);
    let items_full = server.stat("curr_items").unwrap();
    for i in (0..1000).step_by(2) {
        store
            .write(&db, Batch::default().delete(format!("k{i:05}")))
            .await
            .unwrap();
    }
    let mut batch = Batch::default();
    for i in (1..1000).step_by(2) {
        batch = batch.delete(format!("k{i:05}"));
    }
    store.write(&db, batch).await.unwrap();
    assert!(all(&store, &db).await.is_empty());
    assert_eq!(store.get(&db, "k00001").await.unwrap(), None);
    assert!(items_full > 50, "{items_full}");
}
