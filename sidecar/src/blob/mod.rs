//! The blob store: object data in memcached. A blob that fits one item is written whole, as
//! one checksummed head item (one `set` stores and publishes it, one `get` reads it); a larger
//! one is streamed in as checksummed chunks and published by a manifest written last (see
//! [`head`] for the two formats of the head item).
//!
//! Memory per request is a few chunks, never the object size. Chunks are written with a finite
//! expiry and made permanent only once the manifest exists, so an upload that dies with the
//! process leaves nothing behind for long; one that fails while the process lives is cleaned up
//! at once.

mod chunk;
mod head;
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

pub use key::{BadBlobKey, BlobKey, Layout};
pub use manifest::Manifest;

use head::Head;

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
/// Room a chunk item needs beyond its bytes: seal, item key, memcached's item header. An
/// inline blob of up to a chunk's size fits the same room (see [`head::INLINE_OVERHEAD`]).
pub const CHUNK_ITEM_OVERHEAD: u64 = chunk::SEAL_LEN as u64 + 128;
// An inline head item's key (`b:` and 40 hex digits) is at least two bytes shorter than a
// chunk item's (`:<n>` more), which covers its larger header.
const _: () = assert!(2 + 40 + head::INLINE_OVERHEAD <= 2 + 40 + 2 + chunk::SEAL_LEN);

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

/// A published blob, as its head item describes it.
#[derive(Debug)]
pub enum Blob {
    /// Small enough for one item: its bytes came with the head item (checked).
    Inline(Bytes),
    /// In chunks; `first` is chunk 0's item (sealed, not yet checked) when it was read with
    /// the manifest.
    Chunked {
        manifest: Manifest,
        first: Option<Bytes>,
    },
}

impl Blob {
    pub fn size(&self) -> u64 {
        match self {
            Blob::Inline(bytes) => bytes.len() as u64,
            Blob::Chunked { manifest, .. } => manifest.size,
        }
    }

    /// How the blob is cut into items, which a restore repeats.
    pub fn shape(&self) -> Shape {
        match self {
            Blob::Inline(_) => Shape::Inline,
            Blob::Chunked { manifest, .. } => Shape::Chunked {
                chunk_size: manifest.chunk_size,
            },
        }
    }
}

/// How a blob's bytes are cut into items: whole in its head item, or in chunks of a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Inline,
    Chunked { chunk_size: u64 },
}

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

    /// Store `declared` bytes read from `body` under a new key: whole in one item when they
    /// fit a chunk, else in chunks.
    pub async fn put<S, E>(&self, body: S, declared: u64) -> Result<BlobKey, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        let layout = if declared <= self.chunk_size {
            Layout::Inline
        } else {
            Layout::Chunked
        };
        let key = BlobKey::random(layout);
        self.write(key, layout, body, declared).await?;
        Ok(key)
    }

    /// Store a blob under the key it had in another store, cut as it was there (a restore:
    /// CloudServer's metadata names blobs by key, so a restored blob must keep its key). A
    /// blob of that key already here is replaced.
    pub async fn restore<S, E>(
        &self,
        key: BlobKey,
        shape: Shape,
        body: S,
        declared: u64,
    ) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        match shape {
            Shape::Inline => self.write(key, Layout::Inline, body, declared).await,
            Shape::Chunked { chunk_size } => {
                let store = BlobStore::new(self.items.clone(), chunk_size.max(1));
                store.write(key, Layout::Chunked, body, declared).await
            }
        }
    }

    async fn write<S, E>(
        &self,
        key: BlobKey,
        layout: Layout,
        body: S,
        declared: u64,
    ) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        let mut upload = Upload {
            store: self.clone(),
            key,
            started: 0,
            published: false,
        };
        match layout {
            Layout::Inline => upload.put_inline(body, declared).await,
            Layout::Chunked => {
                let manifest = upload.receive(body, declared).await?;
                upload.publish(manifest).await
            }
        }
    }

    fn decode_head(&self, key: &BlobKey, bytes: Bytes) -> Result<Head, BlobError> {
        head::decode(&key.head_item(), bytes).map_err(|error| BlobError::Corrupt {
            key: *key,
            reason: error.to_string(),
        })
    }

    /// A published blob, ready to [`BlobStore::read`]. `first_byte` is the first byte the
    /// caller will read when it knows it before the size: a blob in chunks whose key says so
    /// then has its manifest and first chunk asked for in one round trip, when that chunk holds
    /// the byte.
    pub async fn open(&self, key: &BlobKey, first_byte: Option<u64>) -> Result<Blob, BlobError> {
        let head_item = key.head_item();
        let prefetch = key.layout() == Layout::Chunked
            && first_byte.is_some_and(|first| first < self.chunk_size);
        let (head, first) = if prefetch {
            let mut found = self
                .items
                .get_many(&[head_item, key.chunk_item(0)])
                .await?
                .into_iter();
            (found.next().flatten(), found.next().flatten())
        } else {
            (self.items.get(&head_item).await?, None)
        };
        match self.decode_head(key, head.ok_or(BlobError::NotFound)?)? {
            Head::Inline(bytes) => Ok(Blob::Inline(bytes)),
            Head::Chunked(manifest) => Ok(Blob::Chunked { manifest, first }),
        }
    }

    /// The bytes of `range` (inclusive, within the blob) streamed chunk by chunk.
    pub fn read(&self, key: BlobKey, blob: Blob, range: RangeInclusive<u64>) -> BlobStream {
        if blob.size() == 0 || range.is_empty() {
            return stream::empty().boxed();
        }
        let (start, end) = (*range.start(), *range.end());
        let (manifest, mut first) = match blob {
            Blob::Inline(bytes) => {
                // `start <= end`, as the range is not empty.
                let piece = usize::try_from(end)
                    .ok()
                    .filter(|end| *end < bytes.len())
                    .map(|end| bytes.slice(start as usize..=end));
                return stream::once(async move {
                    piece.ok_or_else(|| BlobError::Corrupt {
                        key,
                        reason: "range beyond a small blob".into(),
                    })
                })
                .boxed();
            }
            Blob::Chunked { manifest, first } => (manifest, first),
        };
        let first_index = start / manifest.chunk_size;
        let last = end / manifest.chunk_size;
        // The prefetched chunk 0 serves only a read that starts there.
        if first_index != 0 {
            first = None;
        }
        let store = self.clone();
        stream::iter(first_index..=last)
            .map(move |index| {
                let store = store.clone();
                let prefetched = if index == 0 { first.take() } else { None };
                async move {
                    let data = store.read_chunk(key, &manifest, index, prefetched).await?;
                    let chunk_start = index * manifest.chunk_size;
                    let from = start.saturating_sub(chunk_start) as usize;
                    let to = (end - chunk_start).min(manifest.chunk_len(index) - 1) as usize;
                    Ok(data.slice(from..=to))
                }
            })
            .buffered(READ_AHEAD)
            .boxed()
    }

    /// Chunk `index`, from `prefetched` when it was read already, checked against its seal
    /// and the manifest.
    async fn read_chunk(
        &self,
        key: BlobKey,
        manifest: &Manifest,
        index: u64,
        prefetched: Option<Bytes>,
    ) -> Result<Bytes, BlobError> {
        let item = key.chunk_item(index);
        let corrupt = |reason: String| BlobError::Corrupt { key, reason };
        let sealed = match prefetched {
            Some(sealed) => sealed,
            None => self
                .items
                .get(&item)
                .await?
                .ok_or_else(|| corrupt(format!("chunk {index} is missing")))?,
        };
        let data = chunk::open(&item, sealed)
            .ok_or_else(|| corrupt(format!("chunk {index} fails its checksum")))?;
        if data.len() as u64 != manifest.chunk_len(index) {
            return Err(corrupt(format!("chunk {index} has {} bytes", data.len())));
        }
        Ok(data)
    }

    /// Unpublish the blob, then free its chunks.
    pub async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        let head_item = key.head_item();
        let head = self
            .items
            .get(&head_item)
            .await?
            .ok_or(BlobError::NotFound)?;
        let chunks = match self.decode_head(key, head) {
            Ok(Head::Chunked(manifest)) => manifest.chunks,
            Ok(Head::Inline(_)) => 0,
            // A damaged head item still names a blob the client wants gone.
            Err(_) => 0,
        };
        if !self.items.delete(&head_item).await? {
            return Err(BlobError::NotFound);
        }
        self.delete_chunks(*key, chunks).await?;
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
    /// Receive a body that fits one item, then write it as the blob's head item: that one
    /// `set` stores and publishes the blob.
    async fn put_inline<S, E>(&mut self, body: S, declared: u64) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        let mut body = std::pin::pin!(body);
        let mut bytes = ChunkBytes::default();
        let mut received = 0u64;
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|error| BlobError::Body(error.to_string()))?;
            received += frame.len() as u64;
            if received > declared {
                return Err(BlobError::Length { declared, received });
            }
            bytes.push(frame);
        }
        if received != declared {
            return Err(BlobError::Length { declared, received });
        }
        let item = self.key.head_item();
        let sealed = head::seal_inline(&item, bytes.into_parts());
        self.store
            .items
            .set_parts(&item, sealed, Expiry::Never)
            .await?;
        self.published = true;
        Ok(())
    }

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

    /// Write the manifest, then make the chunks permanent (one pipelined batch of touches per
    /// server). The blob is acknowledged only after both, so a chunk that expired during a very
    /// slow upload fails the upload instead of publishing a damaged blob.
    async fn publish(&mut self, manifest: Manifest) -> Result<(), BlobError> {
        let items = &self.store.items;
        items
            .set(&self.key.head_item(), manifest.encode(), Expiry::Never)
            .await?;
        let key = self.key;
        let chunks: Vec<_> = (0..manifest.chunks)
            .map(|index| key.chunk_item(index))
            .collect();
        let kept = items.touch_many(&chunks, Expiry::Never).await?;
        if kept.len() != chunks.len() || kept.iter().any(|kept| !kept) {
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
                let _ = store.items.delete(&key.head_item()).await;
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
