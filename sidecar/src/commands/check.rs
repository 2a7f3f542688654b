//! `zenko-memcached-sidecar check`: the operator's check of the metadata kept in memcached.

use std::io::Write;

use super::store;
use crate::config::CheckArgs;
use crate::ordered::{MemcachedOrderedStore, TreeConfig};

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
    let items = store::open(&args.servers.memcached).await?.items;
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
