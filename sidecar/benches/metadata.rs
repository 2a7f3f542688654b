//! Metadata throughput and memcached operations per metadata operation, through a socket.io client.
//!
//! `cargo bench -p zenko-memcached-sidecar --bench metadata` starts a real memcached and the
//! release sidecar, loads a database of `BENCH_KEYS` (default 100,000) keys with 1 KiB values,
//! then runs puts, gets and 1000-key listings with 1 and 16 clients (`tests/js/bench.js`, the
//! npm socket.io 4.x client), printing ops/s and memcached's own counters per operation:
//! requests, and bytes memcached sent (`bytes_written`).
//! Listings also run once on a freshly restarted sidecar, with a cold page cache.
//!
//! Then the space figure: on a fresh memcached and sidecar, 16 clients put fresh 1 KiB values
//! into one bucket as fast as they can for `BENCH_FILL_SECS` (default 90) seconds, and the
//! bench prints the put rate beside memcached's `bytes` against the live value bytes.

use std::path::PathBuf;
use std::process::Command;

use zenko_memcached_testkit::{Memcached, Sidecar, wait_for_listener};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

/// memcached's counters that each count one request.
#[derive(Clone, Copy, Default)]
struct Counters {
    reads: u64,
    writes: u64,
    /// Bytes memcached sent to its clients.
    sent: u64,
}

fn counters(memcached: &Memcached) -> Counters {
    let stat = |name: &str| memcached.stat(name).unwrap_or(0);
    Counters {
        reads: stat("cmd_get"),
        writes: memcached.write_commands(),
        sent: stat("bytes_written"),
    }
}

/// Run one phase of bench.js; (operations, seconds).
fn phase(sidecar: &Sidecar, args: &[&str]) -> (u64, f64) {
    let (operations, seconds, _) = phase_output(sidecar, args);
    (operations, seconds)
}

/// [`phase`], with everything bench.js printed.
fn phase_output(sidecar: &Sidecar, args: &[&str]) -> (u64, f64, String) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let output = Command::new("node")
        .current_dir(js)
        .arg("bench.js")
        .arg(sidecar.metadata_port.to_string())
        .args(args)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("OPS "))
        .unwrap_or_else(|| {
            panic!(
                "bench.js {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let mut fields = line.split(' ');
    let operations = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let seconds = fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    (operations, seconds, stdout.into_owned())
}

fn measure(memcached: &Memcached, sidecar: &Sidecar, label: &str, args: &[&str]) {
    let before = counters(memcached);
    let (operations, seconds) = phase(sidecar, args);
    let after = counters(memcached);
    let per = |n: u64| n as f64 / operations.max(1) as f64;
    println!(
        "{label:<28} {:>9.0} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
        operations as f64 / seconds,
        per(after.reads - before.reads),
        per(after.writes - before.writes),
        per(after.reads - before.reads + after.writes - before.writes),
        per(after.sent - before.sent),
    );
}

fn start(memcached_mib: &str) -> (Memcached, Sidecar) {
    let memcached = Memcached::start_with(
        ["-m", memcached_mib, "-M", "-I", "1m", "-t", "2"]
            .map(String::from)
            .to_vec(),
    );
    let sidecar = Sidecar::start(
        BINARY,
        &[
            "--memcached",
            &memcached.address(),
            "--page-cache-mib",
            "256",
        ],
    );
    let metadata = std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port));
    assert!(wait_for_listener(
        metadata,
        std::time::Duration::from_secs(10)
    ));
    (memcached, sidecar)
}

/// Sustained puts into one growing bucket: the put rate, and memcached's bytes against the
/// live value bytes, right after and a few seconds later.
fn space() {
    let seconds: u64 = std::env::var("BENCH_FILL_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(90);
    let (memcached, sidecar) = start("4096");
    let before = counters(&memcached);
    let (puts, took, output) = phase_output(&sidecar, &["fill", "16", &seconds.to_string()]);
    let after = counters(&memcached);
    let live: u64 = output
        .lines()
        .find_map(|line| line.strip_prefix("LIVE "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let bytes_now = memcached.stat("bytes").unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let bytes_later = memcached.stat("bytes").unwrap_or(0);
    println!(
        "space: {seconds} s of 1 KiB puts, 16 clients: {:.0} puts/s, {:.2} memcached ops per put; \
         live values {:.0} MiB; memcached bytes {:.0} MiB ({:.2}x live) at the end, \
         {:.0} MiB ({:.2}x) 5 s later; target <= 2x live + 64 MiB = {:.0} MiB",
        puts as f64 / took,
        (after.reads + after.writes - before.reads - before.writes) as f64 / puts.max(1) as f64,
        mib(live),
        mib(bytes_now),
        bytes_now as f64 / live.max(1) as f64,
        mib(bytes_later),
        bytes_later as f64 / live.max(1) as f64,
        mib(2 * live) + 64.0,
    );
}

fn main() {
    let keys: u64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let (memcached, mut sidecar) = start("2048");
    let metadata = std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port));

    let (loaded, seconds) = phase(&sidecar, &["load", &keys.to_string()]);
    println!(
        "loaded {loaded} keys of 1 KiB in {seconds:.1} s ({:.0} puts/s with 32 clients)",
        loaded as f64 / seconds
    );
    println!(
        "{:<28} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "operation", "ops/s", "mc reads", "mc writes", "mc total", "mc bytes out"
    );
    // Warm the page cache with one pass of gets before the measured ones.
    phase(&sidecar, &["get", "16", "20000"]);
    for clients in ["1", "16"] {
        measure(
            &memcached,
            &sidecar,
            &format!("put, {clients} clients"),
            &["put", clients, "3000"],
        );
        measure(
            &memcached,
            &sidecar,
            &format!("get warm, {clients} clients"),
            &["get", clients, "5000"],
        );
        measure(
            &memcached,
            &sidecar,
            &format!("list 1000, {clients} clients"),
            &["list", clients, "200"],
        );
    }
    sidecar.kill_and_restart();
    assert!(wait_for_listener(
        metadata,
        std::time::Duration::from_secs(10)
    ));
    measure(
        &memcached,
        &sidecar,
        "list 1000 cold, 1 client",
        &["list", "1", "1"],
    );
    drop(sidecar);
    drop(memcached);
    space();
}
