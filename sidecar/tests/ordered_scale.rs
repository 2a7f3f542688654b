//! The ordered store at the scale users run it, on real memcached: databases grown to ten
//! thousand keys and more with mixed value sizes (empty, small, page-sized, out of line), then
//! emptied in every order (in key order one at a time, reverse, every other key, random with
//! many in flight, ranges through batches), with default pages and with tiny ones; several
//! writers through two store instances, and a writer in a second process. After every phase
//! the database is compared with a model (forward and reverse scans, gets of present and
//! deleted keys) and the whole store is checked (`check`: presence, checksums, order,
//! separators, sizes, expiry of every page and value).
//!
//! The second process is this test binary run again for one ignored test
//! (`second_process_writer`), told where memcached is by `ZMM_SCALE_CHILD_MEMCACHED`.
//!
//! Reproducible: `ZMM_SCALE_SEED` picks the random sequences (printed at the start),
//! `ZMM_SCALE_KEYS` the database size (default 10,000), `ZMM_SCALE_ROUNDS` how many seeds
//! in a row (default 1) for the long version.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::collections::BTreeMap;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemcachedOrderedStore, OrderedStore, Sublevel, TreeConfig,
};
use zenko_memcached_testkit::Memcached;

use ordered_common::{db, open, small_pages};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn keys_per_phase() -> usize {
    env_number("ZMM_SCALE_KEYS", 10_000) as usize
}

fn seeds() -> Vec<u64> {
    let first = env_number("ZMM_SCALE_SEED", 0x5ca1e);
    (0..env_number("ZMM_SCALE_ROUNDS", 1))
        .map(|n| first + n)
        .collect()
}

/// A value of a size drawn from what metadata holds: mostly small JSON, some empty, some
/// near a page, a few large enough to be stored out of line.
fn value(rng: &mut StdRng, inline_max: usize, tag: usize) -> String {
    let len = match rng.random_range(0..100) {
        0..5 => 0,
        5..60 => rng.random_range(1..200),
        60..85 => 600,
        85..97 => 1500,
        _ => rng.random_range(inline_max + 1..inline_max * 3),
    };
    // Starts with its key's number, so that a value under the wrong key shows.
    let mut text = format!("{tag}:");
    let fill = char::from(b'a' + (tag % 26) as u8);
    text.extend(std::iter::repeat_n(fill, len.saturating_sub(text.len())));
    text.truncate(len);
    text
}

struct Fixture {
    server: Memcached,
    stores: [MemcachedOrderedStore; 2],
    config: TreeConfig,
    db: Sublevel,
    model: BTreeMap<String, String>,
    rng: StdRng,
    name: String,
}

impl Fixture {
    async fn new(name: &str, config: TreeConfig, seed: u64) -> Fixture {
        let server = Memcached::start(&["-m", "1024"]);
        let stores = [open(&server, config).await, open(&server, config).await];
        println!("{name}: seed {seed}");
        Fixture {
            server,
            stores,
            config,
            db: db(name),
            model: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
            name: name.to_owned(),
        }
    }

    fn inline_max(&self) -> usize {
        self.config.inline_value_max
    }

    /// Apply `batches` with `in_flight` of them at once, spread over both store instances;
    /// every one must be acknowledged.
    async fn write(&mut self, phase: &str, batches: Vec<Batch>, in_flight: usize) {
        let started = Instant::now();
        let count = batches.len();
        for batch in &batches {
            for mutation in &batch.mutations {
                match mutation {
                    zenko_memcached_sidecar::ordered::Mutation::Put { key, value } => {
                        self.model.insert(key.clone(), value.clone());
                    }
                    zenko_memcached_sidecar::ordered::Mutation::Delete { key } => {
                        self.model.remove(key);
                    }
                }
            }
        }
        let stores = &self.stores;
        let db = &self.db;
        let failures: Vec<String> = stream::iter(batches.into_iter().enumerate())
            .map(|(index, batch)| async move {
                let store = &stores[index % 2];
                let first = format!("{:?}", batch.mutations.first());
                store
                    .write(db, batch)
                    .await
                    .err()
                    .map(|error| format!("batch {index} ({first}...): {error}"))
            })
            .buffer_unordered(in_flight)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        assert!(
            failures.is_empty(),
            "{} / {phase}: {} of {count} writes failed, first: {}",
            self.name,
            failures.len(),
            failures[0]
        );
        println!(
            "{} / {phase}: {count} writes in {:.1} s",
            self.name,
            started.elapsed().as_secs_f64()
        );
        self.verify(phase).await;
    }

    /// The database equals the model, and the whole store passes the check.
    async fn verify(&mut self, phase: &str) {
        let name = &self.name;
        let want: Vec<(String, String)> = self
            .model
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for store in &self.stores {
            let got: Vec<(String, String)> = store
                .scan(&self.db, KeyRange::all(), false)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert!(
                got == want,
                "{name} / {phase}: scan has {} keys, the model {}; first difference at {:?}",
                got.len(),
                want.len(),
                got.iter()
                    .zip(&want)
                    .position(|(g, w)| g != w)
                    .unwrap_or(got.len().min(want.len()))
            );
        }
        let reverse: Vec<String> = self.stores[1]
            .scan(&self.db, KeyRange::all(), true)
            .await
            .unwrap()
            .map_ok(|(key, _)| key)
            .try_collect()
            .await
            .unwrap();
        assert!(
            reverse.iter().eq(self.model.keys().rev()),
            "{name} / {phase}: reverse scan"
        );
        // Gets of present keys and of keys that were there once (or never).
        for _ in 0..200 {
            let key = format!(
                "k/{:06}",
                self.rng.random_range(0..keys_per_phase() as u32 * 2)
            );
            let got = self.stores[0].get(&self.db, &key).await.unwrap();
            assert_eq!(
                got.as_ref(),
                self.model.get(&key),
                "{name} / {phase}: get {key}"
            );
        }
        let report = self.stores[0].check().await.unwrap();
        assert!(
            report.ok(),
            "{name} / {phase}: check failed:\n{}\n{}",
            report
                .databases
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            report.summary()
        );
        let this = report
            .databases
            .iter()
            .find(|db| db.sublevel == self.db)
            .unwrap();
        assert_eq!(this.keys, self.model.len() as u64, "{name} / {phase}");
        println!(
            "{name} / {phase}: {} keys, depth {}, {} pages, {} out-of-line values, memcached {} items",
            this.keys,
            this.depth,
            this.pages,
            this.values,
            self.server.stat("curr_items").unwrap_or(0)
        );
    }

    /// Put `count` fresh keys (`k/<n>` for n in a random order) with `in_flight` at once.
    async fn grow(&mut self, phase: &str, count: usize, in_flight: usize) {
        let mut numbers: Vec<usize> = (0..count * 2).step_by(2).collect();
        numbers.shuffle(&mut self.rng);
        let inline_max = self.inline_max();
        let batches = numbers
            .into_iter()
            .map(|n| {
                let value = value(&mut self.rng, inline_max, n);
                Batch::default().put(format!("k/{n:06}"), value)
            })
            .collect();
        self.write(phase, batches, in_flight).await;
    }

    fn keys(&self) -> Vec<String> {
        self.model.keys().cloned().collect()
    }

    async fn delete_each(&mut self, phase: &str, keys: Vec<String>, in_flight: usize) {
        let batches = keys
            .into_iter()
            .map(|key| Batch::default().delete(key))
            .collect();
        self.write(phase, batches, in_flight).await;
    }
}

/// Every emptying order on one database, growing it again before each.
async fn grow_and_empty(name: &str, config: TreeConfig, seed: u64) {
    let count = keys_per_phase();
    let mut fx = Fixture::new(name, config, seed).await;

    fx.grow("grow 1", count, 32).await;
    let keys = fx.keys();
    fx.delete_each("delete in order, one at a time", keys, 1)
        .await;
    assert!(fx.model.is_empty());

    fx.grow("grow 2", count, 16).await;
    let keys = fx.keys();
    let every_other: Vec<String> = keys.iter().step_by(2).cloned().collect();
    fx.delete_each("delete every other key", every_other, 1)
        .await;
    let mut rest = fx.keys();
    rest.reverse();
    fx.delete_each("delete the rest in reverse order", rest, 8)
        .await;
    assert!(fx.model.is_empty());

    fx.grow("grow 3", count, 64).await;
    // The smallest keys' subtrees emptied and gone, then keys below all the rest put back.
    let keys = fx.keys();
    let smallest: Vec<Batch> = keys[..keys.len() * 9 / 10]
        .chunks(100)
        .map(|run| {
            run.iter()
                .fold(Batch::default(), |batch, key| batch.delete(key.clone()))
        })
        .collect();
    fx.write("delete the smallest nine tenths", smallest, 4)
        .await;
    let below: Vec<Batch> = (0..count / 10)
        .map(|n| Batch::default().put(format!("a/{n:06}"), format!("below {n}")))
        .collect();
    fx.write("put keys below every remaining one", below, 16)
        .await;
    let mut keys = fx.keys();
    keys.shuffle(&mut fx.rng);
    fx.delete_each("delete in random order, 50 in flight", keys, 50)
        .await;

    fx.grow("grow 4", count, 32).await;
    // Ranges through batches: runs of consecutive keys, mixed with puts of new keys.
    let keys = fx.keys();
    let mut batches = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let run = fx.rng.random_range(1..400).min(keys.len() - start);
        let mut batch = Batch::default();
        for key in &keys[start..start + run] {
            batch = batch.delete(key.clone());
        }
        if fx.rng.random_bool(0.3) {
            let n = 2 * fx.rng.random_range(0..count) + 1;
            batch = batch.put(format!("k/{n:06}"), "odd one");
        }
        batches.push(batch);
        start += run;
    }
    fx.write("delete ranges through batches", batches, 4).await;
    let keys = fx.keys();
    fx.delete_each("delete what the batches added", keys, 4)
        .await;
    assert!(fx.model.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_grown_and_emptied_with_default_pages() {
    for seed in seeds() {
        grow_and_empty("default-pages", TreeConfig::default(), seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_grown_and_emptied_with_tiny_pages() {
    for seed in seeds() {
        grow_and_empty("tiny-pages", small_pages(), seed).await;
    }
}

/// The batches one writer of `two_processes_write_one_database` applies, in order, on keys
/// under its own prefix: grow, then delete two thirds in random order, then rewrite the rest.
/// Deterministic, so that the parent knows what the child acknowledged.
fn writer_batches(prefix: &str, seed: u64) -> Vec<Vec<Batch>> {
    let count = keys_per_phase() / 2;
    let mut rng = StdRng::seed_from_u64(seed);
    let inline_max = TreeConfig::default().inline_value_max;
    let mut numbers: Vec<usize> = (0..count).collect();
    numbers.shuffle(&mut rng);
    let grow = numbers
        .iter()
        .map(|n| Batch::default().put(format!("{prefix}{n:06}"), value(&mut rng, inline_max, *n)))
        .collect();
    numbers.shuffle(&mut rng);
    let (gone, kept) = numbers.split_at(count * 2 / 3);
    let delete = gone
        .iter()
        .map(|n| Batch::default().delete(format!("{prefix}{n:06}")))
        .collect();
    let rewrite = kept
        .iter()
        .map(|n| Batch::default().put(format!("{prefix}{n:06}"), format!("rewritten {n}")))
        .collect();
    vec![grow, delete, rewrite]
}

fn apply_to_model(model: &mut BTreeMap<String, String>, batches: &[Vec<Batch>]) {
    for batch in batches.iter().flatten() {
        for mutation in &batch.mutations {
            match mutation {
                zenko_memcached_sidecar::ordered::Mutation::Put { key, value } => {
                    model.insert(key.clone(), value.clone());
                }
                zenko_memcached_sidecar::ordered::Mutation::Delete { key } => {
                    model.remove(key);
                }
            }
        }
    }
}

/// Apply a writer's phases with 16 batches in flight; every batch must be acknowledged.
async fn run_writer(store: &MemcachedOrderedStore, db: &Sublevel, phases: Vec<Vec<Batch>>) {
    for phase in phases {
        let failures: Vec<String> = stream::iter(phase)
            .map(|batch| async move { store.write(db, batch).await.err().map(|e| e.to_string()) })
            .buffer_unordered(16)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        assert!(
            failures.is_empty(),
            "{} writes failed: {}",
            failures.len(),
            failures[0]
        );
    }
}

const SHARED_DB: &str = "two-processes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the second process of two_processes_write_one_database"]
async fn second_process_writer() {
    let Ok(address) = std::env::var("ZMM_SCALE_CHILD_MEMCACHED") else {
        return;
    };
    let items = std::sync::Arc::new(
        zenko_memcached_sidecar::items::MemcachedStore::connect(&[address])
            .await
            .unwrap(),
    );
    let store = MemcachedOrderedStore::open(items, TreeConfig::default())
        .await
        .unwrap();
    let seed = seeds()[0];
    run_writer(&store, &db(SHARED_DB), writer_batches("child/", seed + 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_write_one_database() {
    let server = Memcached::start(&["-m", "1024"]);
    let seed = seeds()[0];
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "second_process_writer",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("ZMM_SCALE_CHILD_MEMCACHED", server.address())
        .kill_on_drop(true)
        .output();
    let database = db(SHARED_DB);
    let parent = async {
        // Two instances in this process as well, each with its own half of the keys.
        let first = open(&server, TreeConfig::default()).await;
        let second = open(&server, TreeConfig::default()).await;
        tokio::join!(
            run_writer(&first, &database, writer_batches("parent-a/", seed + 2)),
            run_writer(&second, &database, writer_batches("parent-b/", seed + 3)),
        );
        first
    };
    let (output, store) = tokio::join!(child, parent);
    let output = output.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the second process failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut model = BTreeMap::new();
    apply_to_model(&mut model, &writer_batches("child/", seed + 1));
    apply_to_model(&mut model, &writer_batches("parent-a/", seed + 2));
    apply_to_model(&mut model, &writer_batches("parent-b/", seed + 3));
    let got: Vec<(String, String)> = store
        .scan(&database, KeyRange::all(), false)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let want: Vec<(String, String)> = model.into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the database differs from what the three writers acknowledged"
    );
    let report = store.check().await.unwrap();
    assert!(report.ok(), "{}", report.summary());
}

/// The smallest keys' subtree emptied and gone, then keys below every remaining one put back:
/// the tree must stay readable by a fresh instance (its internal nodes sorted) and pass the
/// check. Once wrote a root whose separators were out of order, so the database could not be
/// read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_put_below_an_emptied_subtree_keep_the_tree_readable() {
    for (total, cut) in [(2000, 1000), (2000, 1900), (3000, 1500), (3000, 2900)] {
        let server = Memcached::start(&[]);
        let writer = open(&server, small_pages()).await;
        let database = db("refilled-below");
        let mut model = BTreeMap::new();
        for start in (10_000..10_000 + total).step_by(50) {
            let mut batch = Batch::default();
            for n in start..(start + 50).min(10_000 + total) {
                batch = batch.put(format!("key-{n:06}"), "v".repeat(20));
                model.insert(format!("key-{n:06}"), "v".repeat(20));
            }
            writer.write(&database, batch).await.unwrap();
        }
        let mut batch = Batch::default();
        for n in 10_000..10_000 + cut {
            batch = batch.delete(format!("key-{n:06}"));
            model.remove(&format!("key-{n:06}"));
        }
        writer.write(&database, batch).await.unwrap();
        let mut batch = Batch::default();
        for n in 0..200 {
            batch = batch.put(format!("key-{n:06}"), "v".repeat(20));
            model.insert(format!("key-{n:06}"), "v".repeat(20));
        }
        writer.write(&database, batch).await.unwrap();
        // A fresh instance reads every page from memcached.
        let reader = open(&server, small_pages()).await;
        let got: Vec<(String, String)> = reader
            .scan(&database, KeyRange::all(), false)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let want: Vec<(String, String)> = model.into_iter().collect();
        assert!(got == want, "{total}/{cut}: the database differs");
        let report = reader.check().await.unwrap();
        assert!(report.ok(), "{total}/{cut}: {}", report.databases[0]);
    }
}
