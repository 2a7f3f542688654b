//! Fault tests of the placement under a running mixed load: three memcached servers, two
//! sidecars (the real binary) with replication factor 2, blob uploads, downloads and deletes
//! through both, and metadata puts, deletes, gets and listings through both, every answer
//! judged at once against a model of what was acknowledged (`faults_common::blob_load`,
//! `faults.js load-faults`). The faults: kill -9 of a memcached and its empty restart, then
//! another's once the first is refilled; a sidecar restarted on a changed server list; a
//! server's network link cut (each memcached in a network namespace of its own). After each:
//! every acknowledged blob reads back identical, every acknowledged key is there, listings
//! equal the model, `check` finds the metadata sound, and no answer was ever wrong. A refusal
//! (`503`, `InternalError`) is always acceptable.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use faults_common::metadata_load::MetadataLoad;
use faults_common::mixed_load::{BUCKET, Load, list, placement_sidecar};
use faults_common::{admin_get, eventually, metric, node, recorded};
use zenko_memcached_testkit::{Memcached, Network, Sidecar};

/// One of these tests at a time: each runs three or four memcached servers, two sidecars and
/// their load, and its timings must not depend on the others' on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Room for the load's blobs (evictions stay off).
const MEMORY: [&str; 2] = ["-m", "256"];
/// How long the load runs before a fault.
const WARM_UP: Duration = Duration::from_secs(3);
/// How long a link stays cut: longer than a sidecar waits for memcached's answer (5 s).
const CUT: Duration = Duration::from_secs(8);

/// The sidecar binary on `list` with two copies of everything.
fn sidecar(list: &str) -> Sidecar {
    placement_sidecar(list, 2)
}

/// Wait until a refill put `server`'s placement record back and no sidecar refills any more;
/// how long it took.
fn wait_refilled(list: &str, server: &Memcached, sidecars: &[&Sidecar]) -> Duration {
    let started = Instant::now();
    let done = eventually(Duration::from_secs(90), || {
        recorded(list, server)
            && sidecars
                .iter()
                .all(|sidecar| metric(sidecar, "zmm_refill_running") == Some(0.0))
    });
    assert!(done, "{} was not refilled", server.address());
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_killed_and_restarted_empty_one_after_another_under_load_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut servers = [(); 3].map(|()| Memcached::start(&MEMORY));
    let list = list(&servers.iter().collect::<Vec<_>>());
    let first = sidecar(&list);
    let second = sidecar(&list);
    let load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;

    for victim in [1, 2] {
        // kill -9: down a moment under the load (writes that need it are refused, reads go on
        // from the other copies), then back empty.
        println!("[{:.3}] killing server {victim}", load.blobs.elapsed());
        servers[victim].stop();
        let read = load.blobs.read_now(&first.data_url(), 4).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| servers[victim].start_again());
        println!("[{:.3}] server {victim} back empty", load.blobs.elapsed());
        let read_empty = load.blobs.read_now(&second.data_url(), 4).await;
        let took = tokio::task::block_in_place(|| {
            wait_refilled(&list, &servers[victim], &[&first, &second])
        });
        let copied: f64 = [&first, &second]
            .iter()
            .filter_map(|sidecar| metric(sidecar, "zmm_refill_items_total"))
            .sum();
        println!(
            "[{:.3}] server {victim} killed: {read} blobs read while it was down, {read_empty} while \
             it was empty; refilled in {took:?} ({copied} items copied so far)",
            load.blobs.elapsed()
        );
        assert!(copied > 0.0, "the refill copied nothing");
        assert!(
            load.progress(3, Duration::from_secs(30)).await,
            "writes did not resume after the refill of server {victim}"
        );
    }
    load.stop_and_verify(&first, &second, &list).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sidecar_restarted_on_a_changed_server_list_refuses_while_the_other_serves() {
    let _serial = SERIAL.lock().await;
    let servers = [(); 3].map(|()| Memcached::start(&MEMORY));
    let added = Memcached::start(&MEMORY);
    let list = list(&servers.iter().collect::<Vec<_>>());
    let changed_list = format!("{list},{}", added.address());
    let first = sidecar(&list);
    let second = sidecar(&list);
    let mut load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;

    // The second sidecar restarted with one server more, as scaling up would give.
    load.blobs.set_urls(&[first.data_url()]);
    let stopped = load.metadata.pop().unwrap();
    load.logs
        .push(tokio::task::block_in_place(|| stopped.stop()));
    drop(second);
    let changed = sidecar(&changed_list);
    let why = "differs from the store's placement";
    let (status, body) = admin_get(&changed, "/readyz");
    assert!(
        status == 503 && body.contains(why) && body.lines().count() == 1,
        "/readyz of the changed sidecar: {status} {body}"
    );
    assert!(
        body.contains(&format!("{} not in it", added.address())),
        "{body}"
    );
    let (uploads, puts) = load.acked();
    let refused = load
        .blobs
        .refusals(&changed.data_url(), why, Duration::from_secs(4))
        .await;
    tokio::task::block_in_place(|| {
        for _ in 0..3 {
            node(&changed, "expect-refused", &[why]);
        }
    });
    let (uploads_after, puts_after) = load.acked();
    println!(
        "changed list: {refused} data requests refused; the other sidecar acknowledged {} \
         uploads and {} metadata puts meanwhile",
        uploads_after - uploads,
        puts_after - puts
    );
    assert!(refused > 0);
    assert!(
        uploads_after > uploads && puts_after > puts,
        "the other sidecar stopped serving"
    );
    // It wrote nothing, on the new server or elsewhere.
    assert!(added.items().is_empty(), "{:?}", added.items());
    drop(changed);

    // Back on the list the store is written under: it serves again.
    let second = sidecar(&list);
    load.blobs.set_urls(&[first.data_url(), second.data_url()]);
    load.metadata
        .push(MetadataLoad::start(&second, BUCKET, 200_000));
    assert!(
        load.progress(3, Duration::from_secs(30)).await,
        "writes did not resume"
    );
    load.stop_and_verify(&second, &first, &list).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_cut_off_the_network_stops_only_the_writes_that_need_it() {
    let _serial = SERIAL.lock().await;
    // Declared first, dropped last: after the servers and sidecars that use it.
    let mut network = Network::new();
    let links: Vec<_> = (0..3).map(|_| network.link().clone()).collect();
    let servers: Vec<Memcached> = links
        .iter()
        .map(|link| Memcached::start_in(link, &MEMORY))
        .collect();
    let list = list(&servers.iter().collect::<Vec<_>>());
    let first = sidecar(&list);
    let second = sidecar(&list);
    let load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;

    let cut = &links[1];
    // Blob writes (uploads wait while the load holds its most blobs, deletes go on) and
    // metadata puts refused so far.
    let refused = |load: &Load| {
        let counts = load.blobs.counts();
        let blobs = counts.uploads_refused.load(Ordering::Relaxed)
            + counts.deletes_refused.load(Ordering::Relaxed);
        let puts: usize = load.metadata.iter().map(|m| m.count("REFUSED")).sum();
        (blobs, puts)
    };
    let before = refused(&load);
    cut.cut();
    let cut_at = Instant::now();
    // Reads go on from the other copies: each item has one on a server still reachable.
    let read = load.blobs.read_now(&first.data_url(), 4).await;
    let read_took = cut_at.elapsed();
    // Cut for longer than the sidecars wait for memcached's answer.
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
    cut.restore();
    let cut_for = cut_at.elapsed();
    // Writes resume; those that needed the server while it was cut off were refused.
    let resumed = load.progress(3, Duration::from_secs(30)).await;
    let after = refused(&load);
    println!(
        "link of {} cut for {cut_for:?}: {read} blobs read in {read_took:?}; {} blob writes and \
         {} metadata puts refused",
        servers[1].address(),
        after.0 - before.0,
        after.1 - before.1
    );
    assert!(
        read > 0,
        "no blob could be read while one server was cut off"
    );
    assert!(resumed, "writes did not resume once the link was back");
    // Metadata puts need it all the time (a commit writes pages and its root record, each on two
    // of the three servers); blob
    // writes only now and then (the load mostly reads while it holds its most blobs, and a
    // delete needs the cut server for two blobs in three), so they are reported, not required.
    assert!(
        after.1 > before.1,
        "no metadata put needed the server that was cut off"
    );
    load.stop_and_verify(&first, &second, &list).await;
}
