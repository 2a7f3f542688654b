//! `add` and `cas` in memcached's classic text protocol, on pooled tokio connections, routed to
//! the server the meta-protocol client uses for the same key.
//!
//! Why not the meta protocol for these two: memcached (1.6.18 at least) answers a meta `ms` in
//! add mode or with a CAS compare that cannot allocate the new value (`-M`, memory full) with
//! `SERVER_ERROR out of memory storing object` *and unlinks the existing item under that key*.
//! A refused root-record CAS of the ordered store would so delete a whole database, and a
//! refused `add` of an existing key (the epoch item, the deployment UUID) the item it meant to
//! keep. The text protocol's `add` and `cas` refuse the same way but leave the item alone
//! (memcached only unlinks on a refused plain `set` there).
//!
//! Why not the `memcache` crate's classic `Client`: its `add` maps `NOT_STORED` to success, so
//! "added" cannot be told from "already there"; its `cas` folds `EXISTS` and `NOT_FOUND` into one
//! `false`; its pool (r2d2) dials every connection when built, sets I/O timeouts on one pooled
//! connection only, and returns a connection to the pool after a timeout mid-exchange, whose
//! late answer the next command would then read. Two commands with four possible answers are
//! simpler to speak directly.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memcache::exp::{Rendezvous, Router};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Expiry, ItemError, ItemKey, ItemResult};

/// An answer line longer than this is not memcached's.
const MAX_LINE: u64 = 1024;
/// memcached reads a larger relative expiry as an absolute unix time.
const MAX_RELATIVE_SECS: u64 = 30 * 24 * 60 * 60;
/// Idle connections older than this are not reused: a quiet connection may have been cut.
const MAX_IDLE_AGE: Duration = Duration::from_secs(90);
/// Values up to this size go out in the same write as the command line.
const COALESCE_MAX: usize = 16 * 1024;

/// The two classic store commands sent.
#[derive(Clone, Copy, Debug)]
pub(super) enum Command {
    Add,
    Cas(u64),
}

/// memcached's answer to a store command that it did not refuse for lack of room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Stored,
    /// `add` of a key that exists.
    NotStored,
    /// `cas` against a changed item.
    Exists,
    /// `cas` of a missing item.
    NotFound,
}

/// Timeouts, shared with the meta-protocol client so that both paths give up alike.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub io: Duration,
}

struct Idle {
    connection: BufReader<TcpStream>,
    since: Instant,
}

struct Server {
    /// As configured: what errors name.
    name: String,
    addresses: Vec<SocketAddr>,
    idle: Mutex<Vec<Idle>>,
}

/// The configured servers, resolved once (the store resolves again when they stop answering).
pub(super) struct ClassicServers {
    servers: Vec<Server>,
    /// The routing identities: the configured `host:port` strings, exactly what the meta
    /// client's `connect_multiple_async` hands its `Rendezvous` router, so that both
    /// protocols send a key to the same server.
    identities: Vec<String>,
    router: Rendezvous,
    timeouts: Timeouts,
    max_idle: usize,
}

/// Whole seconds memcached counts, rounded up so that an expiry never comes early.
pub(super) fn expiry_secs(duration: Duration) -> u32 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// The `exptime` field: 0 is "never"; beyond 30 days memcached wants a unix time.
fn exptime(expiry: Expiry) -> u32 {
    match expiry {
        Expiry::Never => 0,
        Expiry::After(duration) => {
            let secs = expiry_secs(duration);
            if u64::from(secs) <= MAX_RELATIVE_SECS {
                return secs;
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            u32::try_from(now + u64::from(secs)).unwrap_or(u32::MAX)
        }
    }
}

/// What a `SERVER_ERROR` line means to the layers above.
pub(super) fn server_error(message: &str, size: usize) -> ItemError {
    let message = message.to_ascii_lowercase();
    if message.contains("out of memory") {
        ItemError::Full
    } else if message.contains("too large") {
        ItemError::TooLarge { size }
    } else {
        ItemError::Protocol(format!("server error: {message}"))
    }
}

impl ClassicServers {
    pub(super) async fn resolve(
        servers: &[String],
        timeouts: Timeouts,
        max_idle: usize,
    ) -> ItemResult<ClassicServers> {
        let mut resolved = Vec::with_capacity(servers.len());
        for name in servers {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host(name.as_str())
                .await
                .map_err(|error| ItemError::Unavailable(format!("{name}: {error}")))?
                .collect();
            if addresses.is_empty() {
                return Err(ItemError::Unavailable(format!(
                    "{name}: resolves to no address"
                )));
            }
            resolved.push(Server {
                name: name.clone(),
                addresses,
                idle: Mutex::new(Vec::new()),
            });
        }
        if resolved.is_empty() {
            return Err(ItemError::Unavailable(
                "no memcached server configured".into(),
            ));
        }
        Ok(ClassicServers {
            servers: resolved,
            identities: servers.to_vec(),
            router: Rendezvous::new(),
            timeouts,
            max_idle,
        })
    }

    /// The index of the server that holds `key`, as the meta client computes it.
    pub(super) fn route(&self, key: &ItemKey) -> usize {
        self.router
            .route(key.as_ref(), &self.identities)
            .min(self.servers.len() - 1)
    }

    /// Send one `add` or `cas`. A refusal for lack of memory or size is an error; the item
    /// under `key`, if any, is then untouched.
    pub(super) async fn store(
        &self,
        command: Command,
        key: &ItemKey,
        value: &[u8],
        expiry: Expiry,
    ) -> ItemResult<Reply> {
        let server = &self.servers[self.route(key)];
        let line = match command {
            Command::Add => format!("add {key} 0 {} {}\r\n", exptime(expiry), value.len()),
            Command::Cas(token) => format!(
                "cas {key} 0 {} {} {token}\r\n",
                exptime(expiry),
                value.len()
            ),
        };
        let mut connection = match self.checkout(server) {
            Some(connection) => connection,
            None => self.dial(server).await?,
        };
        let answer = tokio::time::timeout(
            self.timeouts.io,
            exchange(&mut connection, line.as_bytes(), value),
        )
        .await;
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                return Err(ItemError::Unavailable(format!("{}: {error}", server.name)));
            }
            Err(_) => {
                return Err(ItemError::Unavailable(format!(
                    "{}: {} timed out",
                    server.name,
                    command.name()
                )));
            }
        };
        let reply = match answer.trim_end() {
            "STORED" => Reply::Stored,
            "NOT_STORED" => Reply::NotStored,
            "EXISTS" => Reply::Exists,
            "NOT_FOUND" => Reply::NotFound,
            // Any other answer drops the connection: memcached may have closed it or be
            // reading what it considers the rest of a value.
            other => {
                return Err(match other.strip_prefix("SERVER_ERROR") {
                    Some(message) => server_error(message, value.len()),
                    None => ItemError::Protocol(format!(
                        "{} answered {other:?} to {}",
                        server.name,
                        command.name()
                    )),
                });
            }
        };
        self.check_in(server, connection);
        Ok(reply)
    }

    /// An idle connection that still looks open, or none.
    fn checkout(&self, server: &Server) -> Option<BufReader<TcpStream>> {
        let mut idle = server
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { connection, since }) = idle.pop() {
            // A server that restarted closed its end long ago: reading would give end of file
            // (or bytes nobody asked for) instead of "nothing yet". Such a connection would
            // fail the next command for no reason, so it is dropped here instead.
            let mut probe = [0u8; 1];
            let open = since.elapsed() < MAX_IDLE_AGE
                && connection.buffer().is_empty()
                && matches!(
                    connection.get_ref().try_read(&mut probe),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
                );
            if open {
                return Some(connection);
            }
        }
        None
    }

    fn check_in(&self, server: &Server, connection: BufReader<TcpStream>) {
        let mut idle = server
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    async fn dial(&self, server: &Server) -> ItemResult<BufReader<TcpStream>> {
        let connect = async {
            let mut last = None;
            for address in &server.addresses {
                match TcpStream::connect(address).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => last = Some(error),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
        };
        match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(Ok(stream)) => {
                // Small commands should leave at once, not wait for the previous one's ack.
                let _ = stream.set_nodelay(true);
                Ok(BufReader::new(stream))
            }
            Ok(Err(error)) => Err(ItemError::Unavailable(format!("{}: {error}", server.name))),
            Err(_) => Err(ItemError::Unavailable(format!(
                "{}: connect timed out",
                server.name
            ))),
        }
    }
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Add => "add",
            Command::Cas(_) => "cas",
        }
    }
}

/// Write one store command and read its one-line answer.
async fn exchange(
    connection: &mut BufReader<TcpStream>,
    line: &[u8],
    value: &[u8],
) -> std::io::Result<String> {
    let stream = connection.get_mut();
    if value.len() <= COALESCE_MAX {
        let mut request = Vec::with_capacity(line.len() + value.len() + 2);
        request.extend_from_slice(line);
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request).await?;
    } else {
        stream.write_all(line).await?;
        stream.write_all(value).await?;
        stream.write_all(b"\r\n").await?;
    }
    let mut answer = String::new();
    (&mut *connection)
        .take(MAX_LINE)
        .read_line(&mut answer)
        .await?;
    if !answer.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before an answer",
        ));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_and_turns_absolute_beyond_thirty_days() {
        assert_eq!(exptime(Expiry::Never), 0);
        assert_eq!(exptime(Expiry::After(Duration::from_millis(1))), 1);
        assert_eq!(exptime(Expiry::After(Duration::from_millis(1500))), 2);
        assert_eq!(exptime(Expiry::After(Duration::from_secs(60))), 60);
        let far = exptime(Expiry::After(Duration::from_secs(40 * 24 * 3600)));
        assert!(u64::from(far) > MAX_RELATIVE_SECS * 10, "{far}");
    }

    #[test]
    fn server_errors_map_to_full_and_too_large() {
        assert!(matches!(
            server_error(" out of memory storing object", 3),
            ItemError::Full
        ));
        assert!(matches!(
            server_error(" object too large for cache", 3),
            ItemError::TooLarge { size: 3 }
        ));
        assert!(matches!(
            server_error(" something else", 3),
            ItemError::Protocol(_)
        ));
    }
}
