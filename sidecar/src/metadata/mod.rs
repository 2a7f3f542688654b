//! The METADATA service: Arsenal's `/MDFile/metadata` socket.io RPC over the ordered store,
//! for socket.io 4.x (Engine.IO 4) and 2.x (Engine.IO 3) clients at once.

pub mod api;
pub mod errors;
pub mod listing;
pub mod metrics;
#[cfg(test)]
mod props;
pub mod rpc;
pub mod stream;
pub mod uuid;
pub mod versioning;

use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::health::{CONTENTS_LOST, Health};
use crate::items::SharedItemStore;
use crate::ordered::OrderedStore;
pub use api::ArgLimits;
use api::{Answer, Args, Handlers};
pub use errors::{MetadataError, MetadataResult};
pub use metrics::CallObserver;
use rpc::{CallName, CallRequest};
use stream::{StreamId, StreamRegistry};
pub use versioning::{ReplicationGroupId, VersionId};

/// The socket.io namespace CloudServer connects to.
pub const NAMESPACE: &str = "/MDFile/metadata";
/// Largest message accepted, as Arsenal's socket.io 4.x servers (`maxHttpBufferSize`).
pub const MAX_PAYLOAD: u64 = 100_000_000;

#[derive(Clone)]
pub struct MetadataConfig {
    pub replication_group_id: ReplicationGroupId,
    /// Delay before a placeholder master left by a version delete is repaired in the
    /// background (reference: 15 s); `None`: only the next get repairs it.
    pub placeholder_repair_delay: Option<Duration>,
    /// Told about each finished call (metrics).
    pub observer: Option<Arc<dyn CallObserver>>,
    /// The sidecar's readiness: calls are refused once memcached lost its contents.
    pub health: Option<Health>,
    /// Key and value size limits of calls.
    pub limits: ArgLimits,
    /// Listings one connection may have open at once (`--max-streams-per-client`).
    pub max_streams_per_client: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            replication_group_id: ReplicationGroupId::default(),
            placeholder_repair_delay: Some(Duration::from_secs(15)),
            observer: None,
            health: None,
            limits: ArgLimits::default(),
            max_streams_per_client: 16,
        }
    }
}

struct Inner {
    handlers: Handlers,
    streams: Arc<StreamRegistry>,
    observer: Option<Arc<dyn CallObserver>>,
    health: Option<Health>,
    items: SharedItemStore,
    max_streams_per_client: usize,
}

/// The metadata service, shared by every connection.
#[derive(Clone)]
pub struct MetadataService {
    inner: Arc<Inner>,
}

impl MetadataService {
    pub fn new(
        store: Arc<dyn OrderedStore>,
        items: SharedItemStore,
        config: MetadataConfig,
    ) -> MetadataService {
        let engine = versioning::VersioningEngine::new(
            store,
            versioning::VersionIdGenerator::new(config.replication_group_id),
            config.placeholder_repair_delay,
        );
        MetadataService {
            inner: Arc::new(Inner {
                handlers: Handlers {
                    engine,
                    uuid: uuid::DeploymentUuid::new(items.clone()),
                    items: items.clone(),
                    limits: config.limits,
                },
                streams: Arc::new(StreamRegistry::default()),
                observer: config.observer,
                health: config.health,
                items,
                max_streams_per_client: config.max_streams_per_client.max(1),
            }),
        }
    }

    /// Streams currently being produced (for tests and diagnostics).
    pub fn open_streams(&self) -> usize {
        self.inner.streams.len()
    }

    fn observe(&self, call: &str, outcome: &str, started: Instant) {
        if let Some(observer) = &self.inner.observer {
            observer.call_finished(call, outcome, started.elapsed());
        }
    }

    /// One `call` event: answer through the ack, then start the stream if there is one.
    async fn on_call(
        &self,
        socket: SocketRef,
        data: Result<(Value, Value), String>,
        ack: AckSender,
        connection: CancellationToken,
        stream_slots: Arc<Semaphore>,
    ) {
        let started = Instant::now();
        let parsed = data
            .map_err(|error| MetadataError::InvalidArgument(format!("malformed call: {error}")))
            .and_then(|(name, args)| Ok((CallName::parse(&name)?, CallRequest::parse(&args)?)));
        let (name, request) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::info!(%error, "refused call");
                self.observe("unknown", error.label(), started);
                send_ack(ack, Err(&error));
                return;
            }
        };
        let span = tracing::info_span!(
            "metadata_call",
            call = name.as_str(),
            req_uids = request.req_uids.as_deref().unwrap_or(""),
            db = %request.sublevel,
        );
        async {
            let answer = match name {
                CallName::Manifest => Ok(Answer::Value(rpc::manifest())),
                CallName::Api(api) => self.call_api(api, &request).await,
            };
            match answer {
                Ok(Answer::Value(value)) => {
                    self.observe(name.as_str(), "ok", started);
                    send_ack(ack, Ok(value));
                }
                Ok(Answer::Stream(items)) => {
                    // One slot per open listing of this connection, held by its producer until
                    // the stream ends, is hung up or the client goes: a client that opens
                    // listings without consuming them gets refused rather than piling up
                    // producers.
                    let Ok(slot) = stream_slots.try_acquire_owned() else {
                        let error = MetadataError::InvalidArgument(format!(
                            "too many open streams on this connection (at most {}): consume or \
                             hang up one first",
                            self.inner.max_streams_per_client
                        ));
                        tracing::info!(%error, "refused");
                        self.observe(name.as_str(), "too_many_streams", started);
                        send_ack(ack, Err(&error));
                        return;
                    };
                    self.observe(name.as_str(), "ok", started);
                    let id = StreamId::random();
                    let cancel = self.inner.streams.register(id.clone(), &connection);
                    // The ack goes into the socket's queue before any stream-data.
                    send_ack(ack, Ok(stream::marker(&id)));
                    let produce =
                        stream::produce(socket, id, items, cancel, self.inner.streams.clone());
                    tokio::spawn(
                        async move {
                            produce.await;
                            drop(slot);
                        }
                        .in_current_span(),
                    );
                }
                Err(error) => {
                    match &error {
                        MetadataError::ObjNotFound => tracing::debug!("not found"),
                        MetadataError::InvalidArgument(_) => tracing::info!(%error, "refused"),
                        _ => tracing::warn!(%error, "call failed"),
                    }
                    self.observe(name.as_str(), error.label(), started);
                    send_ack(ack, Err(&error));
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// One API call, refused once memcached lost its contents: an emptied memcached would
    /// answer "not found" and empty listings for data that exists.
    async fn call_api(&self, api: api::Api, request: &CallRequest) -> MetadataResult<Answer> {
        let Some(health) = &self.inner.health else {
            return self
                .inner
                .handlers
                .call(api, &request.sublevel, Args::new(&request.rpc_args))
                .await;
        };
        let lost = || MetadataError::Internal(CONTENTS_LOST.into());
        if let Some(why) = health.refusal() {
            return Err(MetadataError::Internal(why.to_owned()));
        }
        let answer = self
            .inner
            .handlers
            .call(api, &request.sublevel, Args::new(&request.rpc_args))
            .await;
        // Between two probes of the watcher, "not found" or a listing may come from an emptied
        // memcached: check the epoch before answering either.
        let check = matches!(
            answer,
            Err(MetadataError::ObjNotFound) | Ok(Answer::Stream(_))
        );
        if check && health.verify(&self.inner.items).await {
            return Err(lost());
        }
        answer
    }

    fn on_hangup(&self, data: Result<Value, String>) {
        let id = data
            .ok()
            .and_then(|v| v.get("streamId").and_then(Value::as_str).map(str::to_owned));
        match id {
            Some(id) => {
                let id = StreamId::from_client(id);
                if self.inner.streams.hang_up(&id) {
                    tracing::debug!(stream = %id, "stream hung up by the consumer");
                }
            }
            None => tracing::info!("stream-hangup without a stream id"),
        }
    }
}

fn send_ack(ack: AckSender, answer: Result<Value, &MetadataError>) {
    let sent = match answer {
        Ok(value) => ack.send(&(Value::Null, value)),
        Err(error) => ack.send(&(error.to_wire(),)),
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "could not send the call's ack");
    }
}

fn on_connect(socket: SocketRef, service: MetadataService) {
    tracing::debug!(sid = %socket.id, protocol = ?socket.protocol(), "metadata client connected");
    let connection = CancellationToken::new();
    let stream_slots = Arc::new(Semaphore::new(service.inner.max_streams_per_client));
    {
        let service = service.clone();
        let connection = connection.clone();
        socket.on(
            "call",
            move |socket: SocketRef, TryData(data): TryData<(Value, Value)>, ack: AckSender| {
                let service = service.clone();
                let connection = connection.clone();
                let stream_slots = stream_slots.clone();
                async move {
                    let data = data.map_err(|error| error.to_string());
                    service
                        .on_call(socket, data, ack, connection, stream_slots)
                        .await;
                }
            },
        );
    }
    {
        let service = service.clone();
        socket.on("stream-hangup", move |TryData(data): TryData<Value>| {
            service.on_hangup(data.map_err(|error| error.to_string()));
            std::future::ready(())
        });
    }
    socket.on_fallback(|Event(event): Event, ack: AckSender| {
        let error = MetadataError::InvalidArgument(format!("unknown event {event:?}"));
        tracing::info!(%error, "refused event");
        send_ack(ack, Err(&error));
        std::future::ready(())
    });
    socket.on_disconnect(move || {
        // Stop every stream of this connection: nobody will ack them any more.
        connection.cancel();
        std::future::ready(())
    });
}

/// The socket.io service on an axum router: serve it on `--metadata-addr`.
pub fn router(service: MetadataService) -> axum::Router {
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_PAYLOAD)
        .ws_max_message_size(MAX_PAYLOAD as usize)
        .ws_max_frame_size(MAX_PAYLOAD as usize)
        .max_buffer_size(1024)
        .build_layer();
    // Socket.IO v4 (2.x) clients are always connected to `/` first; without a root namespace
    // socketioxide closes their connection.
    io.ns("/", |_socket: SocketRef| std::future::ready(()));
    io.ns(NAMESPACE, move |socket: SocketRef| {
        on_connect(socket, service.clone());
        std::future::ready(())
    });
    axum::Router::new().layer(layer)
}
