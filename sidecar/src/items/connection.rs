//! Single-key `get` and `set` on memcached without copying the value: pooled connections that
//! speak the meta protocol's `mg` and `ms` directly.
//!
//! Blob chunks are half a mebibyte each and every byte of object data passes through here. The
//! `memcache` crate's meta client copies a stored value twice (into its command, then into the
//! encoded request) and zero-fills a read buffer before reading into it; its `Operation` trait is
//! sealed, so those copies cannot be avoided through it. Profiles of the data path put a third
//! of the sidecar's upload CPU in those copies and the page faults of their buffers. Here a value
//! goes to the socket with one vectored write from the caller's buffer, and a value read lands
//! in the buffer that is then handed out. Keys route to servers exactly as the crate's client
//! routes them (its public [`Rendezvous`] over the configured names), so both reach the same
//! item.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use memcache::exp::{Rendezvous, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ItemError, ItemKey, ItemResult};

/// The longest response line memcached sends to `mg`/`ms` (an error message included).
const MAX_LINE: usize = 1024;

/// Connections to every configured server, and which server holds a key.
pub struct ConnectionPool {
    /// The names as configured: routing keys on them, and each new connection resolves its
    /// name again, so a server that comes back under a new address is found.
    servers: Vec<String>,
    idle: Vec<Mutex<Vec<Connection>>>,
    max_idle: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed: a response line, then the value it announces.
    read: BytesMut,
}

/// A request, encoded but for the value, which is written from the caller's buffer.
enum Request {
    Get(Bytes),
    Set { header: Bytes, value: Bytes },
}

/// What a request got.
enum Reply {
    Value(Option<Bytes>),
    Stored,
}

/// What a response line said.
enum Line {
    /// `HD`: stored.
    Stored,
    /// `VA <len>`: a value of this length follows.
    Value(usize),
    /// `EN`: no such item.
    Miss,
    /// `NS`: not stored (only with modes this pool does not use).
    NotStored,
}

impl ConnectionPool {
    pub fn new(
        servers: &[String],
        max_idle: usize,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> ConnectionPool {
        ConnectionPool {
            servers: servers.to_vec(),
            idle: servers.iter().map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
            connect_timeout,
            io_timeout,
        }
    }

    /// The index of the server that holds `key`.
    fn server(&self, key: &ItemKey) -> usize {
        Rendezvous::new().route(key.as_str().as_bytes(), &self.servers)
    }

    /// The value of `key`, or `None` when memcached has no such item.
    pub async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        let request = Request::Get(Bytes::from(format!("mg {} v\r\n", key.as_str())));
        match self.exchange(key, &request).await? {
            Reply::Value(value) => Ok(value),
            Reply::Stored => Err(unexpected("a get answered as a store")),
        }
    }

    /// Store `value` under `key` with memcached's expiry `ttl` (0: never).
    pub async fn set(&self, key: &ItemKey, value: Bytes, ttl: u32) -> ItemResult<()> {
        let size = value.len();
        let header = Bytes::from(format!("ms {} {size} T{ttl}\r\n", key.as_str()));
        match self.exchange(key, &Request::Set { header, value }).await {
            Ok(Reply::Stored) => Ok(()),
            Ok(Reply::Value(_)) => Err(unexpected("a set answered as a get")),
            Err(ItemError::TooLarge { .. }) => Err(ItemError::TooLarge { size }),
            Err(error) => Err(error),
        }
    }

    /// Run one request on a connection to `key`'s server, within the I/O timeout.
    ///
    /// A pooled connection may have died while idle (memcached restarted, say); the request
    /// is then tried once more on a new connection, which is safe because a get or a set of
    /// the same value can run twice. A connection goes back to the pool only after a complete,
    /// well-formed exchange: after anything else its stream may hold half a response.
    async fn exchange(&self, key: &ItemKey, request: &Request) -> ItemResult<Reply> {
        let server = self.server(key);
        if let Some(connection) = self.checkout(server) {
            match self.attempt(server, connection, request).await {
                Err(ItemError::Unavailable(_)) => {}
                done => return done,
            }
        }
        let connection = self.connect(server).await?;
        self.attempt(server, connection, request).await
    }

    async fn attempt(
        &self,
        server: usize,
        mut connection: Connection,
        request: &Request,
    ) -> ItemResult<Reply> {
        let outcome = tokio::time::timeout(self.io_timeout, connection.run(request)).await;
        match outcome {
            Ok(Ok(reply)) => {
                self.put_back(server, connection);
                Ok(reply)
            }
            // Even a refusal drops the connection: memcached may close it after refusing a
            // large value, and a dead connection in the pool would fail the next request.
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ItemError::Unavailable(format!(
                "{}: no answer within {:?}",
                self.servers[server], self.io_timeout
            ))),
        }
    }

    fn checkout(&self, server: usize) -> Option<Connection> {
        let mut idle = match self.idle[server].lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        idle.pop()
    }

    fn put_back(&self, server: usize, connection: Connection) {
        let mut idle = match self.idle[server].lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
    }

    async fn connect(&self, server: usize) -> ItemResult<Connection> {
        let name = &self.servers[server];
        let unavailable = |reason: String| ItemError::Unavailable(format!("{name}: {reason}"));
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(name))
            .await
            .map_err(|_| unavailable("connect timed out".into()))?
            .map_err(|error| unavailable(error.to_string()))?;
        // Requests are written whole; waiting to coalesce them only adds latency.
        stream
            .set_nodelay(true)
            .map_err(|error| unavailable(error.to_string()))?;
        Ok(Connection {
            stream,
            read: BytesMut::new(),
        })
    }
}

impl Connection {
    async fn run(&mut self, request: &Request) -> ItemResult<Reply> {
        match request {
            Request::Get(line) => {
                self.write(line.clone()).await?;
                match self.line().await? {
                    Line::Value(len) => {
                        self.value(len).await.map(|value| Reply::Value(Some(value)))
                    }
                    Line::Miss => Ok(Reply::Value(None)),
                    Line::Stored | Line::NotStored => Err(unexpected("a get answered as a store")),
                }
            }
            Request::Set { header, value } => {
                self.write(header.clone().chain(value.clone()).chain(&b"\r\n"[..]))
                    .await?;
                match self.line().await? {
                    Line::Stored => Ok(Reply::Stored),
                    Line::NotStored => Err(unexpected("a plain set was not stored")),
                    Line::Value(_) | Line::Miss => Err(unexpected("a set answered as a get")),
                }
            }
        }
    }

    async fn write(&mut self, mut request: impl Buf) -> ItemResult<()> {
        self.stream
            .write_all_buf(&mut request)
            .await
            .map_err(io_error)
    }

    /// Read from the socket until `len` bytes are buffered.
    async fn fill(&mut self, len: usize) -> ItemResult<()> {
        self.read.reserve(len.saturating_sub(self.read.len()));
        while self.read.len() < len {
            self.read_more().await?;
        }
        Ok(())
    }

    /// One read from the socket into the spare capacity (some is made if there is none).
    async fn read_more(&mut self) -> ItemResult<()> {
        self.read.reserve(64);
        match self
            .stream
            .read_buf(&mut self.read)
            .await
            .map_err(io_error)?
        {
            0 => Err(ItemError::Unavailable(
                "memcached closed the connection".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The next response line, classified; memcached's errors become item errors.
    async fn line(&mut self) -> ItemResult<Line> {
        let end = loop {
            if let Some(end) = self.read.windows(2).position(|pair| pair == b"\r\n") {
                break end;
            }
            if self.read.len() > MAX_LINE {
                return Err(unexpected("a response line without an end"));
            }
            self.read_more().await?;
        };
        let line = self.read.split_to(end + 2);
        let text = String::from_utf8_lossy(&line[..end]);
        let mut words = text.split(' ');
        match (words.next(), words.next()) {
            (Some("HD"), _) => Ok(Line::Stored),
            (Some("NS"), _) => Ok(Line::NotStored),
            (Some("EN"), _) => Ok(Line::Miss),
            (Some("VA"), Some(len)) => len
                .parse()
                .map(Line::Value)
                .map_err(|_| unexpected("a value length that is not a number")),
            _ => Err(server_error(&text)),
        }
    }

    /// The `len` bytes of a value and their terminator.
    async fn value(&mut self, len: usize) -> ItemResult<Bytes> {
        self.fill(len + 2).await?;
        let value = self.read.split_to(len).freeze();
        if &self.read[..2] != b"\r\n" {
            return Err(unexpected("a value without its terminator"));
        }
        self.read.advance(2);
        if self.read.is_empty() {
            // Let go of the value's allocation, which an idle connection would otherwise keep
            // once the value is dropped.
            self.read = BytesMut::new();
        }
        Ok(value)
    }
}

fn io_error(error: std::io::Error) -> ItemError {
    ItemError::Unavailable(error.to_string())
}

fn unexpected(what: &str) -> ItemError {
    ItemError::Protocol(what.to_owned())
}

/// An error line (`SERVER_ERROR ...`, `CLIENT_ERROR ...`, `ERROR`) as an item error.
fn server_error(line: &str) -> ItemError {
    let lower = line.to_ascii_lowercase();
    if lower.contains("out of memory") {
        ItemError::Full
    } else if lower.contains("too large") {
        // The caller knows the size.
        ItemError::TooLarge { size: 0 }
    } else {
        ItemError::Protocol(format!("memcached answered {line:?}"))
    }
}
