//! Damaged items in memcached: the ordered store answers with an error, never wrong data.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::io::{BufRead, BufReader, Write};

use bytes::Bytes;
use futures::TryStreamExt;
use zenko_memcached_sidecar::items::{Expiry, ItemKey};
use zenko_memcached_sidecar::ordered::{Batch, KeyRange, OrderedError, OrderedStore};
use zenko_memcached_testkit::Memcached;

use ordered_common::{db, items, open, small_pages};

/// Every key memcached holds, through `lru_crawler metadump all`.
fn keys(server: &Memcached) -> Vec<String> {
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.write_all(b"lru_crawler metadump all\r\n").unwrap();
    let mut keys = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap();
        if line == "END" {
            break;
        }
        if let Some(key) = line
            .strip_prefix("key=")
            .and_then(|rest| rest.split(' ').next())
        {
            keys.push(key.replace("%3A", ":"));
        }
    }
    keys
}

#[tokio::test]
async fn damaged_pages_and_roots_are_errors() {
    let server = Memcached::start(&[]);
    let store = open(&server, small_pages()).await;
    let db = db("damaged");
    let mut batch = Batch::default();
    for i in 0..300 {
        batch = batch.put(format!("k{i:04}"), format!("value {i}"));
    }
    store.write(&db, batch).await.unwrap();
    let raw = items(&server).await;
    let all_keys = keys(&server);
    // Flip one byte in every page of the database.
    let mut damaged = 0;
    for key in all_keys.iter().filter(|k| k.contains(":p:")) {
        let key = ItemKey::new(key.clone()).unwrap();
        let mut item = raw.get(&key).await.unwrap().unwrap().to_vec();
        let middle = item.len() / 2;
        item[middle] ^= 0x20;
        raw.set(&key, Bytes::from(item), Expiry::Never)
            .await
            .unwrap();
        damaged += 1;
    }
    assert!(damaged > 10);
    let fresh = open(&server, small_pages()).await;
    let got = fresh.get(&db, "k0100").await;
    assert!(matches!(got, Err(OrderedError::Corrupt(..))), "{got:?}");
    // The first page may fail when the scan opens, or later while it streams.
    let scanned: Result<Vec<_>, _> = match fresh.scan(&db, KeyRange::all(), false).await {
        Ok(stream) => stream.try_collect().await,
        Err(error) => Err(error),
    };
    assert!(
        matches!(scanned, Err(OrderedError::Corrupt(..))),
        "{scanned:?}"
    );
    let write = fresh.write(&db, Batch::default().put("k0100", "x")).await;
    assert!(matches!(write, Err(OrderedError::Corrupt(..))), "{write:?}");

    // Root records cut short (this database's and the catalog's).
    for root in all_keys.iter().filter(|k| k.ends_with(":r")) {
        let root = ItemKey::new(root.clone()).unwrap();
        let item = raw.get(&root).await.unwrap().unwrap();
        raw.set(&root, item.slice(..item.len() - 3), Expiry::Never)
            .await
            .unwrap();
    }
    let got = open(&server, small_pages()).await.get(&db, "k0001").await;
    assert!(matches!(got, Err(OrderedError::Corrupt(..))), "{got:?}");
}
