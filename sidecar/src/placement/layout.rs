//! Layouts and views: which servers own a key under a placement, and, while a placement
//! changes, which servers a sidecar reads from, writes to and serializes compare-and-swap on
//! (the table in `docs/placement-changes.md`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::health::ServerHealth;
use super::record::{Phase, Placement};
use crate::items::{ItemError, ItemKey, ItemResult, MemcachedStore, Rendezvous};

/// One memcached server of the store, under the name keys are routed by.
pub struct Server {
    pub name: String,
    pub store: MemcachedStore,
    /// The server's incarnation tag (see `replicas`), read at start and by every ping.
    pub(super) tag: AtomicU64,
    /// The value of the server's incarnation marker (`zmm:incarnation`) as last read, once a
    /// commit with copies needed it (see `replicas`).
    pub(super) marker: std::sync::Mutex<Option<bytes::Bytes>>,
    /// How it has been answering (see `health`).
    pub health: ServerHealth,
    /// The filled mark the server held when last probed (`record::FILLED_ITEM`): while it
    /// still holds that value, it holds every acknowledged item it owns, so its "no such item"
    /// is an answer on its own (see `hedged`). `None` while that is not known.
    pub(super) complete: std::sync::Mutex<Option<bytes::Bytes>>,
}

impl std::ops::Deref for Server {
    type Target = MemcachedStore;

    fn deref(&self) -> &MemcachedStore {
        &self.store
    }
}

/// Servers and a replication factor: a key's owners are the first `factor` servers of its
/// rendezvous order over the names.
pub struct Layout {
    /// Indices into the view's servers, in the order of `names`.
    members: Vec<usize>,
    names: Vec<String>,
    factor: usize,
    /// The names without the servers already picked (a bit set of positions), kept so that
    /// routing the second and later owners does not build lists per key.
    without: Mutex<HashMap<u64, Arc<Vec<String>>>>,
}

impl Layout {
    /// `names` are looked up in `servers`; every one must be there.
    fn new(servers: &[Arc<Server>], names: &[String], factor: usize) -> Option<Layout> {
        let members = names
            .iter()
            .map(|name| servers.iter().position(|server| server.name == *name))
            .collect::<Option<Vec<usize>>>()?;
        (factor >= 1 && factor <= names.len() && names.len() <= 64).then(|| Layout {
            members,
            names: names.to_vec(),
            factor,
            without: Mutex::new(HashMap::new()),
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Indices (into the view's servers) of the layout's servers.
    pub fn members_indices(&self) -> Vec<usize> {
        self.members.clone()
    }

    pub fn factor(&self) -> usize {
        self.factor
    }

    /// The servers (indices into the view's servers) that own `key`, primary first.
    pub fn owners(&self, key: &ItemKey) -> Vec<usize> {
        let key = key.as_str().as_bytes();
        let mut picked: u64 = 0;
        let mut owners = Vec::with_capacity(self.factor);
        let first = Rendezvous::server(key, &self.names).min(self.names.len() - 1);
        picked |= 1 << first;
        owners.push(self.members[first]);
        while owners.len() < self.factor {
            let left = self.left(picked);
            let pick = Rendezvous::server(key, &left).min(left.len() - 1);
            // The `pick`th position not picked yet.
            let position = (0..self.names.len())
                .filter(|p| picked & (1 << p) == 0)
                .nth(pick)
                .unwrap_or(0);
            picked |= 1 << position;
            owners.push(self.members[position]);
        }
        owners
    }

    fn left(&self, picked: u64) -> Arc<Vec<String>> {
        let mut cache = self
            .without
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .entry(picked)
            .or_insert_with(|| {
                Arc::new(
                    (0..self.names.len())
                        .filter(|p| picked & (1 << p) == 0)
                        .map(|p| self.names[p].clone())
                        .collect(),
                )
            })
            .clone()
    }
}

/// Where a compare-and-swap item is serialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Primary {
    Server(usize),
    /// Switching, and the item's primary moves: no CAS until the next generation.
    Frozen,
}

/// How a sidecar uses the servers under one placement record.
pub struct View {
    pub generation: u64,
    /// Every server any layout of the record names (and any known before).
    pub servers: Vec<Arc<Server>>,
    /// The layout reads use.
    pub read: Layout,
    /// The other layout writes also go to, while the placement changes.
    pub other: Option<Layout>,
    pub phase: Option<Phase>,
    /// The record this is the view of.
    pub placement: Placement,
}

impl View {
    /// The view of `placement`; every server it names must be in `servers`, and no factor
    /// above its layout's servers.
    pub fn new(servers: Vec<Arc<Server>>, placement: &Placement) -> ItemResult<View> {
        Self::laid_out(servers, placement).ok_or_else(|| {
            ItemError::Protocol(format!(
                "placement generation {} cannot be laid out (a factor above its servers, or a \
                 server unknown)",
                placement.generation
            ))
        })
    }

    fn laid_out(servers: Vec<Arc<Server>>, placement: &Placement) -> Option<View> {
        let current = placement.layout();
        let (read, other, phase) = match &placement.change {
            None => (current, None, None),
            Some(change) => {
                let target = (
                    change.servers.iter().cloned().collect::<Vec<_>>(),
                    change.replication_factor,
                );
                match change.phase {
                    Phase::Preparing => (current, Some(target), Some(Phase::Preparing)),
                    Phase::Copying => (current, Some(target), Some(Phase::Copying)),
                    Phase::Switching => (target, Some(current), Some(Phase::Switching)),
                }
            }
        };
        let read = Layout::new(&servers, &read.0, read.1 as usize)?;
        let other = match other {
            Some((names, factor)) => Some(Layout::new(&servers, &names, factor as usize)?),
            None => None,
        };
        Some(View {
            generation: placement.generation,
            servers,
            read,
            other,
            phase,
            placement: placement.clone(),
        })
    }

    /// A copy for long background work (refills, copies), which must not count as an
    /// operation in flight: a sidecar reports a generation only once no operation holds an
    /// older view.
    pub fn detached(&self) -> ItemResult<View> {
        View::new(self.servers.clone(), &self.placement)
    }

    /// The owners reads ask, in order.
    pub fn read_owners(&self, key: &ItemKey) -> Vec<usize> {
        self.read.owners(key)
    }

    /// Every server a write goes to: the read owners first, then the other layout's (not yet
    /// while preparing).
    pub fn write_owners(&self, key: &ItemKey) -> Vec<usize> {
        if self.phase == Some(Phase::Preparing) {
            return self.read.owners(key);
        }
        self.removal_owners(key)
    }

    /// Every server a delete or an expiry change goes to: the owners under every layout.
    pub fn removal_owners(&self, key: &ItemKey) -> Vec<usize> {
        let mut owners = self.read.owners(key);
        if let Some(other) = &self.other {
            for server in other.owners(key) {
                if !owners.contains(&server) {
                    owners.push(server);
                }
            }
        }
        owners
    }

    /// Where `key`'s compare-and-swap (and the `add` that creates a CAS item) is serialized.
    pub fn primary(&self, key: &ItemKey) -> Primary {
        let read = self.read.owners(key)[0];
        match (&self.phase, &self.other) {
            (Some(Phase::Switching), Some(other)) if other.owners(key)[0] != read => {
                Primary::Frozen
            }
            _ => Primary::Server(read),
        }
    }

    /// The servers a counter is kept on: the primaries of every layout, so that sidecars of
    /// neighbouring generations count in the same place.
    pub fn counter_servers(&self, key: &ItemKey) -> Vec<usize> {
        let mut servers = vec![self.read.owners(key)[0]];
        if let Some(other) = &self.other {
            let primary = other.owners(key)[0];
            if primary != servers[0] {
                servers.push(primary);
            }
        }
        servers
    }

    /// The smallest replication factor of the layouts.
    pub fn min_factor(&self) -> usize {
        self.other
            .as_ref()
            .map_or(self.read.factor, |other| other.factor.min(self.read.factor))
    }

    /// Indices of the servers the layouts name.
    pub fn members(&self) -> Vec<usize> {
        let mut members = self.read.members.clone();
        if let Some(other) = &self.other {
            for server in &other.members {
                if !members.contains(server) {
                    members.push(*server);
                }
            }
        }
        members
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::placement::record::Change;

    const NAMES: [&str; 3] = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];

    /// Servers never dialled: routing needs only their names.
    async fn servers() -> Vec<Arc<Server>> {
        let mut servers = Vec::new();
        for name in NAMES {
            servers.push(Arc::new(Server {
                name: name.to_owned(),
                store: MemcachedStore::connect(&[name.to_owned()]).await.unwrap(),
                tag: AtomicU64::new(0),
                marker: std::sync::Mutex::new(None),
                health: ServerHealth::default(),
                complete: std::sync::Mutex::new(None),
            }));
        }
        servers
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn placement(
        current: &[&str],
        factor: u32,
        change: Option<(&[&str], u32, Phase)>,
    ) -> Placement {
        Placement {
            generation: 7,
            servers: set(current),
            replication_factor: factor,
            change: change.map(|(servers, replication_factor, phase)| Change {
                servers: set(servers),
                replication_factor,
                phase,
            }),
            versioned: Some(true),
            routing: None,
        }
    }

    fn keys() -> Vec<ItemKey> {
        (0..500)
            .map(|n| ItemKey::new(format!("b:{n}")).unwrap())
            .collect()
    }

    fn union(mut a: Vec<usize>, b: Vec<usize>) -> Vec<usize> {
        for server in b {
            if !a.contains(&server) {
                a.push(server);
            }
        }
        a
    }

    #[tokio::test]
    async fn owners_are_distinct_and_the_first_is_where_one_copy_goes() {
        let servers = servers().await;
        let view = View::new(servers.clone(), &placement(&NAMES, 2, None)).unwrap();
        let names: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
        for key in keys() {
            let owners = view.read_owners(&key);
            assert_eq!(owners.len(), 2);
            assert_ne!(owners[0], owners[1]);
            let routed = Rendezvous::server(key.as_str().as_bytes(), &names);
            assert_eq!(servers[owners[0]].name, names[routed], "{key}");
        }
    }

    #[tokio::test]
    async fn each_phase_reads_writes_and_removes_where_the_protocol_says() {
        let servers = servers().await;
        let (c, t): (&[&str], &[&str]) = (&NAMES[..2], &NAMES[..]);
        let stable_c = View::new(servers.clone(), &placement(c, 1, None)).unwrap();
        let stable_t = View::new(servers.clone(), &placement(t, 1, None)).unwrap();
        let view = |phase| View::new(servers.clone(), &placement(c, 1, Some((t, 1, phase))));
        let (preparing, copying, switching) = (
            view(Phase::Preparing).unwrap(),
            view(Phase::Copying).unwrap(),
            view(Phase::Switching).unwrap(),
        );
        let mut frozen = 0;
        for key in keys() {
            let (on_c, on_t) = (stable_c.read_owners(&key), stable_t.read_owners(&key));
            let both = union(on_c.clone(), on_t.clone());
            assert_eq!(preparing.read_owners(&key), on_c);
            assert_eq!(preparing.write_owners(&key), on_c);
            assert_eq!(preparing.removal_owners(&key), both);
            assert_eq!(copying.read_owners(&key), on_c);
            assert_eq!(copying.write_owners(&key), both);
            assert_eq!(copying.primary(&key), Primary::Server(on_c[0]));
            assert_eq!(switching.read_owners(&key), on_t);
            assert_eq!(
                switching.write_owners(&key),
                union(on_t.clone(), on_c.clone())
            );
            let moves = on_c[0] != on_t[0];
            frozen += usize::from(moves);
            let expected = if moves {
                Primary::Frozen
            } else {
                Primary::Server(on_t[0])
            };
            assert_eq!(switching.primary(&key), expected, "{key}");
            assert_eq!(stable_t.primary(&key), Primary::Server(on_t[0]));
        }
        // About a third of the keys move to the new server: some are frozen, most are not.
        assert!(frozen > 100 && frozen < 250, "{frozen} of 500 frozen");
    }

    #[tokio::test]
    async fn a_placement_that_cannot_be_laid_out_is_an_error() {
        let servers = servers().await;
        assert!(View::new(servers.clone(), &placement(&NAMES[..1], 2, None)).is_err());
        assert!(View::new(servers[..1].to_vec(), &placement(&NAMES[..2], 1, None)).is_err());
    }
}
