//! `zenko-memcached-sidecar placement show|accept|change`: the placement recorded in the
//! store, and changing it.

use std::io::Write;
use std::time::Duration;

use crate::config::{ChangeArgs, PlacementAction, PlacementArgs};
use crate::placement::{self, ChangeOptions, Target};

/// Run the action, printing to `out`.
pub async fn placement(args: &PlacementArgs, out: &mut impl Write) -> Result<(), String> {
    let servers = match &args.action {
        PlacementAction::Show(servers) | PlacementAction::Accept(servers) => servers,
        PlacementAction::Change(change) => return run_change(change, out).await,
    };
    let list = servers.memcached.join(",");
    let unreachable = |error| format!("cannot read or write memcached at {list}: {error}");
    let lines = match args.action {
        PlacementAction::Show(_) => placement::describe(&servers.memcached)
            .await
            .map_err(unreachable)?,
        PlacementAction::Change(_) => Vec::new(),
        PlacementAction::Accept(_) => {
            let before = placement::describe(&servers.memcached)
                .await
                .map_err(unreachable)?;
            // The factor stays what the store is written with (its items carry its copies).
            let recorded = placement::recorded(&servers.memcached)
                .await
                .map_err(unreachable)?;
            if let Some(change) = recorded.as_ref().and_then(|p| p.change.as_ref()) {
                return Err(format!(
                    "a placement change to {} is under way: finish it first (placement change \
                     --to {})",
                    change.servers.iter().cloned().collect::<Vec<_>>().join(","),
                    change.servers.iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
            let factor = recorded.map_or(1, |placement| placement.replication_factor);
            if factor as usize > servers.memcached.len() {
                return Err(format!(
                    "the store is written with replication factor {factor}: it needs at least \
                     {factor} servers"
                ));
            }
            let recorded = placement::accept(&servers.memcached, factor)
                .await
                .map_err(unreachable)?;
            let mut lines: Vec<String> = before
                .into_iter()
                .map(|line| format!("was {line}"))
                .collect();
            lines.push(format!(
                "recorded placement generation {} on every server: {}",
                recorded.generation, list
            ));
            lines
        }
    };
    for line in lines {
        // A closed stdout must not turn a done change into a failure.
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// `placement change`: progress lines on `out` as the change goes.
async fn run_change(args: &ChangeArgs, out: &mut impl Write) -> Result<(), String> {
    let current = &args.servers.memcached;
    let factor = match args.replication_factor {
        Some(factor) => factor,
        None => placement::recorded(current)
            .await
            .map_err(|error| format!("cannot read the placement record: {error}"))?
            .map_or(1, |placement| placement.replication_factor),
    };
    let target = Target {
        servers: args.to.iter().cloned().collect(),
        replication_factor: factor,
    };
    let options = ChangeOptions {
        rate: args.rate_mib.saturating_mul(1024 * 1024),
        adopt_timeout: Duration::from_secs(args.adopt_timeout_secs),
    };
    // A closed stdout must not stop a change half way.
    let mut progress = |line: &str| {
        let _ = writeln!(out, "{line}");
    };
    let result = placement::change(current, &target, options, &mut progress).await;
    result.map(|_| ()).map_err(|error| error.to_string())
}
