//! A listener that bounds connections: at most N served at once (`--max-connections`), and at
//! most M of them from one client address (`--max-connections-per-client`).
//!
//! The global permit is taken *before* `accept`, so that over the limit new connections wait
//! in the kernel's backlog (and time out on the client's side if it stays full) instead of being
//! accepted and left without service: the sidecar's capacity is a backpressure, not an error,
//! and a burst is served once it passes. The per-client bound is different: one client holding
//! every slot (a leak of idle connections, say) would starve the others, so its extra
//! connections are accepted and answered at once with `503 ServiceUnavailable` naming the
//! limit, then closed. Both travel with the connection and are given back when it is dropped,
//! whatever ended it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Refusals being written at once; past it, a refused connection is closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused client has to take its answer and finish sending its request.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// Request bytes a refusal reads (and drops) so that closing does not reset the connection
/// before the client has read the answer.
const REFUSAL_DRAIN: usize = 1024 * 1024;
/// At most one warning about refused connections per listener in this time: a client in a
/// reconnect loop must not flood the log.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
}

impl ConnectionLimits {
    /// No bound worth the name: for the admin listener, whose probes must get through a
    /// saturated sidecar.
    pub const UNLIMITED: ConnectionLimits = ConnectionLimits {
        max_connections: Semaphore::MAX_PERMITS,
        max_per_client: usize::MAX,
    };
}

pub struct LimitedListener {
    inner: TcpListener,
    /// Which listener this is, for log lines ("data", "metadata", "admin").
    name: &'static str,
    slots: Arc<Semaphore>,
    clients: Arc<ClientCounts>,
    refusals: Arc<Semaphore>,
    /// When refusals were last logged, and how many came since.
    last_warning: Option<Instant>,
    unreported: u64,
}

impl LimitedListener {
    pub fn new(
        inner: TcpListener,
        name: &'static str,
        limits: ConnectionLimits,
    ) -> LimitedListener {
        LimitedListener {
            inner,
            name,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            clients: Arc::new(ClientCounts {
                max: limits.max_per_client.max(1),
                open: Mutex::new(HashMap::new()),
            }),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            last_warning: None,
            unreported: 0,
        }
    }

    /// Answer a connection over its client's bound, in the background.
    fn refuse(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let max = self.clients.max;
        self.unreported += 1;
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_EVERY)
        {
            tracing::warn!(
                listener = self.name, client = %addr.ip(), limit = max,
                refused = self.unreported,
                "connections refused: a client reached --max-connections-per-client \
                 (refused counts those since the last warning)"
            );
            self.last_warning = Some(Instant::now());
            self.unreported = 0;
        }
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        let answer = refusal(addr.ip(), max);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_TIME, async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await?;
                let mut drained = 0;
                let mut buffer = [0u8; 4096];
                while drained < REFUSAL_DRAIN {
                    match stream.read(&mut buffer).await? {
                        0 => break,
                        n => drained += n,
                    }
                }
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

/// The whole HTTP answer to a refused connection: the data API's error form, which is also a
/// plain HTTP error to a socket.io client's handshake.
fn refusal(client: IpAddr, max: usize) -> String {
    let body = serde_json::json!({
        "errorType": "ServiceUnavailable",
        "errorMessage": format!(
            "too many connections from {client}: at most {max} per client \
             (--max-connections-per-client)"
        ),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}\n",
        body.len() + 1
    )
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed, so acquiring cannot fail; if it ever did, serving
            // without the limit is better than stopping the listener.
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(
                        listener = self.name,
                        "every connection slot is in use (--max-connections): \
                         new connections wait until one closes"
                    );
                    self.slots.clone().acquire_owned().await.ok()
                }
            };
            // TcpListener's own `accept` retries on errors (e.g. out of file descriptors).
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            match ClientCounts::claim(&self.clients, addr.ip()) {
                Some(client) => {
                    let stream = LimitedStream {
                        stream,
                        _permit: permit,
                        _client: client,
                    };
                    return (stream, addr);
                }
                None => {
                    drop(permit);
                    self.refuse(stream, addr);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Open connections per client address.
struct ClientCounts {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientCounts {
    /// One more connection from `client`, or `None` when it has its bound already.
    fn claim(counts: &Arc<ClientCounts>, client: IpAddr) -> Option<ClientSlot> {
        let mut open = counts
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= counts.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: counts.clone(),
            client,
        })
    }
}

/// One counted connection of a client; dropping it gives the place back.
struct ClientSlot {
    counts: Arc<ClientCounts>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// An accepted connection holding its slots.
pub struct LimitedStream {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    _client: ClientSlot,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_bound_and_gets_places_back_as_connections_close() {
        let counts = Arc::new(ClientCounts {
            max: 2,
            open: Mutex::new(HashMap::new()),
        });
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let first = ClientCounts::claim(&counts, one);
        let second = ClientCounts::claim(&counts, one);
        assert!(first.is_some() && second.is_some());
        assert!(ClientCounts::claim(&counts, one).is_none());
        // Another client is not affected.
        let other = ClientCounts::claim(&counts, two);
        assert!(other.is_some());
        drop(first);
        let again = ClientCounts::claim(&counts, one);
        assert!(again.is_some());
        drop((second, again, other));
        // Nothing is kept for clients that have gone.
        assert!(counts.open.lock().unwrap().is_empty());
    }

    #[test]
    fn the_refusal_is_a_complete_http_answer_with_the_data_api_error() {
        let answer = refusal("10.0.0.1".parse().unwrap(), 7);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let error: serde_json::Value = serde_json::from_str(body.trim_end()).unwrap();
        assert_eq!(error["errorType"], "ServiceUnavailable");
        assert!(
            error["errorMessage"]
                .as_str()
                .unwrap()
                .contains("at most 7 per client"),
            "{error}"
        );
    }
}
