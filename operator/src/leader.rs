//! Leader election on a coordination.k8s.io/v1 Lease, so that two operator replicas never
//! reconcile at the same time.
//!
//! kube-runtime ships no elector. This one follows client-go's rules: a replica takes the Lease
//! when it is free or expired, renews it while it leads, and every write carries the
//! resourceVersion it read, so that two replicas racing for the Lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

use crate::build::labels;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    /// How long a Lease stays valid without renewal; a standby takes over after that.
    pub lease_duration: Duration,
    /// How often the leader renews; well under the duration so one missed renewal is harmless.
    pub renew_every: Duration,
    /// How often a standby checks whether the Lease became free.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This replica took the Lease (created it, or it was free or expired).
    Acquired,
    /// This replica held the Lease and extended it.
    Renewed,
    /// Another replica holds a valid Lease, or won a race for it.
    Follower { holder: Option<String> },
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        matches!(self, Self::Acquired | Self::Renewed)
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> Self {
        Self { api, config }
    }

    /// One acquire-or-renew round against the API server.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<Leadership> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return self.create(now).await;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let outcome = if holder.as_deref() == Some(self.config.identity.as_str()) {
            Leadership::Renewed
        } else if is_expired(spec, now) {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            Leadership::Acquired
        } else {
            return Ok(Leadership::Follower { holder });
        };
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.duration_seconds());
        // `replace` sends the resourceVersion read above: a concurrent writer makes it fail with 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(outcome),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Leadership::Follower { holder: None }),
            Err(e) => Err(e.into()),
        }
    }

    async fn create(&self, now: Timestamp) -> Result<Leadership> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                labels: Some(
                    [(
                        labels::MANAGED_BY_KEY.to_owned(),
                        labels::MANAGER.to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.duration_seconds()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Leadership::Acquired),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Leadership::Follower { holder: None }),
            Err(e) => Err(e.into()),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Waits, as a standby, until this replica leads.
    pub async fn wait_until_leader(&self) -> Result<()> {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(l) if l.is_leader() => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return Ok(());
                }
                Ok(Leadership::Follower { holder }) => {
                    if holder != last_holder {
                        info!(lease = %self.config.name, holder = ?holder, "standing by");
                        last_holder = holder;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(lease = %self.config.name, error = %e, "leader election attempt failed")
                }
            }
            tokio::time::sleep(self.config.retry_every).await;
        }
    }

    /// Renews the Lease until leadership is lost, then returns why. A renewal that fails with
    /// a transient error is retried until the Lease would have expired.
    pub async fn keep_leading(&self) -> Error {
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(l) if l.is_leader() => last_success = tokio::time::Instant::now(),
                Ok(_) => return Error::LeadershipLost(self.config.name.clone()),
                Err(e) => {
                    warn!(lease = %self.config.name, error = %e, "could not renew the Lease");
                    if last_success.elapsed() >= self.config.lease_duration {
                        return Error::LeadershipLost(self.config.name.clone());
                    }
                }
            }
        }
    }

    /// Gives the Lease up on a clean shutdown, so that a standby takes over without waiting
    /// for expiry.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

/// Whether a Lease may be taken: nobody holds it, or its holder stopped renewing it.
pub fn is_expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref() else {
        return true;
    };
    if holder.is_empty() {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed.0.checked_add(duration) {
        Ok(deadline) => deadline <= now,
        Err(_) => false,
    }
}
