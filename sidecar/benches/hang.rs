//! What a memcached server that hangs without dying does to the calls of its clients.
//!
//! `cargo bench -p zenko-memcached-sidecar --bench hang` starts three memcached servers and the
//! release sidecar with replication factor 2, then runs two loads for `BENCH_HANG_SECS`
//! (default 30) seconds, each one call at a time: metadata put then get of a fresh key
//! (`tests/js/bench.js timeline`, the npm socket.io 4.x client); 64 KiB blob PUTs, and beside
//! them GETs of the blobs stored so far.
//! A third of the way in, one server is frozen (SIGSTOP) for a third of the run, then let go
//! (SIGCONT). For the seconds before, during and after the freeze it prints, for each load:
//! calls per second, the longest call, the seconds without a successful write, and how long
//! after the freeze began writes succeeded again.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use zenko_memcached_testkit::{Memcached, Sidecar, pseudo_random_bytes};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");
const BLOB: usize = 64 * 1024;

/// One call: when it started (ms since the load started), whether it wrote, how long it took
/// (ms), whether it succeeded.
#[derive(Clone, Copy, Debug)]
struct Call {
    at: u64,
    write: bool,
    took: u64,
    ok: bool,
}

/// The metadata load's calls, from bench.js's `CALL` lines.
fn metadata_calls(sidecar: &Sidecar, seconds: u64) -> Vec<Call> {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let output = Command::new("node")
        .current_dir(js)
        .args(["bench.js", &sidecar.metadata_port.to_string(), "timeline"])
        .arg(seconds.to_string())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let calls: Vec<Call> = stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.strip_prefix("CALL ")?.split(' ');
            let at = fields.next()?.parse().ok()?;
            let write = fields.next()? == "put";
            let took = fields.next()?.parse().ok()?;
            let ok = fields.next()? == "ok";
            Some(Call {
                at,
                write,
                took,
                ok,
            })
        })
        .collect();
    assert!(
        !calls.is_empty(),
        "bench.js timeline failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    calls
}

/// The blob loads' calls: PUTs one after the other, and beside them GETs one after the other,
/// each of a blob stored so far (the bytes checked), so that reads go on while writes wait.
async fn blob_calls(url: String, seconds: u64) -> Vec<Call> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let stored: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());
    let elapsed = |since: Duration| (started.elapsed() - since).as_millis() as u64;
    let writes = async {
        let mut calls = Vec::new();
        let mut seed = 0;
        while started.elapsed() < Duration::from_secs(seconds) {
            seed += 1;
            let at = started.elapsed();
            let put = client
                .put(format!("{url}/DataFile/"))
                .header("content-length", BLOB)
                .body(pseudo_random_bytes(seed, BLOB))
                .send()
                .await;
            let location = put.ok().filter(|r| r.status() == 201).and_then(|r| {
                r.headers()
                    .get("location")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            });
            calls.push(Call {
                at: at.as_millis() as u64,
                write: true,
                took: elapsed(at),
                ok: location.is_some(),
            });
            if let Some(location) = location {
                stored.lock().expect("stored").push((location, seed));
            }
        }
        calls
    };
    let reads = async {
        let mut calls = Vec::new();
        let mut pick = 0usize;
        while started.elapsed() < Duration::from_secs(seconds) {
            let chosen = {
                let stored = stored.lock().expect("stored");
                pick = pick.wrapping_mul(31).wrapping_add(7);
                (!stored.is_empty()).then(|| stored[pick % stored.len()].clone())
            };
            let Some((location, seed)) = chosen else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let at = started.elapsed();
            let got = match client.get(format!("{url}{location}")).send().await {
                Ok(response) if response.status() == 200 => {
                    response.bytes().await.is_ok_and(|bytes| {
                        bytes.as_ref() == pseudo_random_bytes(seed, BLOB).as_slice()
                    })
                }
                _ => false,
            };
            calls.push(Call {
                at: at.as_millis() as u64,
                write: false,
                took: elapsed(at),
                ok: got,
            });
        }
        calls
    };
    let (mut calls, read) = futures::join!(writes, reads);
    calls.extend(read);
    calls.sort_by_key(|call| call.at);
    calls
}

/// One line of figures for the calls that started in `[from, to)` ms.
fn figures(load: &str, phase: &str, calls: &[Call], from: u64, to: u64) {
    let within: Vec<&Call> = calls.iter().filter(|c| c.at >= from && c.at < to).collect();
    let seconds = (to - from) as f64 / 1000.0;
    let ok = within.iter().filter(|c| c.ok).count();
    let longest = within.iter().map(|c| c.took).max().unwrap_or(0);
    let longest_read = within
        .iter()
        .filter(|c| !c.write)
        .map(|c| c.took)
        .max()
        .unwrap_or(0);
    // Whole seconds of the phase in which no write that started then succeeded.
    let dry = (from / 1000..to / 1000)
        .filter(|second| {
            !within
                .iter()
                .any(|c| c.write && c.ok && c.at / 1000 == *second)
        })
        .count();
    println!(
        "{load:<9} {phase:<7} {:>9.0} {:>9.0} {:>12} {:>13} {:>15}",
        within.len() as f64 / seconds,
        ok as f64 / seconds,
        longest,
        longest_read,
        dry
    );
}

/// How long after `frozen_at` (ms) a write that started then or later first succeeded.
fn resumed_after(calls: &[Call], frozen_at: u64) -> Option<u64> {
    calls
        .iter()
        .filter(|c| c.write && c.ok && c.at >= frozen_at)
        .map(|c| c.at + c.took - frozen_at)
        .min()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .max(6);
    let servers = [(); 3].map(|()| Memcached::start(&["-m", "1024"]));
    let list = servers
        .iter()
        .map(Memcached::address)
        .collect::<Vec<_>>()
        .join(",");
    let sidecar = Sidecar::start(BINARY, &["--memcached", &list, "--replication-factor", "2"]);
    let third = seconds * 1000 / 3;

    let url = sidecar.data_url();
    let blobs = tokio::spawn(blob_calls(url, seconds));
    let metadata = {
        let sidecar = &sidecar;
        std::thread::scope(|scope| {
            let metadata = scope.spawn(move || metadata_calls(sidecar, seconds));
            std::thread::sleep(Duration::from_millis(third));
            servers[1].freeze();
            std::thread::sleep(Duration::from_millis(third));
            servers[1].thaw();
            metadata.join().expect("metadata load")
        })
    };
    let blobs = blobs.await.expect("blob load");

    println!(
        "one of 3 memcached servers (replication factor 2) frozen from {:.0} s to {:.0} s of a \
         {seconds} s run",
        third as f64 / 1000.0,
        2.0 * third as f64 / 1000.0
    );
    println!("(a call counts in the phase it started in)");
    println!(
        "{:<9} {:<7} {:>9} {:>9} {:>12} {:>13} {:>15}",
        "load", "phase", "calls/s", "ok/s", "longest ms", "longest read", "s without write"
    );
    for (load, calls) in [("metadata", &metadata), ("blobs", &blobs)] {
        figures(load, "before", calls, 0, third);
        figures(load, "frozen", calls, third, 2 * third);
        figures(load, "after", calls, 2 * third, seconds * 1000);
        println!(
            "{load:<9} writes succeeded again {} after the freeze began",
            resumed_after(calls, third).map_or("never".to_owned(), |ms| format!(
                "{:.1} s",
                ms as f64 / 1000.0
            ))
        );
    }
}
