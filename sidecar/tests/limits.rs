//! The configured limits through the real binary: object size, metadata key and value sizes,
//! connections per listener and per client, and open streams per metadata client.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zenko_memcached_testkit::Sidecar;

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

/// Send raw bytes, then read until the peer closes or `wait` passes; the text read.
fn exchange(stream: &mut TcpStream, request: &[u8], wait: Duration) -> String {
    stream.write_all(request).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                // Enough once the headers and a short body are in.
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_put_over_the_object_size_limit_is_refused_before_its_body() {
    let sidecar = Sidecar::start(BINARY, &["--max-object-size", "5000"]);
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    // Only the headers are sent: the answer must come without the body being read.
    let answer = exchange(
        &mut stream,
        b"PUT /DataFile HTTP/1.1\r\nhost: x\r\ncontent-length: 5001\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"errorType\":\"EntityTooLarge\""),
        "{answer}"
    );
    // A body of the limit is accepted.
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    let mut request = b"PUT /DataFile HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 5000));
    let answer = exchange(&mut stream, &request, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // Nothing of the refused upload was stored: the only bytes received are the accepted ones.
    let metrics = reqwest_blocking_get(&format!("{}/metrics", sidecar.admin_url()));
    assert!(
        metrics.contains("zmm_data_received_bytes_total 5000"),
        "{metrics}"
    );
}

/// A GET over a fresh connection, by hand (the tests avoid a blocking HTTP client).
fn reqwest_blocking_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn connections_over_the_limit_wait_and_are_served_when_one_closes() {
    let sidecar = Sidecar::start(BINARY, &["--max-connections", "2"]);
    let disk_usage = b"GET /DataFile?diskUsage HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    // Two idle connections take both slots.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(sidecar.data_addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A third is queued by the kernel but not served.
    let mut third = TcpStream::connect(sidecar.data_addr()).unwrap();
    let answer = exchange(&mut third, disk_usage, Duration::from_millis(700));
    assert_eq!(answer, "", "served over the limit");
    // The admin listener is not limited: the sidecar still answers its probes.
    let health = reqwest_blocking_get(&format!("{}/healthz", sidecar.admin_url()));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // One closes: the queued connection is served, and the limit holds again afterwards.
    let started = Instant::now();
    drop(held);
    let answer = exchange(&mut third, b"", Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(third);
    for _ in 0..5 {
        let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
        let answer = exchange(&mut stream, disk_usage, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[test]
fn metadata_connections_are_limited_too() {
    let sidecar = Sidecar::start(BINARY, &["--max-connections", "1"]);
    let _held = TcpStream::connect(sidecar.metadata_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = TcpStream::connect(sidecar.metadata_addr()).unwrap();
    let handshake =
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    assert_eq!(
        exchange(&mut second, handshake, Duration::from_millis(700)),
        ""
    );
    drop(_held);
    let answer = exchange(&mut second, b"", Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A connection from `local` (an address of the loopback range) to `to`.
async fn connect_from(local: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((local, 0).into()).unwrap();
    let stream = socket.connect(to).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// A client over its bound gets a clear error at once, other clients are served, and the
/// client gets its places back as its connections close. The bounded client has an address of
/// its own (127.0.0.3), so that the fixture's readiness probes from 127.0.0.1 do not count.
async fn one_client_is_bounded(to: std::net::SocketAddr, request: &[u8]) {
    const CLIENT: [u8; 4] = [127, 0, 0, 3];
    let held = [
        connect_from(CLIENT, to).await,
        connect_from(CLIENT, to).await,
    ];
    std::thread::sleep(Duration::from_millis(200));
    let mut third = connect_from(CLIENT, to).await;
    let answer = exchange(&mut third, request, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"errorType\":\"ServiceUnavailable\""),
        "{answer}"
    );
    assert!(
        answer.contains("too many connections from 127.0.0.3: at most 2 per client"),
        "{answer}"
    );
    // Another client address is not affected.
    let mut other = connect_from([127, 0, 0, 2], to).await;
    let answer = exchange(&mut other, request, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Its connections close: the client may open others.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let mut again = connect_from(CLIENT, to).await;
        if exchange(&mut again, request, Duration::from_secs(5)).starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
    }
    assert!(served, "the client never got its places back");
}

#[tokio::test]
async fn data_connections_are_bounded_per_client_with_a_clear_error() {
    let sidecar = Sidecar::start(BINARY, &["--max-connections-per-client", "2"]);
    let disk_usage = b"GET /DataFile?diskUsage HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    one_client_is_bounded(sidecar.data_addr(), disk_usage).await;
}

#[tokio::test]
async fn metadata_connections_are_bounded_per_client_with_a_clear_error() {
    let sidecar = Sidecar::start(BINARY, &["--max-connections-per-client", "2"]);
    let handshake =
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    one_client_is_bounded(sidecar.metadata_addr(), handshake).await;
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

fn node_limits(generation: &str) {
    assert!(
        js_dir().join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    let sidecar = Sidecar::start(
        BINARY,
        &[
            "--max-metadata-value",
            "10000",
            "--max-streams-per-client",
            "3",
        ],
    );
    let output = std::process::Command::new("node")
        .current_dir(js_dir())
        .arg("limits.js")
        .arg(sidecar.metadata_addr().port().to_string())
        .arg(generation)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("PASS limits"),
        "limits.js (socket.io {generation}.x) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn metadata_limits_with_socket_io_4_clients() {
    node_limits("4");
}

#[test]
fn metadata_limits_with_socket_io_2_clients() {
    node_limits("2");
}
