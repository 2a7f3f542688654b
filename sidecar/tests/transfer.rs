//! `zenko-memcached-sidecar export` and `import`, the real binary against real memcached: an
//! export taken under a running write load and imported into a fresh replicated store gives back
//! every blob and key acknowledged before the export started, with the deployment id, and the
//! imported store passes `check` and serves; exported again from there and imported into a
//! single server, the same. A file cut short or with one flipped byte is refused with nothing
//! written; a store that holds data is refused without `--force overwrite`.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{TryStreamExt, stream};
use zenko_memcached_sidecar::blob::{BlobError, BlobKey, BlobStore};
use zenko_memcached_sidecar::items::SharedItemStore;
use zenko_memcached_sidecar::metadata::uuid::DeploymentUuid;
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemcachedOrderedStore, OrderedStore, Sublevel, TreeConfig,
};
use zenko_memcached_sidecar::placement;
use zenko_memcached_testkit::{Memcached, Sidecar, pseudo_random_bytes};

use ordered_common::db;

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");
const CHUNK: u64 = 64 * 1024;

/// Run the binary to its end.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BINARY).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

fn list(servers: &[&Memcached]) -> String {
    servers
        .iter()
        .map(|server| server.address())
        .collect::<Vec<_>>()
        .join(",")
}

/// The store of `servers` as its sidecars read it (as its placement record lays it out).
async fn store(servers: &[&Memcached]) -> SharedItemStore {
    let names: Vec<String> = servers.iter().map(|server| server.address()).collect();
    zenko_memcached_sidecar::commands::open_store(&names)
        .await
        .unwrap()
        .items
}

async fn ordered(items: SharedItemStore) -> MemcachedOrderedStore {
    MemcachedOrderedStore::open(items, TreeConfig::default())
        .await
        .unwrap()
}

async fn put_blob(blobs: &BlobStore, bytes: Vec<u8>) -> BlobKey {
    let len = bytes.len() as u64;
    blobs
        .put(
            stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]),
            len,
        )
        .await
        .unwrap()
}

/// A blob's bytes, or `None` when there is no such blob (any other error fails the test).
async fn read_blob(blobs: &BlobStore, key: &BlobKey) -> Option<Vec<u8>> {
    let blob = match blobs.open(key, None).await {
        Err(BlobError::NotFound) => return None,
        other => other.unwrap(),
    };
    let size = blob.size();
    if size == 0 {
        return Some(Vec::new());
    }
    let parts: Vec<Bytes> = blobs
        .read(*key, blob, 0..=size - 1)
        .try_collect()
        .await
        .unwrap();
    Some(parts.concat())
}

async fn listing(
    store: &MemcachedOrderedStore,
    db: &Sublevel,
    prefix: &str,
) -> Vec<(String, String)> {
    let range = KeyRange {
        lower: std::ops::Bound::Included(prefix.to_owned()),
        upper: std::ops::Bound::Excluded(format!("{prefix}\u{7f}")),
    };
    store
        .scan(db, range, false)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// What was acknowledged before the export started.
struct Model {
    blobs: Vec<(BlobKey, Vec<u8>)>,
    /// Per database, the keys under `ack/` and their values.
    databases: BTreeMap<Sublevel, Vec<(String, String)>>,
    /// Listed, without a key.
    empty: Sublevel,
    uuid: String,
}

fn value(n: usize) -> String {
    // Empty, small, a page's share, out of line.
    let len = [0, 12, 700, 9_000][n % 4];
    format!("{n}:{}", "v".repeat(len))
}

async fn fill(items: &SharedItemStore) -> Model {
    let blobs = BlobStore::new(items.clone(), CHUNK);
    let store = ordered(items.clone()).await;
    let mut model = Model {
        blobs: Vec::new(),
        databases: BTreeMap::new(),
        empty: db("empty-bucket"),
        uuid: DeploymentUuid::new(items.clone()).get().await.unwrap(),
    };
    let sizes = [
        0,
        1,
        1000,
        CHUNK as usize,
        CHUNK as usize + 1,
        300_000,
        1_000_000,
    ];
    for (n, size) in sizes.into_iter().chain([4096; 40]).enumerate() {
        let bytes = pseudo_random_bytes(n as u64, size);
        model
            .blobs
            .push((put_blob(&blobs, bytes.clone()).await, bytes));
    }
    for (name, keys) in [("photos", 1500), ("__metastore", 3), ("users..bucket", 2)] {
        let mut entries = Vec::new();
        for n in 0..keys {
            entries.push((format!("ack/{n:05}"), value(n)));
        }
        for chunk in entries.chunks(300) {
            let batch = chunk.iter().fold(Batch::default(), |batch, (k, v)| {
                batch.put(k.clone(), v.clone())
            });
            store.write(&db(name), batch).await.unwrap();
        }
        model.databases.insert(db(name), entries);
    }
    let nested = Sublevel::new(vec!["a".into(), "b".into()]);
    store
        .write(&nested, Batch::default().put("ack/x", "y"))
        .await
        .unwrap();
    model
        .databases
        .insert(nested, vec![("ack/x".into(), "y".into())]);
    store
        .write(&model.empty, Batch::default().put("gone", "1"))
        .await
        .unwrap();
    store
        .write(&model.empty, Batch::default().delete("gone"))
        .await
        .unwrap();
    model
}

/// Every acknowledged blob, key and listing is in the store, the deployment id too.
async fn assert_holds(items: &SharedItemStore, model: &Model) {
    let blobs = BlobStore::new(items.clone(), CHUNK);
    for (key, bytes) in &model.blobs {
        let read = read_blob(&blobs, key).await;
        assert!(read.as_ref() == Some(bytes), "blob {key} differs");
    }
    let store = ordered(items.clone()).await;
    for (db, entries) in &model.databases {
        assert_eq!(
            &listing(&store, db, "ack/").await,
            entries,
            "listing of {db}"
        );
        for (key, value) in entries.iter().step_by(97) {
            assert_eq!(store.get(db, key).await.unwrap().as_ref(), Some(value));
        }
    }
    let databases = store.databases().await.unwrap();
    assert!(databases.contains(&model.empty), "{databases:?}");
    assert!(listing(&store, &model.empty, "").await.is_empty());
    assert_eq!(
        DeploymentUuid::new(items.clone()).get().await.unwrap(),
        model.uuid
    );
}

/// Writes until told to stop: new blobs, deletes of some of them and of `doomed`, new keys.
/// The blobs written, with their bytes.
async fn load(
    items: SharedItemStore,
    doomed: Vec<BlobKey>,
    running: Arc<AtomicBool>,
) -> Vec<(BlobKey, Vec<u8>)> {
    let blobs = BlobStore::new(items.clone(), CHUNK);
    let store = ordered(items).await;
    let mut doomed = doomed.into_iter();
    let mut written = Vec::new();
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) {
        let bytes = pseudo_random_bytes(1000 + n, [3000, 70_000, 150_000][n as usize % 3]);
        written.push((put_blob(&blobs, bytes.clone()).await, bytes));
        if n % 3 == 2 {
            let (key, _) = written.remove(0);
            blobs.delete(&key).await.unwrap();
        }
        if let Some(key) = doomed.next() {
            blobs.delete(&key).await.unwrap();
        }
        store
            .write(
                &db("photos"),
                Batch::default().put(format!("load/{n:05}"), value(n as usize)),
            )
            .await
            .unwrap();
        n += 1;
        // A steady load, not one that fills memcached while the export runs.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(n > 5, "the load wrote only {n} times");
    written
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn export(servers: &[&Memcached], path: &Path, extra: &[&str]) -> String {
    let mut words = args(&["export", "--memcached", &list(servers), "--out"]);
    words.push(path.display().to_string());
    words.extend(args(extra));
    let output = run(words).await;
    assert!(
        output.status.success(),
        "export failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

async fn import(servers: &[&Memcached], path: &Path, extra: &[&str]) -> Output {
    let mut words = args(&["import", "--memcached", &list(servers), "--in"]);
    words.push(path.display().to_string());
    words.extend(args(extra));
    run(words).await
}

async fn check(servers: &[&Memcached]) {
    let output = run(args(&["check", "--memcached", &list(servers)])).await;
    assert!(
        output.status.success(),
        "check failed:\n{}",
        stdout(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_under_load_restores_what_was_acknowledged() {
    let source = Memcached::start(&["-m", "256"]);
    placement::establish(&[source.address()], 1).await.unwrap();
    let items = store(&[&source]).await;
    let model = fill(&items).await;
    let blobs = BlobStore::new(items.clone(), CHUNK);
    let mut doomed = Vec::new();
    for n in 0..10 {
        doomed.push(put_blob(&blobs, pseudo_random_bytes(500 + n, 100_000)).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.zmm");

    let running = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn(load(items.clone(), doomed.clone(), running.clone()));
    // Slow enough that the load runs all through it.
    let summary = export(
        &[&source],
        &file,
        &["--rate", "4MiB", "--progress", "lines"],
    )
    .await;
    running.store(false, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(summary.starts_with("exported 5 databases"), "{summary}");
    // The blobs the load deleted after the listing are left out, not an error.
    assert!(
        summary.contains("deleted during the export left out"),
        "{summary}"
    );
    eprintln!("{summary}");
    assert!(!dir.path().join("store.zmm.partial").exists());

    // Into a fresh store of two servers, each item on both.
    let targets = [
        Memcached::start(&["-m", "256"]),
        Memcached::start(&["-m", "256"]),
    ];
    let target: Vec<&Memcached> = targets.iter().collect();
    let output = import(
        &target,
        &file,
        &["--replication-factor", "2", "--progress", "lines"],
    )
    .await;
    assert!(
        output.status.success(),
        "import failed: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains(&format!("deployment id {}", model.uuid)),
        "{}",
        stdout(&output)
    );
    let imported = store(&target).await;
    assert_holds(&imported, &model).await;
    // Blobs of the load and those it deleted: whole or absent, never damaged.
    let blobs = BlobStore::new(imported.clone(), CHUNK);
    for key in &doomed {
        read_blob(&blobs, key).await;
    }
    for (key, bytes) in &written {
        if let Some(read) = read_blob(&blobs, key).await {
            assert!(read == *bytes, "load blob {key} differs");
        }
    }
    check(&target).await;

    // The imported store serves: a sidecar on it answers with the exported bytes.
    let sidecar = Sidecar::start(
        BINARY,
        &["--memcached", &list(&target), "--replication-factor", "2"],
    );
    let client = reqwest::Client::new();
    let (key, bytes) = &model.blobs[5];
    let response = client
        .get(format!("{}/DataFile/{key}", sidecar.data_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == bytes[..]);
    let ready = client
        .get(format!("{}/readyz", sidecar.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    drop(sidecar);

    // Exported from the replicated store, into one server: the same again.
    let second = dir.path().join("again.zmm");
    export(
        &target,
        &second,
        &["--rate", "unlimited", "--progress", "off"],
    )
    .await;
    let single = Memcached::start(&["-m", "256"]);
    let output = import(&[&single], &second, &["--progress", "off"]).await;
    assert!(
        output.status.success(),
        "import failed: {}",
        stderr(&output)
    );
    assert_holds(&store(&[&single]).await, &model).await;
    check(&[&single]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_and_stores_with_data_are_refused() {
    let source = Memcached::start(&[]);
    let items = store(&[&source]).await;
    let blobs = BlobStore::new(items.clone(), CHUNK);
    put_blob(&blobs, pseudo_random_bytes(1, 100_000)).await;
    put_blob(&blobs, pseudo_random_bytes(2, 500)).await;
    ordered(items.clone())
        .await
        .write(&db("bucket"), Batch::default().put("key", "value"))
        .await
        .unwrap();
    DeploymentUuid::new(items.clone()).get().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Through standard output.
    let output = run(args(&[
        "export",
        "--memcached",
        &source.address(),
        "--out",
        "-",
    ]))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("exported 1 databases (1 keys) and 2 blobs"));
    let good = output.stdout;

    // Into a directory, keeping the newest files (names carry the time, to the second).
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    for _ in 0..2 {
        let summary = export(&[&source], &backups, &["--keep", "1"]).await;
        assert!(summary.contains("/zmm-export-"), "{summary}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1);

    let target = Memcached::start(&[]);
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("empty".into(), Vec::new(), "not an export"),
        ("cut in its header".into(), good[..40].to_vec(), "cut short"),
        (
            "cut in half".into(),
            good[..good.len() / 2].to_vec(),
            "cut short",
        ),
        (
            "cut by one byte".into(),
            good[..good.len() - 1].to_vec(),
            "cut short",
        ),
    ]
    .into_iter()
    .chain(
        [30, good.len() / 3, good.len() / 2, good.len() - 20]
            .into_iter()
            .map(|at| {
                let mut damaged = good.clone();
                damaged[at] ^= 0x01;
                (format!("byte {at} flipped"), damaged, "fails its checksum")
            }),
    )
    .collect();
    for (what, bytes, expected) in cases {
        let path = dir.path().join("damaged.zmm");
        std::fs::write(&path, &bytes).unwrap();
        let output = import(&[&target], &path, &[]).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{what}: {message}");
        assert!(
            message.contains("nothing was written") || what == "empty",
            "{what}: {message}"
        );
        assert!(message.contains(expected), "{what}: {message}");
        assert_eq!(target.items(), vec![], "{what}: something was written");
    }

    let path = dir.path().join("good.zmm");
    std::fs::write(&path, &good).unwrap();
    let output = import(&[&target], &path, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    // Again: the store now holds data.
    let output = import(&[&target], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("already holds data"), "{message}");
    assert!(
        message.contains("1 metadata databases: [bucket]"),
        "{message}"
    );
    assert!(message.contains("2 blobs"), "{message}");
    assert!(message.contains("--force overwrite"), "{message}");
    let output = import(&[&target], &path, &["--force", "overwrite"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    check(&[&target]).await;
    // A factor the store does not have is refused, naming the one it has.
    let output = import(
        &[&target],
        &path,
        &["--force", "overwrite", "--replication-factor", "2"],
    )
    .await;
    assert!(
        stderr(&output).contains("replication factor 1, not 2"),
        "{}",
        stderr(&output)
    );
}
