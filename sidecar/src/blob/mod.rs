//! The blob store: object data streamed into memcached as checksummed chunks and published by
//! a manifest written last.
//!
//! Memory per request is a few chunks, never the object size. Chunks are written with a finite
//! expiry and made permanent only once the manifest exists, so an upload that dies with the
//! process leaves nothing behind for long; one that fails while the process lives is cleaned up
//! at once.

mod chunk;
mod key;
mod manifest;

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use futures::{Stream, TryStreamExt};
use tokio::task::JoinSet;

use crate::items::{Expiry, ItemError, SharedItemStore};

pub use key::{BadBlobKey, BlobKey};
pub use manifest::Manifest;

/// How long unpublished chunks live: longer than any upload should take.
const PENDING_EXPIRY: Expiry = Expiry::After(Duration::from_secs(6 * 3600));
/// Chunk writes in flight per upload while the next chunk is received. Each holds only the
/// bytes of its own chunk (long body frames written to memcached as they came, without
/// copies), so two cost about one mebibyte per upload; measured against one, they raise a single
/// client's upload rate by a quarter or more.
const WRITE_AHEAD: usize = 2;
/// Chunk reads in flight per download, ahead of the one being sent.
const READ_AHEAD: usize = 2;
const DELETE_PARALLELISM: usize = 8;
/// Room a chunk item needs beyond its bytes: seal, item key, memcached's item header.
pub const CHUNK_ITEM_OVERHEAD: u64 = chunk::SEAL_LEN as u64 + 128;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such blob")]
    NotFound,
    #[error(transparent)]
    Items(#[from] ItemError),
    #[error("blob {key} is damaged: {reason}")]
    Corrupt { key: BlobKey, reason: String },
    #[error("upload body failed: {0}")]
    Body(String),
    #[error("upload announced {declared} bytes but sent {received}")]
    Length { declared: u64, received: u64 },
}

/// A byte stream of blob content; an error ends it early, never with wrong bytes.
pub type BlobStream = BoxStream<'static, Result<Bytes, BlobError>>;

#[derive(Clone)]
pub struct BlobStore {
    items: SharedItemStore,
    chunk_size: u64,
}

impl BlobStore {
    pub fn new(items: SharedItemStore, chunk_size: u64) -> BlobStore {
        BlobStore { items, chunk_size }
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Store `declared` bytes read from `body` under a new key.
    pub async fn put<S, E>(&self, body: S, declared: u64) -> Result<BlobKey, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        let key = BlobKey::random();
        let mut upload = Upload {
            store: self.clone(),
            key,
            started: 0,
            published: false,
        };
        let manifest = upload.receive(body, declared).await?;
        upload.publish(manifest).await?;
        Ok(key)
    }

    /// The manifest of a published blob.
    pub async fn stat(&self, key: &BlobKey) -> Result<Manifest, BlobError> {
        let bytes = self
            .items
            .get(&key.manifest_item())
            .await?
            .ok_or(BlobError::NotFound)?;
        Manifest::decode(&bytes).map_err(|error| BlobError::Corrupt {
            key: *key,
            reason: error.to_string(),
        })
    }

    /// The bytes of `range` (inclusive, within the blob) streamed chunk by chunk.
    pub fn read(&self, key: BlobKey, manifest: Manifest, range: RangeInclusive<u64>) -> BlobStream {
        if manifest.size == 0 || range.is_empty() {
            return stream::empty().boxed();
        }
        let (start, end) = (*range.start(), *range.end());
        let first = start / manifest.chunk_size;
        let last = end / manifest.chunk_size;
        let store = self.clone();
        stream::iter(first..=last)
            .map(move |index| {
                let store = store.clone();
                async move {
                    let data = store.read_chunk(key, &manifest, index).await?;
                    let chunk_start = index * manifest.chunk_size;
                    let from = start.saturating_sub(chunk_start) as usize;
                    let to = (end - chunk_start).min(manifest.chunk_len(index) - 1) as usize;
                    Ok(data.slice(from..=to))
                }
            })
            .buffered(READ_AHEAD)
            .boxed()
    }

    async fn read_chunk(
        &self,
        key: BlobKey,
        manifest: &Manifest,
        index: u64,
    ) -> Result<Bytes, BlobError> {
        let item = key.chunk_item(index);
        let corrupt = |reason: String| BlobError::Corrupt { key, reason };
        let sealed = self
            .items
            .get(&item)
            .await?
            .ok_or_else(|| corrupt(format!("chunk {index} is missing")))?;
        let data = chunk::open(&item, sealed)
            .ok_or_else(|| corrupt(format!("chunk {index} fails its checksum")))?;
        if data.len() as u64 != manifest.chunk_len(index) {
            return Err(corrupt(format!("chunk {index} has {} bytes", data.len())));
        }
        Ok(data)
    }

    /// Unpublish the blob, then free its chunks.
    pub async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        let manifest = match self.stat(key).await {
            Ok(manifest) => Some(manifest),
            // A damaged manifest still names a blob the client wants gone.
            Err(BlobError::Corrupt { .. }) => None,
            Err(error) => return Err(error),
        };
        if !self.items.delete(&key.manifest_item()).await? {
            return Err(BlobError::NotFound);
        }
        if let Some(manifest) = manifest {
            self.delete_chunks(*key, manifest.chunks).await?;
        }
        Ok(())
    }

    async fn delete_chunks(&self, key: BlobKey, count: u64) -> Result<(), ItemError> {
        let items = self.items.clone();
        stream::iter(0..count)
            .map(|index| {
                let items = items.clone();
                async move { items.delete(&key.chunk_item(index)).await.map(|_| ()) }
            })
            .buffer_unordered(DELETE_PARALLELISM)
            .try_collect::<()>()
            .await
    }
}

/// One upload in progress; dropping it before it is published (an error, or the client going
/// away and the request being cancelled) removes what it wrote.
struct Upload {
    store: BlobStore,
    key: BlobKey,
    /// Chunk writes started so far.
    started: u64,
    published: bool,
}

impl Upload {
    async fn receive<S, E>(&mut self, body: S, declared: u64) -> Result<Manifest, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        let chunk_size = self.store.chunk_size as usize;
        let mut body = std::pin::pin!(body);
        // The chunk being filled.
        let mut filling = ChunkBytes::default();
        let mut writes = JoinSet::new();
        let mut received = 0u64;
        while let Some(frame) = body.next().await {
            let mut frame = frame.map_err(|error| BlobError::Body(error.to_string()))?;
            received += frame.len() as u64;
            if received > declared {
                return Err(BlobError::Length { declared, received });
            }
            while !frame.is_empty() {
                let take = (chunk_size - filling.len).min(frame.len());
                filling.push(frame.split_to(take));
                if filling.len == chunk_size {
                    self.write_chunk(&mut writes, std::mem::take(&mut filling))
                        .await?;
                }
            }
        }
        if received != declared {
            return Err(BlobError::Length { declared, received });
        }
        if filling.len > 0 {
            self.write_chunk(&mut writes, filling).await?;
        }
        while let Some(done) = writes.join_next().await {
            flatten(done)?;
        }
        Ok(Manifest::new(declared, self.store.chunk_size))
    }

    /// Start writing the next chunk, after waiting for room among the writes in flight.
    async fn write_chunk(
        &mut self,
        writes: &mut JoinSet<Result<(), ItemError>>,
        bytes: ChunkBytes,
    ) -> Result<(), BlobError> {
        while writes.len() >= WRITE_AHEAD {
            if let Some(done) = writes.join_next().await {
                flatten(done)?;
            }
        }
        let item = self.key.chunk_item(self.started);
        self.started += 1;
        let items = self.store.items.clone();
        writes.spawn(async move {
            let sealed = chunk::seal(&item, bytes.into_parts());
            items.set_parts(&item, sealed, PENDING_EXPIRY).await
        });
        Ok(())
    }

    /// Write the manifest, then make the chunks permanent. The blob is acknowledged only after
    /// both, so a chunk that expired during a very slow upload fails the upload instead of
    /// publishing a damaged blob.
    async fn publish(&mut self, manifest: Manifest) -> Result<(), BlobError> {
        let items = &self.store.items;
        items
            .set(&self.key.manifest_item(), manifest.encode(), Expiry::Never)
            .await?;
        let key = self.key;
        let kept: Vec<bool> = stream::iter(0..manifest.chunks)
            .map(|index| async move { items.touch(&key.chunk_item(index), Expiry::Never).await })
            .buffer_unordered(DELETE_PARALLELISM)
            .try_collect()
            .await?;
        if kept.iter().any(|kept| !kept) {
            return Err(BlobError::Corrupt {
                key,
                reason: "a chunk expired before the upload finished".into(),
            });
        }
        self.published = true;
        Ok(())
    }
}

/// Body frames shorter than this are copied into the chunk instead of kept. A kept frame keeps
/// the whole read buffer it was cut from alive (hyper allocates a new one for its next read),
/// so a client sending small segments would otherwise make a chunk cost many times its size;
/// frames this long come from reads of a fast sender, whose buffers they nearly fill.
const KEEP_FRAMES_FROM: usize = 64 * 1024;

/// The bytes of one chunk as they arrived: long frames kept as they came, short ones copied
/// together; and how many bytes there are.
#[derive(Default)]
struct ChunkBytes {
    parts: Vec<Bytes>,
    /// Short frames copied one after the other, not yet in `parts`.
    copied: BytesMut,
    len: usize,
}

impl ChunkBytes {
    fn push(&mut self, part: Bytes) {
        self.len += part.len();
        if part.len() < KEEP_FRAMES_FROM {
            self.copied.extend_from_slice(&part);
        } else {
            self.end_copied();
            self.parts.push(part);
        }
    }

    fn end_copied(&mut self) {
        if !self.copied.is_empty() {
            self.parts.push(std::mem::take(&mut self.copied).freeze());
        }
    }

    /// The chunk's bytes, in order.
    fn into_parts(mut self) -> Vec<Bytes> {
        self.end_copied();
        self.parts
    }
}

fn flatten(done: Result<Result<(), ItemError>, tokio::task::JoinError>) -> Result<(), BlobError> {
    match done {
        Ok(result) => result.map_err(BlobError::from),
        Err(error) => Err(BlobError::Body(format!("chunk write task failed: {error}"))),
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let store = self.store.clone();
        let (key, started) = (self.key, self.started);
        // Chunk writes still in flight were aborted with their JoinSet; the pending expiry
        // covers any that landed after this cleanup.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.items.delete(&key.manifest_item()).await;
                if let Err(error) = store.delete_chunks(key, started).await {
                    tracing::warn!(blob = %key, %error, "could not remove the chunks of a failed upload; they expire");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_frames_are_copied_together_and_long_ones_kept_in_order() {
        let long = Bytes::from(vec![7u8; KEEP_FRAMES_FROM]);
        let mut parts = ChunkBytes::default();
        // A slow client: many short frames, none of which may keep its read buffer alive.
        for n in 0..1000u32 {
            parts.push(Bytes::from(vec![(n % 251) as u8; 100]));
        }
        parts.push(long.clone());
        parts.push(Bytes::from_static(b"tail"));
        assert_eq!(parts.len, 1000 * 100 + KEEP_FRAMES_FROM + 4);
        let out = parts.into_parts();
        assert_eq!(out.len(), 3, "copied, kept, copied");
        assert_eq!(out[0].len(), 100_000);
        assert_eq!(out[0][100 * 252], 1);
        // The long frame is the very buffer pushed, not a copy.
        assert_eq!(out[1].as_ptr(), long.as_ptr());
        assert_eq!(&out[2][..], b"tail");
    }
}
