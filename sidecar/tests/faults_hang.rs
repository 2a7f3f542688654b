//! A memcached server that hangs without dying (frozen with SIGSTOP: what a stalled process, a
//! kernel or disk hang or a node cut off look like from outside) under a running mixed load:
//! three servers, two sidecars (the real binary) with replication factor 2, blob uploads,
//! downloads and deletes and metadata puts, gets and listings through both, every answer judged
//! against a model of what was acknowledged (`faults_common`). Reads must not wait on the
//! frozen server: each completes from another owner within a second, and the sidecars stay
//! ready. After the server is back: every acknowledged blob reads back identical, every
//! acknowledged key is there, listings equal the model, `check` finds the store sound.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use std::time::{Duration, Instant};

use faults_common::mixed_load::{Load, list, placement_sidecar};
use faults_common::{admin_get, blob, delete_blob, get_blob, metric, put_blob};
use reqwest::{Client, StatusCode};
use zenko_memcached_testkit::{Memcached, Sidecar};

/// One of these tests at a time: their timings must not depend on each other's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MEMORY: [&str; 2] = ["-m", "256"];
const WARM_UP: Duration = Duration::from_secs(3);
/// How long the server stays frozen: longer than memcached's I/O timeout (5 s).
const FROZEN: Duration = Duration::from_secs(8);
/// The longest a whole download (of blobs of up to a few MiB) may take, measured by the test
/// beside a loaded sidecar, while an owner of its items is frozen: the sidecar's own time to
/// answer is held to [`SLOW_BUCKET`] below.
const READ_BOUND: Duration = Duration::from_secs(2);

/// The histogram bucket (seconds) above which a call counts as slow: the first above 1 s, the
/// longest a read may wait while an owner of its item is frozen.
const SLOW_BUCKET: &str = "1.024";

/// Calls of `histogram` whose `label` is `value` so far, and how many of them took longer than
/// [`SLOW_BUCKET`] seconds.
fn slow_calls(sidecar: &Sidecar, histogram: &str, label: &str, value: &str) -> (f64, f64) {
    let (_, body) = admin_get(sidecar, "/metrics");
    let bucket = |le: &str| {
        let prefix = format!("{histogram}_bucket{{");
        body.lines()
            .filter(|line| line.starts_with(&prefix))
            .filter(|line| line.contains(&format!("{label}=\"{value}\"")))
            .filter(|line| line.contains(&format!("le=\"{le}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let all = bucket("+Inf");
    (all, all - bucket(SLOW_BUCKET))
}

/// Metadata gets and data GETs of both sidecars: (calls, slow calls).
fn reads(sidecars: &[&Sidecar]) -> [(f64, f64); 2] {
    let mut sums = [(0.0, 0.0); 2];
    for sidecar in sidecars {
        let sources = [
            ("zmm_metadata_call_duration_seconds", "call", "get"),
            ("zmm_data_request_duration_seconds", "route", "get"),
        ];
        for (sum, (histogram, label, value)) in sums.iter_mut().zip(sources) {
            let (all, slow) = slow_calls(sidecar, histogram, label, value);
            sum.0 += all;
            sum.1 += slow;
        }
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_server_holds_up_no_read_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let servers = [(); 3].map(|()| Memcached::start(&MEMORY));
    let list = list(&servers.iter().collect::<Vec<_>>());
    let first = placement_sidecar(&list, 2);
    let second = placement_sidecar(&list, 2);
    let load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;
    // Reads pick what was acknowledged: the load must have something to read on a busy machine.
    assert!(
        load.progress(3, Duration::from_secs(30)).await,
        "the load acknowledged nothing before the freeze"
    );

    // Blobs stored and deleted: while a server is frozen, "no such blob" must still be an
    // answer (from an owner that holds every item it owns), not a wait or a refusal.
    let client = Client::new();
    let mut deleted = Vec::new();
    for seed in 0..12 {
        let key = put_blob(&client, &first.data_url(), blob(900 + seed, 1000))
            .await
            .unwrap();
        assert_eq!(
            delete_blob(&client, &first.data_url(), &key).await,
            StatusCode::NO_CONTENT
        );
        deleted.push(key);
    }

    let before = reads(&[&first, &second]);
    let frozen = &servers[1];
    frozen.freeze();
    let frozen_at = Instant::now();
    let mut timed = Vec::new();
    let mut ready = Vec::new();
    while frozen_at.elapsed() < FROZEN {
        for sidecar in [&first, &second] {
            timed.extend(load.blobs.read_timed(&sidecar.data_url(), 4).await);
            ready.push(admin_get(sidecar, "/readyz"));
        }
    }
    let mut missing = Vec::new();
    for key in &deleted {
        let started = Instant::now();
        let answer = get_blob(&client, &second.data_url(), key).await;
        missing.push((answer.err().map(|(status, _)| status), started.elapsed()));
    }
    let during = reads(&[&first, &second]);
    frozen.thaw();
    assert!(
        missing
            .iter()
            .all(|(status, took)| *status == Some(StatusCode::NOT_FOUND) && *took <= READ_BOUND),
        "deleted blobs while a server was frozen: {missing:?}"
    );
    let longest = timed.iter().max().copied().unwrap_or_default();
    let [(gets, slow_gets), (downloads, slow_downloads)] =
        [0, 1].map(|n| (during[n].0 - before[n].0, during[n].1 - before[n].1));
    let suspect = metric(&first, "zmm_memcached_server_suspect");
    println!(
        "{} frozen for {FROZEN:?}: {} timed downloads, the longest {longest:?}; metadata gets \
         {gets} ({slow_gets} over {SLOW_BUCKET} s), data GETs {downloads} ({slow_downloads} \
         over {SLOW_BUCKET} s); {} /readyz answers; suspect gauge {suspect:?}",
        frozen.address(),
        timed.len(),
        ready.len()
    );
    assert!(
        !timed.is_empty() && gets > 0.0 && downloads > 0.0,
        "no read ran"
    );
    assert!(
        longest <= READ_BOUND,
        "a download took {longest:?} while one owner was frozen"
    );
    assert_eq!(slow_gets, 0.0, "metadata gets waited on the frozen server");
    assert_eq!(slow_downloads, 0.0, "data GETs waited on the frozen server");
    let not_ready: Vec<&(u16, String)> =
        ready.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        not_ready.is_empty(),
        "a sidecar turned not ready while one server of three was frozen: {not_ready:?}"
    );

    assert!(
        load.progress(3, Duration::from_secs(30)).await,
        "writes did not resume once the server was back"
    );
    load.stop_and_verify(&first, &second, &list).await;
}
