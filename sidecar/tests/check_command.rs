//! `zenko-memcached-sidecar check`, the real binary against real memcached: a healthy store
//! passes (exit 0, a line per database), also while a writer keeps changing it; a page item
//! deleted or damaged behind the sidecar's back fails it (exit 1), naming the bucket.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use zenko_memcached_sidecar::items::{Expiry, ItemKey};
use zenko_memcached_sidecar::ordered::{Batch, OrderedStore, TreeConfig};
use zenko_memcached_testkit::Memcached;

use ordered_common::{db, items, open};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

async fn check(server: &Memcached) -> (Output, String) {
    let address = server.address();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .args(["check", "--memcached", &address])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_healthy_store_and_names_a_damaged_bucket() {
    let server = Memcached::start(&["-m", "256"]);
    let store = open(&server, TreeConfig::default()).await;
    let photos = db("photos");
    // Enough keys for pages under the root, some values stored out of line.
    for chunk in 0..30 {
        let mut batch = Batch::default();
        for i in 0..100 {
            let n = chunk * 100 + i;
            let len = if n % 50 == 0 { 10_000 } else { 700 };
            batch = batch.put(format!("photo/{n:05}"), "x".repeat(len));
        }
        store.write(&photos, batch).await.unwrap();
    }
    store
        .write(&db("tiny"), Batch::default().put("one", "1"))
        .await
        .unwrap();

    let (output, stdout) = check(&server).await;
    assert!(output.status.success(), "check failed:\n{stdout}");
    assert!(stdout.contains("ok   [photos] keys=3000"), "{stdout}");
    assert!(stdout.contains("ok   [tiny] keys=1"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("ok: 2 databases"),
        "{stdout}"
    );

    // Next to a writer that keeps replacing pages, the check still passes.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let store = store.clone();
        let photos = photos.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while writing.load(Ordering::Relaxed) {
                let batch = Batch::default()
                    .put(format!("photo/{:05}", n % 3000), "y".repeat(700))
                    .delete(format!("extra/{:05}", n.wrapping_sub(7)))
                    .put(format!("extra/{n:05}"), "z");
                store.write(&photos, batch).await.unwrap();
                n += 1;
            }
            n
        })
    };
    for _ in 0..3 {
        let (output, stdout) = check(&server).await;
        assert!(output.status.success(), "check next to a writer:\n{stdout}");
    }
    writing.store(false, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 10, "{writes}");

    // Damage two pages of the bucket's current tree (the permanent ones: replaced pages
    // expire) behind the sidecar's back: one gone, one garbled.
    let pages: Vec<String> = server
        .items()
        .into_iter()
        .filter(|item| item.expires.is_none() && item.key.contains(":p:"))
        .map(|item| item.key)
        .collect();
    assert!(pages.len() >= 2, "{pages:?}");
    let raw = items(&server).await;
    raw.delete(&ItemKey::new(pages[0].clone()).unwrap())
        .await
        .unwrap();
    raw.set(
        &ItemKey::new(pages[1].clone()).unwrap(),
        Bytes::from_static(b"not a page at all"),
        Expiry::Never,
    )
    .await
    .unwrap();
    let (output, stdout) = check(&server).await;
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL [photos]"), "{stdout}");
    assert!(stdout.contains("is missing from memcached"), "{stdout}");
    assert!(stdout.contains("cannot be read"), "{stdout}");
    assert!(stdout.contains("ok   [tiny]"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("FAILED: 2 databases (1 with problems"),
        "{stdout}"
    );

    // Memcached that cannot be reached: exit 2 with a reason.
    let mut gone = server;
    gone.stop();
    let (output, _) = check(&gone).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot reach memcached"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
