//! The sio-stream producer: a listing sent as `stream-data` events with flow control
//! (4 unacknowledged at most, 5 s per ack), ended by `stream-end`, stopped by `stream-hangup`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use socketioxide::extract::SocketRef;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::errors::{MetadataError, MetadataResult};

/// At most this many `stream-data` events wait for their ack.
pub const MAX_PENDING_ACKS: usize = 4;
/// Each `stream-data` must be acknowledged within this delay.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Batching bounds of one `stream-data` (any batch size is acceptable to the consumer).
const MAX_BATCH_ITEMS: usize = 256;
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The id of one stream: a random UUID v4, as the reference uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamId(String);

impl StreamId {
    pub fn random() -> StreamId {
        StreamId(random_uuid_v4())
    }

    pub fn from_client(id: String) -> StreamId {
        StreamId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UUID v4 in its canonical text form.
pub fn random_uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The result object that stands for a readable stream in a call's answer.
pub fn marker(id: &StreamId) -> Value {
    json!({"$streamId": id.as_str(), "readable": true, "writable": false})
}

/// The streams in progress, so that a `stream-hangup` can stop its producer.
#[derive(Default)]
pub struct StreamRegistry {
    streams: Mutex<HashMap<StreamId, CancellationToken>>,
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, CancellationToken>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, id: StreamId, parent: &CancellationToken) -> CancellationToken {
        let token = parent.child_token();
        self.lock().insert(id, token.clone());
        token
    }

    /// Stop a stream; `false` when it is unknown (already ended, or never existed).
    pub fn hang_up(&self, id: &StreamId) -> bool {
        match self.lock().remove(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn forget(&self, id: &StreamId) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Items of a listing, already in their wire shape.
pub type ItemStream = BoxStream<'static, MetadataResult<Value>>;

fn emit_error(socket: &SocketRef, id: &StreamId, error: &MetadataError) {
    let payload = json!({"streamId": id.as_str(), "error": error.to_wire()});
    if let Err(send_error) = socket.emit("stream-error", &payload) {
        tracing::debug!(stream = %id, %send_error, "could not send stream-error");
    }
}

/// Send `items` on `socket` as stream `id`. Must be started after the call's ack was queued:
/// the consumer only knows the stream once it has processed that ack.
pub async fn produce(
    socket: SocketRef,
    id: StreamId,
    mut items: ItemStream,
    cancel: CancellationToken,
    registry: Arc<StreamRegistry>,
) {
    let window = Arc::new(Semaphore::new(MAX_PENDING_ACKS));
    let mut sent = 0usize;
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            permit = window.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            item = items.next() => item,
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut finished = false;
        let mut failure = None;
        let mut next = first;
        loop {
            match next {
                None => {
                    finished = true;
                    break;
                }
                Some(Err(error)) => {
                    failure = Some(error);
                    break;
                }
                Some(Ok(item)) => {
                    bytes += approximate_size(&item);
                    batch.push(item);
                }
            }
            if batch.len() >= MAX_BATCH_ITEMS || bytes >= MAX_BATCH_BYTES {
                break;
            }
            // Take what is ready now; do not wait to fill a batch.
            match items.next().now_or_never() {
                Some(item) => next = item,
                None => break,
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        if !batch.is_empty() {
            sent += batch.len();
            let payload = json!({"streamId": id.as_str(), "data": batch});
            match socket.emit_with_ack::<_, Value>("stream-data", &payload) {
                Ok(ack) => {
                    let (cancel, socket, id) = (cancel.clone(), socket.clone(), id.clone());
                    tokio::spawn(async move {
                        let acked = tokio::time::timeout(ACK_TIMEOUT, ack).await;
                        match acked {
                            Ok(Ok(_)) => drop(permit),
                            _ if cancel.is_cancelled() => {
                                tracing::debug!(stream = %id, "no ack after hangup");
                            }
                            _ => {
                                tracing::info!(stream = %id, "stream-data not acknowledged in time");
                                let error = MetadataError::Internal(format!(
                                    "stream timeout: did not receive ack after {}ms",
                                    ACK_TIMEOUT.as_millis()
                                ));
                                emit_error(&socket, &id, &error);
                                cancel.cancel();
                            }
                        }
                    });
                }
                Err(error) => {
                    tracing::debug!(stream = %id, %error, "socket gone, stream stopped");
                    cancel.cancel();
                    break;
                }
            }
        } else {
            drop(permit);
        }
        if let Some(error) = failure {
            tracing::warn!(stream = %id, %error, "listing failed");
            emit_error(&socket, &id, &error);
            break;
        }
        if finished {
            let payload = json!({"streamId": id.as_str()});
            // The consumer acks stream-end; nothing depends on that ack.
            if let Err(error) = socket.emit_with_ack::<_, Value>("stream-end", &payload) {
                tracing::debug!(stream = %id, %error, "could not send stream-end");
            }
            tracing::debug!(stream = %id, items = sent, "stream ended");
            break;
        }
    }
    registry.forget(&id);
}

fn approximate_size(item: &Value) -> usize {
    match item {
        Value::String(s) => s.len(),
        Value::Object(map) => map.values().map(|v| v.as_str().map_or(8, str::len)).sum(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, random_uuid_v4());
    }

    #[test]
    fn marker_shape() {
        let id = StreamId::from_client("x".into());
        assert_eq!(
            marker(&id),
            json!({"$streamId": "x", "readable": true, "writable": false})
        );
    }

    #[test]
    fn hangup_cancels_a_registered_stream_once() {
        let registry = StreamRegistry::default();
        let parent = CancellationToken::new();
        let id = StreamId::random();
        let token = registry.register(id.clone(), &parent);
        assert!(registry.hang_up(&id));
        assert!(token.is_cancelled());
        assert!(!registry.hang_up(&id));
        assert!(registry.is_empty());
    }
}
