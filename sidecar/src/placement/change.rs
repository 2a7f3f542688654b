//! The driver of a placement change: moves a store from its servers and factor to others while
//! its sidecars serve, one generation at a time, each taken only once every sidecar reports
//! the one before (`docs/placement-changes.md`). It is the placement's one writer: on
//! Kubernetes the operator runs it as a Job, elsewhere `zenko-memcached-sidecar placement
//! change` runs it. Run again with the same target, it resumes an interrupted change.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::copy::{BATCH, Pacer, copy_batch, dump};
use super::follow::{REPORT_LIFE, Reports, now_secs, read_reports};
use super::layout::View;
use super::record::{
    Change, DRIVER_ITEM, FILLED_ITEM, Phase, Placement, is_server_local, key, list, on,
    read_record, replace_record,
};
use super::replicas::ReplicatedStore;
use crate::items::{Expiry, ItemError, ItemKey, ItemResult, ItemStore, MemcachedStore};

/// Listings of every server at most, each after the one before found new keys.
const MAX_PASSES: usize = 8;
/// The driver's lease: another driver refuses to start while it lives.
const LEASE: Duration = Duration::from_secs(30);
/// Share of the target servers' memory the data may fill.
const MEMORY_HEADROOM: f64 = 0.9;

/// Where a store goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub servers: BTreeSet<String>,
    pub replication_factor: u32,
}

/// How a change runs.
#[derive(Clone, Copy, Debug)]
pub struct ChangeOptions {
    /// Bytes per second copied at most.
    pub rate: u64,
    /// How long to wait for every sidecar to adopt a generation before giving up.
    pub adopt_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Nothing was changed: why, in one line.
    #[error("refused: {0}")]
    Refused(String),
    /// The change stopped part way; running it again resumes it.
    #[error("{0} (the change stopped part way: run the same command again to resume it)")]
    Stopped(String),
}

impl From<ItemError> for ChangeError {
    fn from(error: ItemError) -> ChangeError {
        ChangeError::Stopped(error.to_string())
    }
}

/// Change the store recorded on `current` to `target`, telling `progress` what it does.
pub async fn change(
    current: &[String],
    target: &Target,
    options: ChangeOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Placement, ChangeError> {
    if target.replication_factor == 0 || target.replication_factor as usize > target.servers.len() {
        return Err(ChangeError::Refused(format!(
            "replication factor {} needs at least {} servers; the target has {}",
            target.replication_factor,
            target.replication_factor,
            target.servers.len()
        )));
    }
    let named: BTreeSet<String> = current
        .iter()
        .cloned()
        .chain(target.servers.iter().cloned())
        .collect();
    let mut recorded = newest_record(&named).await?;
    let wanted = |placement: &Placement| {
        placement.servers == target.servers
            && placement.replication_factor == target.replication_factor
    };
    let current_set: BTreeSet<String> = current.iter().cloned().collect();
    let resumable = recorded.change.as_ref().is_some_and(|change| {
        change.servers == target.servers && change.replication_factor == target.replication_factor
    });
    // Back to where a change started: it is undone rather than finished.
    let reverting = recorded.change.is_some() && wanted(&recorded);
    if recorded.change.is_some() && !resumable && !reverting {
        let change = recorded.change.as_ref().map(|c| list(&c.servers));
        return Err(ChangeError::Refused(format!(
            "the store (generation {}, servers {}) is changing to {}: finish that change first \
             (run it again with --to {})",
            recorded.generation,
            list(&recorded.servers),
            change.clone().unwrap_or_default(),
            change.unwrap_or_default()
        )));
    }
    if recorded.change.is_none() && !wanted(&recorded) && recorded.servers != current_set {
        return Err(ChangeError::Refused(format!(
            "the store is on servers {} (generation {}), not on --memcached {}",
            list(&recorded.servers),
            recorded.generation,
            list(current)
        )));
    }
    if let Some(why) = recorded.routing_mismatch() {
        return Err(ChangeError::Refused(why));
    }
    if !recorded.is_versioned() {
        return Err(ChangeError::Refused(
            "the store was written before placements could change (its items carry no \
             version): export it and import it into a store on the new servers"
                .into(),
        ));
    }
    if recorded.change.is_none() && !wanted(&recorded) {
        check_memory(&recorded, target).await?;
    }
    // An export or import under way finishes first.
    let lease = Lease::take(&named, "placement change", options.adopt_timeout).await?;
    let result = async {
        if reverting {
            revert(&mut recorded, &named, progress).await?;
        }
        drive(&mut recorded, target, &named, options, &lease, progress).await
    }
    .await;
    lease.release().await;
    result?;
    Ok(recorded)
}

/// The steps, from wherever the record is.
async fn drive(
    recorded: &mut Placement,
    target: &Target,
    named: &BTreeSet<String>,
    options: ChangeOptions,
    lease: &Lease,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ChangeError> {
    loop {
        lease.refresh().await?;
        let next = match &recorded.change {
            None if recorded.servers == target.servers
                && recorded.replication_factor == target.replication_factor =>
            {
                // Stable on the target: what is left is to clean up (again, if a driver
                // stopped while it did), once every sidecar is there.
                await_reports(named, recorded.generation, options, progress).await?;
                let view = view_of(recorded).await?;
                clean_up(&view, named, progress).await?;
                progress(&format!(
                    "done: generation {}, servers {}, replication factor {}",
                    recorded.generation,
                    list(&recorded.servers),
                    recorded.replication_factor
                ));
                return Ok(());
            }
            None => Placement {
                generation: recorded.generation + 1,
                change: Some(Change {
                    servers: target.servers.clone(),
                    replication_factor: target.replication_factor,
                    phase: Phase::Preparing,
                }),
                ..recorded.clone()
            },
            Some(change) => match change.phase {
                Phase::Preparing => {
                    await_reports(named, recorded.generation, options, progress).await?;
                    Placement {
                        generation: recorded.generation + 1,
                        change: Some(Change {
                            phase: Phase::Copying,
                            ..change.clone()
                        }),
                        ..recorded.clone()
                    }
                }
                Phase::Copying => {
                    await_reports(named, recorded.generation, options, progress).await?;
                    let view = view_of(recorded).await?;
                    // The servers the change adds hold every item they own once the copy is
                    // done, unless they restart empty meanwhile (which takes the mark away);
                    // nothing is read from them before.
                    for server in change.servers.difference(&recorded.servers) {
                        super::record::mark_filled(server, false).await?;
                    }
                    copy_all(&view, options, progress).await?;
                    Placement {
                        generation: recorded.generation + 1,
                        change: Some(Change {
                            phase: Phase::Switching,
                            ..change.clone()
                        }),
                        ..recorded.clone()
                    }
                }
                Phase::Switching => {
                    await_reports(named, recorded.generation, options, progress).await?;
                    let view = view_of(recorded).await?;
                    keep_published(&view, progress).await?;
                    Placement {
                        generation: recorded.generation + 1,
                        servers: change.servers.clone(),
                        replication_factor: change.replication_factor,
                        change: None,
                        ..recorded.clone()
                    }
                }
            },
        };
        write_everywhere(named, &next).await?;
        progress(&format!(
            "generation {}: {}",
            next.generation,
            match next.change.as_ref().map(|change| change.phase) {
                Some(Phase::Preparing) => "deletes go to the old and the new servers",
                Some(Phase::Copying) => "writes go to the old and the new servers; copying",
                Some(Phase::Switching) => "reads go to the new servers",
                None => "the store is on the new servers",
            }
        ));
        *recorded = next;
    }
}

/// Turn a change back towards the layout it started from. While preparing or copying, reads
/// still go to that layout and writes to it: it is stable again at once (what reached the
/// target is cleaned up). While switching, reads go to
/// the target: the way back is a change from the target to the start, which copies back what
/// was written meanwhile.
async fn revert(
    recorded: &mut Placement,
    named: &BTreeSet<String>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ChangeError> {
    let Some(change) = recorded.change.clone() else {
        return Ok(());
    };
    let next = match change.phase {
        Phase::Preparing | Phase::Copying => Placement {
            generation: recorded.generation + 1,
            change: None,
            ..recorded.clone()
        },
        Phase::Switching => Placement {
            generation: recorded.generation + 1,
            servers: change.servers.clone(),
            replication_factor: change.replication_factor,
            change: Some(Change {
                servers: recorded.servers.clone(),
                replication_factor: recorded.replication_factor,
                phase: Phase::Copying,
            }),
            ..recorded.clone()
        },
    };
    write_everywhere(named, &next).await?;
    progress(&format!(
        "generation {}: the change to {} is undone",
        next.generation,
        list(&change.servers)
    ));
    *recorded = next;
    Ok(())
}

/// The newest record the servers hold; every server must answer.
async fn newest_record(named: &BTreeSet<String>) -> Result<Placement, ChangeError> {
    let mut held = BTreeMap::new();
    for server in named {
        let record = read_record(server).await.map_err(|error| {
            ChangeError::Refused(format!(
                "cannot read the placement record on {server}: {error}"
            ))
        })?;
        held.insert(server.as_str(), record);
    }
    let newest = held
        .values()
        .flatten()
        .max_by_key(|placement| placement.generation)
        .cloned()
        .ok_or_else(|| {
            ChangeError::Refused(
                "no server holds a placement record: start the sidecars on the current \
                 servers first"
                    .into(),
            )
        })?;
    if newest.replication_factor == 1 {
        for server in &newest.servers {
            let record = match held.get(server.as_str()) {
                Some(record) => record.clone(),
                None => read_record(server).await?,
            };
            if record.is_none() {
                return Err(ChangeError::Refused(format!(
                    "{server} lost its contents (it holds no placement record) and the store \
                     keeps one copy of each item: restore its memory file or accept the loss \
                     (placement accept) first"
                )));
            }
        }
    }
    Ok(newest)
}

/// Every server gets the record before anyone waits for sidecars to adopt it, but a server of
/// the current layout without one: it restarted empty, and its missing record is what makes
/// the sidecars refill it (which writes the record back).
async fn write_everywhere(named: &BTreeSet<String>, placement: &Placement) -> ItemResult<()> {
    let mut writes = Vec::new();
    for server in named {
        if placement.servers.contains(server) && read_record(server).await?.is_none() {
            continue;
        }
        writes.push(replace_record(server, placement));
    }
    futures::future::try_join_all(writes).await.map(|_| ())
}

async fn view_of(placement: &Placement) -> ItemResult<View> {
    let store = ReplicatedStore::open(placement).await?;
    let view = store.view()?;
    view.detached()
}

/// Refuse a change whose target servers cannot hold the data with its new copies.
async fn check_memory(recorded: &Placement, target: &Target) -> Result<(), ChangeError> {
    let mut used = 0u64;
    for server in &recorded.servers {
        used += stats(server).await?.used_bytes;
    }
    let mut limit = 0u64;
    for server in &target.servers {
        limit += stats(server).await?.limit_bytes;
    }
    let needed = used as f64 / f64::from(recorded.replication_factor.max(1))
        * f64::from(target.replication_factor);
    let room = limit as f64 * MEMORY_HEADROOM;
    if needed > room {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        return Err(ChangeError::Refused(format!(
            "the data needs {:.2} GiB with {} copies and the target servers hold {:.2} GiB \
             ({:.0}% of their {:.2} GiB): give them more memory or keep more servers",
            needed / GIB,
            target.replication_factor,
            room / GIB,
            MEMORY_HEADROOM * 100.0,
            limit as f64 / GIB
        )));
    }
    Ok(())
}

async fn stats(server: &str) -> Result<crate::items::StoreStats, ChangeError> {
    let store = on(server).await?;
    Ok(store.stats().await?)
}

/// Wait until every live sidecar report, on every server, says `generation` or later.
async fn await_reports(
    named: &BTreeSet<String>,
    generation: u64,
    options: ChangeOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ChangeError> {
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        let mut reports = Reports::new();
        for server in named {
            let store = on(server).await?;
            for (instance, report) in read_reports(&store).await? {
                let newer = reports
                    .get(&instance)
                    .is_none_or(|known| report.at > known.at);
                if newer {
                    reports.insert(instance, report);
                }
            }
        }
        let now = now_secs();
        let behind: BTreeMap<&String, u64> = reports
            .iter()
            .filter(|(_, report)| now.saturating_sub(report.at) < REPORT_LIFE.as_secs())
            .filter(|(_, report)| report.generation < generation)
            .map(|(instance, report)| (instance, report.generation))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if started.elapsed() > options.adopt_timeout {
            return Err(ChangeError::Stopped(format!(
                "sidecars did not adopt generation {generation} within {} s: {}",
                options.adopt_timeout.as_secs(),
                describe_behind(&behind)
            )));
        }
        if told.elapsed() > Duration::from_secs(10) {
            told = Instant::now();
            progress(&format!(
                "waiting for sidecars to adopt generation {generation}: {}",
                describe_behind(&behind)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn describe_behind(behind: &BTreeMap<&String, u64>) -> String {
    behind
        .iter()
        .map(|(instance, generation)| format!("{instance} at {generation}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copy every item to the owners the target layout gives it that the current one does not.
async fn copy_all(
    view: &View,
    options: ChangeOptions,
    progress: &mut dyn FnMut(&str),
) -> ItemResult<()> {
    let Some(target) = &view.other else {
        return Ok(());
    };
    let started = Instant::now();
    let mut pacer = Pacer::new(options.rate);
    let mut seen = HashSet::new();
    let mut told = Instant::now();
    for pass in 1..=MAX_PASSES {
        let mut found_new = false;
        for source in view.read.members_indices() {
            let name = &view.servers[source].name;
            let keys: Vec<(ItemKey, Vec<usize>)> = dump(name)
                .await?
                .into_iter()
                .map(|dumped| dumped.key)
                .filter(|key| !is_server_local(key))
                // Only an owner's copy is copied: a server holding an item it does not own
                // may hold an old one (left by an earlier change).
                .filter(|key| view.read.owners(key).contains(&source))
                .filter(|key| seen.insert(key.clone()))
                .filter_map(|key| {
                    let current = view.read.owners(&key);
                    let missing: Vec<usize> = target
                        .owners(&key)
                        .into_iter()
                        .filter(|server| !current.contains(server))
                        .collect();
                    (!missing.is_empty()).then_some((key, missing))
                })
                .collect();
            found_new |= !keys.is_empty();
            for batch in keys.chunks(BATCH) {
                copy_batch(view, source, batch, &mut pacer).await?;
                if told.elapsed() > Duration::from_secs(5) {
                    told = Instant::now();
                    progress(&format!(
                        "copying (pass {pass}): {} items, {:.1} MiB",
                        pacer.items,
                        pacer.bytes as f64 / (1024.0 * 1024.0)
                    ));
                }
            }
        }
        if !found_new {
            break;
        }
    }
    progress(&format!(
        "copied {} items, {:.1} MiB in {:.1} s",
        pacer.items,
        pacer.bytes as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Switching, every sidecar there: items copied while they still expired (chunks of uploads in
/// progress) that their current owners now keep for good (published since) are kept for good
/// on their new owners too. A publish's touch that raced with the copy may have missed them.
async fn keep_published(view: &View, progress: &mut dyn FnMut(&str)) -> ItemResult<()> {
    let Some(current) = &view.other else {
        return Ok(());
    };
    let mut kept = 0u64;
    for server in view.read.members_indices() {
        let expiring: Vec<ItemKey> = dump(&view.servers[server].name)
            .await?
            .into_iter()
            .filter(|dumped| dumped.expires && !is_server_local(&dumped.key))
            .map(|dumped| dumped.key)
            .filter(|key| {
                view.read.owners(key).contains(&server) && !current.owners(key).contains(&server)
            })
            .collect();
        for key in expiring {
            for source in current.owners(&key) {
                let found = view.servers[source]
                    .store
                    .get_many_with_expiry(std::slice::from_ref(&key))
                    .await?;
                if let Some(Some((_, Expiry::Never))) = found.first() {
                    view.servers[server]
                        .store
                        .touch(&key, Expiry::Never)
                        .await?;
                    kept += 1;
                    break;
                }
            }
        }
    }
    if kept > 0 {
        progress(&format!("kept {kept} items published during the copy"));
    }
    Ok(())
}

/// Stable on the target, every sidecar there: each server drops the items it does not own any
/// more; servers that left keep only the record, which tells a sidecar still configured with
/// them where the store went.
async fn clean_up(
    view: &View,
    named: &BTreeSet<String>,
    progress: &mut dyn FnMut(&str),
) -> ItemResult<()> {
    let mut dropped = 0u64;
    for name in named {
        // A server that does not hold this very record is not one this change wrote to (a
        // mistyped server of another store): nothing of it is touched.
        if read_record(name).await?.as_ref() != Some(&view.placement) {
            progress(&format!(
                "{name} does not hold generation {}: left as it is",
                view.generation
            ));
            continue;
        }
        let store = on(name).await?;
        let member = view
            .read
            .members_indices()
            .into_iter()
            .find(|server| view.servers[*server].name == *name);
        for dumped in dump(name).await? {
            let key = dumped.key;
            // A server that left keeps only its record: not the mark that says it holds what
            // it owns (it owns nothing now, and may join again empty).
            let kept = if is_server_local(&key) {
                member.is_some() || key.as_str() != FILLED_ITEM
            } else {
                member.is_some_and(|m| view.read.owners(&key).contains(&m))
            };
            if kept {
                continue;
            }
            if store.delete(&key).await? {
                dropped += 1;
            }
        }
    }
    if dropped > 0 {
        progress(&format!(
            "dropped {dropped} items from servers that no longer own them"
        ));
    }
    Ok(())
}

/// Run `work` holding the lease a placement change holds, so that neither runs while the
/// other does: an export or an import reads or writes the store where its placement puts
/// items, and a change moves them.
pub async fn exclusively<T>(
    servers: &[String],
    purpose: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let named: BTreeSet<String> = servers.iter().cloned().collect();
    let lease = Lease::take(&named, purpose, Duration::ZERO)
        .await
        .map_err(|error| error.to_string())?;
    let result = work.await;
    lease.release().await;
    result
}

/// The driver's lease, on every server it changes, kept alive in the background.
struct Lease {
    servers: std::sync::Arc<Vec<MemcachedStore>>,
    id: String,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// Take the lease on every server, waiting up to `wait` for another holder to let go.
    async fn take(
        named: &BTreeSet<String>,
        purpose: &str,
        wait: Duration,
    ) -> Result<Lease, ChangeError> {
        let deadline = Instant::now() + wait;
        loop {
            match Self::try_take(named, purpose).await? {
                Ok(lease) => return Ok(lease),
                Err(why) if Instant::now() >= deadline => return Err(ChangeError::Refused(why)),
                Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }

    async fn try_take(
        named: &BTreeSet<String>,
        purpose: &str,
    ) -> Result<Result<Lease, String>, ChangeError> {
        let id = format!(
            "{purpose} on {}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            hex::encode(rand::random::<[u8; 4]>())
        );
        let lease_key = key(DRIVER_ITEM)?;
        let mut servers = Vec::new();
        for name in named {
            let store = on(name).await?;
            if !store
                .add(&lease_key, id.clone().into(), Expiry::After(LEASE))
                .await?
            {
                let holder = store.get(&lease_key).await?.unwrap_or_default();
                let taken = Lease {
                    servers: std::sync::Arc::new(servers),
                    id,
                    keeper: None,
                };
                taken.release().await;
                return Ok(Err(format!(
                    "a placement change, export or import is running ({} holds the lease on \
                     {name}; it lapses {} s after that stops)",
                    String::from_utf8_lossy(&holder),
                    LEASE.as_secs()
                )));
            }
            servers.push(store);
        }
        let servers = std::sync::Arc::new(servers);
        let keeper = {
            let servers = servers.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE / 4).await;
                    for store in servers.iter() {
                        let _ = store.touch(&lease_key, Expiry::After(LEASE)).await;
                    }
                }
            })
        };
        Ok(Ok(Lease {
            servers,
            id,
            keeper: Some(keeper),
        }))
    }

    /// Fails once the lease is another's (it lapsed and was taken); a server that lost it
    /// (restarted empty) gets it back, since the others still hold it for this driver.
    async fn refresh(&self) -> ItemResult<()> {
        let lease_key = key(DRIVER_ITEM)?;
        for store in self.servers.iter() {
            let held = match store.get(&lease_key).await? {
                Some(holder) => holder,
                None => {
                    let id = bytes::Bytes::from(self.id.clone());
                    if store
                        .add(&lease_key, id.clone(), Expiry::After(LEASE))
                        .await?
                    {
                        continue;
                    }
                    store.get(&lease_key).await?.unwrap_or_default()
                }
            };
            if held != self.id.as_bytes() {
                return Err(ItemError::Unavailable(format!(
                    "the change's lease lapsed and {} holds it now",
                    String::from_utf8_lossy(&held)
                )));
            }
        }
        Ok(())
    }

    async fn release(&self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
        let Ok(lease_key) = key(DRIVER_ITEM) else {
            return;
        };
        for store in self.servers.iter() {
            if let Ok(Some(holder)) = store.get(&lease_key).await
                && holder == self.id.as_bytes()
            {
                let _ = store.delete(&lease_key).await;
            }
        }
    }
}
