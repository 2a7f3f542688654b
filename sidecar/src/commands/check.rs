//! `zenko-memcached-sidecar check`: the operator's check of the metadata kept in memcached.

use std::io::Write;
use std::sync::Arc;

use crate::config::CheckArgs;
use crate::items::{MemcachedStore, SharedItemStore};
use crate::ordered::{MemcachedOrderedStore, TreeConfig};
use crate::placement::{self, ReplicatedStore};

/// What the check found, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Sound,
    Problems,
    /// Only databases that changed under every walk could not be checked.
    Busy,
}

/// Run the check, printing to `out`.
pub async fn check(args: &CheckArgs, out: &mut impl Write) -> Result<Verdict, String> {
    let list = &args.servers.memcached;
    let servers = list.join(",");
    let unreachable = |error| format!("cannot reach memcached at {servers}: {error}");
    // Read as the sidecars read it: a versioned store has a header in every value, and its
    // record says where each item is.
    let items: SharedItemStore = match placement::recorded(list).await.map_err(unreachable)? {
        Some(placement) if placement.is_versioned() => Arc::new(
            ReplicatedStore::open(&placement)
                .await
                .map_err(unreachable)?,
        ),
        _ => Arc::new(MemcachedStore::connect(list).await.map_err(unreachable)?),
    };
    items.ping().await.map_err(unreachable)?;
    let store = MemcachedOrderedStore::open(items, TreeConfig::default())
        .await
        .map_err(|error| error.to_string())?;
    let report = store
        .check()
        .await
        .map_err(|error| format!("the check could not finish: {error}"))?;
    let print = |out: &mut dyn Write, line: String| {
        // A closed stdout (a pipe to `head`) must not turn a verdict into a panic.
        let _ = writeln!(out, "{line}");
    };
    let mut lines = Vec::new();
    if !args.quiet || !report.catalog.ok() {
        lines.push(report.catalog.to_string());
    }
    for database in &report.databases {
        if !args.quiet || !database.ok() {
            lines.push(database.to_string());
        }
    }
    lines.push(report.summary());
    for line in lines {
        print(out, line);
    }
    Ok(if report.ok() {
        Verdict::Sound
    } else if report.only_busy() {
        Verdict::Busy
    } else {
        Verdict::Problems
    })
}
