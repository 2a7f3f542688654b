//! Helpers shared by the data API tests: the real sidecar binary on a real memcached, blob
//! contents, PUTs and error answers.

#![allow(clippy::unwrap_used, dead_code)]

use reqwest::{Client, StatusCode};
use zenko_memcached_testkit::{Memcached, Sidecar};

pub const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");
pub const CHUNK: usize = 64 * 1024;
/// The sidecar's own items, present in memcached besides the blobs: the epoch (`zmm:epoch`),
/// the placement record (`zmm:placement`) and the sidecars' reports (`zmm:sidecars`).
pub const EPOCH_ITEMS: u64 = 3;

/// The sidecar with chunks of [`CHUNK`] bytes.
pub fn sidecar(memcached: &Memcached) -> Sidecar {
    sidecar_with_chunks(memcached, CHUNK)
}

pub fn sidecar_with_chunks(memcached: &Memcached, chunk: usize) -> Sidecar {
    Sidecar::start(
        BINARY,
        &[
            "--memcached",
            &memcached.address(),
            "--chunk-size",
            &chunk.to_string(),
        ],
    )
}

/// Deterministic bytes that differ per seed and per position.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    zenko_memcached_testkit::pseudo_random_bytes(seed, len)
}

pub async fn put(client: &Client, url: &str, body: Vec<u8>) -> String {
    let response = client
        .put(format!("{url}/DataFile/"))
        .header("content-length", body.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let key = location.strip_prefix("/DataFile/").unwrap().to_owned();
    assert_eq!(key.len(), 40, "{location}");
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    key
}

pub async fn error_of(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    assert!(response.headers().get("content-type").is_none());
    let body = response.text().await.unwrap();
    assert!(body.ends_with('\n'), "{body:?}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        status,
        json["errorType"].as_str().unwrap().to_owned(),
        json["errorMessage"].as_str().unwrap().to_owned(),
    )
}

/// GET a blob, or a range of it: the status and the body.
pub async fn get(
    client: &Client,
    url: &str,
    key: &str,
    range: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut request = client.get(format!("{url}/DataFile/{key}"));
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

pub async fn delete(client: &Client, url: &str, key: &str) -> StatusCode {
    client
        .delete(format!("{url}/DataFile/{key}"))
        .send()
        .await
        .unwrap()
        .status()
}
