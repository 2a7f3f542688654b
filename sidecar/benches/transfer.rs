//! Export and import throughput against raw memcached reads and writes of the same bytes, in
//! one run: a store of 1 MiB blobs (in 512 KiB chunks) and a bucket of 1 KiB metadata values;
//! raw = the blob store's items read (gets, 16 at a time) and written (sets, 16 at a time)
//! with the same client library; export and import = the release binary, rate unbounded.
//! `TRANSFER_BENCH_MIB` sets the blob bytes (default 512).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, stream};
use zenko_memcached_sidecar::blob::BlobStore;
use zenko_memcached_sidecar::items::{Expiry, ItemKey, ItemStore, MemcachedStore};
use zenko_memcached_sidecar::ordered::{
    Batch, MemcachedOrderedStore, OrderedStore, Sublevel, TreeConfig,
};
use zenko_memcached_testkit::{Memcached, pseudo_random_bytes};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");
const BLOB: usize = 1 << 20;
const CHUNK: u64 = 512 << 10;

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / seconds
}

fn run(args: &[&str]) -> f64 {
    let started = Instant::now();
    let output = Command::new(BINARY).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("TRANSFER_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let flags = |memory: usize| {
        vec![
            "-m".to_owned(),
            memory.to_string(),
            "-M".into(),
            "-I".into(),
            "2m".into(),
            "-t".into(),
            "2".into(),
        ]
    };
    let source = Memcached::start_with(flags(mib * 2 + 256));
    let items: Arc<MemcachedStore> =
        Arc::new(MemcachedStore::connect(&[source.address()]).await.unwrap());
    let blobs = BlobStore::new(items.clone(), CHUNK);
    let body = Bytes::from(pseudo_random_bytes(1, BLOB));
    for _ in 0..mib {
        let body = body.clone();
        blobs
            .put(
                stream::iter([Ok::<_, std::convert::Infallible>(body)]),
                BLOB as u64,
            )
            .await
            .unwrap();
    }
    let ordered = MemcachedOrderedStore::open(items.clone(), TreeConfig::default())
        .await
        .unwrap();
    let bucket = Sublevel::new(vec!["bench".into()]);
    for n in 0..20 {
        let batch = (0..1000).fold(Batch::default(), |b, i| {
            b.put(format!("key/{n:03}/{i:04}"), "v".repeat(1024))
        });
        ordered.write(&bucket, batch).await.unwrap();
    }
    let blob_bytes = (mib * BLOB) as u64;
    let meta_bytes = 20_000u64 * 1034;
    let total = blob_bytes + meta_bytes;

    // Raw: every chunk item read, then written to a fresh server, 16 at a time.
    let keys: Vec<ItemKey> = source
        .items()
        .into_iter()
        .map(|item| item.key)
        .filter(|key| key.starts_with("b:") && key.matches(':').count() == 2)
        .map(|key| ItemKey::new(key).unwrap())
        .collect();
    let started = Instant::now();
    let values: Vec<Bytes> = stream::iter(keys.chunks(16))
        .then(|batch| {
            let items = items.clone();
            async move { items.get_many(batch).await.unwrap() }
        })
        .flat_map(|found| stream::iter(found.into_iter().flatten()))
        .collect()
        .await;
    let raw_read = started.elapsed().as_secs_f64();
    let raw_bytes: u64 = values.iter().map(|value| value.len() as u64).sum();
    let sink = Memcached::start_with(flags(mib * 2 + 256));
    let raw_target: Arc<MemcachedStore> =
        Arc::new(MemcachedStore::connect(&[sink.address()]).await.unwrap());
    let started = Instant::now();
    stream::iter(keys.iter().zip(values))
        .for_each_concurrent(16, |(key, value)| {
            let raw_target = raw_target.clone();
            async move { raw_target.set(key, value, Expiry::Never).await.unwrap() }
        })
        .await;
    let raw_write = started.elapsed().as_secs_f64();
    drop(sink);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.zmm");
    let file = file.to_str().unwrap();
    let export = run(&[
        "export",
        "--memcached",
        &source.address(),
        "--out",
        file,
        "--rate",
        "unlimited",
        "--progress",
        "off",
    ]);
    let target = Memcached::start_with(flags(mib * 2 + 256));
    let import = run(&[
        "import",
        "--memcached",
        &target.address(),
        "--in",
        file,
        "--progress",
        "off",
    ]);
    println!(
        "transfer bench: {mib} blobs of 1 MiB ({} MiB in 512 KiB chunks) and 20,000 keys of 1 KiB",
        mib
    );
    println!(
        "raw get of the chunk items:  {:7.1} MiB/s ({raw_bytes} bytes in {raw_read:.2} s)",
        mib_per_s(raw_bytes, raw_read)
    );
    println!(
        "raw set of the chunk items:  {:7.1} MiB/s ({raw_write:.2} s)",
        mib_per_s(raw_bytes, raw_write)
    );
    println!(
        "export (binary, to a file):  {:7.1} MiB/s of store data ({export:.2} s), {:.2} of raw get",
        mib_per_s(total, export),
        mib_per_s(total, export) / mib_per_s(raw_bytes, raw_read)
    );
    println!(
        "import (verify, then write): {:7.1} MiB/s of store data ({import:.2} s), {:.2} of raw set",
        mib_per_s(total, import),
        mib_per_s(total, import) / mib_per_s(raw_bytes, raw_write)
    );
}
