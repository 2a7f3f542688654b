//! Opening a store the way its sidecars read it, for the tools (`check`, `export`, `import`):
//! as its placement record lays it out, since a versioned store has a header in every value
//! and routes every key to its owners.

use std::sync::Arc;

use crate::items::{MemcachedStore, SharedItemStore};
use crate::placement::{self, Placement, ReplicatedStore};

/// A store opened for a tool, and the placement it records (if any).
pub struct Opened {
    pub items: SharedItemStore,
    pub placement: Option<Placement>,
}

/// The message of a tool that cannot reach `servers`.
pub fn unreachable(servers: &[String]) -> impl Fn(crate::items::ItemError) -> String {
    let list = servers.join(",");
    move |error| format!("cannot reach memcached at {list}: {error}")
}

/// Open `servers` as their placement record lays the store out: through the replicated store
/// (every value headed by its version) unless it is a single-copy store written before
/// placements could change, or has no record yet.
pub async fn open(servers: &[String]) -> Result<Opened, String> {
    let placement = placement::recorded(servers)
        .await
        .map_err(unreachable(servers))?;
    let items: SharedItemStore = match &placement {
        // As recorded (the change under way included), when listed by the recorded names.
        Some(recorded) if recorded.is_versioned() && recorded.all_servers() == named(servers) => {
            Arc::new(
                ReplicatedStore::open(recorded)
                    .await
                    .map_err(unreachable(servers))?,
            )
        }
        Some(recorded) if recorded.is_versioned() => {
            return open_versioned(servers, recorded.replication_factor)
                .await
                .map(|items| Opened { items, placement });
        }
        _ => Arc::new(
            MemcachedStore::connect(servers)
                .await
                .map_err(unreachable(servers))?,
        ),
    };
    items.ping().await.map_err(unreachable(servers))?;
    Ok(Opened { items, placement })
}

/// Open `servers` as a versioned store with replication factor `factor` (a fresh store, or one
/// server known by another name).
pub async fn open_versioned(servers: &[String], factor: u32) -> Result<SharedItemStore, String> {
    let items: SharedItemStore = Arc::new(
        ReplicatedStore::connect(servers, factor as usize)
            .await
            .map_err(unreachable(servers))?,
    );
    items.ping().await.map_err(unreachable(servers))?;
    Ok(items)
}

fn named(servers: &[String]) -> std::collections::BTreeSet<String> {
    servers.iter().cloned().collect()
}

/// Whether `listed` names the servers `recorded` lists. Names route keys, so they must be the
/// same, except for a single server, which holds every key whatever its name: a tool run in
/// another pod reaches a one-pod module's memcached by another name than its sidecar's
/// `127.0.0.1:11211`.
pub fn same_servers(recorded: &Placement, listed: &[String]) -> bool {
    let named = named(listed);
    recorded.servers == named || (recorded.servers.len() == 1 && named.len() == 1)
}
