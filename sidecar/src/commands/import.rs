//! `zenko-memcached-sidecar import`: an export file written back into a store. The file is read
//! twice: once whole to verify it (every checksum, its structure, its trailer), so that a
//! damaged file is refused before anything is written; then to write it. Databases are rebuilt
//! through the ordered store's own write path (batches, so every page, root record and catalog
//! entry is the store's own), blobs through the blob store under the keys they had.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use indicatif::{BinaryBytes, HumanCount};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::export::blob_head;
use super::store;
use crate::blob::BlobStore;
use crate::config::{Force, ImportArgs};
use crate::health::Health;
use crate::items::{Expiry, ItemKey, SharedItemStore};
use crate::metadata::uuid::UUID_ITEM;
use crate::ordered::{Batch, MemcachedOrderedStore, OrderedStore, Sublevel, TreeConfig};
use crate::placement::{self, Verdict};
use crate::transfer::format::{self, Reader};
use crate::transfer::{Contents, Pace, Progress, ProgressMode, Record};

/// Writes (metadata batches, blobs) in flight at once.
const IN_FLIGHT: usize = 8;
/// Blob data records queued for a blob's writer.
const BLOB_QUEUE: usize = 4;

/// Run the import; the one-line summary. No placement change runs meanwhile (the lease).
pub async fn import(args: &ImportArgs) -> Result<String, String> {
    let servers = &args.servers.memcached;
    crate::placement::exclusively(servers, "import", import_alone(args)).await
}

async fn import_alone(args: &ImportArgs) -> Result<String, String> {
    let path = &args.input;
    if path.as_os_str() == "-" {
        return Err(
            "import reads its file twice (to verify it whole before writing anything, \
                    then to write it): give a file, not standard input"
                .into(),
        );
    }
    let started = Instant::now();
    let contents = verify(path, args.progress)?;
    let servers = &args.servers.memcached;
    let recorded = placement::recorded(servers)
        .await
        .map_err(store::unreachable(servers))?;
    let factor = match (args.replication_factor, &recorded) {
        (Some(wanted), Some(recorded)) if wanted != recorded.replication_factor => {
            return Err(format!(
                "the store is written with replication factor {}, not {wanted}: leave out \
                 --replication-factor, or import into an empty store",
                recorded.replication_factor
            ));
        }
        (Some(wanted), _) => wanted,
        (None, Some(recorded)) => recorded.replication_factor,
        (None, None) => 1,
    };
    if factor as usize > servers.len() {
        return Err(format!(
            "replication factor {factor} needs at least {factor} servers, and --memcached lists \
             {}",
            servers.len()
        ));
    }
    if recorded
        .as_ref()
        .is_some_and(|recorded| recorded.change.is_some())
    {
        return Err(
            "a placement change is under way (an earlier one stopped part way): finish it \
             first (placement change with the same arguments), then import"
                .into(),
        );
    }
    let items = match &recorded {
        Some(_) => store::open(servers).await?.items,
        // A fresh store is versioned, as a sidecar's first start makes it.
        None => store::open_versioned(servers, factor).await?,
    };
    let ordered = MemcachedOrderedStore::open(items.clone(), TreeConfig::default())
        .await
        .map_err(|error| format!("cannot open the metadata store: {error}"))?;
    let existing = ordered
        .databases()
        .await
        .map_err(|error| format!("cannot read the store's catalog: {error}"))?;
    let held = holdings(&items, &existing, servers).await?;
    match args.force {
        None if held.is_empty() => {}
        // What overwrite means is the write pass's own: every item of the export is set
        // over what is there, nothing else is touched.
        Some(Force::Overwrite) => {}
        None => {
            return Err(format!(
                "the store at {} already holds data ({}): import into an empty store, or give \
             --force overwrite to write the export over it",
                servers.join(","),
                held.join("; ")
            ));
        }
    }
    // The placement and epoch a sidecar's first start would write, so that the sidecars
    // serving the store afterwards find it theirs.
    match &recorded {
        // One server by another name (see `store::same_servers`): its record stays.
        Some(recorded) if store::same_servers(recorded, servers) && servers.len() == 1 => {}
        _ => match placement::establish(servers, factor)
            .await
            .map_err(store::unreachable(servers))?
        {
            Verdict::Agreed(_) => {}
            Verdict::Refused(why) => return Err(why),
        },
    }
    Health::default()
        .establish_epoch(&items)
        .await
        .map_err(store::unreachable(servers))?;

    let mut import = Import {
        items: items.clone(),
        ordered,
        existing: existing.into_iter().collect(),
        tasks: JoinSet::new(),
        pace: Pace::new(args.rate),
        progress: Progress::new("import", args.progress, Some(file_len(path)?)),
    };
    let written = import.write(path, &contents).await;
    import.progress.finish();
    written.map_err(|error| {
        format!("{error}; the store holds part of the export: import again with --force overwrite")
    })?;
    if let Some(id) = &contents.header.deployment_id {
        items
            .set(
                &ItemKey::new(UUID_ITEM).map_err(|error| error.to_string())?,
                Bytes::from(id.clone()),
                Expiry::Never,
            )
            .await
            .map_err(store::unreachable(servers))?;
    }
    Ok(summary(&contents, started, servers, factor))
}

fn summary(contents: &Contents, started: Instant, servers: &[String], factor: u32) -> String {
    let seconds = started.elapsed().as_secs_f64();
    let totals = &contents.totals;
    let header = &contents.header;
    format!(
        "imported {} databases ({} keys) and {} blobs ({}) into {} (replication factor \
         {factor}) in {seconds:.1} s ({}/s of blob data); export taken {} from {} (replication \
         factor {}), deployment id {}",
        totals.databases,
        HumanCount(totals.keys),
        HumanCount(totals.blobs),
        BinaryBytes(totals.blob_bytes),
        servers.join(","),
        BinaryBytes((totals.blob_bytes as f64 / seconds.max(0.001)) as u64),
        header.taken_at,
        header.source.servers.join(","),
        header.source.replication_factor,
        header.deployment_id.as_deref().unwrap_or("(none)"),
    )
}

fn file_len(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|meta| meta.len())
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn open(path: &Path) -> Result<Reader<BufReader<File>>, String> {
    let file =
        File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    Reader::new(BufReader::with_capacity(4 << 20, file))
        .map_err(|error| format!("{} is refused: {error}", path.display()))
}

/// The first pass: the whole file, checked.
fn verify(path: &Path, mode: ProgressMode) -> Result<Contents, String> {
    let file =
        File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let mut progress = Progress::new("verify", mode, Some(file_len(path)?));
    let mut seen = 0;
    let verified = format::verify(BufReader::with_capacity(4 << 20, file), |offset| {
        progress.add(offset - seen, 0);
        seen = offset;
    });
    progress.finish();
    verified.map_err(|error| {
        format!(
            "{} is refused, nothing was written: {error}",
            path.display()
        )
    })
}

/// What a store holds that an import would write over, one phrase each.
async fn holdings(
    items: &SharedItemStore,
    databases: &[Sublevel],
    servers: &[String],
) -> Result<Vec<String>, String> {
    let mut held = Vec::new();
    if !databases.is_empty() {
        let names: Vec<String> = databases.iter().take(5).map(ToString::to_string).collect();
        held.push(format!(
            "{} metadata databases: {}{}",
            databases.len(),
            names.join(", "),
            if databases.len() > 5 { ", ..." } else { "" }
        ));
    }
    let mut blobs = HashSet::new();
    for server in servers {
        let items = placement::dump(server)
            .await
            .map_err(|error| format!("cannot list the keys of {server}: {error}"))?;
        blobs.extend(items.iter().filter_map(|item| blob_head(&item.key)));
    }
    if !blobs.is_empty() {
        held.push(format!("{} blobs", blobs.len()));
    }
    let uuid = ItemKey::new(UUID_ITEM).map_err(|error| error.to_string())?;
    if let Some(id) = items
        .get(&uuid)
        .await
        .map_err(store::unreachable(servers))?
    {
        held.push(format!(
            "deployment id {}",
            String::from_utf8_lossy(&id).into_owned()
        ));
    }
    Ok(held)
}

/// The state of the write pass.
struct Import {
    items: SharedItemStore,
    ordered: MemcachedOrderedStore,
    /// Databases the store held before the import.
    existing: HashSet<Sublevel>,
    tasks: JoinSet<Result<(), String>>,
    pace: Pace,
    progress: Progress,
}

/// The section the write pass is in.
enum Section {
    None,
    /// A database, and whether any key of it was written.
    Database(Sublevel, bool),
    /// A blob: its data goes to the task writing it.
    Blob(mpsc::Sender<Bytes>),
    /// An abandoned section, skipped.
    Skipped,
}

impl Import {
    /// The second pass: every complete section of the file, written.
    async fn write(&mut self, path: &Path, contents: &Contents) -> Result<(), String> {
        let mut reader = open(path)?;
        let changed = |error| format!("{} changed since it was verified: {error}", path.display());
        let mut section = Section::None;
        let mut number = 0u64;
        let mut offset = reader.offset();
        while let Some(record) = reader.read().map_err(changed)? {
            let read = reader.offset() - offset;
            offset = reader.offset();
            let mut items = 0;
            match record {
                Record::Header(_) | Record::Catalog(_) => {}
                Record::DatabaseStart(_) | Record::BlobStart(_)
                    if contents.abandoned.contains(&number) =>
                {
                    section = Section::Skipped;
                }
                Record::DatabaseStart(db) => section = Section::Database(db, false),
                Record::Entries(entries) => {
                    if let Section::Database(db, written) = &mut section {
                        *written = true;
                        items = entries.len() as u64;
                        let batch = entries
                            .into_iter()
                            .fold(Batch::default(), |batch, (key, value)| {
                                batch.put(key, value)
                            });
                        let (ordered, db) = (self.ordered.clone(), db.clone());
                        self.spawn(async move {
                            ordered
                                .write(&db, batch)
                                .await
                                .map_err(|error| format!("cannot write database {db}: {error}"))
                        })
                        .await?;
                    }
                }
                Record::DatabaseEnd(_) => {
                    if let Section::Database(db, false) = &section
                        && !self.existing.contains(db)
                    {
                        // An empty database is still listed: a write that changes nothing
                        // creates its (empty) tree and catalog entry.
                        let (ordered, db) = (self.ordered.clone(), db.clone());
                        self.spawn(async move {
                            ordered
                                .write(&db, Batch::default().delete(""))
                                .await
                                .map_err(|error| format!("cannot write database {db}: {error}"))
                        })
                        .await?;
                    }
                    number += 1;
                    section = Section::None;
                }
                Record::BlobStart(head) => {
                    let (sender, receiver) = mpsc::channel::<Bytes>(BLOB_QUEUE);
                    let blobs = BlobStore::new(self.items.clone(), 1);
                    let body = futures::stream::unfold(receiver, |mut receiver| async move {
                        receiver
                            .recv()
                            .await
                            .map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
                    });
                    items = 1;
                    self.spawn(async move {
                        blobs
                            .restore(head.key, head.shape, body, head.size)
                            .await
                            .map_err(|error| format!("cannot write blob {}: {error}", head.key))
                    })
                    .await?;
                    section = Section::Blob(sender);
                }
                Record::BlobData(bytes) => {
                    if let Section::Blob(sender) = &section
                        && sender.send(bytes).await.is_err()
                    {
                        // The blob's writer stopped: its error says why.
                        self.finish_tasks().await?;
                        return Err("a blob's writer stopped".into());
                    }
                }
                Record::BlobEnd(_) => {
                    number += 1;
                    // Dropping the sender ends the blob's body.
                    section = Section::None;
                }
            }
            self.pace.moved(read).await;
            self.progress.add(read, items);
        }
        self.finish_tasks().await
    }

    /// Start a write, after waiting for room among those in flight.
    async fn spawn(
        &mut self,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> Result<(), String> {
        while self.tasks.len() >= IN_FLIGHT {
            self.join_one().await?;
        }
        self.tasks.spawn(task);
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), String> {
        match self.tasks.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(error)) => Err(format!("a write task failed: {error}")),
            None => Ok(()),
        }
    }

    async fn finish_tasks(&mut self) -> Result<(), String> {
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }
}
