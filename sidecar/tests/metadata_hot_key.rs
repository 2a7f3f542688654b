//! Many metadata calls on one key at once, through the real sidecar binary on real memcached,
//! on one sidecar and on two sharing the store: the cases of `tests/js/hotkey.js` (50 dels of
//! the versions of one key, 50 versioned puts, a mix of given-version puts, delete markers,
//! version dels and gets, and random waves of that mix), each from the history of a cleaned-up
//! versioned bucket (key `/`, an object from before versioning, a suspended bucket); and the
//! bucket list's databases while many buckets are created and deleted at once. Every call
//! must succeed and leave what a model applying them one at a time leaves; `check` must then
//! find the store sound.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::path::PathBuf;
use std::process::Command;

use zenko_memcached_testkit::{Memcached, Sidecar};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

/// Run `case` of hotkey.js against `sidecars` sidecars sharing a fresh memcached, then `check`
/// (which must find the case's database, `[hot-key-bucket]` unless said otherwise, sound).
fn run_case(case: &str, sidecars: usize, seed: &str) {
    run_case_on(case, sidecars, seed, "[hot-key-bucket]");
}

fn run_case_on(case: &str, sidecars: usize, seed: &str, database: &str) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    let memcached = Memcached::start(&["-m", "256"]);
    let running: Vec<Sidecar> = (0..sidecars)
        .map(|_| Sidecar::start(BINARY, &["--memcached", &memcached.address()]))
        .collect();
    let ports: Vec<String> = running
        .iter()
        .map(|sidecar| sidecar.metadata_port.to_string())
        .collect();
    let output = Command::new("node")
        .current_dir(js)
        .args(["hotkey.js", case, &ports.join(","), seed])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("PASS {case} ")),
        "{case} on {sidecars} sidecar(s) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let check = Command::new(BINARY)
        .args(["check", "--memcached", &memcached.address()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && report.contains(&format!("ok   {database}")),
        "check after {case} on {sidecars} sidecar(s):\n{report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn fifty_dels_of_the_versions_of_one_key_on_one_sidecar() {
    run_case("del50", 1, "1");
}

#[test]
fn fifty_dels_of_the_versions_of_one_key_on_two_sidecars() {
    run_case("del50", 2, "1");
}

#[test]
fn fifty_versioned_puts_of_one_key_on_one_sidecar() {
    run_case("put50", 1, "1");
}

#[test]
fn fifty_versioned_puts_of_one_key_on_two_sidecars() {
    run_case("put50", 2, "1");
}

#[test]
fn a_mix_of_calls_on_one_key_on_one_sidecar() {
    run_case("mix", 1, "7");
}

#[test]
fn a_mix_of_calls_on_one_key_on_two_sidecars() {
    run_case("mix", 2, "7");
}

/// Random histories with random concurrency: a few fixed seeds, and one that changes with each
/// run (printed on failure, to replay it with `node hotkey.js random <ports> <seed>`).
#[test]
fn random_waves_of_calls_on_one_key_against_the_model() {
    let fresh = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
        % 100_000)
        .to_string();
    for (sidecars, seed) in [
        (1, "11"),
        (2, "12"),
        (1, fresh.as_str()),
        (2, fresh.as_str()),
    ] {
        run_case("random", sidecars, seed);
    }
}

#[test]
fn three_hundred_buckets_created_and_deleted_50_at_a_time_on_two_sidecars() {
    run_case_on("buckets", 2, "1", "[users..bucket]");
}
