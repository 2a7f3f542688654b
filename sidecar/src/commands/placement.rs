//! `zenko-memcached-sidecar placement show|accept`: the placement recorded in the store.

use std::io::Write;

use crate::config::{PlacementAction, PlacementArgs};
use crate::placement;

/// Run the action, printing to `out`.
pub async fn placement(args: &PlacementArgs, out: &mut impl Write) -> Result<(), String> {
    let (PlacementAction::Show(servers) | PlacementAction::Accept(servers)) = &args.action;
    let list = servers.memcached.join(",");
    let unreachable = |error| format!("cannot read or write memcached at {list}: {error}");
    let lines = match args.action {
        PlacementAction::Show(_) => placement::describe(&servers.memcached)
            .await
            .map_err(unreachable)?,
        PlacementAction::Accept(_) => {
            let before = placement::describe(&servers.memcached)
                .await
                .map_err(unreachable)?;
            // The factor stays what the store is written with (its items carry its copies).
            let factor = placement::recorded(&servers.memcached)
                .await
                .map_err(unreachable)?
                .map_or(1, |placement| placement.replication_factor);
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
