//! Fault tests: memcached full with evictions off. Writes fail with a clear "storage full",
//! reads keep working, every acknowledged metadata write stays readable, deleting frees space
//! and writes work again; nothing is evicted.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use faults_common::{blob, delete_blob, get_blob, node, put_blob, sidecar, spawn_node};
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

/// The value after `label ` on a line of a `faults.js` output.
fn figure(output: &str, label: &str) -> usize {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {label} line in:\n{output}"))
}

/// The soak run's durability bug: memcached's meta-protocol `ms` unlinks the item it fails to
/// replace when it is out of memory, so a refused root-record CAS dropped a bucket's whole
/// tree and acknowledged keys read as not found. Metadata writers on 12 small buckets (each
/// tree one inline root record of up to about 40 KiB) race blob uploads of those sizes into a
/// small memcached: root CASes are refused all the time, cleanly, and nothing acknowledged may
/// go missing, neither while full nor after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memcached_loses_no_acknowledged_metadata() {
    const BUCKETS: &str = "12";
    const WRITERS_PER_BUCKET: &str = "2";
    const SECONDS: &str = "10";
    const KEYS_PER_BUCKET: &str = "20";
    let memcached = Memcached::start_with(
        ["-m", "8", "-M", "-I", "1m"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    // Replaced pages expire after 2 s instead of 60: memcached reuses expired items' memory,
    // so the metadata gets room back soon after the blobs are deleted at the end.
    let sidecar = sidecar(&memcached, &["--scan-grace-secs", "2"]);
    let client = Client::new();
    let url = sidecar.data_url();
    node(&sidecar, "full-acked-setup", &[BUCKETS]);

    let load = spawn_node(
        &sidecar,
        "full-acked",
        &[BUCKETS, WRITERS_PER_BUCKET, SECONDS, KEYS_PER_BUCKET],
    );
    let load = tokio::task::spawn_blocking(move || load.wait_with_output().unwrap());
    // Blobs while the metadata load runs, so that memcached fills up under it and stays full:
    // 1 MiB ones take the memory, the others compete with the root records for their sizes.
    let sizes = [MIB, 45_000, 35_000, 25_000, 15_000];
    let mut blobs = Vec::new();
    let mut blobs_refused = 0;
    let mut seed = 0;
    while !load.is_finished() {
        seed += 1;
        let size = sizes[seed as usize % sizes.len()];
        match put_blob(&client, &url, blob(seed, size)).await {
            Ok(key) => blobs.push(key),
            Err((status, body)) => {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
                assert!(body.contains("storage full"), "{body}");
                blobs_refused += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
    let output = load.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("PASS full-acked"),
        "faults.js full-acked failed:\n{stdout}"
    );
    let (acked, refused, bad) = (
        figure(&stdout, "ACKED"),
        figure(&stdout, "REFUSED"),
        figure(&stdout, "BAD"),
    );
    println!(
        "metadata puts: {acked} acknowledged, {refused} refused as storage full, {bad} lost or \
         wrong (must be 0); blobs: {} stored, {blobs_refused} refused",
        blobs.len()
    );
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.starts_with("ACKED") && !line.starts_with("REFUSED"))
        .filter(|line| !line.starts_with("BAD") && !line.starts_with("PASS"))
        .collect();
    // How many of each kind ("MISSING during", "MISSING after", "UNLISTED fa3/...", ...).
    let mut kinds = std::collections::BTreeMap::new();
    for line in &problems {
        let kind: Vec<&str> = line.split(' ').take(2).collect();
        let kind = match kind[0] {
            "MISSING" | "WRONG" => kind.join(" "),
            other => other.to_owned(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    assert!(refused > 0, "memcached never refused a metadata put");
    assert!(acked > 0, "no metadata put was acknowledged");
    assert_eq!(
        bad,
        0,
        "acknowledged metadata lost: {kinds:?}, first ones:\n{}",
        problems[..problems.len().min(20)].join("\n")
    );

    // Deleting the blobs frees memory: metadata writes work again, nothing was lost meanwhile.
    for key in &blobs {
        assert_eq!(
            delete_blob(&client, &url, key).await,
            StatusCode::NO_CONTENT
        );
    }
    let recovered = node(
        &sidecar,
        "full-acked-recovered",
        &[BUCKETS, &acked.to_string(), "30"],
    );
    println!(
        "metadata puts work again {} ms after the blobs were deleted",
        figure(&recovered, "RECOVERED")
    );
    assert_eq!(memcached.stat("evictions"), Some(0));
}
