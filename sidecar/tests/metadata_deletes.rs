//! Deletes over the metadata RPC, through the real sidecar binary on real memcached: the cases
//! of `tests/js/deletes.js` (keys put into one sublevel then deleted in key order one call at a
//! time or many in flight, every second key then the rest backwards, the per-account bucket
//! list as CloudServer creates and deletes buckets, every version of a versioned bucket deleted
//! by id). Each case gets a fresh memcached and a sidecar with default settings; after each
//! phase the script checks that `get` and `createReadStream` agree with what was acknowledged,
//! and names the case, phase, key and error of what does not.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use zenko_memcached_testkit::{Memcached, Sidecar, wait_for_listener};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

/// Room for the copy-on-write tree: a replaced page stays in memcached for the scan grace
/// (60 s by default), so a case rewriting pages thousands of times within a few seconds holds
/// about 100 MB of them. memcached takes memory as it fills, so the bound costs nothing unused.
const MEMCACHED_MIB: &str = "1024";

/// Run `cases` of `deletes.js` over socket.io `generation` against a fresh memcached and
/// sidecar; panics with the script's report unless every case passed.
fn run_cases(generation: &str, cases: &[&str]) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    let memcached = Memcached::start(&["-m", MEMCACHED_MIB]);
    let sidecar = Sidecar::start(BINARY, &["--memcached", &memcached.address()]);
    assert!(
        wait_for_listener(
            SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port)),
            Duration::from_secs(10)
        ),
        "no metadata listener"
    );
    let started = Instant::now();
    let output = Command::new("node")
        .current_dir(js)
        .arg("deletes.js")
        .arg(sidecar.metadata_port.to_string())
        .arg(generation)
        .args(cases)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let passed = cases.iter().all(|case| {
        stdout
            .lines()
            .any(|line| line.starts_with(&format!("PASS {case} ")))
    });
    assert!(
        output.status.success() && passed,
        "delete cases {cases:?} over socket.io {generation}.x failed ({:.1} s):\n{stdout}\n{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn del_1203_keys_of_600_bytes_in_key_order_one_at_a_time() {
    run_cases("4", &["seq-1203x600"]);
}

#[test]
fn del_1203_keys_of_600_bytes_in_key_order_50_in_flight() {
    run_cases("4", &["inflight50-1203x600"]);
}

#[test]
fn del_3000_keys_of_100_bytes_in_key_order_one_at_a_time() {
    run_cases("4", &["seq-3000x100"]);
}

#[test]
fn put_and_del_5000_keys_of_1500_bytes_16_in_flight() {
    run_cases("4", &["inflight16-5000x1500"]);
}

#[test]
fn del_every_second_of_2000_keys_then_the_rest_in_reverse() {
    run_cases("4", &["alternate-then-reverse-2000"]);
}

#[test]
fn del_80_keys_of_1000_bytes_in_key_order_one_at_a_time() {
    run_cases("4", &["seq-80x1000"]);
}

#[test]
fn del_50_and_60_keys_of_1000_bytes_in_key_order_one_at_a_time() {
    run_cases("4", &["seq-50x1000", "seq-60x1000"]);
}

#[test]
fn small_sublevels_emptied_one_at_a_time_over_socket_io_2() {
    run_cases("2", &["seq-50x1000", "seq-60x1000", "seq-80x1000"]);
}

#[test]
fn bucket_list_of_1000_buckets_created_and_deleted() {
    run_cases("4", &["bucket-list-1000"]);
}

#[test]
fn versioned_bucket_every_version_of_1000_objects_deleted_by_id() {
    run_cases("4", &["versioned-1000x2"]);
}
