//! Fault test: memcached full with evictions off. Writes fail with a clear "storage full",
//! reads keep working, deleting frees space and writes work again; nothing is evicted.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use faults_common::{blob, delete_blob, get_blob, node, put_blob, sidecar};
use reqwest::{Client, StatusCode};
use zenko_memcached_testkit::Memcached;

const MIB: usize = 1 << 20;

#[tokio::test]
async fn a_full_memcached_refuses_writes_keeps_reads_and_recovers() {
    let memcached = Memcached::start_with(
        ["-m", "8", "-M", "-I", "1m"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    let sidecar = sidecar(&memcached, &[]);
    let client = Client::new();
    let url = sidecar.data_url();
    node(&sidecar, "full-setup", &[]);

    // Fill memcached with blobs until PUTs are refused. memcached runs out of memory per size
    // class (slab), so each size is filled in turn.
    let mut stored = Vec::new();
    let mut seed = 0;
    for size in [MIB, 100_000, 10_000] {
        let mut refusal = None;
        for _ in 0..400 {
            seed += 1;
            let body = blob(seed, size);
            match put_blob(&client, &url, body.clone()).await {
                Ok(key) => stored.push((key, body)),
                Err(error) => {
                    refusal = Some(error);
                    break;
                }
            }
        }
        let (status, body) = refusal.expect("memcached never filled up");
        println!(
            "{size}-byte blobs refused after {} blobs: {status} {body}",
            stored.len()
        );
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("storage full"), "{body}");
    }

    // Metadata puts fail cleanly too; gets and listings keep working.
    let refused = node(&sidecar, "full-refused", &[]);
    let accepted = refused
        .lines()
        .find_map(|line| line.strip_prefix("ACCEPTED "))
        .unwrap()
        .to_owned();

    // Every stored blob reads back exactly.
    let mut lost = 0;
    for (key, body) in &stored {
        if get_blob(&client, &url, key).await.as_ref() != Ok(body) {
            lost += 1;
        }
    }
    println!(
        "while full: {lost} of {} blobs unreadable (must be 0)",
        stored.len()
    );
    assert_eq!(lost, 0);

    // Deleting blobs frees space: blob and metadata writes work again.
    let kept = stored.split_off(stored.len() / 2);
    for (key, _) in std::mem::replace(&mut stored, kept) {
        assert_eq!(
            delete_blob(&client, &url, &key).await,
            StatusCode::NO_CONTENT
        );
    }
    for size in [MIB, 100_000, 10_000] {
        seed += 1;
        let key = put_blob(&client, &url, blob(seed, size)).await.unwrap();
        stored.push((key, blob(seed, size)));
    }
    node(&sidecar, "full-recovered", &[&accepted]);
    for (key, body) in &stored {
        if get_blob(&client, &url, key).await.as_ref() != Ok(body) {
            lost += 1;
        }
    }
    let evictions = memcached.stat("evictions").unwrap();
    println!("after freeing space: {lost} blobs lost, {evictions} evictions (must be 0, 0)");
    assert_eq!((lost, evictions), (0, 0));
}
