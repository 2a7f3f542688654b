//! One hot key: versioned puts and dels of versions of one key per second with 1, 16 and 50
//! calls in flight, and meanwhile the p99 latency of gets and puts of other keys of the same
//! bucket (one call at a time), through the npm socket.io 4.x client (`tests/js/hotkey_bench.js`).
//!
//! `cargo bench -p zenko-memcached-sidecar --bench hot_key` runs this build's sidecar; with
//! `BENCH_BASELINE_SIDECAR=<path of another build's binary>` it runs that one too, each phase
//! on the same fresh memcached setup, one after the other in the same run, so the lines
//! compare. `BENCH_SECS` (default 5) is the length of each phase.

use std::path::PathBuf;
use std::process::Command;

use zenko_memcached_testkit::{Memcached, Sidecar, wait_for_listener};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

/// Run one phase of hotkey_bench.js; its output lines.
fn phase(sidecar: &Sidecar, args: &[&str]) -> String {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let output = Command::new("node")
        .current_dir(js)
        .arg("hotkey_bench.js")
        .arg(sidecar.metadata_port.to_string())
        .args(args)
        .output()
        .expect("node");
    assert!(
        output.status.success(),
        "hotkey_bench.js {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The numbers after `prefix` on its line of `output`.
fn fields(output: &str, prefix: &str) -> Vec<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map(|rest| rest.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// A fresh memcached and `binary` serving it, with the bucket's other keys loaded.
fn start(binary: &str) -> (Memcached, Sidecar) {
    let memcached = Memcached::start_with(
        ["-m", "2048", "-M", "-I", "1m", "-t", "2"]
            .map(String::from)
            .to_vec(),
    );
    let sidecar = Sidecar::start(binary, &["--memcached", &memcached.address()]);
    let metadata = std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port));
    assert!(wait_for_listener(
        metadata,
        std::time::Duration::from_secs(10)
    ));
    phase(&sidecar, &["load"]);
    (memcached, sidecar)
}

/// memcached requests (reads and writes) served so far.
fn requests(memcached: &Memcached) -> u64 {
    memcached.stat("cmd_get").unwrap_or(0) + memcached.write_commands()
}

fn main() {
    let secs = std::env::var("BENCH_SECS").unwrap_or_else(|_| "5".into());
    let mut builds = Vec::new();
    if let Ok(baseline) = std::env::var("BENCH_BASELINE_SIDECAR") {
        builds.push(("baseline", baseline));
    }
    builds.push(("this build", BINARY.to_owned()));
    println!("one hot key: {secs} s per phase; other keys: one get and one put at a time");
    println!(
        "{:<5} {:>9} {:<11} {:>8} {:>7} {:>10} {:>14} {:>14}",
        "calls",
        "in flight",
        "build",
        "calls/s",
        "failed",
        "mc req/call",
        "other get p99",
        "other put p99"
    );
    // Each phase on each build in turn, so that both meet the same load of the machine.
    for (call, inflight) in [
        ("alone", "0"),
        ("put", "1"),
        ("put", "16"),
        ("put", "50"),
        ("del", "1"),
        ("del", "16"),
        ("del", "50"),
    ] {
        for (label, binary) in &builds {
            // A fresh store each phase; the dels phase puts its versions first.
            let (memcached, sidecar) = start(binary);
            if call == "del" {
                phase(&sidecar, &["versions", "0", &secs]);
            }
            let before = requests(&memcached);
            let output = phase(&sidecar, &[call, inflight, &secs]);
            let hot = fields(&output, "HOT ");
            let other = fields(&output, "OTHER ");
            let (ok, failed, seconds) = (hot[0], hot[1], hot[2]);
            // Requests per call of the phase, the other keys' calls included.
            let per_call =
                (requests(&memcached) - before) as f64 / (ok + failed + other[0] + other[2]);
            println!(
                "{call:<5} {inflight:>9} {label:<11} {:>8.0} {:>7} {:>10.1} {:>11.2} ms {:>11.2} ms",
                ok / seconds,
                failed,
                per_call,
                other[1],
                other[3]
            );
            if let Some(error) = output.lines().find_map(|l| l.strip_prefix("ERROR ")) {
                println!("      first failure: {error}");
            }
        }
    }
}
