//! The item store on real memcached servers: the `memcache` crate's async meta-protocol client
//! (keys spread over the servers by rendezvous hashing) for CAS reads, touches, deletes and
//! counters; the [`ConnectionPool`] for gets, multi-gets and sets (no value copies) and for
//! `add` and `cas` (a refusal keeps the existing item), routed to the same servers.

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use memcache::exp::{
    Arithmetic, AsyncMetaClient, Delete, Error as McError, Get, Meta, MutationStatus, Ttl,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::connection::{self, ConnectionPool, Line};
use super::{
    CasOutcome, CasToken, Expiry, ItemError, ItemKey, ItemResult, ItemStore, Rendezvous, StoreStats,
};

/// How long one exchange may take before memcached counts as unreachable.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per server: enough for every request's read-ahead and write-ahead
/// at high concurrency, so that busy periods do not dial a connection per operation.
const MAX_IDLE: usize = 64;
/// Most touches sent in one pipelined batch.
const TOUCH_BATCH: usize = 1024;

pub struct MemcachedStore {
    /// Replaced when the servers stop answering: the client resolves names once, and a
    /// memcached pod or Swarm task that comes back usually has a new address.
    client: RwLock<AsyncMetaClient>,
    /// Resolves names on each new connection, so it needs no replacing.
    connections: ConnectionPool,
    servers: Vec<String>,
}

async fn resolve(servers: &[String]) -> ItemResult<AsyncMetaClient> {
    // The meta client routes on each address's identity, which for a `&str` is the string
    // itself; `ConnectionPool` routes on the same strings with the same `Rendezvous`.
    AsyncMetaClient::builder()
        .router(Rendezvous)
        .connect_timeout(Some(CONNECT_TIMEOUT))
        .io_timeout(Some(IO_TIMEOUT))
        .max_idle(MAX_IDLE)
        .connect_multiple_async(servers.iter().map(String::as_str))
        .await
        .map_err(|error| ItemError::Unavailable(error.to_string()))
}

impl MemcachedStore {
    /// When each server's process started (its `time` less its `uptime`, with its `pid`):
    /// a server restarted, warm or empty, has another, and its CAS tokens start over.
    pub async fn incarnations(&self) -> ItemResult<Vec<(u64, u64)>> {
        let mut started = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let general = read_stats(server, "").await?;
            started.push((
                stat(&general, "time").saturating_sub(stat(&general, "uptime")),
                stat(&general, "pid"),
            ));
        }
        Ok(started)
    }

    /// Resolve the servers; connections are dialed on first use (see [`ItemStore::ping`]).
    pub async fn connect(servers: &[String]) -> ItemResult<MemcachedStore> {
        Ok(MemcachedStore {
            client: RwLock::new(resolve(servers).await?),
            connections: ConnectionPool::new(servers, MAX_IDLE, CONNECT_TIMEOUT, IO_TIMEOUT),
            servers: servers.to_vec(),
        })
    }

    /// The meta-protocol client (cheap to clone), also for benchmarks that compare the
    /// sidecar with raw memcached.
    pub fn client(&self) -> AsyncMetaClient {
        match self.client.read() {
            Ok(client) => client.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn ttl(expiry: Expiry) -> Ttl {
    match expiry {
        Expiry::Never => Ttl::NEVER,
        // memcached counts in whole seconds; round up so an expiry never comes early.
        Expiry::After(duration) => Ttl::secs(connection::expiry_secs(duration)),
    }
}

fn classify(error: McError, size: usize) -> ItemError {
    match error {
        // memcached may close the connection after refusing a large value, which the client
        // reports as an ambiguous outcome around the server's answer: the answer decides.
        McError::Ambiguous { source, .. } if matches!(*source, McError::Server(_)) => {
            classify(*source, size)
        }
        McError::Server(message) => connection::server_error(&message, size),
        error @ (McError::Io(_) | McError::Timeout { .. } | McError::Ambiguous { .. }) => {
            ItemError::Unavailable(error.to_string())
        }
        error => ItemError::Protocol(error.to_string()),
    }
}

/// One `stats` section of one server, as name/value pairs. memcached's meta protocol has no
/// stats command, so this speaks the text protocol for this one request.
async fn read_stats(server: &str, section: &str) -> ItemResult<Vec<(String, String)>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let command = if section.is_empty() {
            "stats\r\n".to_owned()
        } else {
            format!("stats {section}\r\n")
        };
        stream.write_all(command.as_bytes()).await?;
        let mut lines = BufReader::new(stream).lines();
        let mut pairs = Vec::new();
        while let Some(line) = lines.next_line().await? {
            if line == "END" {
                return Ok(pairs);
            }
            let mut fields = line.splitn(3, ' ');
            if let (Some("STAT"), Some(name), Some(value)) =
                (fields.next(), fields.next(), fields.next())
            {
                pairs.push((name.to_owned(), value.to_owned()));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "stats cut short",
        ))
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Ok(Ok(pairs)) => Ok(pairs),
        Ok(Err(error)) => Err(ItemError::Unavailable(format!("{server}: {error}"))),
        Err(_) => Err(ItemError::Unavailable(format!("{server}: stats timed out"))),
    }
}

fn stat(pairs: &[(String, String)], name: &str) -> u64 {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl ItemStore for MemcachedStore {
    async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        self.connections.get(key).await
    }

    async fn get_many(&self, keys: &[ItemKey]) -> ItemResult<Vec<Option<Bytes>>> {
        self.connections.get_many(keys).await
    }

    async fn get_many_with_expiry(
        &self,
        keys: &[ItemKey],
    ) -> ItemResult<Vec<Option<(Bytes, Expiry)>>> {
        let results = self
            .client()
            .run_many(keys.iter().map(|key| Get::new(key).meta(Meta::NONE.ttl())))
            .await
            .map_err(|e| classify(e, 0))?;
        results
            .into_iter()
            .map(|result| {
                let result = result.map_err(|e| classify(e, 0))?;
                if !result_hit(&result.status) {
                    return Ok(None);
                }
                let expiry = match result.item.ttl {
                    Some(-1) => Expiry::Never,
                    Some(secs) => Expiry::After(Duration::from_secs(secs.max(0).unsigned_abs())),
                    None => return Err(ItemError::Protocol("a hit without its TTL".into())),
                };
                match result.value {
                    Some(value) => Ok(Some((Bytes::from(value), expiry))),
                    None => Err(ItemError::Protocol("a hit without value".into())),
                }
            })
            .collect()
    }

    async fn gets(&self, key: &ItemKey) -> ItemResult<Option<(Bytes, CasToken)>> {
        let result = self
            .client()
            .run(Get::new(key).meta(Meta::NONE.cas()))
            .await
            .map_err(|e| classify(e, 0))?;
        if !result_hit(&result.status) {
            return Ok(None);
        }
        match (result.value, result.item.cas) {
            (Some(value), Some(cas)) => Ok(Some((Bytes::from(value), CasToken(cas)))),
            _ => Err(ItemError::Protocol("a hit without value or CAS".into())),
        }
    }

    async fn token(&self, key: &ItemKey) -> ItemResult<Option<CasToken>> {
        let get = Get::new(key).meta(Meta::NONE.cas()).without_value();
        let result = self.client().run(get).await.map_err(|e| classify(e, 0))?;
        if !result_hit(&result.status) {
            return Ok(None);
        }
        match result.item.cas {
            Some(cas) => Ok(Some(CasToken(cas))),
            None => Err(ItemError::Protocol("a hit without its CAS".into())),
        }
    }

    async fn set(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<()> {
        self.connections.set(key, vec![value], expiry).await
    }

    async fn set_parts(&self, key: &ItemKey, parts: Vec<Bytes>, expiry: Expiry) -> ItemResult<()> {
        self.connections.set(key, parts, expiry).await
    }

    async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<bool> {
        match self.connections.add(key, value, expiry).await? {
            Line::Stored => Ok(true),
            Line::NotStored => Ok(false),
            other => Err(ItemError::Protocol(format!("add answered {other:?}"))),
        }
    }

    async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: CasToken,
        expiry: Expiry,
    ) -> ItemResult<CasOutcome> {
        match self.connections.cas(key, value, token.0, expiry).await? {
            Line::Stored => Ok(CasOutcome::Stored),
            Line::Exists => Ok(CasOutcome::Conflict),
            Line::NotFound => Ok(CasOutcome::NotFound),
            other => Err(ItemError::Protocol(format!("cas answered {other:?}"))),
        }
    }

    async fn touch(&self, key: &ItemKey, expiry: Expiry) -> ItemResult<bool> {
        let get = Get::new(key).touch(ttl(expiry)).without_value();
        let result = self.client().run(get).await.map_err(|e| classify(e, 0))?;
        Ok(result_hit(&result.status))
    }

    async fn touch_many(&self, keys: &[ItemKey], expiry: Expiry) -> ItemResult<Vec<bool>> {
        let mut touched = Vec::with_capacity(keys.len());
        // Batches of a bounded size, so that no request or answer grows with the blob.
        for batch in keys.chunks(TOUCH_BATCH) {
            let results = self
                .client()
                .run_many(
                    batch
                        .iter()
                        .map(|key| Get::new(key).touch(ttl(expiry)).without_value()),
                )
                .await
                .map_err(|e| classify(e, 0))?;
            for result in results {
                touched.push(result_hit(&result.map_err(|e| classify(e, 0))?.status));
            }
        }
        Ok(touched)
    }

    async fn delete(&self, key: &ItemKey) -> ItemResult<bool> {
        let result = self
            .client()
            .run(Delete::new(key))
            .await
            .map_err(|e| classify(e, 0))?;
        Ok(result.status == MutationStatus::Applied)
    }

    async fn count(&self, key: &ItemKey, change: i64, life: Duration) -> ItemResult<u64> {
        let mut operation = Arithmetic::new(key)
            .delta(change.unsigned_abs())
            .initial(
                change.max(0).unsigned_abs(),
                connection::exptime(Expiry::After(life)),
            )
            .ttl(ttl(Expiry::After(life)));
        if change < 0 {
            operation = operation.decrement();
        }
        let result = self
            .client()
            .run(operation)
            .await
            .map_err(|e| classify(e, 0))?;
        result
            .value
            .ok_or_else(|| ItemError::Protocol("a counter without its value".into()))
    }

    async fn stats(&self) -> ItemResult<StoreStats> {
        let mut total = StoreStats {
            item_size_max: u64::MAX,
            ..StoreStats::default()
        };
        for server in &self.servers {
            let general = read_stats(server, "").await?;
            let settings = read_stats(server, "settings").await?;
            total.limit_bytes += stat(&general, "limit_maxbytes");
            total.used_bytes += stat(&general, "bytes");
            total.items += stat(&general, "curr_items");
            total.evictions += stat(&general, "evictions");
            total.item_size_max = total.item_size_max.min(stat(&settings, "item_size_max"));
        }
        Ok(total)
    }

    fn key_per_server(&self, base: &ItemKey) -> Vec<ItemKey> {
        self.connections.key_per_server(base)
    }

    async fn ping(&self) -> ItemResult<()> {
        let failure = match self.client().noop().await {
            Ok(()) => return Ok(()),
            Err(error) => classify(error, 0),
        };
        // Resolve the names again, so the next operations reach a server that came back
        // under a new address; routing keys on the names, so it does not change.
        match resolve(&self.servers).await {
            Ok(client) => match self.client.write() {
                Ok(mut current) => *current = client,
                Err(poisoned) => *poisoned.into_inner() = client,
            },
            Err(error) => tracing::debug!(%error, "memcached servers do not resolve"),
        }
        Err(failure)
    }
}

fn result_hit(status: &memcache::exp::GetStatus) -> bool {
    *status == memcache::exp::GetStatus::Hit
}
