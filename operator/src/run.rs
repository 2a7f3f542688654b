//! The `run` command: metrics and health endpoints, leader election, then the controller.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::controller::{self, Context};
use crate::error::Result;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;
use crate::server::{self, Health};

pub async fn run(args: RunArgs) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Arc::new(Health {
        registry,
        ready: false.into(),
    });
    let server = tokio::spawn(server::serve(args.listen, health.clone()));

    let client = Client::try_default().await?;
    health.ready.store(true, Ordering::Relaxed);
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("zenko-memcached-operator-{}", std::process::id()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Some(identity.clone()),
    ));

    let result = if args.leader_election {
        let leases: Api<Lease> = Api::namespaced(client, &args.lease_namespace);
        let elector = LeaderElector::new(leases, LeaseConfig::new(&args.lease_name, identity));
        elector.wait_until_leader().await?;
        metrics.leader.set(1);
        let outcome = tokio::select! {
            done = controller::run(ctx, args.namespace.as_deref()) => done,
            // Losing the Lease stops reconciling at once; the process exits and comes back as a standby.
            lost = elector.keep_leading() => Err(lost),
        };
        metrics.leader.set(0);
        if outcome.is_ok()
            && let Err(e) = elector.release().await
        {
            warn!(error = %e, "could not release the Lease");
        }
        outcome
    } else {
        controller::run(ctx, args.namespace.as_deref()).await
    };
    server.abort();
    match &result {
        Ok(()) => info!("controller stopped"),
        Err(e) => error!(error = %e, "controller stopped"),
    }
    result
}
