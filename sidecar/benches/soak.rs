//! Soak run: mixed data and metadata traffic at a fixed concurrency, with a report and a plot.
//!
//! `cargo bench -p zenko-memcached-sidecar --bench soak` starts a real memcached and the release
//! sidecar on loopback, loads `SOAK_KEYS` (default 20,000) metadata keys, then for `SOAK_SECONDS`
//! (default 600) runs `SOAK_DATA_CLIENTS` (default 8) data loops of PUT, GET and DELETE of mixed
//! sizes (4 KiB to 8 MiB) and `SOAK_METADATA_CLIENTS` (default 8) socket.io loops of put, get and
//! 100-key listings (`tests/js/soak.js`). Every `SOAK_INTERVAL` seconds (default 10) it samples
//! operations, errors, latency percentiles per operation kind and the sidecar's resident memory,
//! and at the end writes `docs/soak/report.md` and `docs/soak/soak.svg` (or into `SOAK_OUT`).
//! Each sample line on stdout also shows memcached's live and allocated bytes. Not run in CI: it
//! is bounded but long, and its figures depend on the machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::Client;
use serde_json::Value;
use zenko_memcached_testkit::{Memcached, Sidecar, wait_for_listener};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");
const CHUNK: usize = 512 * 1024;
const KIB: usize = 1024;
/// Object sizes the data loops cycle through: mostly small objects, a few large ones.
const SIZES: [usize; 8] = [
    4 * KIB,
    4 * KIB,
    16 * KIB,
    64 * KIB,
    256 * KIB,
    KIB * KIB,
    4 * KIB * KIB,
    8 * KIB * KIB,
];
/// Objects each data loop keeps stored before deleting its oldest: bounds memcached's use.
const KEPT_PER_CLIENT: usize = 8;
const DATA_KINDS: [&str; 3] = ["PUT", "GET", "DELETE"];
const METADATA_KINDS: [&str; 3] = ["md_put", "md_get", "md_list"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Latencies (ms) and errors of one operation kind.
#[derive(Default, Clone)]
struct Series {
    latencies: Vec<f64>,
    errors: u64,
}

/// The percentiles the report shows for one kind in one interval or over the whole run.
#[derive(Default, Clone, Copy)]
struct Summary {
    ops: u64,
    errors: u64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Series {
    fn summary(&mut self) -> Summary {
        self.latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let n = self.latencies.len();
            if n == 0 {
                0.0
            } else {
                self.latencies[((q * n as f64) as usize).min(n - 1)]
            }
        };
        Summary {
            ops: self.latencies.len() as u64,
            errors: self.errors,
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: self.latencies.last().copied().unwrap_or(0.0),
        }
    }
}

fn from_json(value: &Value) -> Summary {
    let number = |name: &str| value.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    Summary {
        ops: number("ops") as u64,
        errors: number("errors") as u64,
        p50: number("p50"),
        p95: number("p95"),
        p99: number("p99"),
        max: number("max"),
    }
}

/// What the data loops record, swapped out at each sample.
#[derive(Default)]
struct DataStats {
    interval: BTreeMap<&'static str, Series>,
    total: BTreeMap<&'static str, Series>,
    /// Failed operations by cause ("PUT 507", "GET timeout"...), for the report.
    reasons: BTreeMap<String, u64>,
}

impl DataStats {
    fn record(&mut self, kind: &'static str, outcome: Result<f64, String>) {
        if let Err(reason) = &outcome {
            *self.reasons.entry(format!("{kind} {reason}")).or_default() += 1;
        }
        for map in [&mut self.interval, &mut self.total] {
            let series = map.entry(kind).or_default();
            match outcome {
                Ok(ms) => series.latencies.push(ms),
                Err(_) => series.errors += 1,
            }
        }
    }
}

/// Why a request failed: its status, or the transport's error kind.
fn cause(result: &Result<reqwest::Response, reqwest::Error>) -> String {
    match result {
        Ok(response) => response.status().as_u16().to_string(),
        Err(error) if error.is_timeout() => "timeout".to_owned(),
        Err(error) if error.is_connect() => "connect error".to_owned(),
        Err(_) => "transport error".to_owned(),
    }
}

/// One row of the report.
struct Sample {
    seconds: f64,
    rss_mib: f64,
    /// memcached's live item bytes (`bytes`): a store that leaks items fills up.
    memcached_mib: f64,
    /// The host's 1-minute load average: the machine may be shared, and latencies mean little
    /// without knowing how busy it was.
    load: f64,
    kinds: BTreeMap<String, Summary>,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// One data loop: PUT an object, GET it back and compare, DELETE the oldest beyond the kept few.
async fn data_loop(
    http: Client,
    url: String,
    client: usize,
    payload: Bytes,
    stats: Arc<Mutex<DataStats>>,
    deadline: Instant,
) {
    let record = |kind, outcome| {
        if let Ok(mut stats) = stats.lock() {
            stats.record(kind, outcome);
        }
    };
    let mut kept: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut step = client;
    while Instant::now() < deadline {
        let size = SIZES[step % SIZES.len()];
        step += 1;
        let body = payload.slice(..size);
        let started = Instant::now();
        let response = http
            .put(format!("{url}/DataFile/"))
            .header("content-length", size)
            .body(body.clone())
            .send()
            .await;
        let location = response
            .as_ref()
            .ok()
            .filter(|response| response.status().as_u16() == 201)
            .and_then(|response| response.headers().get("location").cloned())
            .and_then(|value| value.to_str().ok().map(str::to_owned));
        let Some(location) = location else {
            record("PUT", Err(cause(&response)));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        record("PUT", Ok(millis(started)));

        // The whole body is read and compared: a GET that returns wrong bytes is an error.
        let started = Instant::now();
        let got = match http.get(format!("{url}{location}")).send().await {
            Ok(response) if response.status().is_success() => {
                let mut received = Vec::with_capacity(size);
                let mut stream = response.bytes_stream();
                let mut failed = false;
                while let Some(piece) = stream.next().await {
                    match piece {
                        Ok(piece) => received.extend_from_slice(&piece),
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    Err("body cut".to_owned())
                } else if received != body {
                    Err("wrong bytes".to_owned())
                } else {
                    Ok(millis(started))
                }
            }
            other => Err(cause(&other)),
        };
        record("GET", got);

        kept.push_back(location);
        if kept.len() > KEPT_PER_CLIENT
            && let Some(oldest) = kept.pop_front()
        {
            let started = Instant::now();
            let response = http.delete(format!("{url}{oldest}")).send().await;
            let deleted = response
                .as_ref()
                .is_ok_and(|response| response.status().is_success());
            record(
                "DELETE",
                if deleted {
                    Ok(millis(started))
                } else {
                    Err(cause(&response))
                },
            );
        }
    }
    // Free the space again, outside the measurement.
    for location in kept {
        let _ = http.delete(format!("{url}{location}")).send().await;
    }
}

/// What soak.js prints: its samples by index and its totals.
#[derive(Default)]
struct MetadataOutput {
    samples: BTreeMap<usize, BTreeMap<String, Summary>>,
    total: BTreeMap<String, Summary>,
    reasons: BTreeMap<String, u64>,
}

fn parse_kinds(json: &str) -> BTreeMap<String, Summary> {
    let value: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    METADATA_KINDS
        .iter()
        .map(|kind| {
            (
                (*kind).to_owned(),
                value.get(kind).map(from_json).unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let seconds = env_or("SOAK_SECONDS", 600);
    let interval = env_or("SOAK_INTERVAL", 10).max(1);
    let data_clients = env_or("SOAK_DATA_CLIENTS", 8) as usize;
    let metadata_clients = env_or("SOAK_METADATA_CLIENTS", 8);
    let keys = env_or("SOAK_KEYS", 20_000);

    let memcached = Memcached::start_with(
        ["-m", "2048", "-M", "-I", "1m", "-t", "2"]
            .map(String::from)
            .to_vec(),
    );
    let sidecar = Sidecar::start(
        BINARY,
        &[
            "--memcached",
            &memcached.address(),
            "--chunk-size",
            &CHUNK.to_string(),
        ],
    );
    let pid = sidecar.pid().unwrap_or(0);
    assert!(wait_for_listener(
        std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port)),
        Duration::from_secs(10)
    ));

    // The metadata driver loads its keys, says READY, then runs for the same duration.
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let mut node = Command::new("node")
        .current_dir(&js)
        .arg("soak.js")
        .args([
            sidecar.metadata_port.to_string(),
            metadata_clients.to_string(),
            seconds.to_string(),
            interval.to_string(),
            keys.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let stdout = node.stdout.take().expect("node stdout");
    let metadata = Arc::new(Mutex::new(MetadataOutput::default()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let metadata = metadata.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "READY" {
                    let _ = ready_tx.send(());
                } else if let Some(rest) = line.strip_prefix("SAMPLE ") {
                    let (index, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
                    if let (Ok(index), Ok(mut metadata)) = (index.parse(), metadata.lock()) {
                        metadata.samples.insert(index, parse_kinds(json));
                    }
                } else if let Some(json) = line.strip_prefix("TOTAL ")
                    && let Ok(mut metadata) = metadata.lock()
                {
                    metadata.total = parse_kinds(json);
                    metadata.reasons = serde_json::from_str::<Value>(json)
                        .ok()
                        .and_then(|value| value.get("reasons").and_then(Value::as_object).cloned())
                        .map(|reasons| {
                            reasons
                                .iter()
                                .map(|(reason, n)| (reason.clone(), n.as_u64().unwrap_or(0)))
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(600))
        .expect("soak.js did not finish loading its keys");
    println!(
        "loaded {keys} metadata keys; soaking for {seconds} s with {data_clients} data and \
         {metadata_clients} metadata clients"
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let stats = Arc::new(Mutex::new(DataStats::default()));
    let largest = SIZES.iter().copied().max().unwrap_or(0);
    let payload = Bytes::from(
        (0..largest)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let loops: Vec<_> = (0..data_clients)
        .map(|client| {
            tokio::spawn(data_loop(
                http.clone(),
                sidecar.data_url(),
                client,
                payload.clone(),
                stats.clone(),
                deadline,
            ))
        })
        .collect();

    let rss_at_start = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let mut samples = Vec::new();
    let intervals = seconds.div_ceil(interval);
    for index in 0..intervals {
        let until = started + Duration::from_secs(((index + 1) * interval).min(seconds));
        tokio::time::sleep_until(until.into()).await;
        let data = stats
            .lock()
            .map(|mut stats| std::mem::take(&mut stats.interval))
            .unwrap_or_default();
        let mut kinds: BTreeMap<String, Summary> = DATA_KINDS
            .iter()
            .map(|kind| {
                (
                    (*kind).to_owned(),
                    data.get(kind).cloned().unwrap_or_default().summary(),
                )
            })
            .collect();
        // soak.js samples on its own clock, started at READY like this loop.
        if let Ok(metadata) = metadata.lock()
            && let Some(md) = metadata.samples.get(&(index as usize))
        {
            kinds.extend(md.clone());
        }
        // memcached's live bytes and items: tells a store that fills up from one whose memory
        // sits in the slab classes of other item sizes.
        let mib = |name: &str| memcached.stat(name).unwrap_or(0) as f64 / (1024.0 * 1024.0);
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            rss_mib: status_kib(pid, "VmRSS:") as f64 / 1024.0,
            memcached_mib: mib("bytes"),
            load: load_average(),
            kinds,
        };
        let ops: u64 = sample.kinds.values().map(|s| s.ops).sum();
        let errors: u64 = sample.kinds.values().map(|s| s.errors).sum();
        println!(
            "t={:>5.0}s rss={:>6.1} MiB load={:.1} ops={ops} errors={errors} \
             memcached live={:.0} MiB items={} slabs_moved={}",
            sample.seconds,
            sample.rss_mib,
            sample.load,
            mib("bytes"),
            memcached.stat("curr_items").unwrap_or(0),
            memcached.stat("slabs_moved").unwrap_or(0),
        );
        samples.push(sample);
    }
    for task in loops {
        let _ = task.await;
    }
    let node_status = node.wait().expect("node");
    let _ = reader.join();
    let peak_mib = status_kib(pid, "VmHWM:") as f64 / 1024.0;

    // A sample that soak.js printed after this loop read it (clocks drift by milliseconds).
    let metadata = metadata
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default();
    for (index, sample) in samples.iter_mut().enumerate() {
        if let Some(md) = metadata.samples.get(&index) {
            sample.kinds.extend(md.clone());
        }
    }
    let mut totals: BTreeMap<String, Summary> = stats
        .lock()
        .map(|mut stats| {
            DATA_KINDS
                .iter()
                .map(|kind| {
                    (
                        (*kind).to_owned(),
                        stats.total.entry(*kind).or_default().summary(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    totals.extend(metadata.total.clone());
    let mut reasons = stats
        .lock()
        .map(|stats| stats.reasons.clone())
        .unwrap_or_default();
    reasons.extend(metadata.reasons.clone());

    let run = Run {
        seconds,
        interval,
        data_clients,
        metadata_clients,
        keys,
        node_ok: node_status.success(),
        rss_at_start,
        peak_mib,
        samples,
        totals,
        reasons,
    };
    // SOAK_OUT: somewhere else than the committed report, for diagnostic runs.
    let out = std::env::var("SOAK_OUT").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/soak"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&out).expect("docs/soak");
    std::fs::write(out.join("report.md"), run.report()).expect("report.md");
    std::fs::write(out.join("soak.svg"), run.svg()).expect("soak.svg");
    println!("wrote {}", out.join("report.md").display());
    drop(sidecar);
    drop(memcached);
}

struct Run {
    seconds: u64,
    interval: u64,
    data_clients: usize,
    metadata_clients: u64,
    keys: u64,
    node_ok: bool,
    rss_at_start: f64,
    peak_mib: f64,
    samples: Vec<Sample>,
    totals: BTreeMap<String, Summary>,
    reasons: BTreeMap<String, u64>,
}

/// One plotted series: label, colour and (seconds, value) points.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Every kind in report order: data first, then metadata.
fn kinds() -> impl Iterator<Item = &'static str> {
    DATA_KINDS.iter().chain(METADATA_KINDS.iter()).copied()
}

impl Run {
    fn report(&self) -> String {
        let mut md = String::new();
        let total_ops: u64 = self.totals.values().map(|s| s.ops).sum();
        let total_errors: u64 = self.totals.values().map(|s| s.errors).sum();
        let rss: Vec<f64> = self.samples.iter().map(|s| s.rss_mib).collect();
        let max_rss = rss.iter().copied().fold(0.0, f64::max);
        let last_rss = rss.last().copied().unwrap_or(0.0);
        // Memory trend: the second half's mean against the first half's, to spot a leak.
        let half = rss.len() / 2;
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
        md.push_str("# Soak run\n\n");
        md.push_str(&format!(
            "Generated by `SOAK_SECONDS={} cargo bench -p zenko-memcached-sidecar --bench soak` \
             (`sidecar/benches/soak.rs`). One machine, loopback only: memcached (`-m 2048 -M -I 1m \
             -t 2`) and the release sidecar (512 KiB chunks) on the same host as the load.\n\n",
            self.seconds
        ));
        md.push_str(&format!(
            "- Duration: {} s, sampled every {} s.\n\
             - Data: {} loops, each PUT then GET (whole body compared) of an object cycling \
             through 4 KiB, 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, 4 MiB, 8 MiB, and DELETE of \
             its oldest object beyond {KEPT_PER_CLIENT} kept.\n\
             - Metadata: {} socket.io 4 connections (`sidecar/tests/js/soak.js`) over a bucket of \
             {} keys of 0.2-4 KiB, each cycling put, get, put, get, 100-key listing.\n\
             - Latency: from sending the request to the whole answer (ms); GET includes reading \
             the body, a listing includes every streamed item.\n\n",
            self.seconds, self.interval, self.data_clients, self.metadata_clients, self.keys
        ));
        md.push_str("![RSS and p99 latency over time](soak.svg)\n\n## Summary\n\n");
        md.push_str(&format!(
            "{total_ops} operations, {total_errors} errors{}. Sidecar RSS: {:.1} MiB at start, \
             {max_rss:.1} MiB highest sample, {last_rss:.1} MiB at the end, peak (VmHWM) \
             {:.1} MiB; mean over the second half {:.1} MiB against {:.1} MiB over the first.\n\n",
            if self.node_ok {
                ""
            } else {
                " (the metadata driver exited with an error)"
            },
            self.rss_at_start,
            self.peak_mib,
            mean(&rss[half..]),
            mean(&rss[..half]),
        ));
        let live: Vec<f64> = self.samples.iter().map(|s| s.memcached_mib).collect();
        md.push_str(&format!(
            "memcached's live item bytes: {:.0} MiB at the first sample, {:.0} MiB highest, \
             {:.0} MiB at the end; mean over the second half {:.0} MiB against {:.0} MiB over the \
             first.\n\n",
            live.first().copied().unwrap_or(0.0),
            live.iter().copied().fold(0.0, f64::max),
            live.last().copied().unwrap_or(0.0),
            mean(&live[half..]),
            mean(&live[..half]),
        ));
        let loads: Vec<f64> = self.samples.iter().map(|s| s.load).collect();
        md.push_str(&format!(
            "Host: {} CPUs; 1-minute load average {:.1} mean, {:.1} highest over the samples. \
             Everything (memcached, sidecar, node, the Rust load loops) shares these CPUs, and \
             other processes of the host count in the load too, so the latencies are those of a \
             busy small machine, not of a storage node.\n\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            mean(&loads),
            loads.iter().copied().fold(0.0, f64::max),
        ));
        md.push_str("| operation | ops | ops/s | errors | p50 ms | p95 ms | p99 ms | max ms |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for kind in kinds() {
            let s = self.totals.get(kind).copied().unwrap_or_default();
            md.push_str(&format!(
                "| {kind} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.1} |\n",
                s.ops,
                s.ops as f64 / self.seconds.max(1) as f64,
                s.errors,
                s.p50,
                s.p95,
                s.p99,
                s.max
            ));
        }
        if !self.reasons.is_empty() {
            md.push_str("\nErrors by cause:\n\n");
            for (reason, count) in &self.reasons {
                md.push_str(&format!("- `{reason}`: {count}\n"));
            }
        }
        md.push_str(
            "\n## Per interval\n\nLatency cells are p50 / p95 / p99 in ms; load is the host's \
             1-minute load average at the sample.\n\n",
        );
        md.push_str("| t (s) | RSS MiB | memcached MiB | load | ops | errors |");
        for kind in kinds() {
            md.push_str(&format!(" {kind} |"));
        }
        md.push_str("\n|---:|---:|---:|---:|---:|---:|");
        for _ in kinds() {
            md.push_str("---:|");
        }
        md.push('\n');
        for sample in &self.samples {
            let ops: u64 = sample.kinds.values().map(|s| s.ops).sum();
            let errors: u64 = sample.kinds.values().map(|s| s.errors).sum();
            md.push_str(&format!(
                "| {:.0} | {:.1} | {:.0} | {:.1} | {ops} | {errors} |",
                sample.seconds, sample.rss_mib, sample.memcached_mib, sample.load
            ));
            for kind in kinds() {
                let s = sample.kinds.get(kind).copied().unwrap_or_default();
                md.push_str(&format!(" {:.1} / {:.1} / {:.1} |", s.p50, s.p95, s.p99));
            }
            md.push('\n');
        }
        md
    }

    /// Two panels sharing the time axis: the sidecar's RSS, and each kind's p99 latency.
    fn svg(&self) -> String {
        const WIDTH: f64 = 900.0;
        const PANEL: f64 = 260.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 150.0;
        const TOP: f64 = 40.0;
        const GAP: f64 = 70.0;
        const COLOURS: [&str; 6] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
        ];
        let plot_width = WIDTH - LEFT - RIGHT;
        let height = TOP + 2.0 * PANEL + GAP + 50.0;
        let max_t = self.seconds.max(1) as f64;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let panel = |svg: &mut String, top: f64, title: &str, unit: &str, lines: &[Line<'_>]| {
            let max_y = lines
                .iter()
                .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
                .fold(0.0, f64::max)
                .max(1e-9)
                * 1.1;
            let x = |t: f64| LEFT + t / max_t * plot_width;
            let y = |v: f64| top + PANEL - v / max_y * PANEL;
            svg.push_str(&format!(
                "<text x=\"{LEFT}\" y=\"{}\" font-size=\"14\">{title}</text>\n\
                 <rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_width}\" height=\"{PANEL}\" \
                 fill=\"none\" stroke=\"#888\"/>\n",
                top - 10.0
            ));
            for step in 0..=4 {
                let value = max_y * f64::from(step) / 4.0;
                svg.push_str(&format!(
                    "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\n\
                     <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value:.1} {unit}</text>\n",
                    LEFT + plot_width,
                    LEFT - 5.0,
                    y(value) + 4.0,
                    y = y(value)
                ));
                let t = max_t * f64::from(step) / 4.0;
                svg.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.0} s</text>\n",
                    x(t),
                    top + PANEL + 16.0
                ));
            }
            for (n, (label, colour, points)) in lines.iter().enumerate() {
                let path: Vec<String> = points
                    .iter()
                    .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                    .collect();
                svg.push_str(&format!(
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
                     points=\"{}\"/>\n\
                     <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{label}</text>\n",
                    path.join(" "),
                    LEFT + plot_width + 10.0,
                    top + 15.0 + 16.0 * n as f64
                ));
            }
        };
        let rss = vec![(
            "sidecar RSS",
            COLOURS[0],
            std::iter::once((0.0, self.rss_at_start))
                .chain(self.samples.iter().map(|s| (s.seconds, s.rss_mib)))
                .collect(),
        )];
        panel(&mut svg, TOP, "Sidecar resident memory (MiB)", "MiB", &rss);
        let latencies: Vec<Line<'_>> = kinds()
            .zip(COLOURS)
            .map(|(kind, colour)| {
                (
                    kind,
                    colour,
                    self.samples
                        .iter()
                        .map(|s| (s.seconds, s.kinds.get(kind).map(|k| k.p99).unwrap_or(0.0)))
                        .collect(),
                )
            })
            .collect();
        panel(
            &mut svg,
            TOP + PANEL + GAP,
            "p99 latency per interval (ms)",
            "ms",
            &latencies,
        );
        svg.push_str("</svg>\n");
        svg
    }
}
