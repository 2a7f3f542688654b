//! The sidecar's roles through the real binary on real memcached: a `data` sidecar serves blobs
//! and leaves the metadata address closed, a `metadata` sidecar serves CloudServer's metadata
//! calls and leaves the data address closed; each reports only its own metrics and watches its
//! own memcached pool for lost contents. Also the log formats, which the production layout's log
//! collectors read.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod js_common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use zenko_memcached_testkit::{Memcached, Role, Sidecar, free_port};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

fn closed(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

async fn get_text(url: String) -> (StatusCode, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn metrics(sidecar: &Sidecar) -> String {
    let (status, text) = get_text(format!("{}/metrics", sidecar.admin_url())).await;
    assert_eq!(status, StatusCode::OK);
    text
}

/// Wait until `/readyz` answers `status`, and return its body.
async fn readyz_becomes(sidecar: &Sidecar, status: StatusCode) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, body) = get_text(format!("{}/readyz", sidecar.admin_url())).await;
        if now == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keys(memcached: &Memcached) -> Vec<String> {
    memcached.items().into_iter().map(|item| item.key).collect()
}

#[tokio::test]
async fn data_role_serves_blobs_and_leaves_the_metadata_address_closed() {
    let memcached = Memcached::start(&[]);
    let sidecar = Sidecar::start_role(BINARY, Role::Data, &["--memcached", &memcached.address()]);
    assert!(
        closed(sidecar.metadata_addr()),
        "a data sidecar listens on the metadata address"
    );

    let client = reqwest::Client::new();
    let body = zenko_memcached_testkit::pseudo_random_bytes(7, 3 * 1024 * 1024 + 5);
    let response = client
        .put(format!("{}/DataFile/", sidecar.data_url()))
        .header("content-length", body.len())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let fetched = client
        .get(format!("{}{location}", sidecar.data_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert!(
        fetched.bytes().await.unwrap() == body,
        "the blob came back changed"
    );

    // Only blob items, the epoch, the placement record and the sidecars' reports: a data
    // module's memcached holds no metadata database.
    for key in keys(&memcached) {
        assert!(
            key.starts_with("b:")
                || key.starts_with("zmm:epoch")
                || key == "zmm:placement"
                || key == "zmm:sidecars",
            "unexpected item {key} in a data module's memcached"
        );
    }
    let text = metrics(&sidecar).await;
    assert!(text.contains("zmm_sidecar_info{role=\"data\"} 1"), "{text}");
    assert!(text.contains("zmm_data_requests_total{"), "{text}");
    assert!(text.contains("zmm_data_open_downloads 0"), "{text}");
    // A combined sidecar shows this gauge from its start; a data sidecar never does.
    assert!(!text.contains("zmm_metadata_"), "{text}");
    assert_eq!(readyz_becomes(&sidecar, StatusCode::OK).await, "ready\n");
}

#[tokio::test]
async fn metadata_role_serves_the_rpc_and_leaves_the_data_address_closed() {
    // Its chunk size does not matter: it stores no blob (memcached's default -I is 1 MiB).
    let memcached = Memcached::start(&[]);
    let sidecar = Sidecar::start_role(
        BINARY,
        Role::Metadata,
        &[
            "--memcached",
            &memcached.address(),
            "--chunk-size",
            "2000000",
        ],
    );
    assert!(
        closed(sidecar.data_addr()),
        "a metadata sidecar listens on the data address"
    );
    js_common::scenario(&sidecar, "4", "cloudserver");

    for key in keys(&memcached) {
        assert!(
            !key.starts_with("b:"),
            "blob item {key} in a metadata module's memcached"
        );
    }
    let text = metrics(&sidecar).await;
    assert!(
        text.contains("zmm_sidecar_info{role=\"metadata\"} 1"),
        "{text}"
    );
    assert!(text.contains("zmm_metadata_calls_total{"), "{text}");
    assert!(text.contains("zmm_metadata_open_streams 0"), "{text}");
    assert!(!text.contains("zmm_data_"), "{text}");
    assert_eq!(readyz_becomes(&sidecar, StatusCode::OK).await, "ready\n");
}

#[test]
fn a_data_sidecar_refuses_chunks_its_memcached_cannot_hold() {
    let memcached = Memcached::start(&["-I", "1m"]);
    let (status, stderr) = Sidecar::run_to_exit(
        BINARY,
        &[
            "--role",
            "data",
            "--memcached",
            &memcached.address(),
            "--chunk-size",
            "2000000",
            "--data-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
        ],
        Duration::from_secs(20),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("--chunk-size 2000000 does not fit"),
        "{stderr}"
    );
}

#[tokio::test]
async fn each_role_declares_its_own_pool_lost_when_memcached_comes_back_empty() {
    let mut data_pool = Memcached::start(&[]);
    let mut metadata_pool = Memcached::start(&[]);
    let data = Sidecar::start_role(BINARY, Role::Data, &["--memcached", &data_pool.address()]);
    let metadata = Sidecar::start_role(
        BINARY,
        Role::Metadata,
        &["--memcached", &metadata_pool.address()],
    );
    readyz_becomes(&data, StatusCode::OK).await;
    readyz_becomes(&metadata, StatusCode::OK).await;

    // The metadata pool restarts empty: only the metadata sidecar loses its contents.
    metadata_pool.restart();
    let body = readyz_becomes(&metadata, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("lost its contents"), "{body}");
    assert_eq!(readyz_becomes(&data, StatusCode::OK).await, "ready\n");

    data_pool.restart();
    let body = readyz_becomes(&data, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("lost its contents"), "{body}");
}

/// The first log line a sidecar on the embedded store prints with these extra arguments, its
/// standard output being a pipe as under a container runtime.
fn first_log_line(args: &[&str]) -> String {
    let data = format!("127.0.0.1:{}", free_port());
    let metadata = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BINARY)
        .args(["--data-addr", &data, "--metadata-addr", &metadata])
        .args(["--admin-addr", &admin])
        .args(args)
        .env("ZMM_LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes_and_json_is_one_object_a_line() {
    let text = first_log_line(&["--role", "data"]);
    assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");
    assert!(text.contains("WARN"), "{text}");

    let json = first_log_line(&["--log-format", "json", "--role", "metadata"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["level"], "WARN", "{json}");
    assert!(
        parsed["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("embedded"),
        "{json}"
    );

    let refused = Command::new(BINARY)
        .args(["--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}
