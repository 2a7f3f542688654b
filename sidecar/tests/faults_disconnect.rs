//! Fault tests: clients that disconnect mid-upload, mid-download and mid-listing leave no
//! chunks behind, no stuck streams, and a sidecar that keeps serving.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod faults_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use faults_common::{blob, eventually, get_blob, metric, put_blob, sidecar, spawn_node};
use reqwest::Client;
use zenko_memcached_testkit::Memcached;

const MIB: usize = 1 << 20;

/// A raw PUT that sends `sent` bytes of a `declared`-byte body, then closes the connection.
fn abandoned_upload(sidecar: &zenko_memcached_testkit::Sidecar, declared: usize, sent: usize) {
    let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
    write!(
        stream,
        "PUT /DataFile/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&blob(declared as u64, sent)).unwrap();
    stream.flush().unwrap();
    // Let the sidecar store some chunks before the client goes away.
    std::thread::sleep(Duration::from_millis(200));
}

#[tokio::test]
async fn uploads_cut_mid_body_leave_no_chunks() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, &[]);
    let client = Client::new();
    let url = sidecar.data_url();
    let kept = put_blob(&client, &url, blob(1, 2 * MIB)).await.unwrap();
    let baseline = memcached.stat("curr_items").unwrap();

    for round in 0..8 {
        abandoned_upload(&sidecar, 4 * MIB, 2 * MIB + round * 1000);
    }
    let settled = eventually(Duration::from_secs(5), || {
        memcached.stat("curr_items") == Some(baseline)
    });
    let leaked = memcached
        .stat("curr_items")
        .unwrap()
        .saturating_sub(baseline);
    println!("uploads cut mid-body: {leaked} chunks leaked (must be 0)");
    assert!(settled && leaked == 0);
    assert_eq!(
        get_blob(&client, &url, &kept).await.unwrap(),
        blob(1, 2 * MIB)
    );
}

#[tokio::test]
async fn downloads_cut_mid_body_do_not_disturb_the_sidecar() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, &[]);
    let client = Client::new();
    let url = sidecar.data_url();
    let body = blob(2, 8 * MIB);
    let key = put_blob(&client, &url, body.clone()).await.unwrap();

    let open = || metric(&sidecar, "zmm_data_open_downloads");
    assert_eq!(open(), Some(0.0));
    let started = |stream: &mut TcpStream| {
        write!(
            stream,
            "GET /DataFile/{key} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        let mut part = vec![0u8; 100_000];
        stream.read_exact(&mut part).unwrap();
    };
    // Downloads whose client stops reading stay open (8 MiB do not fit the socket buffers)
    // and are counted...
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
            started(&mut stream);
            stream
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || open() == Some(3.0)),
        "{:?}",
        open()
    );
    // ...until the client goes away: then each is dropped, not left stuck.
    drop(held);
    for _ in 0..20 {
        let mut stream = TcpStream::connect(sidecar.data_addr()).unwrap();
        started(&mut stream);
        drop(stream);
    }
    let closed = eventually(Duration::from_secs(10), || open() == Some(0.0));
    println!(
        "downloads cut mid-body: {:?} still open (must be 0)",
        open()
    );
    assert!(closed);
    // Still serving, byte-exact, and no memcached errors from the cut responses.
    for _ in 0..3 {
        assert_eq!(get_blob(&client, &url, &key).await.unwrap(), body);
    }
    let errors = metric(&sidecar, "zmm_memcached_errors_total").unwrap_or(0.0);
    let items = memcached.stat("curr_items").unwrap();
    println!("downloads cut mid-body: {errors} memcached errors (must be 0), {items} items");
    assert_eq!(errors, 0.0);
    // The blob's 16 chunks, its manifest, the epoch item, the placement record and the
    // sidecars' reports: nothing else appeared or went.
    assert_eq!(items, 20);
}

#[test]
fn listings_abandoned_by_their_client_are_stopped() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, &[]);
    let open = || metric(&sidecar, "zmm_metadata_open_streams");
    assert_eq!(open(), Some(0.0));

    for round in 0..3 {
        let mut node = spawn_node(&sidecar, "hold-listing", &["2000"]);
        let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
        let holding = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line == "HOLDING" || line.starts_with("FAIL"));
        assert_eq!(holding.as_deref(), Some("HOLDING"), "round {round}");
        // The listing waits for acks that never come.
        assert_eq!(open(), Some(1.0), "round {round}");
        // The client vanishes without a word (a crash, a cut network).
        node.kill().unwrap();
        node.wait().unwrap();
        let stopped = eventually(Duration::from_secs(10), || open() == Some(0.0));
        println!(
            "listing abandoned (round {round}): open streams now {:?}",
            open()
        );
        assert!(stopped, "the abandoned stream is still open");
    }
}
