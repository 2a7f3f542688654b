//! Starting the sidecar: the item store, the start-up checks, the listeners, and a shutdown
//! that lets in-flight requests finish.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;

use crate::admin;
use crate::blob::{BlobStore, CHUNK_ITEM_OVERHEAD};
use crate::config::Config;
use crate::connlimit::{ConnectionLimits, LimitedListener};
use crate::data::{self, DataService};
use crate::health::Health;
use crate::items::{EmbeddedStore, ItemError, ItemStore, MemcachedStore, SharedItemStore};
use crate::metadata::{self, ArgLimits, MetadataConfig, MetadataService};
use crate::metrics::Metrics;
use crate::ordered::{MemcachedOrderedStore, OrderedError, PageCacheConfig, TreeConfig};
use crate::placement::{self, RefillRate, ReplicatedStore, Verdict};

/// How often readiness probes memcached.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long in-flight requests may take to finish after SIGTERM; metadata clients keep their
/// socket.io connections open, so the wait needs an end (Kubernetes allows 30 s by default).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Why the sidecar could not start; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("memcached {servers} unreachable: {source}")]
    Unreachable { servers: String, source: ItemError },
    #[error(
        "--chunk-size {chunk_size} does not fit memcached's item size limit of {item_size_max} bytes \
         (a chunk needs {overhead} more bytes): lower --chunk-size or raise memcached's -I"
    )]
    ChunkTooLarge {
        chunk_size: u64,
        item_size_max: u64,
        overhead: u64,
    },
    #[error("cannot write the epoch item to memcached: {0}")]
    Epoch(ItemError),
    #[error("cannot read or write the placement record in memcached: {0}")]
    Placement(ItemError),
    #[error(
        "--replication-factor {factor} needs at least {factor} memcached servers, and \
         --memcached lists {servers}"
    )]
    Factor { factor: u32, servers: usize },
    #[error("cannot open the metadata store: {0}")]
    Metadata(OrderedError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// The item store the configuration names, checked to be answering, and its replicated form
/// (which follows the placement record) unless it is a store of one copy written before
/// placements could change.
pub struct Items {
    pub store: SharedItemStore,
    pub replicated: Option<Arc<ReplicatedStore>>,
    /// What the placement record says of the configuration (`None`: the embedded store).
    pub verdict: Option<Verdict>,
}

pub async fn connect_items(config: &Config) -> Result<Items, StartupError> {
    let factor = config.replication_factor as usize;
    if factor > config.memcached.len().max(1) {
        return Err(StartupError::Factor {
            factor: config.replication_factor,
            servers: config.memcached.len(),
        });
    }
    if config.memcached.is_empty() {
        tracing::warn!(
            memory_mib = config.embedded_memory_mib,
            "no --memcached given: using the embedded in-process store; NOTHING IS PERSISTENT"
        );
        let store = EmbeddedStore::new(
            (config.embedded_memory_mib * 1024 * 1024) as usize,
            config.embedded_item_size_max as usize,
        );
        return Ok(Items {
            store: Arc::new(store),
            replicated: None,
            verdict: None,
        });
    }
    let servers = config.memcached.join(",");
    let unreachable = |source| StartupError::Unreachable {
        servers: servers.clone(),
        source,
    };
    let deadline = Instant::now() + Duration::from_secs(config.startup_wait);
    loop {
        let attempt = async {
            let plain = MemcachedStore::connect(&config.memcached).await?;
            plain.ping().await?;
            Ok::<_, ItemError>(plain)
        };
        match attempt.await {
            Ok(plain) => return open_items(config, plain).await,
            Err(error) if Instant::now() >= deadline => return Err(unreachable(error)),
            Err(error) => {
                tracing::info!(%error, "waiting for memcached");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The store as its placement record lays it out.
async fn open_items(config: &Config, plain: MemcachedStore) -> Result<Items, StartupError> {
    let verdict = placement::establish(&config.memcached, config.replication_factor)
        .await
        .map_err(StartupError::Placement)?;
    let recorded = match &verdict {
        Verdict::Agreed(placement) => Some(placement.clone()),
        Verdict::Refused(_) => placement::recorded(&config.memcached)
            .await
            .map_err(StartupError::Placement)?,
    };
    let replicated = match recorded {
        // A store of one copy from before placements could change: plain items, as written.
        Some(placement) if !placement.is_versioned() => None,
        Some(placement) if matches!(verdict, Verdict::Agreed(_)) => Some(
            ReplicatedStore::open(&placement)
                .await
                .map_err(StartupError::Placement)?,
        ),
        // Refused: laid out as configured until the record admits the configuration.
        _ => Some(
            ReplicatedStore::connect(&config.memcached, config.replication_factor as usize)
                .await
                .map_err(StartupError::Placement)?,
        ),
    };
    Ok(match replicated {
        Some(replicated) => {
            let replicated = Arc::new(replicated);
            Items {
                store: replicated.clone(),
                replicated: Some(replicated),
                verdict: Some(verdict),
            }
        }
        None => Items {
            store: Arc::new(plain),
            replicated: None,
            verdict: Some(verdict),
        },
    })
}

async fn check_chunk_size(items: &SharedItemStore, chunk_size: u64) -> Result<(), StartupError> {
    let stats = items
        .stats()
        .await
        .map_err(|source| StartupError::Unreachable {
            servers: "stats".into(),
            source,
        })?;
    if chunk_size + CHUNK_ITEM_OVERHEAD > stats.item_size_max {
        return Err(StartupError::ChunkTooLarge {
            chunk_size,
            item_size_max: stats.item_size_max,
            overhead: CHUNK_ITEM_OVERHEAD,
        });
    }
    Ok(())
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Listen { addr, source })
}

/// The metadata service on the memcached ordered store, for the roles that serve metadata.
async fn metadata_router(
    config: &Config,
    items: &SharedItemStore,
    metrics: &Metrics,
    health: &Health,
) -> Result<Router, StartupError> {
    let tree = TreeConfig {
        cache: PageCacheConfig {
            max_bytes: (config.page_cache_mib * 1024 * 1024) as usize,
        },
        grace_period: Duration::from_secs(config.scan_grace_secs),
        ..TreeConfig::default()
    };
    let ordered = MemcachedOrderedStore::open(items.clone(), tree)
        .await
        .map_err(StartupError::Metadata)?;
    let service = MetadataService::new(
        Arc::new(ordered),
        items.clone(),
        MetadataConfig {
            replication_group_id: config.replication_group_id.clone(),
            observer: Some(Arc::new(metrics.clone())),
            health: Some(health.clone()),
            limits: ArgLimits {
                max_key_bytes: metadata::api::MAX_KEY_BYTES,
                max_value_bytes: usize::try_from(config.max_metadata_value).unwrap_or(usize::MAX),
            },
            max_streams_per_client: usize::try_from(config.max_streams_per_client)
                .unwrap_or(usize::MAX),
            ..MetadataConfig::default()
        },
    );
    {
        let service = service.clone();
        metrics.set_open_streams_source(move || service.open_streams());
    }
    Ok(metadata::router(service))
}

/// One listener and what it serves.
struct Listener {
    name: &'static str,
    addr: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
}

/// Run until SIGTERM or SIGINT, then finish in-flight requests and return. Only the APIs of
/// `config.role` listen, besides the admin endpoints; the epoch and readiness watch the
/// memcached pool in every role, since any role answers "not found" from it.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let role = config.role;
    let Items {
        store: items,
        replicated,
        verdict,
    } = connect_items(&config).await?;
    if role.serves_data() {
        check_chunk_size(&items, config.chunk_size).await?;
    }
    let metrics = Metrics::for_role(role);
    let health = if config.memcached.is_empty() {
        Health::embedded()
    } else {
        Health::default()
    };
    let mut changing = false;
    match verdict {
        Some(Verdict::Agreed(placement)) => {
            tracing::info!(
                generation = placement.generation,
                servers = placement.servers.len(),
                replication_factor = placement.replication_factor,
                changing = placement.change.is_some(),
                "the store's placement agrees with --memcached"
            );
            changing = placement.change.is_some();
        }
        // Serving stays up, not ready, so that the reason is there to read.
        Some(Verdict::Refused(why)) => health.refuse(why),
        None => {}
    }
    // Under a refused placement nothing is written: epochs would land on the wrong servers.
    // While the placement changes, the follower writes them once it is stable (an epoch item
    // moving to another server cannot be created until then).
    if health.refusal().is_none() && !changing {
        health
            .establish_epoch(&items)
            .await
            .map_err(StartupError::Epoch)?;
    }
    health.set_ready(items.ping().await.is_ok());
    let _watch = health.watch(items.clone(), HEALTH_INTERVAL);
    if let Some(replicated) = &replicated {
        if replicated.placement().replication_factor >= 2 {
            health.has_copies();
        }
        let replicated = replicated.clone();
        metrics.set_servers_source(move || replicated.server_figures());
    }
    let follower = replicated.map(|replicated| {
        placement::Follower {
            store: replicated,
            items: items.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            refill_rate: RefillRate(config.refill_rate_mib * 1024 * 1024),
            configured: config.memcached.clone(),
            factor: config.replication_factor,
        }
        .spawn()
    });

    let limits = ConnectionLimits {
        max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        max_per_client: usize::try_from(config.max_connections_per_client).unwrap_or(usize::MAX),
    };
    let mut listeners = Vec::new();
    if role.serves_data() {
        listeners.push(Listener {
            name: "data",
            addr: config.data_addr,
            app: data::router(DataService {
                blobs: BlobStore::new(items.clone(), config.chunk_size),
                items: items.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                max_object_size: config.max_object_size,
            }),
            limits,
        });
    }
    if role.serves_metadata() {
        listeners.push(Listener {
            name: "metadata",
            addr: config.metadata_addr,
            app: metadata_router(&config, &items, &metrics, &health).await?,
            limits,
        });
    }
    listeners.push(Listener {
        name: "admin",
        addr: config.admin_addr,
        app: admin::router(health, metrics),
        // Not limited: probes must get through a saturated sidecar.
        limits: ConnectionLimits::UNLIMITED,
    });
    // Every address is bound before any serves, so that one that cannot be bound stops the
    // sidecar before it answers anything.
    let mut bound = Vec::new();
    for listener in listeners {
        bound.push((listen(listener.addr).await?, listener));
    }
    let addresses: Vec<String> = bound
        .iter()
        .map(|(_, listener)| format!("{} {}", listener.name, listener.addr))
        .collect();
    tracing::info!(
        role = role.as_str(),
        listening = addresses.join(", "),
        chunk_size = role.serves_data().then_some(config.chunk_size),
        "serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let servers = futures::future::try_join_all(bound.into_iter().map(|(socket, listener)| {
        let mut stop = stop_rx.clone();
        axum::serve(
            LimitedListener::new(socket, listener.name, listener.limits),
            listener.app,
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .into_future()
    }));
    let mut stopped = stop_rx.clone();
    let deadline = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("connections still open after the shutdown grace period: closing them");
    };
    let served = tokio::select! {
        result = servers => result.map(drop).map_err(StartupError::Serve),
        () = deadline => Ok(()),
    };
    if let Some(follower) = follower {
        follower.leave().await;
    }
    served
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
