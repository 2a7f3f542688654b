//! The placement record: one item on every server naming the servers and the replication
//! factor the store is written under; read at start and compared with the configuration.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::items::{Expiry, ItemError, ItemKey, ItemResult, ItemStore, MemcachedStore};

/// The item that holds the placement record, on each server itself (never routed).
pub const PLACEMENT_ITEM: &str = "zmm:placement";
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

/// The servers and factor a store is written under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Counts changes of the placement.
    pub generation: u64,
    /// Server names as the sidecars list them (routing hashes the names, not addresses).
    pub servers: BTreeSet<String>,
    pub replication_factor: u32,
}

impl Placement {
    fn encode(&self) -> ItemResult<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|error| ItemError::Protocol(error.to_string()))
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

fn list(servers: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    servers
        .into_iter()
        .map(|server| server.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

fn key(text: &str) -> ItemResult<ItemKey> {
    ItemKey::new(text).map_err(|error| ItemError::Protocol(error.to_string()))
}

/// One server alone: the placement record is each server's own, never routed.
async fn on(server: &str) -> ItemResult<MemcachedStore> {
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

/// The placement record one server holds, if it holds a readable one.
pub(super) async fn read_record(server: &str) -> ItemResult<Option<Placement>> {
    Ok(match read(server).await? {
        Holds::Record(placement) => Some(placement),
        _ => None,
    })
}

/// The placement the servers record (the first record found), for the tools that read a store
/// and must read it as its sidecars do; `None` when no server holds one.
pub async fn recorded(servers: &[String]) -> ItemResult<Option<Placement>> {
    for server in servers {
        if let Some(placement) = read_record(server).await? {
            return Ok(Some(placement));
        }
    }
    Ok(None)
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
    let wanted = Placement {
        generation: 1,
        servers: servers.iter().cloned().collect(),
        replication_factor,
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
    use memcache::exp::Router;
    let router = memcache::exp::Rendezvous::new();
    servers.iter().zip(held).find_map(|(server, holds)| {
        let Holds::Legacy(found) = holds else {
            return None;
        };
        found.iter().find_map(|marker| {
            let routed = &servers[router
                .route(marker.as_bytes(), servers)
                .min(servers.len() - 1)];
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
                "{server}: placement generation {}, servers {}, replication factor {}",
                placement.generation,
                list(&placement.servers),
                placement.replication_factor
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
    let placement = Placement {
        generation,
        servers: servers.iter().cloned().collect(),
        replication_factor,
    };
    let item = placement.encode()?;
    futures::future::try_join_all(servers.iter().map(|server| {
        let item = item.clone();
        async move {
            let store = on(server).await?;
            store.set(&key(PLACEMENT_ITEM)?, item, Expiry::Never).await
        }
    }))
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
    let Some(first) = records.first() else {
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
    if let Some(other) = records.iter().find(|placement| *placement != first) {
        return Judged::Done(Verdict::Refused(format!(
            "the servers disagree on the placement: generation {} lists {} and generation {} \
             lists {}; a placement change was interrupted: run it again",
            first.generation,
            list(&first.servers),
            other.generation,
            list(&other.servers)
        )));
    }
    let added: Vec<&String> = wanted.servers.difference(&first.servers).collect();
    let missing: Vec<&String> = first.servers.difference(&wanted.servers).collect();
    if !added.is_empty() || !missing.is_empty() {
        let mut differs = Vec::new();
        if !added.is_empty() {
            differs.push(format!("{} not in it", list(&added)));
        }
        if !missing.is_empty() {
            differs.push(format!("{} missing from --memcached", list(&missing)));
        }
        return Judged::Done(Verdict::Refused(format!(
            "--memcached differs from the store's placement (generation {}, servers {}): {}; \
             start with --memcached {} (changing the servers of a store needs a placement \
             change, which moves the data)",
            first.generation,
            list(&first.servers),
            differs.join(", "),
            list(&first.servers)
        )));
    }
    let without = named(&|holds| !matches!(holds, Holds::Record(_)));
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
    if first.replication_factor != wanted.replication_factor {
        return Judged::Done(Verdict::Refused(format!(
            "the store is written with replication factor {} and this sidecar was given {}: \
             start it with --replication-factor {}",
            first.replication_factor, wanted.replication_factor, first.replication_factor
        )));
    }
    Judged::Done(Verdict::Agreed((*first).clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(servers: &[&str]) -> Placement {
        Placement {
            generation: 1,
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            replication_factor: 1,
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
    fn stores_from_before_placement_records() {
        let wanted = placement(&["a:1", "b:1"]);
        let list = servers(&["a:1", "b:1"]);
        // Each marker where the list routes it: the same list the store was written under.
        use memcache::exp::Router;
        let route = |marker: &str| memcache::exp::Rendezvous::new().route(marker.as_bytes(), &list);
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
