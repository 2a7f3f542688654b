//! The status a module should show, computed from what the last reconcile saw: a pure function.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::build::{self, labels};
use crate::crd::{Phase, ZenkoMemcachedModule, ZenkoMemcachedModuleStatus};
use crate::placement::{Health, Plan};
use crate::validate::Validated;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What the reconcile learned, as far as the status is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// Every child was applied; the StatefulSet as the API server returned it, and the
    /// placement step decided.
    Applied {
        module: &'a Validated<'a>,
        stateful_set: &'a StatefulSet,
        placement: &'a Plan,
    },
    /// The reconcile failed; `reason` is a CamelCase condition reason.
    Failed {
        reason: &'static str,
        message: &'a str,
    },
}

/// Computes the new status. Counts and endpoints survive a failed reconcile (the pods still run),
/// and a condition keeps its lastTransitionTime while its status does not change.
pub fn compute(
    module: &ZenkoMemcachedModule,
    observation: Observation<'_>,
    now: &Time,
) -> ZenkoMemcachedModuleStatus {
    let previous = module.status.clone().unwrap_or_default();
    let generation = module.metadata.generation;
    let mut status = ZenkoMemcachedModuleStatus {
        observed_generation: generation,
        conditions: previous.conditions.clone(),
        ..previous
    };
    match observation {
        Observation::Applied {
            module: validated,
            stateful_set,
            placement,
        } => {
            // The pods the StatefulSet runs (more than spec.replicas during a change), and the
            // servers that hold the data now: CloudServer is served once those are ready.
            let desired = placement.deployment.pods;
            let serving = placement
                .status
                .servers
                .iter()
                .filter(|s| !s.joining)
                .count();
            let serving = i32::try_from(serving).unwrap_or(i32::MAX);
            let rollout = Rollout::of(stateful_set, desired);
            status.replicas = rollout.replicas;
            status.ready_replicas = rollout.ready;
            status.selector = Some(labels::selector_string(validated.name));
            status.endpoints = Some(build::endpoints(validated));
            status.placement = Some(placement.status.clone());
            let all_ready = rollout.ready >= serving;
            let available = if all_ready {
                cond(
                    true,
                    "AllReplicasReady",
                    format!(
                        "{} of {desired} pods ready; CloudServer can connect",
                        rollout.ready
                    ),
                )
            } else {
                cond(
                    false,
                    "ReplicasNotReady",
                    format!(
                        "{} of {desired} pods ready; keys stored on the missing pods are unreachable. \
                         Check `kubectl get pods -l {}={}` and that at least {desired} nodes are \
                         labelled {}={} and schedulable",
                        rollout.ready,
                        labels::INSTANCE_KEY,
                        validated.name,
                        module.spec.placement.node_label_key,
                        module.spec.placement.node_label_value,
                    ),
                )
            };
            let progressing = if let Health::Changing(message) = &placement.health {
                cond(true, "PlacementChanging", message.clone())
            } else if rollout.complete() {
                cond(
                    false,
                    "RolloutComplete",
                    "every pod runs the current spec".to_owned(),
                )
            } else {
                cond(
                    true,
                    "RollingOut",
                    format!(
                        "{} of {desired} pods run the current spec, {} ready",
                        rollout.updated, rollout.ready
                    ),
                )
            };
            let degraded = match &placement.health {
                Health::Refused(message) => cond(true, "PlacementRefused", message.clone()),
                Health::ChangeFailed(message) => {
                    cond(true, "PlacementChangeFailed", message.clone())
                }
                Health::ServersLost(message) => cond(true, "ServersLost", message.clone()),
                Health::InSync | Health::Changing(_) => cond(
                    false,
                    "ReconcileSucceeded",
                    "all objects are applied".to_owned(),
                ),
            };
            set(
                &mut status.conditions,
                AVAILABLE,
                available,
                generation,
                now,
            );
            set(
                &mut status.conditions,
                PROGRESSING,
                progressing,
                generation,
                now,
            );
            set(&mut status.conditions, DEGRADED, degraded, generation, now);
        }
        Observation::Failed { reason, message } => {
            let degraded = cond(true, reason, message.to_owned());
            set(&mut status.conditions, DEGRADED, degraded, generation, now);
            // A module that never reconciled has no other condition yet; say why.
            for kind in [AVAILABLE, PROGRESSING] {
                if !status.conditions.iter().any(|c| c.type_ == kind) {
                    let c = cond(false, reason, "see the Degraded condition".to_owned());
                    set(&mut status.conditions, kind, c, generation, now);
                }
            }
        }
    }
    status.phase = phase(&status.conditions);
    status
}

/// The rollout state of the StatefulSet, as far as its status is current.
struct Rollout {
    replicas: i32,
    ready: i32,
    updated: i32,
    current: bool,
    desired: i32,
}

impl Rollout {
    fn of(sts: &StatefulSet, desired: i32) -> Self {
        let status = sts.status.clone().unwrap_or_default();
        // The controller may not have seen the spec just applied: its counts are about the old one.
        let current = match (status.observed_generation, sts.metadata.generation) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => false,
        };
        let same_revision =
            status.current_revision.is_some() && status.current_revision == status.update_revision;
        Self {
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: current && same_revision,
            desired,
        }
    }

    fn complete(&self) -> bool {
        self.current
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.replicas == self.desired
    }
}

struct NewCondition {
    status: bool,
    reason: &'static str,
    message: String,
}

fn cond(status: bool, reason: &'static str, message: String) -> NewCondition {
    NewCondition {
        status,
        reason,
        message,
    }
}

fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    new: NewCondition,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if new.status { "True" } else { "False" }.to_owned();
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: new.reason.to_owned(),
        message: new.message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn phase(conditions: &[Condition]) -> Phase {
    if is_true(conditions, DEGRADED) {
        Phase::Degraded
    } else if is_true(conditions, AVAILABLE) && !is_true(conditions, PROGRESSING) {
        Phase::Available
    } else if conditions.is_empty() {
        Phase::Pending
    } else {
        Phase::Progressing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ZenkoMemcachedModuleSpec;
    use crate::placement::{Observed, PodView};
    use crate::validate::validate;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::jiff::Timestamp;

    fn module(replicas: i32) -> ZenkoMemcachedModule {
        let mut m = ZenkoMemcachedModule::new(
            "store",
            ZenkoMemcachedModuleSpec {
                replicas,
                ..ZenkoMemcachedModuleSpec::default()
            },
        );
        m.metadata.namespace = Some("zenko".into());
        m.metadata.generation = Some(3);
        m
    }

    fn sts(ready: i32, updated: i32, same_revision: bool) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.generation = Some(2);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 3,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            current_revision: Some("a".into()),
            update_revision: Some(if same_revision { "a" } else { "b" }.into()),
            ..StatefulSetStatus::default()
        });
        s
    }

    /// The placement of a new module whose pods are all ready.
    fn stable(module: &Validated<'_>) -> Plan {
        let pods: Vec<PodView> = (0..module.module.spec.replicas)
            .map(|i| PodView {
                name: format!("store-{i}"),
                uid: None,
                ready: true,
                memcached_ready: true,
                node: Some(format!("node-{i}")),
                node_lost_since: None,
            })
            .collect();
        crate::placement::plan(
            module,
            Observed {
                recorded: None,
                adopted: None,
                job: None,
                pods: &pods,
                now: &time(0),
            },
        )
    }

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn condition<'a>(s: &'a ZenkoMemcachedModuleStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t} condition"))
    }

    #[test]
    fn all_ready_is_available_with_endpoints() {
        let m = module(3);
        let v = validate(&m).unwrap_or_else(|e| panic!("{e}"));
        let s = sts(3, 3, true);
        let status = compute(
            &m,
            Observation::Applied {
                module: &v,
                stateful_set: &s,
                placement: &stable(&v),
            },
            &time(10),
        );
        assert_eq!(status.phase, Phase::Available);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.ready_replicas, 3);
        let e = status.endpoints.clone().unwrap_or_default();
        assert_eq!(e.data.as_deref(), Some("store-data.zenko.svc:9991"));
        assert_eq!(e.metadata.as_deref(), Some("store-metadata.zenko.svc:9990"));
        assert_eq!(condition(&status, AVAILABLE).status, "True");
        assert_eq!(condition(&status, PROGRESSING).status, "False");
        assert_eq!(condition(&status, DEGRADED).status, "False");
    }

    #[test]
    fn rollout_in_progress_is_progressing() {
        let m = module(3);
        let v = validate(&m).unwrap_or_else(|e| panic!("{e}"));
        let s = sts(2, 1, false);
        let status = compute(
            &m,
            Observation::Applied {
                module: &v,
                stateful_set: &s,
                placement: &stable(&v),
            },
            &time(10),
        );
        assert_eq!(status.phase, Phase::Progressing);
        let a = condition(&status, AVAILABLE);
        assert_eq!(a.reason, "ReplicasNotReady");
        assert!(a.message.contains("io.zenko.type=storage"), "{}", a.message);
        assert_eq!(condition(&status, PROGRESSING).reason, "RollingOut");
    }

    #[test]
    fn failure_keeps_counts_and_transition_times_that_did_not_change() {
        let mut m = module(3);
        let v = validate(&m).unwrap_or_else(|e| panic!("{e}"));
        let s = sts(3, 3, true);
        let first = compute(
            &m,
            Observation::Applied {
                module: &v,
                stateful_set: &s,
                placement: &stable(&v),
            },
            &time(10),
        );
        m.status = Some(first);
        let second = compute(
            &m,
            Observation::Failed {
                reason: "ApplyFailed",
                message: "forbidden",
            },
            &time(20),
        );
        assert_eq!(second.phase, Phase::Degraded);
        assert_eq!(second.ready_replicas, 3);
        assert_eq!(condition(&second, AVAILABLE).last_transition_time, time(10));
        assert_eq!(condition(&second, DEGRADED).last_transition_time, time(20));
        assert_eq!(condition(&second, DEGRADED).message, "forbidden");
    }
}
