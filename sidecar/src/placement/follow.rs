//! The follower: every sidecar of a store reads the placement record once a second, adopts a
//! newer generation, and reports the generation it runs, so that a placement change takes its
//! next step only when every sidecar is there (`docs/placement-changes.md`).
//!
//! A sidecar reports a generation once no operation started under an older view is still
//! running. Reports live in one item on each server (`zmm:sidecars`), a map from the sidecar's
//! instance to its generation and the time of the report; the driver of a change counts a
//! report as live for [`REPORT_LIFE`]. A sidecar that could not confirm its view for
//! [`super::replicas::FENCE`] (much less) stops serving, so a report that expired is never of a
//! sidecar still serving an old view.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::layout::{Server, View};
use super::record::{self, Placement, SIDECARS_ITEM, Verdict};
use super::refill::{self, RefillRate};
use super::replicas::ReplicatedStore;
use crate::health::Health;
use crate::items::{CasOutcome, Expiry, ItemError, ItemResult, ItemStore, SharedItemStore};
use crate::metrics::Metrics;

/// How often the records are read and the report written.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long the driver of a change counts a report as live.
pub const REPORT_LIFE: Duration = Duration::from_secs(20);
/// Reports older than this are dropped from the map by the next writer.
const REPORT_PRUNE: Duration = Duration::from_secs(300);
/// Attempts to replace the map on one server before giving up until the next tick.
const REPORT_ATTEMPTS: usize = 8;
/// How long one server may take to answer a tick: a server cut off must not hold the others'
/// answers past the fence.
const SERVER_WAIT: Duration = Duration::from_secs(2);

/// `work` within [`SERVER_WAIT`].
async fn bounded<T>(work: impl Future<Output = ItemResult<T>>) -> ItemResult<T> {
    tokio::time::timeout(SERVER_WAIT, work)
        .await
        .unwrap_or_else(|_| Err(ItemError::Unavailable("no answer in time".into())))
}

/// One sidecar's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The generation it runs: every operation it has in flight started under it or later.
    pub generation: u64,
    /// When it wrote this, in seconds since the Unix epoch.
    pub at: u64,
}

/// The reports on one server, by sidecar instance.
pub type Reports = BTreeMap<String, Report>;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The reports one server holds.
pub async fn read_reports(store: &impl ItemStore) -> ItemResult<Reports> {
    Ok(match store.get(&record::key(SIDECARS_ITEM)?).await? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Reports::new(),
    })
}

/// Write this sidecar's report into one server's map (`None`: take it out).
async fn write_report(
    store: &impl ItemStore,
    instance: &str,
    report: Option<Report>,
) -> ItemResult<()> {
    let key = record::key(SIDECARS_ITEM)?;
    for _ in 0..REPORT_ATTEMPTS {
        let held = store.gets(&key).await?;
        let mut reports: Reports = held
            .as_ref()
            .and_then(|(bytes, _)| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        let now = now_secs();
        reports.retain(|_, report| now.saturating_sub(report.at) < REPORT_PRUNE.as_secs());
        match report {
            Some(report) => reports.insert(instance.to_owned(), report),
            None => reports.remove(instance),
        };
        let bytes = serde_json::to_vec(&reports)
            .map_err(|error| ItemError::Protocol(error.to_string()))?
            .into();
        let stored = match held {
            None => store.add(&key, bytes, Expiry::Never).await?,
            Some((_, token)) => {
                store.cas(&key, bytes, token, Expiry::Never).await? == CasOutcome::Stored
            }
        };
        if stored {
            return Ok(());
        }
    }
    Err(ItemError::Unavailable(
        "the sidecars' reports kept changing".into(),
    ))
}

/// What the follower needs besides the store.
pub struct Follower {
    pub store: Arc<ReplicatedStore>,
    /// The same store, as the services use it (for epochs).
    pub items: SharedItemStore,
    pub health: Health,
    pub metrics: Metrics,
    pub refill_rate: RefillRate,
    /// `--memcached` and `--replication-factor`, judged again while the placement refuses them.
    pub configured: Vec<String>,
    pub factor: u32,
}

/// A running follower.
pub struct Following {
    task: tokio::task::JoinHandle<()>,
    store: Arc<ReplicatedStore>,
    instance: String,
}

impl Following {
    /// Stop following and take this sidecar's report out, so that a change going on does not
    /// wait for it to expire (on a clean stop; a killed sidecar's report expires).
    pub async fn leave(self) {
        self.task.abort();
        let view = self.store.view_unfenced();
        futures::future::join_all(view.members().into_iter().map(|server| {
            bounded(write_report(
                &view.servers[server].store,
                &self.instance,
                None,
            ))
        }))
        .await;
    }
}

impl Follower {
    /// Follow the records until the runtime stops or [`Following::leave`].
    pub fn spawn(self) -> Following {
        let instance = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sidecar".into()),
            hex::encode(rand::random::<[u8; 4]>())
        );
        let store = self.store.clone();
        let id = instance.clone();
        let task = tokio::spawn(async move {
            let mut state = State {
                instance,
                draining: Vec::new(),
                adopted: None,
                epochs: None,
                refills: None,
            };
            self.store.fence();
            if self.health.refusal().is_none() {
                self.start_refills(&mut state);
            }
            loop {
                if let Err(error) = self.tick(&mut state).await {
                    tracing::debug!(%error, "placement follower");
                }
                tokio::time::sleep(INTERVAL).await;
            }
        });
        Following {
            task,
            store,
            instance: id,
        }
    }

    async fn tick(&self, state: &mut State) -> ItemResult<()> {
        if self.health.refusal().is_some() && !self.health.contents_lost() {
            return self.judge_again(state).await;
        }
        let current = self.store.placement();
        // Over the connections the store keeps: every server the placement names.
        let servers: Vec<Arc<Server>> = {
            let view = self.store.view_unfenced();
            view.members()
                .into_iter()
                .map(|server| view.servers[server].clone())
                .collect()
        };
        let held = futures::future::join_all(
            servers
                .iter()
                .map(|server| bounded(record::record_in(&server.store))),
        )
        .await;
        let read_any = held.iter().any(|held| matches!(held, Ok(Some(_))));
        let newest = held
            .iter()
            .filter_map(|held| held.as_ref().ok().and_then(Option::as_ref))
            .max_by_key(|placement| placement.generation)
            .cloned();
        let newest = newest.filter(|newest| newest.generation > current.generation);
        if let Some(why) = newest.as_ref().and_then(Placement::routing_mismatch) {
            // Written by a release that routes keys elsewhere: nothing read here would be
            // where this sidecar looks.
            self.health.refuse(why);
            return Ok(());
        }
        if let Some(newest) = newest
            && let Err(error) = self.adopt(state, &newest).await
        {
            // Serving on under the current generation is safe: the change waits for this
            // sidecar's report of the new one before its next step.
            tracing::warn!(generation = newest.generation, %error,
                "cannot adopt the new placement generation yet");
        }
        let current = self.store.placement();
        // New servers of a stable layout get their epoch items, in the background: creating
        // one is a write, and a write must never wait on the follower that lets it go on.
        if state.epochs != Some(current.generation)
            && current.change.is_none()
            && self.health.refusal().is_none()
        {
            state.epochs = Some(current.generation);
            let (health, items) = (self.health.clone(), self.items.clone());
            tokio::spawn(async move {
                if let Err(error) = health.establish_epoch(&items).await {
                    tracing::warn!(%error, "cannot write the epoch items of new servers");
                }
            });
        }
        // With one copy of each item, a server of the current layout without its record
        // restarted empty: its share is gone.
        if current.replication_factor == 1 {
            for (server, held) in servers.iter().zip(&held) {
                if current.servers.contains(&server.name) && matches!(held, Ok(None)) {
                    tracing::error!(server = %server.name, "a server lost its placement record");
                    self.health.declare_lost();
                }
            }
        }
        state.draining.retain(|old| old.strong_count() > 0);
        if state.draining.is_empty() && state.adopted != Some(current.generation) {
            state.adopted = Some(current.generation);
            tracing::info!(
                generation = current.generation,
                "placement generation adopted: no operation of an older one is in flight"
            );
        }
        let Some(generation) = state.adopted else {
            return Ok(());
        };
        let report = Report {
            generation,
            at: now_secs(),
        };
        let view = self.store.view_unfenced();
        let written = futures::future::join_all(view.members().into_iter().map(|server| {
            bounded(write_report(
                &view.servers[server].store,
                &state.instance,
                Some(report),
            ))
        }))
        .await;
        drop(view);
        if read_any && written.iter().any(Result::is_ok) {
            self.store.confirm();
        }
        Ok(())
    }

    async fn adopt(&self, state: &mut State, placement: &Placement) -> ItemResult<()> {
        let old = self.store.adopt(placement).await?;
        tracing::info!(
            generation = placement.generation,
            servers = placement.servers.len(),
            changing = placement.change.is_some(),
            "adopting a new placement generation"
        );
        state.draining.push(old);
        Ok(())
    }

    /// While the placement refuses this sidecar's configuration: judge it again, and serve
    /// once it is admitted (a change to these servers started).
    async fn judge_again(&self, state: &mut State) -> ItemResult<()> {
        match record::establish(&self.configured, self.factor).await? {
            Verdict::Refused(why) => {
                if self.health.refusal().as_deref() != Some(why.as_str()) {
                    self.health.refuse(why);
                }
            }
            Verdict::Agreed(placement) => {
                let old = self.store.adopt(&placement).await?;
                state.draining.push(old);
                self.store.confirm();
                // Its epoch items are taken (or written) once the layout is stable (above).
                self.start_refills(state);
                self.health.serve();
            }
        }
        Ok(())
    }

    fn start_refills(&self, state: &mut State) {
        if state.refills.is_none() {
            state.refills = Some(refill::watch(
                self.store.clone(),
                self.metrics.clone(),
                self.refill_rate,
            ));
        }
    }
}

pub struct State {
    instance: String,
    /// Views left behind whose operations may still run.
    draining: Vec<Weak<View>>,
    adopted: Option<u64>,
    /// The generation whose epoch items are established.
    epochs: Option<u64>,
    refills: Option<tokio::task::JoinHandle<()>>,
}
