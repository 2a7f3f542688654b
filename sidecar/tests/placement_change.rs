//! Placement changes under a running mixed load (`zenko-memcached-sidecar placement change`,
//! the real binary and real memcached servers): scaling 2 -> 3 -> 2 servers with two copies,
//! one server with one copy to two with two, a new sidecar that waits for the change to
//! admit its server list, and the refusals. After each change: every acknowledged blob reads
//! back identical, every acknowledged key is there, listings equal the model, `check` finds
//! the metadata sound, no answer was wrong, and servers that left hold nothing but the record.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use std::process::Command;
use std::time::{Duration, Instant};

use faults_common::mixed_load::{Load, list, placement_sidecar};
use faults_common::{BINARY, admin_get, eventually};
use zenko_memcached_sidecar::items::{Expiry, ItemKey, ItemStore, MemcachedStore};
use zenko_memcached_testkit::{Memcached, Sidecar};

/// One of these tests at a time: each runs three memcached servers, sidecars and their load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Room for the load's blobs (evictions stay off).
const MEMORY: [&str; 2] = ["-m", "256"];
/// How long the load runs before and after each change.
const WARM_UP: Duration = Duration::from_secs(3);

/// `placement change --memcached FROM --to TO [--replication-factor R] EXTRA...`: exit status
/// and output.
fn change(from: &str, to: &str, factor: Option<u32>, extra: &[&str]) -> (bool, String) {
    let mut command = Command::new(BINARY);
    command.args(["placement", "change", "--memcached", from, "--to", to]);
    command.args(["--adopt-timeout-secs", "60"]).args(extra);
    if let Some(factor) = factor {
        command.args(["--replication-factor", &factor.to_string()]);
    }
    let output = command.env("ZMM_LOG_LEVEL", "warn").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Run a change that must succeed; how long it took.
fn changed(from: &str, to: &str, factor: Option<u32>) -> Duration {
    let started = Instant::now();
    let (ok, output) = tokio::task::block_in_place(|| change(from, to, factor, &[]));
    println!("placement change {from} -> {to}:\n{output}");
    assert!(ok, "the change failed:\n{output}");
    assert!(output.contains("done: generation"), "{output}");
    started.elapsed()
}

/// Wait until `sidecar`'s `/readyz` answers 200 (it serves), failing with what it says.
fn assert_ready(sidecar: &Sidecar) {
    assert!(
        eventually(Duration::from_secs(10), || admin_get(sidecar, "/readyz").0
            == 200),
        "{:?}",
        admin_get(sidecar, "/readyz")
    );
}

/// Wait until `sidecar` refuses, not ready, because its list differs from the placement.
fn assert_refused_for_its_list(sidecar: &Sidecar) {
    assert!(
        eventually(Duration::from_secs(10), || {
            admin_get(sidecar, "/readyz")
                .1
                .contains("differs from the store's placement")
        }),
        "{:?}",
        admin_get(sidecar, "/readyz")
    );
}

/// After a change: writes go on, and blobs read back through `sidecar` (judged by the load).
async fn serves_on(load: &Load, sidecar: &Sidecar, after: &str) {
    assert!(
        load.progress(3, Duration::from_secs(30)).await,
        "writes did not go on after {after}"
    );
    let read = load.blobs.read_now(&sidecar.data_url(), 8).await;
    println!(
        "[{:.3}] {read} blobs read through the new sidecar after {after}",
        load.blobs.elapsed()
    );
}

/// The keys a server holds besides its own bookkeeping (`zmm:placement`, `zmm:sidecars`,
/// `zmm:incarnation`).
fn data_items(server: &Memcached) -> Vec<String> {
    server
        .items()
        .into_iter()
        .map(|item| item.key)
        .filter(|key| {
            !key.starts_with("zmm:placement") && key != "zmm:sidecars" && key != "zmm:incarnation"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_two_to_three_to_two_servers_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let servers = [(); 3].map(|()| Memcached::start(&MEMORY));
    let two = list(&[&servers[0], &servers[1]]);
    let three = list(&servers.iter().collect::<Vec<_>>());
    let first = placement_sidecar(&two, 2);
    let second = placement_sidecar(&two, 2);
    let load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;

    let up = changed(&two, &three, None);
    println!("[{:.3}] scaled up in {up:?}", load.blobs.elapsed());
    assert!(
        !data_items(&servers[2]).is_empty(),
        "the new server got nothing"
    );
    // A sidecar started on the new list (a new pod) serves the same store.
    let third = placement_sidecar(&three, 2);
    assert_ready(&third);
    serves_on(&load, &third, "scaling up").await;
    // Stopped cleanly (as Kubernetes stops a pod), it takes its report out: the next change
    // need not wait for it to expire.
    let mut third = third;
    third.signal("TERM");
    assert!(
        third.wait(Duration::from_secs(20)).is_some(),
        "the sidecar did not stop"
    );

    let down = changed(&three, &two, None);
    println!("[{:.3}] scaled down in {down:?}", load.blobs.elapsed());
    assert!(
        load.progress(3, Duration::from_secs(30)).await,
        "writes did not go on after scaling down"
    );
    // The server that left keeps only its record, which sends a sidecar started on the old
    // list away.
    let left = data_items(&servers[2]);
    assert!(left.is_empty(), "the server that left still holds {left:?}");
    let stale = placement_sidecar(&three, 2);
    assert_refused_for_its_list(&stale);
    drop(stale);
    load.stop_and_verify(&first, &second, &two).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_with_one_copy_becomes_two_with_two_under_load() {
    let _serial = SERIAL.lock().await;
    let servers = [(); 2].map(|()| Memcached::start(&MEMORY));
    let one = list(&[&servers[0]]);
    let two = list(&servers.iter().collect::<Vec<_>>());
    let first = placement_sidecar(&one, 1);
    let second = placement_sidecar(&one, 1);
    let load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;

    // The new pod's sidecar starts first, on the new list: not ready until the change admits
    // it, then serving.
    let third = placement_sidecar(&two, 2);
    assert_refused_for_its_list(&third);
    let took = changed(&one, &two, Some(2));
    println!(
        "[{:.3}] 1 server x1 -> 2 servers x2 in {took:?}",
        load.blobs.elapsed()
    );
    assert_ready(&third);
    serves_on(&load, &third, "the change").await;
    load.stop_and_verify(&third, &first, &two).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_that_cannot_hold_the_data_are_refused_before_anything_moves() {
    let _serial = SERIAL.lock().await;
    let servers = [(); 2].map(|()| Memcached::start(&MEMORY));
    let small = Memcached::start(&["-m", "8"]);
    let two = list(&servers.iter().collect::<Vec<_>>());
    let sidecar = placement_sidecar(&two, 2);
    let load = Load::start(&[&sidecar]);
    // About 20 MiB of blobs, twice.
    assert!(
        eventually(Duration::from_secs(60), || {
            servers[0].stat("bytes") > Some(20 << 20)
        }),
        "the load did not fill the servers"
    );
    let (ok, output) = tokio::task::block_in_place(|| change(&two, &list(&[&small]), Some(1), &[]));
    assert!(
        !ok && output.contains("refused: the data needs"),
        "{output}"
    );
    let (ok, output) =
        tokio::task::block_in_place(|| change(&two, &list(&[&servers[0]]), None, &[]));
    assert!(
        !ok && output.contains("replication factor 2 needs at least 2 servers"),
        "{output}"
    );
    let (ok, output) = tokio::task::block_in_place(|| change(&list(&[&small]), &two, None, &[]));
    assert!(!ok && output.contains("refused"), "{output}");
    assert!(data_items(&small).is_empty(), "{:?}", data_items(&small));
    // An export under way (its lease on a server) holds a change back, here for longer than
    // the change waits.
    let lease = ItemKey::new("zmm:placement:driver").unwrap();
    let raw = MemcachedStore::connect(&[servers[1].address()])
        .await
        .unwrap();
    raw.set(
        &lease,
        "export on elsewhere".into(),
        Expiry::After(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let output = Command::new(BINARY)
        .args([
            "placement",
            "change",
            "--memcached",
            &two,
            "--to",
            &list(&[&servers[0]]),
        ])
        .args(["--replication-factor", "1", "--adopt-timeout-secs", "3"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("export on elsewhere holds the lease"),
        "{said}"
    );
    assert!(raw.delete(&lease).await.unwrap());
    assert!(
        load.progress(3, Duration::from_secs(30)).await,
        "the refusals stopped the load"
    );
    load.stop_and_verify(&sidecar, &sidecar, &two).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restarted_empty_in_the_middle_of_a_change_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut servers = [(); 3].map(|()| Memcached::start(&MEMORY));
    let two = list(&[&servers[0], &servers[1]]);
    let three = list(&servers.iter().collect::<Vec<_>>());
    let first = placement_sidecar(&two, 2);
    let second = placement_sidecar(&two, 2);
    let load = Load::start(&[&first, &second]);
    tokio::time::sleep(WARM_UP).await;

    // A slow copy, and the second server killed and back empty while it runs.
    let (from, to) = (two.clone(), three.clone());
    let running = std::thread::spawn(move || change(&from, &to, None, &["--rate-mib", "4"]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("[{:.3}] server 1 killed mid-change", load.blobs.elapsed());
    tokio::task::block_in_place(|| servers[1].restart());
    let (ok, output) = tokio::task::block_in_place(|| running.join().unwrap());
    println!("first run (ok: {ok}):\n{output}");
    // Stopped part way or not, the same command finishes it.
    changed(&two, &three, None);
    assert!(
        load.progress(3, Duration::from_secs(60)).await,
        "writes did not go on after the change"
    );
    // The emptied server is refilled by the sidecars (its record is the refill's to write).
    assert!(
        eventually(Duration::from_secs(90), || {
            faults_common::recorded(&three, &servers[1])
        }),
        "the emptied server was not refilled"
    );
    load.stop_and_verify(&first, &second, &three).await;
}
