//! The placement record: one item on every server naming the servers and the replication
//! factor the store is written under; read at start and compared with the configuration.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::items::{
    Expiry, ItemError, ItemKey, ItemResult, ItemStore, MemcachedStore, ROUTING_SCHEME, Rendezvous,
};

/// The item that holds the placement record, on each server itself (never routed).
pub const PLACEMENT_ITEM: &str = "zmm:placement";
/// The reports of the sidecars serving the store (`follow`), on each server itself.
pub const SIDECARS_ITEM: &str = "zmm:sidecars";
/// The lease of the one driver of a placement change (`change`), on each server itself.
pub const DRIVER_ITEM: &str = "zmm:placement:driver";

/// A random value on each server that has primaries of items with copies: gone once the
/// server restarted empty, which a commit checks before it is acknowledged (`replicas`).
pub const INCARNATION_ITEM: &str = "zmm:incarnation";

/// A random value on a server known to hold every item it owns: written when a store is
/// created on empty servers, by a refill once it is done, and by a change on each server it
/// adds before copying to it (none is read from before the copy is done). Gone once the server
/// restarts empty; a placement record alone does not say as much, since a change writes its
/// records to servers whatever they hold. While it holds the value a sidecar read, that
/// server's "no such item" is an answer on its own (`hedged`).
pub const FILLED_ITEM: &str = "zmm:filled";

/// Whether `key` is one of the items each server keeps of its own, never routed nor copied.
pub fn is_server_local(key: &ItemKey) -> bool {
    [
        PLACEMENT_ITEM,
        SIDECARS_ITEM,
        DRIVER_ITEM,
        INCARNATION_ITEM,
        FILLED_ITEM,
    ]
    .contains(&key.as_str())
}

/// Mark `server` as holding every item it owns (see [`FILLED_ITEM`]); `fresh` replaces a value
/// it holds, otherwise one is kept.
pub(super) async fn mark_filled(server: &str, fresh: bool) -> ItemResult<()> {
    let store = on(server).await?;
    let value = Bytes::from(hex::encode(rand::random::<[u8; 16]>()));
    let key = key(FILLED_ITEM)?;
    if fresh {
        store.set(&key, value, Expiry::Never).await
    } else {
        store.add(&key, value, Expiry::Never).await.map(|_| ())
    }
}

/// Legacy epoch items (`zmm:epoch`, `zmm:epoch:<n>`): a server holding one holds data of a
/// deployment from before placement records.
const EPOCH_ITEM: &str = "zmm:epoch";
/// Candidates probed for a legacy epoch item on each server; with rendezvous hashing each
/// lands on a given server with a chance of one in the number of servers.
const EPOCH_CANDIDATES: usize = 256;

/// Items of a deployment from before placement records whose names are known: the epoch
/// items, the deployment id and the catalog's root record. Where each is found tells whether
/// the store was written under the configured list: each must be on the server that list
/// routes it to.
fn legacy_markers() -> Vec<String> {
    let mut markers: Vec<String> = std::iter::once(EPOCH_ITEM.to_owned())
        .chain((1..EPOCH_CANDIDATES).map(|n| format!("{EPOCH_ITEM}:{n}")))
        .collect();
    markers.push(crate::metadata::uuid::UUID_ITEM.to_owned());
    markers.extend(crate::ordered::catalog_root_item());
    markers
}

/// The servers and factor a store is written under, and the change under way, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Counts changes of the placement.
    pub generation: u64,
    /// Server names as the sidecars list them (routing hashes the names, not addresses).
    pub servers: BTreeSet<String>,
    pub replication_factor: u32,
    /// The servers and factor the store is moving to (`placement change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Whether every value carries the replicated store's header (version and marker): true
    /// for every store created since placements can change; unset in records written before,
    /// where only stores of a factor above one have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioned: Option<bool>,
    /// How keys are routed to servers ([`ROUTING_SCHEME`] for every record this release
    /// writes); unset in records written before routing had a name, which routed by that same
    /// scheme. A sidecar that routes another way must not serve: it would look for every item
    /// on other servers than the ones holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
}

/// A placement change under way: where to, and how far it has come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub servers: BTreeSet<String>,
    pub replication_factor: u32,
    pub phase: Phase,
}

/// The steps of a change (`docs/placement-changes.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Deletes and expiry changes go to both layouts, everything else to the current one: so
    /// that once writes reach the target, no sidecar removes anything from the current layout
    /// alone (a delete that missed the target would let a copy there come back).
    Preparing,
    /// Writes go to both layouts, reads to the current one; the driver copies.
    Copying,
    /// Reads go to the target layout; writes still to both.
    Switching,
}

impl Placement {
    pub(super) fn encode(&self) -> ItemResult<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|error| ItemError::Protocol(error.to_string()))
    }

    /// Whether the store is read and written through [`super::ReplicatedStore`].
    pub fn is_versioned(&self) -> bool {
        self.versioned.unwrap_or(self.replication_factor > 1)
    }

    /// The current servers (in name order) and factor.
    pub fn layout(&self) -> (Vec<String>, u32) {
        (
            self.servers.iter().cloned().collect(),
            self.replication_factor,
        )
    }

    /// Why this release cannot route keys as the record says, if it cannot.
    pub fn routing_mismatch(&self) -> Option<String> {
        let routing = self.routing.as_deref().unwrap_or(ROUTING_SCHEME);
        (routing != ROUTING_SCHEME).then(|| {
            format!(
                "the store's keys are routed by the scheme {routing:?} and this release routes by \
                 {ROUTING_SCHEME:?}: run a release that routes by {routing:?}"
            )
        })
    }

    /// Every server the placement names, current and target.
    pub fn all_servers(&self) -> BTreeSet<String> {
        let mut all = self.servers.clone();
        if let Some(change) = &self.change {
            all.extend(change.servers.iter().cloned());
        }
        all
    }

    /// Whether a sidecar configured with `servers` and `factor` may serve under this record:
    /// they are its current layout, or the one it is moving to.
    fn admits(&self, servers: &BTreeSet<String>, factor: u32) -> bool {
        (*servers == self.servers && factor == self.replication_factor)
            || self.change.as_ref().is_some_and(|change| {
                *servers == change.servers && factor == change.replication_factor
            })
    }
}

/// What the store says of the configured servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The store is written under this placement, the configuration's: serve.
    Agreed(Placement),
    /// Serving would give wrong answers: why, and what to run, in one line.
    Refused(String),
}

/// What one server holds of the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Holds {
    Record(Placement),
    /// Not a record this release can read.
    Unreadable(String),
    /// Data of a deployment from before placement records: the marker items found.
    Legacy(Vec<String>),
    Nothing,
}

pub(super) fn list(servers: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    servers
        .into_iter()
        .map(|server| server.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn key(text: &str) -> ItemResult<ItemKey> {
    ItemKey::new(text).map_err(|error| ItemError::Protocol(error.to_string()))
}

/// One server alone: the placement record is each server's own, never routed.
pub(super) async fn on(server: &str) -> ItemResult<MemcachedStore> {
    MemcachedStore::connect(&[server.to_owned()]).await
}

async fn read(server: &str) -> ItemResult<Holds> {
    let store = on(server).await?;
    if let Some(item) = store.get(&key(PLACEMENT_ITEM)?).await? {
        return Ok(match serde_json::from_slice::<Placement>(&item) {
            Ok(placement) => Holds::Record(placement),
            Err(error) => Holds::Unreadable(error.to_string()),
        });
    }
    let markers = legacy_markers();
    let keys = markers
        .iter()
        .map(|text| key(text))
        .collect::<ItemResult<Vec<_>>>()?;
    let found: Vec<String> = markers
        .into_iter()
        .zip(store.get_many(&keys).await?)
        .filter(|(_, item)| item.is_some())
        .map(|(marker, _)| marker)
        .collect();
    Ok(if found.is_empty() {
        Holds::Nothing
    } else {
        Holds::Legacy(found)
    })
}

/// Whether the text items a store always has (epochs, the deployment id) carry the replicated
/// store's header: their plain values are text, which never starts with its marker byte.
async fn carries_headers(servers: &[String]) -> ItemResult<bool> {
    let keys = std::iter::once(crate::metadata::uuid::UUID_ITEM.to_owned())
        .chain(
            legacy_markers()
                .into_iter()
                .filter(|m| m.starts_with(EPOCH_ITEM)),
        )
        .map(|text| key(&text))
        .collect::<ItemResult<Vec<_>>>()?;
    for server in servers {
        let values = on(server).await?.get_many(&keys).await?;
        if values
            .iter()
            .flatten()
            .any(|value| value.first() == Some(&super::value::MARKER))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The placement record one server holds, if it holds a readable one.
pub(super) async fn read_record(server: &str) -> ItemResult<Option<Placement>> {
    record_in(&on(server).await?).await
}

/// The placement record `store` (one server) holds, if it holds a readable one.
/// A record it cannot read is an error, never "no record" (which means the server lost its
/// contents).
pub(super) async fn record_in(store: &MemcachedStore) -> ItemResult<Option<Placement>> {
    store
        .get(&key(PLACEMENT_ITEM)?)
        .await?
        .map(|item| {
            serde_json::from_slice(&item).map_err(|error| {
                ItemError::Protocol(format!("an unreadable placement record: {error}"))
            })
        })
        .transpose()
}

/// The placement the servers record (the newest record found), for the tools that read a
/// store and must read it as its sidecars do; `None` when no server holds one.
pub async fn recorded(servers: &[String]) -> ItemResult<Option<Placement>> {
    let mut newest: Option<Placement> = None;
    for server in servers {
        if let Some(placement) = read_record(server).await?
            && newest
                .as_ref()
                .is_none_or(|known| placement.generation > known.generation)
        {
            newest = Some(placement);
        }
    }
    Ok(newest)
}

/// Write (or replace) the record on one server.
pub(super) async fn replace_record(server: &str, placement: &Placement) -> ItemResult<()> {
    on(server)
        .await?
        .set(&key(PLACEMENT_ITEM)?, placement.encode()?, Expiry::Never)
        .await
}

/// Write the record on one server (where none is).
pub(super) async fn write_record(server: &str, placement: &Placement) -> ItemResult<()> {
    write(server, placement).await.map(|_| ())
}

async fn write(server: &str, placement: &Placement) -> ItemResult<Holds> {
    let store = on(server).await?;
    let key = key(PLACEMENT_ITEM)?;
    if !store.add(&key, placement.encode()?, Expiry::Never).await? {
        // Another sidecar starting at the same time wrote it: what it wrote counts.
        return read(server).await;
    }
    Ok(Holds::Record(placement.clone()))
}

/// Read every configured server's placement record and judge the configuration; a fresh
/// store (no server holds anything) gets the configuration's placement written on every
/// server, and so does a store from before placement records whose servers all hold data.
pub async fn establish(servers: &[String], replication_factor: u32) -> ItemResult<Verdict> {
    let mut wanted = Placement {
        generation: 1,
        servers: servers.iter().cloned().collect(),
        replication_factor,
        change: None,
        versioned: Some(true),
        routing: Some(ROUTING_SCHEME.to_owned()),
    };
    let held = futures::future::try_join_all(servers.iter().map(|server| read(server))).await?;
    let verdict = judge(servers, &wanted, &held);
    let write_all = match &verdict {
        Judged::Fresh => true,
        Judged::Legacy => {
            tracing::warn!(
                servers = %list(servers),
                "the store has no placement record (written by an earlier release): recording \
                 these servers as its placement"
            );
            // Written without the replicated store's header, unless its values say otherwise
            // (a record deleted by hand).
            if !carries_headers(servers).await? {
                wanted.versioned = None;
            }
            true
        }
        Judged::Done(_) => false,
    };
    if !write_all {
        let Judged::Done(verdict) = verdict else {
            unreachable!("handled above")
        };
        if let Verdict::Agreed(_) = &verdict {
            let emptied: Vec<&String> = servers
                .iter()
                .zip(&held)
                .filter(|(_, holds)| !matches!(holds, Holds::Record(_)))
                .map(|(server, _)| server)
                .collect();
            if !emptied.is_empty() {
                tracing::warn!(
                    servers = %list(&emptied),
                    "servers lost their contents; their items have copies on the other \
                     servers, which reads use and a refill copies back"
                );
            }
        }
        return Ok(verdict);
    }
    let written =
        futures::future::try_join_all(servers.iter().map(|server| write(server, &wanted))).await?;
    if matches!(verdict, Judged::Fresh) && replication_factor >= 2 {
        // Empty servers hold every item of an empty store. (With one copy, a miss has no other
        // owner to be checked against: no mark is needed.)
        futures::future::try_join_all(servers.iter().map(|server| mark_filled(server, false)))
            .await?;
    }
    Ok(match judge(servers, &wanted, &written) {
        Judged::Done(verdict) => verdict,
        Judged::Fresh | Judged::Legacy => {
            Verdict::Refused("the placement record could not be written to every server".into())
        }
    })
}

/// A marker item found on another server than the configured list routes it to: (marker,
/// where it is, where the list routes it).
fn misplaced<'a>(servers: &'a [String], held: &'a [Holds]) -> Option<(&'a str, &'a str, &'a str)> {
    servers.iter().zip(held).find_map(|(server, holds)| {
        let Holds::Legacy(found) = holds else {
            return None;
        };
        found.iter().find_map(|marker| {
            let routed =
                &servers[Rendezvous::server(marker.as_bytes(), servers).min(servers.len() - 1)];
            (routed != server).then_some((marker.as_str(), server.as_str(), routed.as_str()))
        })
    })
}

/// What each server holds, one line each, for `placement show`.
pub async fn describe(servers: &[String]) -> ItemResult<Vec<String>> {
    let held = futures::future::try_join_all(servers.iter().map(|server| read(server))).await?;
    Ok(servers
        .iter()
        .zip(held)
        .map(|(server, holds)| match holds {
            Holds::Record(placement) => format!(
                "{server}: placement generation {}, servers {}, replication factor {}{}",
                placement.generation,
                list(&placement.servers),
                placement.replication_factor,
                placement
                    .change
                    .as_ref()
                    .map_or(String::new(), |change| format!(
                        ", changing to servers {} with replication factor {} ({})",
                        list(&change.servers),
                        change.replication_factor,
                        match change.phase {
                            Phase::Preparing => "preparing",
                            Phase::Copying => "copying",
                            Phase::Switching => "switching",
                        }
                    ))
            ),
            Holds::Unreadable(error) => {
                format!("{server}: an unreadable placement record ({error})")
            }
            Holds::Legacy(_) => {
                format!("{server}: data of this deployment from before placement records")
            }
            Holds::Nothing => format!("{server}: nothing of this deployment (new or emptied)"),
        })
        .collect())
}

/// Record `servers` as the store's placement on every one of them, whatever they held: the
/// operator's acceptance of the store as it is now (a server restarted empty, its share of the
/// data lost). The generation goes past every record found.
pub async fn accept(servers: &[String], replication_factor: u32) -> ItemResult<Placement> {
    let held = futures::future::try_join_all(servers.iter().map(|server| read(server))).await?;
    let generation = held
        .iter()
        .filter_map(|holds| match holds {
            Holds::Record(placement) => Some(placement.generation),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        + 1;
    let versioned = held.iter().find_map(|holds| match holds {
        Holds::Record(placement) => Some(placement.versioned),
        _ => None,
    });
    let placement = Placement {
        generation,
        servers: servers.iter().cloned().collect(),
        replication_factor,
        change: None,
        // A store nothing is known of any more starts versioned, as a fresh one.
        versioned: versioned.unwrap_or(Some(true)),
        routing: Some(ROUTING_SCHEME.to_owned()),
    };
    futures::future::try_join_all(
        servers
            .iter()
            .map(|server| replace_record(server, &placement)),
    )
    .await?;
    Ok(placement)
}

enum Judged {
    Done(Verdict),
    /// Nothing anywhere: a new store.
    Fresh,
    /// Every server holds data from before placement records and none a record.
    Legacy,
}

fn judge(servers: &[String], wanted: &Placement, held: &[Holds]) -> Judged {
    let named = |pick: &dyn Fn(&Holds) -> bool| -> Vec<&String> {
        servers
            .iter()
            .zip(held)
            .filter(|(_, holds)| pick(holds))
            .map(|(server, _)| server)
            .collect()
    };
    if let Some((server, error)) =
        servers
            .iter()
            .zip(held)
            .find_map(|(server, holds)| match holds {
                Holds::Unreadable(error) => Some((server, error)),
                _ => None,
            })
    {
        return Judged::Done(Verdict::Refused(format!(
            "the placement record on {server} cannot be read ({error}): it was written by a \
             newer release or damaged"
        )));
    }
    let records: Vec<&Placement> = held
        .iter()
        .filter_map(|holds| match holds {
            Holds::Record(placement) => Some(placement),
            _ => None,
        })
        .collect();
    if let Some(why) = records.iter().find_map(|record| record.routing_mismatch()) {
        return Judged::Done(Verdict::Refused(why));
    }
    let Some(first) = records.first().copied() else {
        let legacy = named(&|holds| matches!(holds, Holds::Legacy(_)));
        let empty = named(&|holds| *holds == Holds::Nothing);
        return match (legacy.is_empty(), empty.is_empty()) {
            (true, _) => Judged::Fresh,
            (false, true) => match misplaced(servers, held) {
                None => Judged::Legacy,
                Some((marker, found, routed)) => Judged::Done(Verdict::Refused(format!(
                    "the store was written under another server list: its item {marker} is on \
                     {found} where --memcached routes it to {routed}; start the sidecars with \
                     the servers the store was written under"
                ))),
            },
            (false, false) => Judged::Done(Verdict::Refused(format!(
                "servers {} hold this deployment's data but {} hold none: a server was added to \
                 the list (start the sidecars with the servers the store was written under), or \
                 restarted empty (restore its memory file, or accept the loss of its share: \
                 zenko-memcached-sidecar placement accept --memcached {})",
                list(legacy),
                list(empty),
                list(servers)
            ))),
        };
    };
    // The newest record rules: a change writes each generation one server after another.
    let first = records
        .iter()
        .copied()
        .max_by_key(|placement| placement.generation)
        .unwrap_or(first);
    if let Some(other) = records
        .iter()
        .find(|placement| placement.generation == first.generation && **placement != first)
    {
        return Judged::Done(Verdict::Refused(format!(
            "the servers disagree on the placement: generation {} lists {} and also {}; the \
             record was damaged or written by hand: record the placement again with \
             zenko-memcached-sidecar placement accept",
            first.generation,
            list(&first.servers),
            list(&other.servers)
        )));
    }
    let target = first.change.as_ref();
    let admitted_servers = wanted.servers == first.servers
        || target.is_some_and(|change| wanted.servers == change.servers);
    if !admitted_servers {
        let added: Vec<&String> = wanted.servers.difference(&first.servers).collect();
        let missing: Vec<&String> = first.servers.difference(&wanted.servers).collect();
        let mut differs = Vec::new();
        if !added.is_empty() {
            differs.push(format!("{} not in it", list(&added)));
        }
        if !missing.is_empty() {
            differs.push(format!("{} missing from --memcached", list(&missing)));
        }
        let moving = target.map_or(String::new(), |change| {
            format!(
                ", or --memcached {} (the servers it is moving to)",
                list(&change.servers)
            )
        });
        return Judged::Done(Verdict::Refused(format!(
            "--memcached differs from the store's placement (generation {}, servers {}): {}; \
             start with --memcached {}{moving} (changing the servers of a store needs a \
             placement change, which moves the data: zenko-memcached-sidecar placement change)",
            first.generation,
            list(&first.servers),
            differs.join(", "),
            list(&first.servers)
        )));
    }
    // Servers of the current layout that lost their record lost their contents; servers a
    // change is adding get theirs from the change.
    let without: Vec<&String> = servers
        .iter()
        .zip(held)
        .filter(|(server, holds)| {
            !matches!(holds, Holds::Record(_)) && first.servers.contains(*server)
        })
        .map(|(server, _)| server)
        .collect();
    // Fewer servers than the factor restarted empty: every item still has a copy elsewhere,
    // which reads copy back; they get the record again and serving goes on.
    if !without.is_empty() && without.len() >= first.replication_factor as usize {
        return Judged::Done(Verdict::Refused(format!(
            "servers {} hold no placement record while the others do: restarted empty (their \
             share of the data is lost) or replaced; restore their memory files, or accept the \
             loss: zenko-memcached-sidecar placement accept --memcached {}",
            list(without),
            list(servers)
        )));
    }
    if !first.admits(&wanted.servers, wanted.replication_factor) {
        let factor = if wanted.servers == first.servers {
            first.replication_factor
        } else {
            target.map_or(first.replication_factor, |change| change.replication_factor)
        };
        return Judged::Done(Verdict::Refused(format!(
            "the store is written with replication factor {factor} and this sidecar was given \
             {}: start it with --replication-factor {factor}",
            wanted.replication_factor
        )));
    }
    Judged::Done(Verdict::Agreed(first.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(servers: &[&str]) -> Placement {
        Placement {
            generation: 1,
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            replication_factor: 1,
            change: None,
            versioned: None,
            routing: None,
        }
    }

    fn servers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn refused(judged: Judged) -> String {
        match judged {
            Judged::Done(Verdict::Refused(why)) => why,
            Judged::Done(Verdict::Agreed(p)) => panic!("agreed on {p:?}"),
            Judged::Fresh => panic!("fresh"),
            Judged::Legacy => panic!("legacy"),
        }
    }

    #[test]
    fn the_same_servers_in_any_order_agree() {
        let store = placement(&["a:1", "b:1"]);
        let held = [Holds::Record(store.clone()), Holds::Record(store.clone())];
        let judged = judge(
            &servers(&["b:1", "a:1"]),
            &placement(&["b:1", "a:1"]),
            &held,
        );
        assert!(matches!(judged, Judged::Done(Verdict::Agreed(p)) if p == store));
    }

    #[test]
    fn an_added_or_missing_server_is_refused_with_the_list_to_use() {
        let store = placement(&["a:1", "b:1"]);
        let why = refused(judge(
            &servers(&["a:1", "b:1", "c:1"]),
            &placement(&["a:1", "b:1", "c:1"]),
            &[
                Holds::Record(store.clone()),
                Holds::Record(store.clone()),
                Holds::Nothing,
            ],
        ));
        assert!(
            why.contains("c:1 not in it") && why.contains("--memcached a:1,b:1"),
            "{why}"
        );
        let why = refused(judge(
            &servers(&["a:1"]),
            &placement(&["a:1"]),
            &[Holds::Record(store)],
        ));
        assert!(why.contains("b:1 missing from --memcached"), "{why}");
    }

    #[test]
    fn a_server_without_its_record_or_another_factor_is_refused() {
        let store = placement(&["a:1", "b:1"]);
        let why = refused(judge(
            &servers(&["a:1", "b:1"]),
            &store,
            &[Holds::Record(store.clone()), Holds::Nothing],
        ));
        assert!(
            why.contains("servers b:1 hold no placement record"),
            "{why}"
        );
        let mut two = store.clone();
        two.replication_factor = 2;
        let why = refused(judge(
            &servers(&["a:1", "b:1"]),
            &two,
            &[Holds::Record(store.clone()), Holds::Record(store)],
        ));
        assert!(why.contains("--replication-factor 1"), "{why}");
    }

    #[test]
    fn a_store_routed_by_another_scheme_is_refused() {
        let mut store = placement(&["a:1", "b:1"]);
        let held = [Holds::Record(store.clone()), Holds::Record(store.clone())];
        let list = servers(&["a:1", "b:1"]);
        assert!(matches!(
            judge(&list, &store, &held),
            Judged::Done(Verdict::Agreed(_))
        ));
        store.routing = Some(ROUTING_SCHEME.to_owned());
        let held = [Holds::Record(store.clone()), Holds::Record(store.clone())];
        assert!(matches!(
            judge(&list, &store, &held),
            Judged::Done(Verdict::Agreed(_))
        ));
        store.routing = Some("jump-consistent-hash".to_owned());
        let why = refused(judge(
            &list,
            &store,
            &[Holds::Record(store.clone()), Holds::Nothing],
        ));
        assert!(
            why.contains("\"jump-consistent-hash\"") && why.contains(ROUTING_SCHEME),
            "{why}"
        );
    }

    #[test]
    fn stores_from_before_placement_records() {
        let wanted = placement(&["a:1", "b:1"]);
        let list = servers(&["a:1", "b:1"]);
        // Each marker where the list routes it: the same list the store was written under.
        let route = |marker: &str| Rendezvous::server(marker.as_bytes(), &list);
        let on = |server: usize| {
            Holds::Legacy(
                legacy_markers()
                    .into_iter()
                    .filter(|marker| route(marker) == server)
                    .take(3)
                    .collect(),
            )
        };
        assert!(matches!(
            judge(&list, &wanted, &[on(0), on(1)]),
            Judged::Legacy
        ));
        // The same items under a list they were not written under.
        let why = refused(judge(&list, &wanted, &[on(1), on(0)]));
        assert!(why.contains("written under another server list"), "{why}");
        assert!(matches!(
            judge(&list, &wanted, &[Holds::Nothing, Holds::Nothing]),
            Judged::Fresh
        ));
        let why = refused(judge(&list, &wanted, &[on(0), Holds::Nothing]));
        assert!(why.contains("b:1 hold none"), "{why}");
    }
}
