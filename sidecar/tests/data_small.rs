//! Small blobs in one item, through the real binary on a real memcached: what memcached's own
//! counters say a PUT and a GET cost, ranges and deletes of small blobs, blobs stored in the
//! earlier format (manifest and chunks), damaged small blobs, and gets racing a delete.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::io::{Read, Write};
use std::net::TcpStream;

use reqwest::{Client, StatusCode};
use zenko_memcached_sidecar::items::{ItemKey, ItemStore, MemcachedStore};
use zenko_memcached_testkit::Memcached;

mod data_common;

use data_common::{CHUNK, EPOCH_ITEMS, content, delete, get, put, sidecar_with_chunks as sidecar};

/// The error name of a JSON error answer.
fn error_name(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    json["errorType"].as_str().unwrap().to_owned()
}

/// Store `value` under `key` with the text protocol, behind the sidecar's back.
fn raw_set(memcached: &Memcached, key: &str, value: &[u8]) {
    let mut raw = TcpStream::connect(memcached.addr()).unwrap();
    write!(raw, "set {key} 0 0 {}\r\n", value.len()).unwrap();
    raw.write_all(value).unwrap();
    raw.write_all(b"\r\n").unwrap();
    let mut answer = [0u8; 8];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"STORED\r\n");
}

/// The issue's targets, from memcached's counters: a 4 KiB PUT costs at most 1.5 write
/// commands and a 4 KiB GET at most 1.5 keys fetched, on average (one each, plus what the
/// sidecar's once-a-second epoch check reads meanwhile); a small blob is one item.
#[tokio::test]
async fn a_small_blob_costs_one_write_and_one_key_read() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, 512 * 1024);
    let client = Client::new();
    let url = sidecar.data_url();
    const COUNT: u64 = 200;
    let (writes_before, items_before) = (
        memcached.write_commands(),
        memcached.stat("curr_items").unwrap(),
    );
    let mut keys = Vec::new();
    for seed in 0..COUNT {
        keys.push(put(&client, &url, content(seed, 4096)).await);
    }
    let per_put = (memcached.write_commands() - writes_before) as f64 / COUNT as f64;
    assert_eq!(memcached.stat("curr_items").unwrap() - items_before, COUNT);
    let reads_before = memcached.stat("cmd_get").unwrap();
    for (seed, key) in keys.iter().enumerate() {
        let (status, body) = get(&client, &url, key, None).await;
        assert_eq!((status, body), (StatusCode::OK, content(seed as u64, 4096)));
    }
    let per_get = (memcached.stat("cmd_get").unwrap() - reads_before) as f64 / COUNT as f64;
    println!(
        "4 KiB blobs: {per_put:.2} memcached write commands per PUT, {per_get:.2} keys fetched per GET"
    );
    assert!(per_put <= 1.5, "{per_put} write commands per PUT");
    assert!(per_get <= 1.5, "{per_get} keys fetched per GET");

    // A blob of three chunks: its chunks, the manifest and three touches (one pipelined
    // batch); read back with the manifest and the first chunk in one multi-get, then the rest.
    // The sidecar's once-a-second work (its epoch check, placement record and report) also
    // reads and writes, and only ever adds to a count: the fewest of three tries is the cost.
    let (mut touches, mut writes, mut keys_read) = (u64::MAX, u64::MAX, u64::MAX);
    for seed in 9..12 {
        let (writes_before, touches_before) = (
            memcached.write_commands(),
            memcached.stat("cmd_touch").unwrap(),
        );
        let big = content(seed, 3 * 512 * 1024);
        let key = put(&client, &url, big.clone()).await;
        touches = touches.min(memcached.stat("cmd_touch").unwrap() - touches_before);
        writes = writes.min(memcached.write_commands() - writes_before);
        let reads_before = memcached.stat("cmd_get").unwrap();
        assert_eq!(get(&client, &url, &key, None).await, (StatusCode::OK, big));
        keys_read = keys_read.min(memcached.stat("cmd_get").unwrap() - reads_before);
    }
    assert_eq!(touches, 3);
    assert_eq!(writes, 3 + 1 + 3);
    assert!(
        (4..=5).contains(&keys_read),
        "{keys_read} keys for a 3-chunk GET"
    );
}

/// Ranges of a small blob follow the reference table as those of a large one do; a delete
/// removes its one item, and a second delete or a get answers ObjNotFound.
#[tokio::test]
async fn small_blobs_serve_ranges_and_delete() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, CHUNK);
    let client = Client::new();
    let url = sidecar.data_url();
    let size = 5000;
    let body = content(1, size);
    let key = put(&client, &url, body.clone()).await;
    assert_eq!(memcached.stat("curr_items"), Some(1 + EPOCH_ITEMS));
    for (range, start, end) in [
        ("bytes=10-20", 10, 20),
        ("bytes=4990-", 4990, size - 1),
        ("bytes=-150", size - 150, size - 1),
        ("bytes=0-999999", 0, size - 1),
        ("bytes=4999-4999", 4999, 4999),
    ] {
        let (status, bytes) = get(&client, &url, &key, Some(range)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(bytes, &body[start..=end], "{range}");
    }
    let (status, bytes) = get(&client, &url, &key, Some("bytes=5000-")).await;
    assert_eq!(
        (status, error_name(&bytes).as_str()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange")
    );
    let (status, bytes) = get(&client, &url, &key, Some("bytes=5-2")).await;
    assert_eq!((status, bytes), (StatusCode::OK, body));

    assert_eq!(delete(&client, &url, &key).await, StatusCode::NO_CONTENT);
    assert_eq!(memcached.stat("curr_items"), Some(EPOCH_ITEMS));
    let (status, bytes) = get(&client, &url, &key, None).await;
    assert_eq!(
        (status, error_name(&bytes).as_str()),
        (StatusCode::NOT_FOUND, "ObjNotFound")
    );
    assert_eq!(delete(&client, &url, &key).await, StatusCode::NOT_FOUND);

    // An empty blob is one item too, and reads as the reference reads one.
    let empty = put(&client, &url, Vec::new()).await;
    assert_eq!(
        get(&client, &url, &empty, None).await,
        (StatusCode::OK, Vec::new())
    );
    let (status, _) = get(&client, &url, &empty, Some("bytes=0-")).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        get(&client, &url, &empty, Some("bytes=-5")).await,
        (StatusCode::OK, Vec::new())
    );
}

/// A blob as the earlier format stored it (a JSON manifest under `b:<key>`, sealed chunks
/// under `b:<key>:<n>`), under keys of either hint, reads and deletes as before.
#[tokio::test]
async fn blobs_stored_in_the_earlier_format_stay_readable() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, CHUNK);
    let client = Client::new();
    let url = sidecar.data_url();
    // Last hex digit odd: the key hints "inline"; even: "in chunks".
    let keys = [
        "00112233445566778899aabbccddeeff00112231",
        "00112233445566778899aabbccddeeff00112230",
    ];
    for (seed, key) in keys.iter().enumerate() {
        for size in [100, 3 * CHUNK + 7] {
            let body = content(seed as u64 + size as u64, size);
            let chunks = size.div_ceil(CHUNK);
            for (index, piece) in body.chunks(CHUNK).enumerate() {
                let item = format!("b:{key}:{index}");
                let mut sum = crc32c::crc32c(item.as_bytes());
                sum = crc32c::crc32c_append(sum, piece);
                let mut sealed = sum.to_le_bytes().to_vec();
                sealed.extend_from_slice(piece);
                raw_set(&memcached, &item, &sealed);
            }
            let manifest =
                format!(r#"{{"format":1,"size":{size},"chunk_size":{CHUNK},"chunks":{chunks}}}"#);
            raw_set(&memcached, &format!("b:{key}"), manifest.as_bytes());
            assert_eq!(
                get(&client, &url, key, None).await,
                (StatusCode::OK, body.clone())
            );
            let (status, bytes) = get(&client, &url, key, Some("bytes=50-")).await;
            assert_eq!(
                (status, bytes),
                (StatusCode::PARTIAL_CONTENT, body[50..].to_vec())
            );
            let (status, bytes) = get(&client, &url, key, Some("bytes=-60")).await;
            assert_eq!(
                (status, bytes),
                (StatusCode::PARTIAL_CONTENT, body[size - 60..].to_vec())
            );
            assert_eq!(delete(&client, &url, key).await, StatusCode::NO_CONTENT);
            assert_eq!(
                memcached.stat("curr_items"),
                Some(EPOCH_ITEMS),
                "{key} {size}"
            );
        }
    }
}

/// A small blob damaged in memcached (a flipped byte, cut short, an unknown format) gets an
/// error answer, never wrong bytes.
#[tokio::test]
async fn a_damaged_small_blob_is_an_error_never_wrong_bytes() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, CHUNK);
    let client = Client::new();
    let url = sidecar.data_url();
    let body = content(4, 3000);
    let key = put(&client, &url, body.clone()).await;
    let items = MemcachedStore::connect(&[memcached.address()])
        .await
        .unwrap();
    let head = ItemKey::new(format!("b:{key}")).unwrap();
    let stored = items.get(&head).await.unwrap().unwrap().to_vec();
    // The blob's 5-byte head and the replicated store's 9-byte header.
    assert_eq!(stored.len(), 3000 + 5 + 9);
    let mut flipped = stored.clone();
    flipped[100] ^= 1;
    let mut unknown = stored.clone();
    unknown[9] = 9; // the blob's format byte, after the header
    for damaged in [flipped, stored[..2000].to_vec(), unknown, Vec::new()] {
        raw_set(&memcached, &format!("b:{key}"), &damaged);
        for range in [None, Some("bytes=0-10")] {
            let (status, bytes) = get(&client, &url, &key, range).await;
            assert_eq!(
                (status, error_name(&bytes).as_str()),
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            );
        }
    }
    // Restored, it reads again; a damaged one can still be deleted.
    raw_set(&memcached, &format!("b:{key}"), &stored);
    assert_eq!(get(&client, &url, &key, None).await, (StatusCode::OK, body));
    raw_set(&memcached, &format!("b:{key}"), b"\x02damaged");
    assert_eq!(delete(&client, &url, &key).await, StatusCode::NO_CONTENT);
    assert_eq!(memcached.stat("curr_items"), Some(EPOCH_ITEMS));
}

/// Gets racing the delete of a small blob (an S3 overwrite deletes the old blob while readers
/// may still fetch it) see the whole blob or "not found", never part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_racing_a_delete_see_all_or_nothing() {
    let memcached = Memcached::start(&[]);
    let sidecar = sidecar(&memcached, CHUNK);
    let client = Client::new();
    let url = sidecar.data_url();
    let (mut whole, mut missing) = (0, 0);
    for round in 0..40u64 {
        let body = content(round, 1000 + round as usize * 1500);
        let key = put(&client, &url, body.clone()).await;
        let readers = (0..6).map(|_| {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            tokio::spawn(async move { get(&client, &url, &key, None).await })
        });
        let deleting = {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            tokio::spawn(async move { delete(&client, &url, &key).await })
        };
        for reader in futures::future::join_all(readers).await {
            match reader.unwrap() {
                (StatusCode::OK, bytes) => {
                    assert_eq!(bytes, body, "round {round}");
                    whole += 1;
                }
                (StatusCode::NOT_FOUND, bytes) => {
                    assert_eq!(error_name(&bytes), "ObjNotFound");
                    missing += 1;
                }
                (status, _) => panic!("round {round}: {status}"),
            }
        }
        assert_eq!(deleting.await.unwrap(), StatusCode::NO_CONTENT);
    }
    println!("gets racing deletes: {whole} whole blobs, {missing} not found");
    assert_eq!(memcached.stat("curr_items"), Some(EPOCH_ITEMS));
}

/// With the largest chunk size memcached's item limit allows, a blob of exactly one chunk is
/// stored whole in one item, and one byte more goes in chunks.
#[tokio::test]
async fn a_small_blob_of_the_largest_chunk_size_fits_one_item() {
    let memcached =
        Memcached::start_with(["-m", "64", "-M", "-I", "1m"].map(String::from).to_vec());
    // memcached's item limit less the item overhead the sidecar reserves and the 9-byte
    // header of the replicated store.
    let chunk = 1024 * 1024 - 132 - 9;
    let sidecar = sidecar(&memcached, chunk);
    let client = Client::new();
    let url = sidecar.data_url();
    for (seed, size, items) in [(1, chunk, 1), (2, chunk + 1, 3)] {
        let before = memcached.stat("curr_items").unwrap();
        let body = content(seed, size);
        let key = put(&client, &url, body.clone()).await;
        assert_eq!(
            memcached.stat("curr_items").unwrap() - before,
            items,
            "{size}"
        );
        assert_eq!(get(&client, &url, &key, None).await, (StatusCode::OK, body));
    }
}
