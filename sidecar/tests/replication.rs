//! The replicated item store on three real memcached servers with factor 2: the ordered and
//! blob stores on it lose nothing when one server is killed and comes back empty, then another
//! once the first is refilled, and so on; two writers on one database lose no write, and the
//! replicas of every root record converge to the newest commit; a copy written back after a
//! delete does not bring the item back.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use zenko_memcached_sidecar::blob::{BlobError, BlobKey, BlobStore};
use zenko_memcached_sidecar::items::{
    CasOutcome, Expiry, ItemKey, ItemStore, MemcachedStore, SharedItemStore,
};
use zenko_memcached_sidecar::metrics::Metrics;
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemcachedOrderedStore, OrderedStore, TreeConfig,
};
use zenko_memcached_sidecar::placement::{self, RefillRate, ReplicatedStore};
use zenko_memcached_testkit::{Memcached, pseudo_random_bytes};

use ordered_common::db;

async fn replicated(servers: &[Memcached]) -> Arc<ReplicatedStore> {
    let names: Vec<String> = servers.iter().map(Memcached::address).collect();
    Arc::new(ReplicatedStore::connect(&names, 2).await.unwrap())
}

async fn ordered(items: SharedItemStore) -> MemcachedOrderedStore {
    MemcachedOrderedStore::open(items, TreeConfig::default())
        .await
        .unwrap()
}

fn value(n: usize) -> String {
    let len = [0, 10, 600, 1500, 9000][n % 5];
    format!("{n}:{}", "v".repeat(len))
}

async fn put_blob(blobs: &BlobStore, bytes: Vec<u8>) -> BlobKey {
    let len = bytes.len() as u64;
    let body = stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))]);
    blobs.put(body, len).await.unwrap()
}

async fn get_blob(blobs: &BlobStore, key: &BlobKey) -> Vec<u8> {
    let blob = blobs.open(key, Some(0)).await.unwrap();
    let size = blob.size();
    if size == 0 {
        return Vec::new();
    }
    let parts: Vec<bytes::Bytes> = blobs
        .read(*key, blob, 0..=size - 1)
        .try_collect()
        .await
        .unwrap();
    parts.concat()
}

async fn scan_all(store: &MemcachedOrderedStore, name: &str) -> Vec<(String, String)> {
    store
        .scan(&db(name), KeyRange::all(), false)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_empty_loses_nothing_and_is_repaired_by_reads() {
    let mut servers = [
        Memcached::start(&[]),
        Memcached::start(&[]),
        Memcached::start(&[]),
    ];
    let items = replicated(&servers).await;
    let names: Vec<String> = servers.iter().map(Memcached::address).collect();
    // Recorded as a sidecar records it: a refill ends by writing the record back.
    placement::establish(&names, 2).await.unwrap();
    let store = ordered(items.clone()).await;
    let blobs = BlobStore::new(items.clone(), 64 * 1024);
    let mut model = BTreeMap::new();
    for chunk in 0..20 {
        let mut batch = Batch::default();
        for i in 0..100 {
            let n = chunk * 100 + i;
            batch = batch.put(format!("k/{n:05}"), value(n));
            model.insert(format!("k/{n:05}"), value(n));
        }
        store.write(&db("bucket"), batch).await.unwrap();
    }
    let mut stored_blobs = Vec::new();
    for seed in 0..12u64 {
        let bytes = pseudo_random_bytes(seed, [10, 70_000, 300_000][seed as usize % 3]);
        let key = put_blob(&blobs, bytes.clone()).await;
        stored_blobs.push((key, bytes));
    }

    for (victim, server) in servers.iter_mut().enumerate() {
        // kill -9 and back empty on the same address.
        server.restart();
        // A fresh store instance: nothing cached, every read goes to memcached.
        let fresh = ordered(items.clone()).await;
        let want: Vec<(String, String)> = model.clone().into_iter().collect();
        assert!(
            scan_all(&fresh, "bucket").await == want,
            "server {victim} restarted empty: the database differs"
        );
        for (key, bytes) in &stored_blobs {
            assert!(
                get_blob(&blobs, key).await == *bytes,
                "server {victim} restarted empty: blob {key} differs"
            );
        }
        let report = fresh.check().await.unwrap();
        assert!(report.ok(), "{}", report.summary());
        // Writes go on: rewrite a tenth, delete a tenth.
        let mut batch = Batch::default();
        for n in (0..2000).step_by(10) {
            let key = format!("k/{n:05}");
            if n % 20 == 0 {
                batch = batch.delete(key.clone());
                model.remove(&key);
            } else {
                batch = batch.put(key.clone(), format!("after loss of {victim}"));
                model.insert(key, format!("after loss of {victim}"));
            }
        }
        fresh.write(&db("bucket"), batch).await.unwrap();
        // Reads gave the emptied server back only what they read: the refill copies the
        // rest, so that the next victim can go.
        placement::refill(&items, victim, &Metrics::default(), RefillRate(1 << 30))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_lose_nothing_and_root_replicas_converge() {
    let servers = [
        Memcached::start(&[]),
        Memcached::start(&[]),
        Memcached::start(&[]),
    ];
    let first = ordered(replicated(&servers).await).await;
    let second = ordered(replicated(&servers).await).await;
    let stores = [&first, &second];
    let failures: Vec<String> = stream::iter(0..2000usize)
        .map(|n| {
            let store = stores[n % 2];
            async move {
                store
                    .write(
                        &db("shared"),
                        Batch::default().put(format!("k/{n:05}"), value(n)),
                    )
                    .await
                    .err()
                    .map(|error| error.to_string())
            }
        })
        .buffer_unordered(32)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    let got = scan_all(&first, "shared").await;
    assert_eq!(got.len(), 2000);
    assert!(got.iter().all(|(key, v)| {
        let n: usize = key[2..].parse().unwrap();
        *v == value(n)
    }));
    // Every root record: both owners hold the same bytes (the newest version).
    let direct: Vec<MemcachedStore> = {
        let mut direct = Vec::new();
        for server in &servers {
            direct.push(MemcachedStore::connect(&[server.address()]).await.unwrap());
        }
        direct
    };
    let probe = replicated(&servers).await;
    // memcached's listing can miss an item moving between its LRUs: the union of all three.
    let roots: std::collections::BTreeSet<String> = servers
        .iter()
        .flat_map(Memcached::items)
        .map(|item| item.key)
        .filter(|key| key.ends_with(":r"))
        .collect();
    // The catalog's and the database's.
    assert!(roots.len() >= 2, "{roots:?}");
    for root in roots {
        let key = ItemKey::new(root.clone()).unwrap();
        let owners = probe.owners(&key);
        let copies = [
            direct[owners[0]].get(&key).await.unwrap(),
            direct[owners[1]].get(&key).await.unwrap(),
        ];
        assert!(copies[0].is_some() && copies[0] == copies[1], "{root}");
    }
}

/// A token read before the primary restarted empty never matches an item written after it,
/// even when the restarted memcached's own counter reaches the same value again: a writer
/// holding it must lose its compare-and-swap, or it would replace newer commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_before_a_restart_never_matches() {
    let mut servers = [
        Memcached::start(&[]),
        Memcached::start(&[]),
        Memcached::start(&[]),
    ];
    let items = replicated(&servers).await;
    let key = ItemKey::new("o:token-test:r").unwrap();
    assert!(
        items
            .add(&key, bytes::Bytes::from_static(b"v1"), Expiry::Never)
            .await
            .unwrap()
    );
    // A writer reads the first version, then others commit two more.
    let (_, stale) = items.gets(&key).await.unwrap().unwrap();
    let mut token = stale;
    for value in ["v2", "v3"] {
        let outcome = items
            .cas(
                &key,
                bytes::Bytes::from_static(value.as_bytes()),
                token,
                Expiry::Never,
            )
            .await
            .unwrap();
        assert_eq!(outcome, CasOutcome::Stored);
        token = items.gets(&key).await.unwrap().unwrap().1;
    }
    let primary = items.owners(&key)[0];
    servers[primary].restart();
    items.ping().await.unwrap();
    // Reads restore v3 on the primary, whose fresh counter gives it the value the first
    // version had: the stale writer's compare-and-swap must still lose.
    assert_eq!(
        items.get(&key).await.unwrap().unwrap(),
        bytes::Bytes::from_static(b"v3")
    );
    let (_, now) = items.gets(&key).await.unwrap().unwrap();
    assert_ne!(now, stale);
    assert_eq!(
        items
            .cas(
                &key,
                bytes::Bytes::from_static(b"stale"),
                stale,
                Expiry::Never
            )
            .await
            .unwrap(),
        CasOutcome::Conflict
    );
    assert_eq!(
        items.get(&key).await.unwrap().unwrap(),
        bytes::Bytes::from_static(b"v3")
    );
}

/// A read that repairs an owner, or a refill, reads a copy of an item and writes it back with
/// `add` a moment later: a delete in between must not be undone, on an owner that held the item
/// as on one restarted empty. (Under a running load, a delete racing a download used to leave
/// the blob's manifest back on one server, for good: "damaged" instead of "not found", and
/// memory that nothing frees.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_written_back_after_a_delete_does_not_bring_the_item_back() {
    let mut servers = [
        Memcached::start(&[]),
        Memcached::start(&[]),
        Memcached::start(&[]),
    ];
    let items = replicated(&servers).await;
    let blobs = BlobStore::new(items.clone(), 64 * 1024);
    for emptied in [false, true] {
        let key = put_blob(&blobs, pseudo_random_bytes(7, 150_000)).await;
        let keys: Vec<ItemKey> = std::iter::once(key.head_item())
            .chain((0..3).map(|n| key.chunk_item(n)))
            .collect();
        // The copies each owner holds, as a repair or a refill reads them.
        let mut copies = Vec::new();
        for item in &keys {
            for owner in items.owners(item) {
                let server = items.server(owner);
                let copy = server.get_many_with_expiry(std::slice::from_ref(item));
                copies.push((item.clone(), owner, copy.await.unwrap()[0].clone().unwrap()));
            }
        }
        if emptied {
            // The manifest's primary restarted empty: reads fall back, and would repair it.
            let primary = items.owners(&key.head_item())[0];
            servers[primary].restart();
        }
        blobs.delete(&key).await.unwrap();
        for (item, owner, (value, expiry)) in copies {
            let written = items.server(owner).add(&item, value, expiry).await.unwrap();
            assert!(
                !written,
                "a copy of {item} went back on server {owner} after the delete"
            );
            assert_eq!(items.get(&item).await.unwrap(), None, "{item}");
        }
        assert!(
            matches!(blobs.open(&key, None).await, Err(BlobError::NotFound)),
            "blob deleted (emptied: {emptied}) is back"
        );
    }
}
