//! Fault test: `kill -9` of the sidecar under a mixed load of uploads, downloads, metadata
//! writes and listings, then a restart: every acknowledged write is readable, and nothing
//! unacknowledged is half-visible (a listed key holds exactly what was sent, a blob GET never
//! returns wrong bytes).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faults_common::{blob, get_blob, node, put_blob, sidecar, spawn_node};
use reqwest::Client;
use zenko_memcached_testkit::Memcached;

/// Sizes of the uploads: inside one chunk, several chunks, and a partial last chunk.
const SIZES: [usize; 3] = [10_000, 700_000, 1_500_000];

#[derive(Default)]
struct DataLog {
    /// Acknowledged uploads: key, seed and size of the body sent.
    acked: Mutex<Vec<(String, u64, usize)>>,
    /// Downloads that returned a 200 with bytes other than those acknowledged.
    wrong: AtomicUsize,
    next_seed: AtomicUsize,
}

async fn uploader(url: String, log: Arc<DataLog>, stop: Arc<AtomicBool>) {
    let client = Client::new();
    while !stop.load(Ordering::Relaxed) {
        let seed = log.next_seed.fetch_add(1, Ordering::Relaxed) as u64;
        let size = SIZES[seed as usize % SIZES.len()];
        // A refused or cut upload is fine (not acknowledged); only acks are recorded.
        if let Ok(key) = put_blob(&client, &url, blob(seed, size)).await {
            log.acked.lock().unwrap().push((key, seed, size));
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn downloader(url: String, log: Arc<DataLog>, stop: Arc<AtomicBool>) {
    let client = Client::new();
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let pick = {
            let acked = log.acked.lock().unwrap();
            (!acked.is_empty()).then(|| acked[turn % acked.len()].clone())
        };
        let Some((key, seed, size)) = pick else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match get_blob(&client, &url, &key).await {
            Ok(bytes) if bytes != blob(seed, size) => {
                log.wrong.fetch_add(1, Ordering::Relaxed);
                println!("download of {key} returned wrong bytes");
            }
            // Errors while the sidecar is being killed are expected; wrong bytes are not.
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_mixed_load_loses_no_acknowledged_write() {
    let memcached = Memcached::start(&["-m", "512"]);
    let mut sidecar = sidecar(&memcached, &[]);
    let url = sidecar.data_url();
    let log = Arc::new(DataLog::default());
    let metadata_log = Arc::new(Mutex::new(Vec::<String>::new()));

    for round in 0..3u32 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(tokio::spawn(uploader(
                url.clone(),
                log.clone(),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(downloader(
                url.clone(),
                log.clone(),
                stop.clone(),
            )));
        }
        let first = (round * 100_000).to_string();
        let mut load = spawn_node(&sidecar, "load", &["fb", &first, "4"]);
        let stdout = load.stdout.take().unwrap();
        let lines = metadata_log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });

        tokio::time::sleep(Duration::from_millis(2500)).await;
        // kill -9 in the middle of everything, and start again on the same ports.
        tokio::task::block_in_place(|| sidecar.kill_and_restart());
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        tokio::task::block_in_place(|| {
            load.wait().unwrap();
            reader.join().unwrap();
        });
        let acked_puts = metadata_log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("ACK "))
            .count();
        println!(
            "round {round}: {} uploads and {acked_puts} metadata puts acknowledged so far",
            log.acked.lock().unwrap().len()
        );
    }

    // Every acknowledged blob reads back byte-exact from the restarted sidecar.
    let client = Client::new();
    let acked = log.acked.lock().unwrap().clone();
    let mut lost_blobs = 0;
    for (key, seed, size) in &acked {
        if get_blob(&client, &url, key).await.as_ref() != Ok(&blob(*seed, *size)) {
            lost_blobs += 1;
            println!("acknowledged blob {key} ({size} bytes) is not readable as written");
        }
    }
    // Every acknowledged metadata put is there; every listed key holds exactly its value.
    let lines = metadata_log.lock().unwrap().clone();
    let bad_during_load = lines.iter().filter(|l| l.starts_with("BAD ")).count();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.log");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let verified =
        tokio::task::block_in_place(|| node(&sidecar, "verify", &["fb", file.to_str().unwrap()]));
    let count = |prefix: &str| -> usize {
        verified
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (lost_puts, half_visible) = (count("LOST "), count("HALF "));
    let wrong_downloads = log.wrong.load(Ordering::Relaxed);
    println!(
        "kill -9 x3: {} acknowledged uploads, {} acknowledged metadata puts; lost: {lost_blobs} \
         blobs, {lost_puts} metadata puts; half-visible: {half_visible} listed keys, \
         {bad_during_load} bad listings during the load, {wrong_downloads} wrong downloads \
         (all must be 0)",
        acked.len(),
        lines.iter().filter(|l| l.starts_with("ACK ")).count(),
    );
    assert!(
        !acked.is_empty(),
        "no upload was acknowledged: the load did not run"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("LISTED ")),
        "no listing ran during the load"
    );
    assert_eq!(
        (
            lost_blobs,
            lost_puts,
            half_visible,
            bad_during_load,
            wrong_downloads
        ),
        (0, 0, 0, 0, 0),
        "{verified}"
    );
}

/// A sidecar killed while receiving an upload cannot clean up after it: what it wrote must be
/// chunks that memcached expires by itself, and no manifest (nothing published).
#[test]
fn a_sidecar_killed_mid_upload_leaves_only_chunks_that_expire() {
    use std::io::Write;
    use std::time::{SystemTime, UNIX_EPOCH};

    let memcached = Memcached::start(&[]);
    let mut sidecar = sidecar(&memcached, &[]);
    let before = memcached.items().len();
    let mut stream = std::net::TcpStream::connect(sidecar.data_addr()).unwrap();
    let declared = 8 << 20;
    write!(
        stream,
        "PUT /DataFile/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&blob(7, 3 << 20)).unwrap();
    // Wait until several of the body's chunks (512 KiB each) are in memcached.
    assert!(
        faults_common::eventually(Duration::from_secs(10), || {
            memcached.items().len() >= before + 4
        }),
        "the upload's chunks never reached memcached"
    );
    sidecar.signal("KILL");
    assert!(sidecar.wait(Duration::from_secs(10)).is_some());
    drop(stream);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let blob_items: Vec<_> = memcached
        .items()
        .into_iter()
        .filter(|item| item.key.starts_with("b:"))
        .collect();
    let manifests = blob_items
        .iter()
        .filter(|item| item.key.matches(':').count() == 1)
        .count();
    let permanent = blob_items
        .iter()
        .filter(|item| item.expires.is_none())
        .count();
    let expiring = blob_items
        .iter()
        .filter(|item| {
            item.expires
                .is_some_and(|at| at > now && at <= now + 7 * 3600)
        })
        .count();
    println!(
        "killed mid-upload: {} chunk items left, {expiring} expiring within 7 h, {permanent} \
         permanent (must be 0), {manifests} manifests (must be 0)",
        blob_items.len()
    );
    assert!(blob_items.len() >= 4, "{blob_items:?}");
    assert_eq!(manifests, 0, "{blob_items:?}");
    assert_eq!(permanent, 0, "{blob_items:?}");
    assert_eq!(expiring, blob_items.len(), "{blob_items:?}");
}
