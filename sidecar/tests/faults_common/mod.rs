//! Helpers shared by the fault tests: the real sidecar on a real memcached, the metadata load
//! of `tests/js/faults.js`, blob uploads and downloads, the admin endpoints, and a running mixed
//! load judged against a model ([`blob_load`], [`metadata_load`]).

#![allow(clippy::unwrap_used, dead_code)]

pub mod blob_load;
pub mod metadata_load;
pub mod mixed_load;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use zenko_memcached_testkit::{Memcached, Sidecar};

pub const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

fn js_dir() -> PathBuf {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    js
}

/// `node faults.js PORT SCENARIO ARGS...` as a child whose stdin and stdout are piped (a
/// scenario that runs until told may end when its stdin closes).
pub fn spawn_node(sidecar: &Sidecar, scenario: &str, args: &[&str]) -> Child {
    Command::new("node")
        .current_dir(js_dir())
        .arg("faults.js")
        .arg(sidecar.metadata_port.to_string())
        .arg(scenario)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Run a scenario of `faults.js` to its end; its stdout, asserted to say PASS.
pub fn node(sidecar: &Sidecar, scenario: &str, args: &[&str]) -> String {
    let output = spawn_node(sidecar, scenario, args)
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains(&format!("PASS {scenario}")),
        "faults.js {scenario} failed:\n{stdout}"
    );
    stdout
}

/// The sidecar on `memcached`, with its metadata listener up.
pub fn sidecar(memcached: &Memcached, extra: &[&str]) -> Sidecar {
    let address = memcached.address();
    let mut args = vec!["--memcached", address.as_str()];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(BINARY, &args);
    assert!(
        zenko_memcached_testkit::wait_for_listener(
            SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port)),
            Duration::from_secs(10)
        ),
        "no metadata listener"
    );
    sidecar
}

/// Whether `server` holds its placement record (again, after a refill), as `placement show
/// --memcached LIST` says.
pub fn recorded(list: &str, server: &Memcached) -> bool {
    let shown = Command::new(BINARY)
        .args(["placement", "show", "--memcached", list])
        .output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout)
        .contains(&format!("{}: placement generation", server.address()))
}

/// `zenko-memcached-sidecar check --memcached LIST`: asserts that it finds every metadata
/// database sound (exit 0); its report.
pub fn check_store(list: &str) -> String {
    let output = Command::new(BINARY)
        .args(["check", "--quiet", "--memcached", list])
        .env("ZMM_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "check --memcached {list} failed ({}):\n{report}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

/// One plain HTTP/1.0 GET on the admin port: status and body.
pub fn admin_get(sidecar: &Sidecar, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(sidecar.admin_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// A gauge or counter value of `/metrics` (the first sample of that name).
pub fn metric(sidecar: &Sidecar, name: &str) -> Option<f64> {
    let (_, body) = admin_get(sidecar, "/metrics");
    body.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Poll `check` every 100 ms until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deterministic bytes of a blob, different for each seed.
pub fn blob(seed: u64, size: usize) -> Vec<u8> {
    zenko_memcached_testkit::pseudo_random_bytes(seed, size)
}

/// PUT a blob: its key, or the error status and body.
pub async fn put_blob(
    client: &Client,
    url: &str,
    body: Vec<u8>,
) -> Result<String, (StatusCode, String)> {
    let response = client
        .put(format!("{url}/DataFile/"))
        .header("content-length", body.len())
        .body(body)
        .send()
        .await
        .map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))?;
    if response.status() != StatusCode::CREATED {
        let status = response.status();
        return Err((status, response.text().await.unwrap_or_default()));
    }
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    Ok(location.strip_prefix("/DataFile/").unwrap().to_owned())
}

/// GET a blob: its bytes, or the error status and body.
pub async fn get_blob(
    client: &Client,
    url: &str,
    key: &str,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let response = client
        .get(format!("{url}/DataFile/{key}"))
        .send()
        .await
        .map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))?;
    if status == StatusCode::OK {
        Ok(body.to_vec())
    } else {
        Err((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

pub async fn delete_blob(client: &Client, url: &str, key: &str) -> StatusCode {
    client
        .delete(format!("{url}/DataFile/{key}"))
        .send()
        .await
        .unwrap()
        .status()
}
