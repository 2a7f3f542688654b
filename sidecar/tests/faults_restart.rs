//! Fault tests: memcached restarted gracefully with its warm-restart memory file keeps every
//! blob and metadata entry; restarted without it, the sidecar says so (not ready, clear errors)
//! instead of serving wrong data from an empty memcached.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use std::time::Duration;

use faults_common::{admin_get, blob, eventually, get_blob, node, put_blob, sidecar};
use reqwest::{Client, StatusCode};
use zenko_memcached_testkit::Memcached;

const LOST: &str = "memcached lost its contents (restarted without warm restart?)";

/// Blobs of several sizes (empty, one chunk, several chunks with a partial last one).
async fn put_blobs(client: &Client, url: &str) -> Vec<(String, Vec<u8>)> {
    let mut blobs = Vec::new();
    for (seed, size) in [(1, 0), (2, 1), (3, 100_000), (4, 1_300_000), (5, 3 << 20)] {
        let body = blob(seed, size);
        let key = put_blob(client, url, body.clone()).await.unwrap();
        blobs.push((key, body));
    }
    blobs
}

/// Blobs that are not exactly as written; printed, and the count returned.
async fn lost_blobs(client: &Client, url: &str, blobs: &[(String, Vec<u8>)]) -> usize {
    let mut lost = 0;
    for (key, body) in blobs {
        match get_blob(client, url, key).await {
            Ok(read) if &read == body => {}
            Ok(read) => {
                lost += 1;
                println!(
                    "blob {key}: {} bytes read, {} written",
                    read.len(),
                    body.len()
                );
            }
            Err(error) => {
                lost += 1;
                println!("blob {key}: {error:?}");
            }
        }
    }
    lost
}

fn snapshot(text: &str) -> String {
    text.lines()
        .find(|line| line.starts_with("SNAPSHOT "))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn warm_restart_keeps_every_blob_and_metadata_entry() {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let memory_file = dir.path().join("memory_file");
    let memory_file = memory_file.to_str().unwrap();
    let mut memcached = Memcached::start(&["-e", memory_file]);
    let mut sidecar = sidecar(&memcached, &[]);
    let client = Client::new();
    let url = sidecar.data_url();

    let blobs = put_blobs(&client, &url).await;
    node(&sidecar, "populate", &["300"]);
    let before = snapshot(&node(&sidecar, "snapshot", &[]));
    let items = memcached.stat("curr_items").unwrap();

    memcached.stop_gracefully();
    // memcached refuses a memory file saved in the same second as the restart ("restart
    // incompatible due to setting for [stop_time]"): start in the next second.
    std::thread::sleep(Duration::from_millis(1100));
    memcached.start_again();
    assert_eq!(
        memcached.stat("curr_items").unwrap(),
        items,
        "items after warm restart"
    );

    // The sidecar that kept running: memcached is back with the same epoch, so it is ready.
    assert!(
        eventually(Duration::from_secs(10), || admin_get(&sidecar, "/readyz").0
            == 200),
        "not ready after the warm restart: {:?}",
        admin_get(&sidecar, "/readyz")
    );
    let lost = lost_blobs(&client, &url, &blobs).await;
    let after = snapshot(&node(&sidecar, "snapshot", &[]));
    let lost_metadata = usize::from(after != before);
    println!(
        "warm restart, running sidecar: lost {lost} blobs, {lost_metadata} metadata snapshots differ"
    );
    assert_eq!(
        (lost, lost_metadata),
        (0, 0),
        "before: {before}\nafter: {after}"
    );

    // A restarted sidecar too.
    sidecar.kill_and_restart();
    assert!(eventually(Duration::from_secs(10), || {
        admin_get(&sidecar, "/readyz").0 == 200
    }));
    let client = Client::new();
    let lost = lost_blobs(&client, &url, &blobs).await;
    let after = snapshot(&node(&sidecar, "snapshot", &[]));
    let lost_metadata = usize::from(after != before);
    println!(
        "warm restart, restarted sidecar: lost {lost} blobs, {lost_metadata} metadata snapshots differ"
    );
    assert_eq!(
        (lost, lost_metadata),
        (0, 0),
        "before: {before}\nafter: {after}"
    );
}

#[tokio::test]
async fn restart_without_warm_restart_is_reported_not_served() {
    let mut memcached = Memcached::start(&[]);
    let mut sidecar = sidecar(&memcached, &[]);
    let client = Client::new();
    let url = sidecar.data_url();
    let blobs = put_blobs(&client, &url).await;
    node(&sidecar, "populate", &["20"]);
    assert_eq!(admin_get(&sidecar, "/readyz").0, 200);

    // Plain restart: memcached comes back empty.
    memcached.restart();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (status, body) = admin_get(&sidecar, "/readyz");
            status == 503 && body.contains(LOST)
        }),
        "readiness does not report the loss: {:?}",
        admin_get(&sidecar, "/readyz")
    );
    // Every data request answers 503 with the reason, never "no such blob".
    let mut wrong = 0;
    for (key, _) in &blobs {
        match get_blob(&client, &url, key).await {
            Err((StatusCode::SERVICE_UNAVAILABLE, body)) if body.contains(LOST) => {}
            other => {
                wrong += 1;
                println!("blob {key} after the loss: {other:?}");
            }
        }
    }
    match put_blob(&client, &url, blob(9, 10)).await {
        Err((StatusCode::SERVICE_UNAVAILABLE, body)) if body.contains(LOST) => {}
        other => {
            wrong += 1;
            println!("put after the loss: {other:?}");
        }
    }
    println!("restart without warm restart: {wrong} wrong answers (must be 0)");
    assert_eq!(wrong, 0);
    // Metadata calls answer InternalError with the reason.
    node(&sidecar, "expect-lost", &[]);
    // It stays so: memcached answers, but its contents are not the ones served before.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(admin_get(&sidecar, "/readyz").0, 503);

    // The operator's action: restarting the sidecar accepts the empty memcached as a new epoch.
    sidecar.kill_and_restart();
    assert!(eventually(Duration::from_secs(10), || {
        admin_get(&sidecar, "/readyz").0 == 200
    }));
    // A fresh client: the pooled connections went with the killed process.
    let client = Client::new();
    let key = put_blob(&client, &url, blob(10, 1000)).await.unwrap();
    assert_eq!(get_blob(&client, &url, &key).await.unwrap(), blob(10, 1000));
    node(&sidecar, "populate", &["5"]);
}

/// Between two probes of the watcher, a "not found" is checked against the epoch at once.
#[tokio::test]
async fn not_found_right_after_the_loss_is_not_trusted() {
    let mut memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, &[]);
    let client = Client::new();
    let url = sidecar.data_url();
    let key = put_blob(&client, &url, blob(1, 5000)).await.unwrap();
    memcached.restart();
    // Whatever the watcher saw yet, the blob is never reported missing.
    match get_blob(&client, &url, &key).await {
        Err((StatusCode::SERVICE_UNAVAILABLE, body)) => assert!(body.contains(LOST), "{body}"),
        other => panic!("blob after the loss: {other:?}"),
    }
}

/// With several memcached servers, one of them restarted empty is enough to lose data (the
/// blobs and database roots it held): each server carries its own epoch item, so the loss is
/// reported whichever server it was.
#[tokio::test]
async fn one_server_of_several_restarted_empty_is_reported() {
    for victim in 0..3 {
        let mut servers = [
            Memcached::start(&[]),
            Memcached::start(&[]),
            Memcached::start(&[]),
        ];
        let list = servers
            .iter()
            .map(Memcached::address)
            .collect::<Vec<_>>()
            .join(",");
        let mut sidecar =
            zenko_memcached_testkit::Sidecar::start(faults_common::BINARY, &["--memcached", &list]);
        assert!(eventually(Duration::from_secs(10), || {
            admin_get(&sidecar, "/readyz").0 == 200
        }));
        // An epoch item, the placement record and the sidecars' reports on every server.
        for server in &servers {
            assert_eq!(server.stat("curr_items"), Some(3), "{}", server.address());
        }
        servers[victim].restart();
        assert!(
            eventually(Duration::from_secs(10), || {
                let (status, body) = admin_get(&sidecar, "/readyz");
                status == 503 && body.contains(LOST)
            }),
            "server {victim} restarted empty is not reported: {:?}",
            admin_get(&sidecar, "/readyz")
        );
        // A restarted sidecar still refuses: the emptied server lacks the placement record
        // the others hold, so its share of the data is known to be gone.
        sidecar.kill_and_restart();
        assert!(
            eventually(Duration::from_secs(10), || {
                let (status, body) = admin_get(&sidecar, "/readyz");
                status == 503 && body.contains("hold no placement record")
            }),
            "{:?}",
            admin_get(&sidecar, "/readyz")
        );
        // The operator's command accepts the contents as they are.
        let output = std::process::Command::new(faults_common::BINARY)
            .args(["placement", "accept", "--memcached", &list])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{said}");
        assert!(said.contains("nothing of this deployment"), "{said}");
        assert!(said.contains("recorded placement generation 2"), "{said}");
        sidecar.kill_and_restart();
        assert!(eventually(Duration::from_secs(10), || {
            admin_get(&sidecar, "/readyz").0 == 200
        }));
    }
}
