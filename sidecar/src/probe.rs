//! `--probe URL`: one HTTP GET of a local endpoint, for container health checks in images that
//! have no shell or HTTP client. Exit status 0 when the answer is 200.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe URL must look like http://HOST:PORT/PATH")]
    BadUrl,
    #[error("probe failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("probe answered: {0}")]
    Status(String),
}

/// GET `url` (plain `http://host:port/path`) and succeed on status 200.
pub fn probe(url: &str) -> Result<(), ProbeError> {
    let rest = url.strip_prefix("http://").ok_or(ProbeError::BadUrl)?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|_| ProbeError::BadUrl)?
        .next()
        .ok_or(ProbeError::BadUrl)?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer)?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let mut fields = status_line.split(' ');
    match (fields.next(), fields.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(()),
        _ => Err(ProbeError::Status(status_line)),
    }
}
