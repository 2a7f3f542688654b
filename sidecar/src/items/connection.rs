//! Pooled memcached connections for the commands the `memcache` crate cannot send the way the
//! sidecar needs: `get` (one key, or several pipelined per server) and `set` without copying
//! the value (meta `mg`/`ms`), and `add` and `cas` that keep the existing item when memcached
//! refuses them (text protocol).
//!
//! Why not the crate's meta client for gets and sets: it copies a stored value twice (into its
//! command, then into the encoded request) and zero-fills a read buffer before reading into it,
//! and its `Operation` trait is sealed. Blob chunks are half a mebibyte and every byte of
//! object data passes here; profiles of uploads put a third of the sidecar's CPU in those
//! copies and the page faults of their buffers. Here a value goes to the socket in one
//! vectored write from the caller's buffer, and a value read lands in the buffer handed out.
//!
//! Why not the meta protocol for `add` and `cas`: memcached (1.6.18 at least) answers a meta
//! `ms` in add mode or with a CAS compare that cannot allocate the new value (`-M`, memory full)
//! with `SERVER_ERROR out of memory storing object` *and unlinks the existing item under that
//! key*, so a refused root-record CAS of the ordered store would delete a whole database. The
//! text protocol's `add` and `cas` refuse the same way but leave the item alone (memcached
//! unlinks only on a refused plain `set` there). The crate's classic client cannot stand in:
//! its `add` maps `NOT_STORED` to success, its `cas` folds `EXISTS` and `NOT_FOUND` into one
//! `false`, and its pool returns a connection after a timeout mid-exchange.
//!
//! Keys route to servers exactly as the crate's client is set up to route them (the project's
//! [`Rendezvous`] over the configured names), so every path reaches the same item.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Expiry, ItemError, ItemKey, ItemResult, Rendezvous};

/// The longest response line memcached sends to these commands (an error message included).
const MAX_LINE: usize = 1024;
/// memcached reads a larger relative expiry as an absolute Unix time.
const MAX_RELATIVE_SECS: u64 = 30 * 24 * 60 * 60;
/// Idle connections older than this are not reused: a quiet connection may have been cut.
const MAX_IDLE_AGE: Duration = Duration::from_secs(90);

/// Connections to every configured server, and which server holds a key.
pub struct ConnectionPool {
    /// The names as configured: routing keys on them (as the meta client does), and each
    /// new connection resolves its name again, so a server back under a new address is found.
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
    since: Instant,
}

/// A request, encoded but for the value, which is written from the caller's buffer.
enum Request {
    /// `count` lines `mg <key> v` for keys of one server, sent in one write: memcached
    /// answers them in order, so several keys cost one round trip.
    Get { lines: Bytes, count: usize },
    /// `ms`, `add` or `cas`: the command line, then the value (its parts one after the other).
    /// `repeatable` when sending it twice does no harm (a plain set), so that it may be sent
    /// again on a new connection after meeting a dead pooled one.
    Store {
        line: Bytes,
        value: Parts,
        repeatable: bool,
    },
}

impl Request {
    fn gets(keys: &[&ItemKey]) -> Request {
        let lines: String = keys.iter().map(|key| format!("mg {key} v\r\n")).collect();
        Request::Get {
            lines: Bytes::from(lines),
            count: keys.len(),
        }
    }

    fn repeatable(&self) -> bool {
        match self {
            Request::Get { .. } => true,
            Request::Store { repeatable, .. } => *repeatable,
        }
    }

    /// How many response lines (each with its value, if any) the request gets.
    fn replies(&self) -> usize {
        match self {
            Request::Get { count, .. } => *count,
            Request::Store { .. } => 1,
        }
    }
}

/// One response: its line, and the value it announced.
type Reply = (Line, Option<Bytes>);

/// What a response line said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// `HD` or `STORED`.
    Stored,
    /// `NS` or `NOT_STORED`: an `add` of a key that exists.
    NotStored,
    /// `EXISTS`: a `cas` against a changed item.
    Exists,
    /// `NOT_FOUND`: a `cas` of a missing item.
    NotFound,
    /// `VA <len>`: a value of this length follows.
    Value(usize),
    /// `EN`: no such item.
    Miss,
}

/// The `exptime` field: 0 is never; beyond 30 days memcached wants a Unix time.
pub fn exptime(expiry: Expiry) -> u32 {
    let secs = match expiry {
        Expiry::Never => return 0,
        Expiry::After(duration) => expiry_secs(duration),
    };
    if u64::from(secs) <= MAX_RELATIVE_SECS {
        return secs;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    u32::try_from(now + u64::from(secs)).unwrap_or(u32::MAX)
}

/// Whole seconds memcached counts, rounded up so that an expiry never comes early.
pub fn expiry_secs(duration: Duration) -> u32 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// What a `SERVER_ERROR` message means to the layers above.
pub fn server_error(message: &str, size: usize) -> ItemError {
    let message = message.to_ascii_lowercase();
    if message.contains("out of memory") {
        ItemError::Full
    } else if message.contains("too large") {
        ItemError::TooLarge { size }
    } else {
        ItemError::Protocol(format!("server error: {}", message.trim()))
    }
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

    /// The index of the server that holds `key`, as the meta client computes it.
    fn server(&self, key: &ItemKey) -> usize {
        Rendezvous::server(key.as_str().as_bytes(), &self.servers)
    }

    /// See [`super::ItemStore::key_per_server`]: candidates are tried in order, and with
    /// rendezvous hashing each lands on a given server with a chance of one in the number of
    /// servers, so a few dozen tries find every server.
    pub fn key_per_server(&self, base: &ItemKey) -> Vec<ItemKey> {
        let mut keys: Vec<Option<ItemKey>> = vec![None; self.servers.len()];
        let candidates = std::iter::once(Some(base.clone()))
            .chain((1..100_000).map(|n| ItemKey::new(format!("{base}:{n}")).ok()));
        for candidate in candidates.flatten() {
            let slot = &mut keys[self.server(&candidate)];
            if slot.is_none() {
                *slot = Some(candidate);
                if keys.iter().all(Option::is_some) {
                    break;
                }
            }
        }
        keys.into_iter().flatten().collect()
    }

    /// The value of `key`, or `None` when memcached has no such item.
    pub async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        let replies = self
            .exchange(self.server(key), &Request::gets(&[key]))
            .await?;
        get_reply(replies.into_iter().next())
    }

    /// The values of `keys` in input order: one pipelined exchange per server holding some,
    /// all servers at once.
    pub async fn get_many(&self, keys: &[ItemKey]) -> ItemResult<Vec<Option<Bytes>>> {
        let mut by_server: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (index, key) in keys.iter().enumerate() {
            by_server[self.server(key)].push(index);
        }
        let exchanges = by_server
            .iter()
            .enumerate()
            .filter(|(_, indices)| !indices.is_empty())
            .map(|(server, indices)| async move {
                let wanted: Vec<&ItemKey> = indices.iter().map(|index| &keys[*index]).collect();
                let replies = self.exchange(server, &Request::gets(&wanted)).await?;
                Ok::<_, ItemError>((indices, replies))
            });
        let mut values = vec![None; keys.len()];
        for exchange in futures::future::join_all(exchanges).await {
            let (indices, replies) = exchange?;
            let mut replies = replies.into_iter();
            for index in indices {
                values[*index] = get_reply(replies.next())?;
            }
        }
        Ok(values)
    }

    /// Store `value` under `key` (meta `ms`: memcached unlinks `key` if it refuses, in either
    /// protocol, so this is for keys whose old item nobody needs).
    pub async fn set(&self, key: &ItemKey, value: Vec<Bytes>, expiry: Expiry) -> ItemResult<()> {
        let value = Parts::new(value);
        let line = format!("ms {key} {} T{}\r\n", value.remaining(), exptime(expiry));
        match self.store(key, line, value, true).await? {
            Line::Stored => Ok(()),
            line => Err(unexpected(&format!("a set answered {line:?}"))),
        }
    }

    /// Text-protocol `add`: `Stored` or `NotStored`.
    pub async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<Line> {
        let line = format!("add {key} 0 {} {}\r\n", exptime(expiry), value.len());
        self.store(key, line, Parts::new(vec![value]), false).await
    }

    /// Text-protocol `cas`: `Stored`, `Exists` or `NotFound`.
    pub async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: u64,
        expiry: Expiry,
    ) -> ItemResult<Line> {
        let line = format!(
            "cas {key} 0 {} {} {token}\r\n",
            exptime(expiry),
            value.len()
        );
        self.store(key, line, Parts::new(vec![value]), false).await
    }

    async fn store(
        &self,
        key: &ItemKey,
        line: String,
        value: Parts,
        repeatable: bool,
    ) -> ItemResult<Line> {
        let size = value.remaining();
        let request = Request::Store {
            line: Bytes::from(line),
            value,
            repeatable,
        };
        match self.exchange(self.server(key), &request).await {
            Ok(replies) => match replies.first() {
                Some((line, _)) => Ok(*line),
                None => Err(unexpected("a store without an answer")),
            },
            Err(ItemError::TooLarge { .. }) => Err(ItemError::TooLarge { size }),
            Err(error) => Err(error),
        }
    }

    /// Run one request on a connection to `server`, within the I/O timeout.
    ///
    /// An idle connection that looks closed is not used. One that died anyway (memcached
    /// restarted, say) fails before memcached could act on the request; a get or a plain
    /// set is then sent again on a new connection, since running either twice does no harm.
    /// A connection goes back to the pool only after a complete, well-formed exchange: after
    /// anything else its stream may hold half a response.
    async fn exchange(&self, server: usize, request: &Request) -> ItemResult<Vec<Reply>> {
        if let Some(connection) = self.checkout(server) {
            match self.attempt(server, connection, request).await {
                Err(ItemError::Unavailable(_)) if request.repeatable() => {}
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
    ) -> ItemResult<Vec<Reply>> {
        match tokio::time::timeout(self.io_timeout, connection.run(request)).await {
            Ok(Ok(reply)) => {
                self.put_back(server, connection);
                Ok(reply)
            }
            // Even a refusal drops the connection: memcached may close it after refusing a
            // large value, or still be reading what it takes for the rest of one.
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ItemError::Unavailable(format!(
                "{}: no answer within {:?}",
                self.servers[server], self.io_timeout
            ))),
        }
    }

    /// An idle connection that still looks open, or none.
    fn checkout(&self, server: usize) -> Option<Connection> {
        let mut idle = self.idle[server]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(connection) = idle.pop() {
            // A server that restarted closed its end: reading gives end of file (or bytes
            // nobody asked for) instead of "nothing yet".
            let mut probe = [0u8; 1];
            let open = connection.since.elapsed() < MAX_IDLE_AGE
                && connection.read.is_empty()
                && matches!(
                    connection.stream.try_read(&mut probe),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
                );
            if open {
                return Some(connection);
            }
        }
        None
    }

    fn put_back(&self, server: usize, mut connection: Connection) {
        let mut idle = self.idle[server]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.max_idle {
            connection.since = Instant::now();
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
            since: Instant::now(),
        })
    }
}

impl Connection {
    async fn run(&mut self, request: &Request) -> ItemResult<Vec<Reply>> {
        match request {
            Request::Get { lines, .. } => self.write(lines.clone()).await?,
            Request::Store { line, value, .. } => {
                self.write(line.clone().chain(value.clone()).chain(&b"\r\n"[..]))
                    .await?
            }
        }
        let mut replies = Vec::with_capacity(request.replies());
        for _ in 0..request.replies() {
            replies.push(match self.line().await? {
                Line::Value(len) => (Line::Value(len), Some(self.value(len).await?)),
                line => (line, None),
            });
        }
        Ok(replies)
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
            (Some("HD" | "STORED"), _) => Ok(Line::Stored),
            (Some("NS" | "NOT_STORED"), _) => Ok(Line::NotStored),
            (Some("EXISTS"), _) => Ok(Line::Exists),
            (Some("NOT_FOUND"), _) => Ok(Line::NotFound),
            (Some("EN"), _) => Ok(Line::Miss),
            (Some("VA"), Some(len)) => len
                .parse()
                .map(Line::Value)
                .map_err(|_| unexpected("a value length that is not a number")),
            _ => match text.strip_prefix("SERVER_ERROR") {
                // The caller knows the size.
                Some(message) => Err(server_error(message, 0)),
                None => Err(unexpected(&format!("memcached answered {text:?}"))),
            },
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

/// A value in several buffers, written in place: one vectored write covers them all. Cloned
/// per attempt, so that a request sent again starts from its first byte.
#[derive(Clone)]
struct Parts {
    parts: Vec<Bytes>,
    /// The first part not yet written.
    next: usize,
    remaining: usize,
}

impl Parts {
    fn new(mut parts: Vec<Bytes>) -> Parts {
        // An empty part would end `chunk` early.
        parts.retain(|part| !part.is_empty());
        let remaining = parts.iter().map(Bytes::len).sum();
        Parts {
            parts,
            next: 0,
            remaining,
        }
    }
}

impl Buf for Parts {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.get(self.next).map_or(&[], |part| &part[..])
    }

    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let Some(part) = self.parts.get_mut(self.next) else {
                return;
            };
            let step = count.min(part.len());
            part.advance(step);
            count -= step;
            self.remaining -= step;
            if part.is_empty() {
                self.next += 1;
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [std::io::IoSlice<'a>]) -> usize {
        let parts = self.parts[self.next..].iter();
        let mut filled = 0;
        for (slice, part) in slices.iter_mut().zip(parts) {
            *slice = std::io::IoSlice::new(part);
            filled += 1;
        }
        filled
    }
}

/// The value a get's reply carries, `None` for a miss.
fn get_reply(reply: Option<Reply>) -> ItemResult<Option<Bytes>> {
    match reply {
        Some((Line::Value(_), value)) => Ok(value),
        Some((Line::Miss, _)) => Ok(None),
        Some((line, _)) => Err(unexpected(&format!("a get answered {line:?}"))),
        None => Err(unexpected("a get without an answer")),
    }
}

fn io_error(error: std::io::Error) -> ItemError {
    ItemError::Unavailable(error.to_string())
}

fn unexpected(what: &str) -> ItemError {
    ItemError::Protocol(what.to_owned())
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
    fn parts_read_as_one_value_and_advance_across_their_bounds() {
        let whole: Vec<u8> = (0..100u8).collect();
        let pieces = [0..10, 10..10, 10..55, 55..56, 56..100]
            .map(|range| Bytes::copy_from_slice(&whole[range]))
            .to_vec();
        let mut parts = Parts::new(pieces);
        assert_eq!(parts.remaining(), 100);
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(parts.chunks_vectored(&mut slices), 4);
        // Across part bounds, by amounts that end inside and at the end of parts.
        parts.advance(5);
        parts.advance(5);
        assert_eq!(parts.chunk()[0], 10);
        parts.advance(46);
        assert_eq!((parts.chunk()[0], parts.remaining()), (56, 44));
        let mut rest = vec![0u8; 44];
        parts.copy_to_slice(&mut rest);
        assert_eq!(rest, whole[56..]);
        assert_eq!(parts.remaining(), 0);
        assert!(parts.chunk().is_empty());
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
