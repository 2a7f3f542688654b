//! The data API end to end: the real sidecar binary over real HTTP, storing in a real memcached.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};
use zenko_memcached_testkit::{Memcached, Sidecar};

mod data_common;

use data_common::{BINARY, CHUNK, EPOCH_ITEMS, content, delete, error_of, put, sidecar};

#[tokio::test]
async fn stores_and_returns_every_size() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    for (seed, size) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 10 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let body = content(seed as u64, size);
        let key = put(&client, &url, body.clone()).await;
        let response = client
            .get(format!("{url}/DataFile/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "size {size}");
        assert_eq!(
            response.headers()["content-length"],
            size.to_string().as_str()
        );
        assert_eq!(response.headers()["accept-ranges"], "bytes");
        assert_eq!(
            response.bytes().await.unwrap(),
            Bytes::from(body),
            "size {size}"
        );
    }
}

#[tokio::test]
async fn streams_200_mib_without_buffering() {
    let memcached = Memcached::start_with(vec![
        "-m".into(),
        "400".into(),
        "-M".into(),
        "-I".into(),
        "2m".into(),
    ]);
    let sidecar = Sidecar::start(BINARY, &["--memcached", &memcached.address()]);
    let client = Client::new();
    let url = sidecar.data_url();
    const SIZE: usize = 200 * 1024 * 1024;
    const PIECE: usize = 1024 * 1024;
    let mut sent = Sha256::new();
    let pieces: Vec<Bytes> = (0..SIZE / PIECE)
        .map(|i| Bytes::from(content(i as u64, PIECE)))
        .collect();
    for piece in &pieces {
        sent.update(piece);
    }
    let body = reqwest::Body::wrap_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ));
    let response = client
        .put(format!("{url}/DataFile/"))
        .header("content-length", SIZE)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let response = client.get(format!("{url}{location}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Sha256::new();
    let mut count = 0;
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        count += piece.len();
        received.update(&piece);
    }
    assert_eq!(count, SIZE);
    assert_eq!(received.finalize(), sent.finalize());
}

#[tokio::test]
async fn serves_ranges_as_the_reference_does() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let size = 3 * CHUNK + 100;
    let body = content(7, size);
    let key = put(&client, &url, body.clone()).await;
    let object = format!("{url}/DataFile/{key}");
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=10-20".into(), 10, 20), // inside one chunk
        (
            format!("bytes={}-{}", CHUNK - 5, CHUNK + 5),
            CHUNK - 5,
            CHUNK + 5,
        ), // across a boundary
        (
            format!("bytes={}-{}", 10, 2 * CHUNK + 10),
            10,
            2 * CHUNK + 10,
        ), // across three chunks
        (format!("bytes={}-", 2 * CHUNK), 2 * CHUNK, size - 1), // open
        ("bytes=-150".into(), size - 150, size - 1), // suffix
        (format!("bytes=0-{}", size * 2), 0, size - 1), // clipped end
        (format!("bytes={}-{}", CHUNK, CHUNK), CHUNK, CHUNK), // one byte at a boundary
    ];
    for (range, start, end) in cases {
        let response = client
            .get(&object)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{end}/{size}").as_str(),
            "{range}"
        );
        assert_eq!(
            response.headers()["content-length"],
            (end - start + 1).to_string().as_str()
        );
        assert_eq!(
            response.bytes().await.unwrap(),
            &body[start..=end],
            "{range}"
        );
    }
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 1, size + 9),
        "bytes=-0".into(),
    ] {
        let response = client
            .get(&object)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("content-range").is_none());
        let (status, name, _) = error_of(response).await;
        assert_eq!(
            (status, name.as_str()),
            (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
            "{range}"
        );
    }
    for range in [
        "bytes=5-2",
        "bytes=-",
        "bytes=0-1,5-6",
        "items=0-1",
        "bytes= 0-9",
    ] {
        let response = client
            .get(&object)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{range}");
        assert_eq!(response.bytes().await.unwrap().len(), size, "{range}");
    }
}

#[tokio::test]
async fn answers_protocol_errors_with_arsenal_names() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let cases = [
        (
            client.get(format!("{url}/DataFile/{missing}")),
            StatusCode::NOT_FOUND,
            "ObjNotFound",
        ),
        (
            client.delete(format!("{url}/DataFile/{missing}")),
            StatusCode::NOT_FOUND,
            "ObjNotFound",
        ),
        (
            client.get(format!("{url}/DataFile/abc")),
            StatusCode::NOT_FOUND,
            "ObjNotFound",
        ),
        (
            client.get(format!("{url}/DataFile/")),
            StatusCode::BAD_REQUEST,
            "MissingParameter",
        ),
        (
            client.delete(format!("{url}/DataFile")),
            StatusCode::BAD_REQUEST,
            "MissingParameter",
        ),
        (
            client.get(format!("{url}/DataFile/ABC")),
            StatusCode::BAD_REQUEST,
            "InvalidURI",
        ),
        (
            client.get(format!("{url}/DataFile/{missing}?x=1")),
            StatusCode::BAD_REQUEST,
            "InvalidURI",
        ),
        (
            client.get(format!("{url}/DataFile?other")),
            StatusCode::BAD_REQUEST,
            "InvalidURI",
        ),
        (
            client.get(format!("{url}/Elsewhere/ab")),
            StatusCode::BAD_REQUEST,
            "InvalidAction",
        ),
        (
            client.put(format!("{url}/DataFile/{missing}")).body("x"),
            StatusCode::BAD_REQUEST,
            "InvalidURI",
        ),
        (
            client.head(format!("{url}/DataFile/{missing}")),
            StatusCode::METHOD_NOT_ALLOWED,
            "",
        ),
        (
            client.post(format!("{url}/DataFile/")),
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
    ];
    for (request, status, name) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        if !name.is_empty() {
            assert_eq!(error_of(response).await.1, name);
        }
    }
    // Without Content-Length, and with a chunked body instead.
    let raw = raw_exchange(
        &sidecar,
        "PUT /DataFile/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 411"), "{raw}");
    assert!(
        raw.contains(r#"{"errorType":"MissingContentLength""#),
        "{raw}"
    );
    let chunked = "PUT /DataFile/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    let raw = raw_exchange(&sidecar, chunked);
    assert!(raw.starts_with("HTTP/1.1 411"), "{raw}");
    // A Content-Length that is not a number never reaches a store.
    let raw = raw_exchange(
        &sidecar,
        "PUT /DataFile/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.is_empty() || raw.starts_with("HTTP/1.1 400"), "{raw}");
}

fn raw_exchange(sidecar: &Sidecar, request: &str) -> String {
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn delete_then_get_is_not_found_and_frees_the_chunks() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let key = put(&client, &url, content(3, 3 * CHUNK)).await;
    // Three chunks, the manifest, and the sidecar's own items.
    assert_eq!(memcached.stat("curr_items"), Some(4 + EPOCH_ITEMS));
    assert_eq!(delete(&client, &url, &key).await, StatusCode::NO_CONTENT);
    let (status, name, _) = error_of(
        client
            .get(format!("{url}/DataFile/{key}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, name.as_str()),
        (StatusCode::NOT_FOUND, "ObjNotFound")
    );
    assert_eq!(memcached.stat("curr_items"), Some(EPOCH_ITEMS));
}

#[tokio::test]
async fn sixty_four_concurrent_uploads_and_downloads() {
    let memcached = Memcached::start_with(vec![
        "-m".into(),
        "256".into(),
        "-M".into(),
        "-I".into(),
        "2m".into(),
    ]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let tasks = (0..64u64).map(|seed| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let body = content(seed, 100_000 + seed as usize * 13_001);
            let expected = Sha256::digest(&body);
            let key = put(&client, &url, body).await;
            let bytes = client
                .get(format!("{url}/DataFile/{key}"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(Sha256::digest(&bytes), expected, "seed {seed}");
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    let declared = 10 * CHUNK;
    write!(
        stream,
        "PUT /DataFile/ HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&content(1, 4 * CHUNK + 10)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        memcached.stat("curr_items").unwrap() > EPOCH_ITEMS,
        "chunks are written as the body arrives"
    );
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while memcached.stat("curr_items") != Some(EPOCH_ITEMS) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(memcached.stat("curr_items"), Some(EPOCH_ITEMS));
}

#[tokio::test]
async fn a_full_memcached_is_a_clear_error_and_evicts_nothing() {
    let memcached = Memcached::start_with(vec![
        "-m".into(),
        "8".into(),
        "-M".into(),
        "-I".into(),
        "1m".into(),
    ]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let mut stored = Vec::new();
    let mut refusal = None;
    for seed in 0..40u64 {
        let body = content(seed, 1024 * 1024);
        let response = client
            .put(format!("{url}/DataFile/"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::CREATED {
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            stored.push((location, body));
        } else {
            refusal = Some(error_of(response).await);
            break;
        }
    }
    let (status, name, message) = refusal.expect("memcached never filled up");
    assert_eq!(
        (status, name.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
    );
    assert!(message.contains("storage full"), "{message}");
    assert_eq!(memcached.stat("evictions"), Some(0));
    assert!(!stored.is_empty());
    for (location, body) in &stored {
        let bytes = client
            .get(format!("{url}{location}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&bytes[..], &body[..]);
    }
    // Nothing of the refused upload stays: one manifest and 16 chunks per stored blob.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_blob = (1024 * 1024 / CHUNK) as u64 + 1;
    assert_eq!(
        memcached.stat("curr_items"),
        Some(stored.len() as u64 * per_blob + EPOCH_ITEMS)
    );
    let metrics = client
        .get(format!("{}/metrics", sidecar.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"zmm_memcached_errors_total{kind="full"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stopped_memcached_is_unavailable_until_it_is_back() {
    let mut memcached = Memcached::start(&[]);
    let mut sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let ready = format!("{}/readyz", sidecar.admin_url());
    assert_eq!(
        client.get(&ready).send().await.unwrap().status(),
        StatusCode::OK
    );
    memcached.stop();
    let response = client
        .put(format!("{url}/DataFile/"))
        .body(content(1, 10))
        .send()
        .await
        .unwrap();
    let (status, name, _) = error_of(response).await;
    assert_eq!(
        (status, name.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
    );
    assert_eq!(
        client.get(&ready).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Killed, memcached comes back empty: the sidecar says its contents are lost rather than
    // serving from an empty store, until it is restarted (tests/faults_restart.rs).
    memcached.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.get(&ready).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        if response.text().await.unwrap().contains("lost its contents") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "loss never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sidecar.kill_and_restart();
    let client = Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.get(&ready).send().await.unwrap().status() != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put(&client, &url, content(2, 10)).await;
}

#[tokio::test]
async fn a_damaged_chunk_is_an_error_never_wrong_bytes() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let url = sidecar.data_url();
    let key = put(&client, &url, content(5, 3 * CHUNK)).await;
    // Overwrite the last chunk behind the sidecar's back.
    let mut raw = TcpStream::connect(memcached.addr()).unwrap();
    write!(raw, "set b:{key}:2 0 0 5\r\nhello\r\n").unwrap();
    let mut answer = [0u8; 8];
    raw.read_exact(&mut answer).unwrap();
    // The first chunk is fine, so the answer starts as a 200 and the connection is cut at the
    // damaged chunk; when the error comes before the headers were flushed, the client sees
    // only the cut. Either way it never receives the whole body.
    match client.get(format!("{url}/DataFile/{key}")).send().await {
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response.bytes().await.is_err(),
                "the body must be cut short"
            );
        }
        Err(error) => assert!(!error.is_status(), "{error}"),
    }
    // A damaged first chunk gets an error answer before any byte.
    write!(raw, "set b:{key}:0 0 0 5\r\nhello\r\n").unwrap();
    raw.read_exact(&mut answer).unwrap();
    let (status, name, message) = error_of(
        client
            .get(format!("{url}/DataFile/{key}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, name.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
    );
    assert!(message.contains("checksum"), "{message}");
}

#[tokio::test]
async fn reports_disk_usage_from_memcached() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let client = Client::new();
    let response = client
        .get(format!("{}/DataFile?diskUsage", sidecar.data_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let usage: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(usage["total"], 64 * 1024 * 1024);
    assert!(usage["free"].as_u64().unwrap() <= 64 * 1024 * 1024);
    assert_eq!(usage["available"], usage["free"]);
}

#[tokio::test]
async fn keeps_idle_connections_open_past_sixty_seconds() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = b"GET /DataFile?diskUsage HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buffer = [0u8; 4096];
    stream.write_all(request).unwrap();
    let first = stream.read(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..first]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(62));
    stream.write_all(request).unwrap();
    let second = stream.read(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..second]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish() {
    let memcached = Memcached::start(&[]);
    let mut sidecar = sidecar(&memcached);
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = content(9, 2 * CHUNK);
    write!(
        stream,
        "PUT /DataFile/ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..CHUNK]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sidecar.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&body[CHUNK..]).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = sidecar
        .wait(Duration::from_secs(10))
        .expect("the sidecar did not exit");
    assert!(status.success());
}

#[tokio::test]
async fn runs_on_the_embedded_store_without_memcached() {
    let sidecar = Sidecar::start(BINARY, &["--chunk-size", "4096"]);
    let client = Client::new();
    let url = sidecar.data_url();
    let body = content(4, 50_000);
    let key = put(&client, &url, body.clone()).await;
    let bytes = client
        .get(format!("{url}/DataFile/{key}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &body[..]);
}

#[test]
fn invalid_configuration_fails_fast_with_one_line() {
    let memcached = Memcached::start(&[]);
    let timeout = Duration::from_secs(10);
    let (status, stderr) = Sidecar::run_to_exit(
        BINARY,
        &[
            "--memcached",
            &memcached.address(),
            "--chunk-size",
            "4194304",
        ],
        timeout,
    );
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--chunk-size"), "{stderr}");
    let (status, stderr) = Sidecar::run_to_exit(BINARY, &["--memcached", "127.0.0.1:1"], timeout);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn probe_checks_readiness_for_health_checks() {
    let mut memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached);
    let ready = format!("{}/readyz", sidecar.admin_url());
    let timeout = Duration::from_secs(10);
    let (status, _) = Sidecar::run_to_exit(BINARY, &["--probe", &ready], timeout);
    assert!(status.success());
    memcached.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, stderr) = Sidecar::run_to_exit(BINARY, &["--probe", &ready], timeout);
    assert!(!status.success());
    assert!(stderr.contains("503"), "{stderr}");
    let (status, stderr) = Sidecar::run_to_exit(BINARY, &["--probe", "ftp://x"], timeout);
    assert!(!status.success() && stderr.contains("http://"), "{stderr}");
}
