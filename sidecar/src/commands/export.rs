//! `zenko-memcached-sidecar export`: every metadata database (each read from one snapshot, as a
//! listing reads it), the catalog, the deployment id and every published blob of a store, into
//! one checksummed file (see `transfer::format`), at a bounded rate, next to serving sidecars.
//!
//! Metadata is read first, blobs after: CloudServer writes an object's data before its
//! metadata, so every blob the metadata snapshot names already exists when blobs are listed;
//! only a blob deleted meanwhile (an object overwritten or deleted during the export) is left
//! out.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use indicatif::{BinaryBytes, HumanCount};

use super::store;
use crate::blob::{Blob, BlobError, BlobKey, BlobStore};
use crate::config::ExportArgs;
use crate::items::{ItemKey, SharedItemStore};
use crate::metadata::uuid::UUID_ITEM;
use crate::ordered::{KeyRange, MemcachedOrderedStore, OrderedError, OrderedStore, TreeConfig};
use crate::placement;
use crate::transfer::format::{BlobHead, Ended, FORMAT, RECORD_TARGET, Writer};
use crate::transfer::{Header, Pace, Progress, Rate, Record, Source, Totals};

/// Walks of a database whose snapshot is reclaimed under the export (a long walk at a low
/// rate next to busy writers); walks after the first are not slowed by `--rate`.
const SNAPSHOT_ATTEMPTS: usize = 3;
/// Listings of the servers' keys: memcached's crawler can miss an item moving between its
/// LRUs, so the keys are listed again until a listing finds no blob not seen before.
const BLOB_PASSES: usize = 4;
/// Blob head items read ahead of the one being written (small blobs come whole with them).
const OPEN_AHEAD: usize = 16;

/// Where the export goes.
enum Sink {
    Stdout(io::Stdout),
    File(File),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(out) => out.write(buf),
            Sink::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.flush(),
        }
    }
}

/// Why a database walk stopped.
enum Stop {
    /// Its snapshot was reclaimed: walk it again.
    Snapshot,
    Failed(String),
}

/// The state of one export.
struct Export {
    items: SharedItemStore,
    writer: Writer<BufWriter<Sink>>,
    pace: Pace,
    progress: Progress,
    /// Blobs listed but gone when read (deleted during the export).
    gone: u64,
    destination: String,
}

fn write_failed(destination: &str) -> impl Fn(io::Error) -> String + '_ {
    move |error| format!("cannot write {destination}: {error}")
}

/// The published blobs each server lists (by their head items), with their CAS values.
type Listing = Vec<Vec<(BlobKey, u64)>>;

async fn list_blobs(servers: &[String]) -> Result<Listing, String> {
    let mut listing = Vec::with_capacity(servers.len());
    for server in servers {
        let items = placement::dump(server)
            .await
            .map_err(|error| format!("cannot list the keys of {server}: {error}"))?;
        listing.push(
            items
                .into_iter()
                .filter_map(|item| Some((blob_head(&item.key)?, item.cas)))
                .collect(),
        );
    }
    Ok(listing)
}

/// The blob whose head item (manifest or whole small blob) `key` is.
pub(super) fn blob_head(key: &ItemKey) -> Option<BlobKey> {
    key.as_str().strip_prefix("b:")?.parse().ok()
}

/// Run the export; the one-line summary. No placement change runs meanwhile (the lease).
pub async fn export(args: &ExportArgs) -> Result<String, String> {
    let servers = &args.servers.memcached;
    crate::placement::exclusively(servers, "export", export_alone(args)).await
}

async fn export_alone(args: &ExportArgs) -> Result<String, String> {
    let servers = &args.servers.memcached;
    let opened = store::open(servers).await?;
    let source = match &opened.placement {
        Some(recorded) if recorded.change.is_some() => {
            return Err(
                "a placement change is under way (an earlier one stopped part way): finish it \
                 first (placement change with the same arguments), then export"
                    .into(),
            );
        }
        Some(recorded) => {
            if !store::same_servers(recorded, servers) {
                return Err(format!(
                    "the store records the servers {} and --memcached lists {}: give the \
                     recorded list (keys are read where the recorded placement puts them)",
                    recorded
                        .servers
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(","),
                    servers.join(",")
                ));
            }
            Source {
                servers: recorded.servers.iter().cloned().collect(),
                replication_factor: recorded.replication_factor,
                placement_recorded: true,
            }
        }
        None => Source {
            servers: servers.clone(),
            replication_factor: 1,
            placement_recorded: false,
        },
    };
    let items = opened.items;
    let deployment_id = match items.get(&item_key(UUID_ITEM)?).await {
        Ok(None) => None,
        Ok(Some(bytes)) => Some(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| "the store's deployment id is not UTF-8".to_owned())?,
        ),
        Err(error) => return Err(store::unreachable(servers)(error)),
    };
    // What memcached holds, once: the progress's estimate of what there is to read.
    let estimate = items
        .stats()
        .await
        .map(|stats| stats.used_bytes / u64::from(source.replication_factor.max(1)))
        .ok();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let directory = args.out.is_dir().then(|| args.out.clone());
    let target = match &directory {
        Some(dir) => dir.join(format!(
            "{EXPORT_PREFIX}{}{EXPORT_SUFFIX}",
            rfc3339(now).replace(['-', ':'], "")
        )),
        None if args.keep.is_some() => {
            return Err("--keep needs --out to be a directory".into());
        }
        None => args.out.clone(),
    };
    let (sink, destination, partial) = open_sink(&target)?;
    let started = Instant::now();
    let mut writer =
        Writer::new(BufWriter::with_capacity(4 << 20, sink)).map_err(write_failed(&destination))?;
    writer
        .write(&Record::Header(Header {
            format: FORMAT,
            taken_at: rfc3339(now),
            taken_at_unix: now,
            tool: format!("zenko-memcached-sidecar {}", env!("CARGO_PKG_VERSION")),
            source,
            deployment_id,
        }))
        .map_err(write_failed(&destination))?;
    let mut export = Export {
        items,
        writer,
        pace: Pace::new(args.rate),
        progress: Progress::new("export", args.progress, estimate),
        gone: 0,
        destination,
    };
    let result = async {
        let first = list_blobs(servers).await?;
        export.databases().await?;
        export.blobs(servers, first).await
    }
    .await;
    export.progress.finish();
    let finished = result.and_then(|()| {
        let destination = export.destination.clone();
        let (out, totals) = export.writer.finish().map_err(write_failed(&destination))?;
        let sink = out
            .into_inner()
            .map_err(|error| write_failed(&destination)(error.into_error()))?;
        if let (Sink::File(file), Some(partial)) = (&sink, &partial) {
            file.sync_all().map_err(write_failed(&destination))?;
            std::fs::rename(partial, &target).map_err(write_failed(&destination))?;
        }
        Ok(totals)
    });
    let totals = match finished {
        Ok(totals) => totals,
        Err(error) => {
            // A cut-short file is refused by import anyway; leave nothing that looks usable.
            if let Some(partial) = &partial {
                let _ = std::fs::remove_file(partial);
            }
            return Err(error);
        }
    };
    let mut line = summary(&totals, export.gone, started, &export.destination);
    if let (Some(dir), Some(keep)) = (&directory, args.keep) {
        let removed = prune(dir, keep as usize)?;
        if removed > 0 {
            line.push_str(&format!("; {removed} older exports removed"));
        }
    }
    Ok(line)
}

/// Names of the files an export writes into a directory: they sort by the time they name.
const EXPORT_PREFIX: &str = "zmm-export-";
const EXPORT_SUFFIX: &str = ".zmm";

/// Delete all but the newest `keep` exports in `dir`; how many were deleted.
fn prune(dir: &Path, keep: usize) -> Result<usize, String> {
    let failed =
        |error: io::Error| format!("cannot remove older exports in {}: {error}", dir.display());
    let mut exports: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(failed)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with(EXPORT_PREFIX) && name.ends_with(EXPORT_SUFFIX)
                })
        })
        .collect();
    exports.sort();
    let old = exports.len().saturating_sub(keep);
    for path in &exports[..old] {
        std::fs::remove_file(path).map_err(failed)?;
    }
    Ok(old)
}

fn summary(totals: &Totals, gone: u64, started: Instant, destination: &str) -> String {
    let seconds = started.elapsed().as_secs_f64();
    let moved = totals.blob_bytes;
    let mut line = format!(
        "exported {} databases ({} keys) and {} blobs ({}) to {destination} in {seconds:.1} s \
         ({}/s of blob data)",
        totals.databases,
        HumanCount(totals.keys),
        HumanCount(totals.blobs),
        BinaryBytes(moved),
        BinaryBytes((moved as f64 / seconds.max(0.001)) as u64),
    );
    if gone > 0 {
        line.push_str(&format!(
            "; {gone} blobs deleted during the export left out"
        ));
    }
    line
}

/// The export's sink, the name to report it by, and the partial file renamed at the end.
fn open_sink(out: &Path) -> Result<(Sink, String, Option<PathBuf>), String> {
    if out.as_os_str() == "-" {
        return Ok((
            Sink::Stdout(io::stdout()),
            "standard output".to_owned(),
            None,
        ));
    }
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial)
        .map_err(|error| format!("cannot create {}: {error}", partial.display()))?;
    Ok((Sink::File(file), out.display().to_string(), Some(partial)))
}

fn item_key(name: &str) -> Result<ItemKey, String> {
    ItemKey::new(name).map_err(|error| error.to_string())
}

impl Export {
    fn write(&mut self, record: &Record) -> Result<(), String> {
        self.writer
            .write(record)
            .map_err(write_failed(&self.destination))
    }

    async fn databases(&mut self) -> Result<(), String> {
        let ordered = MemcachedOrderedStore::open(self.items.clone(), TreeConfig::default())
            .await
            .map_err(|error| format!("cannot open the metadata store: {error}"))?;
        let databases = ordered
            .databases()
            .await
            .map_err(|error| format!("cannot read the catalog: {error}"))?;
        self.write(&Record::Catalog(databases.clone()))?;
        for db in &databases {
            for attempt in 1..=SNAPSHOT_ATTEMPTS {
                self.write(&Record::DatabaseStart(db.clone()))?;
                match self.database(&ordered, db, attempt == 1).await {
                    Ok(()) => {
                        self.write(&Record::DatabaseEnd(Ended::Complete))?;
                        break;
                    }
                    Err(Stop::Snapshot) if attempt < SNAPSHOT_ATTEMPTS => {
                        self.write(&Record::DatabaseEnd(Ended::Abandoned))?;
                    }
                    Err(Stop::Snapshot) => {
                        return Err(format!(
                            "database {db} changed faster than it could be read \
                             {SNAPSHOT_ATTEMPTS} times: raise the sidecars' --scan-grace-secs \
                             or --rate"
                        ));
                    }
                    Err(Stop::Failed(error)) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Every key of `db` from one snapshot: a scan, which registers as a listing so that
    /// commits keep the pages it still has to read.
    async fn database(
        &mut self,
        ordered: &MemcachedOrderedStore,
        db: &crate::ordered::Sublevel,
        paced: bool,
    ) -> Result<(), Stop> {
        let failed = |error: OrderedError| match error {
            OrderedError::SnapshotExpired(_) => Stop::Snapshot,
            error => Stop::Failed(format!("cannot read database {db}: {error}")),
        };
        let mut scan = ordered
            .scan(db, KeyRange::all(), false)
            .await
            .map_err(failed)?;
        let mut unpaced = Pace::new(Rate::Unlimited);
        let mut entries = Vec::new();
        let mut bytes = 0;
        loop {
            let next = scan.try_next().await.map_err(failed)?;
            let end = next.is_none();
            if let Some((key, value)) = next {
                bytes += key.len() + value.len();
                entries.push((key, value));
            }
            if (end && !entries.is_empty()) || bytes >= RECORD_TARGET {
                let count = entries.len() as u64;
                self.write(&Record::Entries(std::mem::take(&mut entries)))
                    .map_err(Stop::Failed)?;
                let pace = if paced { &mut self.pace } else { &mut unpaced };
                pace.moved(bytes as u64).await;
                self.progress.add(bytes as u64, count);
                bytes = 0;
            }
            if end {
                return Ok(());
            }
        }
    }

    /// Every blob published when the export started, found in the servers' key listings:
    /// the first listing's (taken at the start), then those that later listings find with a
    /// CAS value no newer than the first listing's newest on their server (missed by it,
    /// since memcached's crawler can miss an item moving between its LRUs), until a listing
    /// finds none. Blobs written after the start are not chased, so an export ends under
    /// any write load.
    async fn blobs(&mut self, servers: &[String], first: Listing) -> Result<(), String> {
        let marks: Vec<u64> = first
            .iter()
            .map(|blobs| {
                blobs
                    .iter()
                    .map(|(_, cas)| *cas)
                    .filter(|cas| *cas != u64::MAX)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut seen = HashSet::new();
        let mut listing = Some(first);
        for pass in 0..BLOB_PASSES {
            let listed = match listing.take() {
                Some(listed) => listed,
                None => list_blobs(servers).await?,
            };
            let fresh: Vec<BlobKey> = listed
                .iter()
                .zip(&marks)
                .flat_map(|(blobs, mark)| {
                    blobs
                        .iter()
                        .filter(move |(_, cas)| pass == 0 || cas <= mark)
                        .map(|(key, _)| *key)
                })
                .filter(|key| seen.insert(*key))
                .collect();
            if fresh.is_empty() && pass > 0 {
                break;
            }
            self.blob_batch(fresh).await?;
        }
        Ok(())
    }

    async fn blob_batch(&mut self, keys: Vec<BlobKey>) -> Result<(), String> {
        // The chunk size only matters to writes and prefetches: reads follow each manifest.
        let blobs = BlobStore::new(self.items.clone(), 1);
        let mut opened = stream::iter(keys)
            .map(|key| {
                let blobs = blobs.clone();
                async move { (key, blobs.open(&key, None).await) }
            })
            .buffered(OPEN_AHEAD);
        while let Some((key, opened)) = opened.next().await {
            let blob = match opened {
                Ok(blob) => blob,
                Err(BlobError::NotFound) => {
                    self.gone += 1;
                    continue;
                }
                Err(error) => return Err(format!("cannot read blob {key}: {error}")),
            };
            self.blob(&blobs, key, blob).await?;
        }
        Ok(())
    }

    async fn blob(&mut self, blobs: &BlobStore, key: BlobKey, blob: Blob) -> Result<(), String> {
        let size = blob.size();
        self.write(&Record::BlobStart(BlobHead {
            key,
            shape: blob.shape(),
            size,
        }))?;
        let mut content = match blob {
            Blob::Inline(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
            blob if size > 0 => blobs.read(key, blob, 0..=size - 1),
            _ => stream::empty().boxed(),
        };
        let mut items = 1;
        loop {
            match content.next().await {
                None => break,
                Some(Ok(bytes)) => self.blob_data(bytes, std::mem::take(&mut items)).await?,
                Some(Err(error)) => {
                    // A chunk gone because the blob was deleted meanwhile: leave it out.
                    let head = self
                        .items
                        .get(&key.head_item())
                        .await
                        .map_err(|e| format!("cannot read blob {key}: {e}"))?;
                    if head.is_some() {
                        return Err(format!("cannot read blob {key}: {error}"));
                    }
                    self.gone += 1;
                    return self.write(&Record::BlobEnd(Ended::Abandoned));
                }
            }
        }
        self.progress.add(0, items);
        self.write(&Record::BlobEnd(Ended::Complete))
    }

    async fn blob_data(&mut self, mut bytes: Bytes, items: u64) -> Result<(), String> {
        let len = bytes.len() as u64;
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(RECORD_TARGET));
            self.write(&Record::BlobData(piece))?;
        }
        self.pace.moved(len).await;
        self.progress.add(len, items);
        Ok(())
    }
}

/// `secs` since the Unix epoch as RFC 3339 UTC (days to civil date: H. Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_637_599), "2026-12-07T09:59:59Z");
    }
}
