//! Opening a store the way its sidecars read it, for the tools (`check`, `export`, `import`):
//! with the replication factor its placement records, since a store with replicas has a header
//! in every value and routes every key to several servers.

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

/// Open `servers` with the factor their placement records (1 without a record).
pub async fn open(servers: &[String]) -> Result<Opened, String> {
    let placement = placement::recorded(servers)
        .await
        .map_err(unreachable(servers))?;
    let factor = placement
        .as_ref()
        .map_or(1, |placement| placement.replication_factor);
    let items = open_with_factor(servers, factor).await?;
    Ok(Opened { items, placement })
}

/// Open `servers` with replication factor `factor`.
pub async fn open_with_factor(servers: &[String], factor: u32) -> Result<SharedItemStore, String> {
    let factor = factor as usize;
    let items: SharedItemStore = if factor > 1 {
        Arc::new(
            ReplicatedStore::connect(servers, factor)
                .await
                .map_err(unreachable(servers))?,
        )
    } else {
        Arc::new(
            MemcachedStore::connect(servers)
                .await
                .map_err(unreachable(servers))?,
        )
    };
    items.ping().await.map_err(unreachable(servers))?;
    Ok(items)
}

/// Whether `listed` names the servers `recorded` lists. Names route keys, so they must be the
/// same, except for a single server, which holds every key whatever its name: a tool run in
/// another pod reaches a one-pod module's memcached by another name than its sidecar's
/// `127.0.0.1:11211`.
pub fn same_servers(recorded: &Placement, listed: &[String]) -> bool {
    let named: std::collections::BTreeSet<String> = listed.iter().cloned().collect();
    recorded.servers == named || (recorded.servers.len() == 1 && named.len() == 1)
}
