//! Data API throughput against raw memcached, and the sidecar's peak memory under large uploads.
//!
//! `cargo bench -p zenko-memcached-sidecar --bench data` starts a real memcached and the release
//! sidecar, then prints, for each object size and client count, PUT and GET throughput through
//! the sidecar and raw memcached set/get of the same bytes with the same client library (cut
//! into the same item size), and their ratio; and, from memcached's own counters, what one
//! sidecar operation costs memcached: write commands per PUT (sets, touches, deletes), keys
//! fetched per GET. Figures from one run compare with each other only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use memcache::exp::{Delete, Get, Set};
use reqwest::Client;
use zenko_memcached_sidecar::items::MemcachedStore;
use zenko_memcached_testkit::{Memcached, Sidecar};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");
const CHUNK: usize = 512 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
/// How long each measurement runs at least.
fn window() -> Duration {
    // `DATA_BENCH_SECONDS` lengthens it, for profiling.
    let seconds = std::env::var("DATA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(seconds.unwrap_or(2))
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

/// What a run measured: bytes per second of the operations that succeeded, the CPU
/// milliseconds per MiB each of the `pids` used meanwhile, and how many operations ran and
/// failed.
struct Measured {
    rate: f64,
    cpu: [f64; 3],
    operations: usize,
    failed: usize,
}

/// Run `clients` loops of `one` (which says whether its operation succeeded) until the window
/// has passed.
async fn throughput<F, Fut>(pids: [u32; 3], clients: usize, size: usize, one: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let cpu = Cpu::now(pids);
    let window = window();
    let started = Instant::now();
    let tasks = (0..clients).map(|client| {
        let one = one.clone();
        tokio::spawn(async move {
            let (mut done, mut failed) = (0usize, 0usize);
            while started.elapsed() < window {
                if !one(client).await {
                    failed += 1;
                }
                done += 1;
            }
            (done, failed)
        })
    });
    let (mut operations, mut failed) = (0, 0);
    for task in futures::future::join_all(tasks).await {
        let (done, failures) = task.unwrap_or((0, 0));
        operations += done;
        failed += failures;
    }
    let bytes = ((operations - failed) * size) as f64;
    Measured {
        rate: bytes / started.elapsed().as_secs_f64(),
        cpu: cpu.per_mib(bytes),
        operations,
        failed,
    }
}

/// memcached's write commands so far, and keys fetched (`cmd_get`, one per key of a
/// multi-get).
fn counters(memcached: &Memcached) -> (u64, u64) {
    (
        memcached.write_commands(),
        memcached.stat("cmd_get").unwrap_or(0),
    )
}

/// The raw item of `client`'s object part `item`.
fn raw_key(client: usize, item: usize) -> String {
    format!("raw:{client}:{item}")
}

/// Part `item` of an object, cut as the sidecar cuts it into chunks.
fn part(payload: &Bytes, item: usize) -> Bytes {
    payload.slice(item * CHUNK..((item + 1) * CHUNK).min(payload.len()))
}

async fn raw(
    store: Arc<MemcachedStore>,
    pids: [u32; 3],
    op: Op,
    clients: usize,
    size: usize,
    payload: Bytes,
) -> Measured {
    let items = size.div_ceil(CHUNK).max(1);
    for client in 0..clients {
        for item in 0..items {
            let _ = store
                .client()
                .run(Set::new(raw_key(client, item), part(&payload, item)))
                .await;
        }
    }
    let measured = throughput(pids, clients, size, {
        let store = store.clone();
        move |client| {
            let (store, payload) = (store.clone(), payload.clone());
            async move {
                let mut ok = true;
                for item in 0..items {
                    let key = raw_key(client, item);
                    ok &= match op {
                        Op::Put => store
                            .client()
                            .run(Set::new(key, part(&payload, item)))
                            .await
                            .is_ok(),
                        Op::Get => store
                            .client()
                            .run(Get::new(key))
                            .await
                            .is_ok_and(|got| got.value.is_some()),
                    };
                }
                ok
            }
        }
    })
    .await;
    // Free the space again, as the sidecar runs do.
    for client in 0..clients {
        for item in 0..items {
            let _ = store.client().run(Delete::new(raw_key(client, item))).await;
        }
    }
    measured
}

/// The sidecar's run, and memcached's write commands (PUT) or keys fetched (GET) per
/// operation during it.
async fn sidecar(
    memcached: &Memcached,
    url: String,
    pids: [u32; 3],
    op: Op,
    clients: usize,
    size: usize,
    payload: Bytes,
) -> (Measured, f64) {
    let http = Client::new();
    let mut keys = Vec::new();
    for _ in 0..clients {
        match upload(&http, &url, payload.clone()).await {
            Some(location) => keys.push(location),
            None => panic!("the sidecar refused the upload the GETs are to read"),
        }
    }
    let keys = Arc::new(keys);
    let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let before = counters(memcached);
    let measured = {
        let (http, url, stored, keys) = (http.clone(), url.clone(), stored.clone(), keys.clone());
        throughput(pids, clients, size, move |client| {
            let (http, url, payload, keys, stored) = (
                http.clone(),
                url.clone(),
                payload.clone(),
                keys.clone(),
                stored.clone(),
            );
            async move {
                match op {
                    Op::Put => match upload(&http, &url, payload).await {
                        Some(location) => {
                            stored.lock().map(|mut stored| stored.push(location)).ok();
                            true
                        }
                        None => false,
                    },
                    Op::Get => {
                        let Ok(response) = http.get(format!("{url}{}", keys[client])).send().await
                        else {
                            return false;
                        };
                        let ok = response.status() == reqwest::StatusCode::OK;
                        let mut body = response.bytes_stream();
                        let mut received = 0;
                        while let Some(Ok(piece)) = body.next().await {
                            received += piece.len();
                        }
                        ok && received == payload.len()
                    }
                }
            }
        })
        .await
    };
    let after = counters(memcached);
    let per_op = match op {
        Op::Put => after.0 - before.0,
        Op::Get => after.1 - before.1,
    } as f64
        / measured.operations.max(1) as f64;
    // Free the space again, outside the measurement.
    let stored: Vec<String> = stored
        .lock()
        .map(|stored| stored.clone())
        .unwrap_or_default();
    for location in stored.iter().chain(keys.iter()) {
        let _ = http.delete(format!("{url}{location}")).send().await;
    }
    (measured, per_op)
}

/// The location of the uploaded blob; `None` when the sidecar did not answer 201.
async fn upload(http: &Client, url: &str, payload: Bytes) -> Option<String> {
    let response = http
        .put(format!("{url}/DataFile/"))
        .header("content-length", payload.len())
        .body(payload)
        .send()
        .await
        .ok()
        .filter(|response| response.status() == reqwest::StatusCode::CREATED)?;
    let location = response.headers().get("location")?;
    location.to_str().ok().map(str::to_owned)
}

/// CPU time (user + system) a process has used so far, in seconds. Linux counts it in ticks
/// of 1/100 s (`CLK_TCK`) in fields 14 and 15 of `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The command name may hold spaces; the fields after it are plain.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU seconds used by the load generator (this process), the sidecar and memcached.
#[derive(Clone, Copy)]
struct Cpu {
    pids: [u32; 3],
    used: [f64; 3],
}

impl Cpu {
    fn now(pids: [u32; 3]) -> Cpu {
        Cpu {
            pids,
            used: pids.map(cpu_secs),
        }
    }

    /// Milliseconds of CPU per MiB moved since `self`, per process.
    fn per_mib(&self, bytes: f64) -> [f64; 3] {
        let later = Cpu::now(self.pids);
        let mib = (bytes / MIB).max(f64::MIN_POSITIVE);
        [0, 1, 2].map(|i| (later.used[i] - self.used[i]) * 1000.0 / mib)
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether a case ("1MiB 16 PUT") is to run: all, or those containing `DATA_BENCH_ONLY`
/// (to profile one case).
fn selected(case: &str) -> bool {
    std::env::var("DATA_BENCH_ONLY").map_or(true, |only| case.contains(&only))
}

/// Fill memcached with chunk-sized items up to `mib` (or until it refuses one), then delete
/// them all, as on a server that has been running a while. A fresh memcached takes its memory
/// from the kernel page by page on first use; without this, whichever side writes new keys
/// (the sidecar: every upload is a new blob, and its downloads need blobs of their own) would
/// pay those page faults and the raw side, rewriting its keys, would not. Not all of memory:
/// memcached keeps a page in the size class it first served, so with every page taken by
/// chunk-sized items, `-M` refuses the small items of small blobs and manifests ("storage
/// full") until its slab mover hands pages over, a few a second.
async fn warm(store: &MemcachedStore, mib: usize) {
    let value = vec![7u8; CHUNK + 4];
    let mut written = 0;
    while written * CHUNK < mib << 20 {
        match store
            .client()
            .run(Set::new(warm_key(written), &value))
            .await
        {
            Ok(_) => written += 1,
            Err(_) => break,
        }
    }
    for n in 0..written {
        let _ = store.client().run(Delete::new(warm_key(n))).await;
    }
    println!(
        "memcached warmed: {} MiB written and freed",
        (written * CHUNK) >> 20
    );
}

fn warm_key(n: usize) -> String {
    format!("warm:{n}")
}

/// memcached with `memory_mib` of memory and evictions off, and the release sidecar on it.
fn start(memory_mib: &str) -> (Memcached, Sidecar) {
    let flags = ["-m", memory_mib, "-M", "-I", "1m", "-t", "2"];
    let memcached = Memcached::start_with(flags.map(String::from).to_vec());
    let chunk = CHUNK.to_string();
    let sidecar = Sidecar::start(
        BINARY,
        &["--memcached", &memcached.address(), "--chunk-size", &chunk],
    );
    (memcached, sidecar)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter this binary ignores.
    let (memcached, sidecar_process) = start("6000");
    let store = Arc::new(
        MemcachedStore::connect(&[memcached.address()])
            .await
            .expect("memcached"),
    );
    let url = sidecar_process.data_url();
    // memcached gets 6000 MiB; 512 of them are left to the other size classes.
    warm(&store, 6000 - 512).await;

    let pids = [
        std::process::id(),
        sidecar_process.pid().unwrap_or(0),
        memcached.pid().unwrap_or(0),
    ];

    println!("data API throughput, MiB/s (ratio = sidecar / raw memcached, same run)");
    println!("CPU ms per MiB moved: load generator / sidecar / memcached (raw has no sidecar)");
    println!("mc/op: memcached write commands per sidecar PUT, keys fetched per sidecar GET");
    println!("failed: sidecar operations that failed (not counted in the rate), then raw ones");
    println!(
        "{:>8} {:>7} {:>4} {:>10} {:>10} {:>6} {:>6} {:>9}   {:>14} {:>20}",
        "size",
        "clients",
        "op",
        "raw",
        "sidecar",
        "ratio",
        "mc/op",
        "failed",
        "cpu raw",
        "cpu sidecar"
    );
    for (label, size) in [
        ("4KiB", 4 * 1024),
        ("1MiB", 1024 * 1024),
        ("64MiB", 64 * 1024 * 1024),
    ] {
        let payload = Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
        for clients in [1, 16] {
            for (name, op) in [("PUT", Op::Put), ("GET", Op::Get)] {
                if !selected(&format!("{label} {clients} {name}")) {
                    continue;
                }
                let raw = raw(store.clone(), pids, op, clients, size, payload.clone()).await;
                let (through, per_op) = sidecar(
                    &memcached,
                    url.clone(),
                    pids,
                    op,
                    clients,
                    size,
                    payload.clone(),
                )
                .await;
                println!(
                    "{label:>8} {clients:>7} {name:>4} {:>10.1} {:>10.1} {:>6.2} {:>6.2} {:>9}   {:>6.2} / {:>5.2} {:>6.2} / {:>5.2} / {:>5.2}",
                    raw.rate / MIB,
                    through.rate / MIB,
                    through.rate / raw.rate,
                    per_op,
                    format!("{}/{}", through.failed, raw.failed),
                    raw.cpu[0],
                    raw.cpu[2],
                    through.cpu[0],
                    through.cpu[1],
                    through.cpu[2],
                );
            }
        }
    }

    println!(
        "sidecar peak RSS after the throughput runs: {:.1} MiB",
        peak_rss_kib(sidecar_process.pid().unwrap_or(0)) as f64 / 1024.0
    );
    drop(sidecar_process);
    drop(memcached);

    // Peak memory of a fresh sidecar while 16 clients each upload 256 MiB at once.
    const BIG: u64 = 256 * 1024 * 1024;
    let (_memcached, sidecar_process) = start("5000");
    let url = sidecar_process.data_url();
    let http = Client::new();
    let before = peak_rss_kib(sidecar_process.pid().unwrap_or(0));
    let started = Instant::now();
    let uploads = (0..16).map(|client| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let piece = Bytes::from(vec![client as u8; 1024 * 1024]);
            let body = futures::stream::iter(
                (0..BIG / (1024 * 1024)).map(move |_| Ok::<_, std::io::Error>(piece.clone())),
            );
            let response = http
                .put(format!("{url}/DataFile/"))
                .header("content-length", BIG)
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await;
            response.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(uploads)
        .await
        .into_iter()
        .map(|s| s.unwrap_or(0))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib(sidecar_process.pid().unwrap_or(0));
    println!(
        "16 x 256 MiB uploads: statuses {:?}, {:.0} MiB/s, sidecar peak RSS {:.1} MiB (before: {:.1} MiB)",
        statuses.iter().collect::<std::collections::BTreeSet<_>>(),
        (16 * BIG) as f64 / MIB / elapsed,
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
}
