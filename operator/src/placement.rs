//! The placement of a module's data (its memcached servers, the copies of each item, the change
//! under way) and the next step the operator takes: a pure function of what a reconcile
//! observed.
//!
//! The operator is the placement's one writer on Kubernetes (docs/placement-changes.md): the
//! record it works from is `status.placement`, and every change is carried out by one Job
//! running `zenko-memcached-sidecar placement change`, owned by the module and named after the
//! generation it produces. Everything the next step depends on lives in the API server (the
//! status, the Job, the pods), so an operator restarted at any point takes the same step again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::build::{MEMCACHED_PORT, names};
use crate::crd::{PlacementChange, PlacementStatus, ServerState, ServerStatus};
use crate::validate::Validated;

/// How single-pod modules of earlier releases listed their memcached: reachable from their own
/// pod only, so no Job can reach it to move the data.
pub const LOOPBACK_SERVER: &str = "127.0.0.1:11211";

/// The servers of a placement, in the order every sidecar lists them, and the copies of each item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub servers: Vec<String>,
    pub replication_factor: i32,
}

impl Layout {
    /// The list as `--memcached` and `ZMM_MEMCACHED` take it.
    pub fn server_list(&self) -> String {
        self.servers.join(",")
    }

    fn describe(&self) -> String {
        format!(
            "{} server{}, {} cop{} of each item",
            self.servers.len(),
            if self.servers.len() == 1 { "" } else { "s" },
            self.replication_factor,
            if self.replication_factor == 1 {
                "y"
            } else {
                "ies"
            }
        )
    }
}

/// The memcached servers of the first `count` pods: the headless Service's per-pod names,
/// stable across pod restarts and resolvable before the pods are ready.
pub fn pod_servers(module: &Validated<'_>, count: i32) -> Vec<String> {
    (0..count.max(0))
        .map(|ordinal| pod_server(module, ordinal))
        .collect()
}

fn pod_server(module: &Validated<'_>, ordinal: i32) -> String {
    format!(
        "{}.{}.{}.svc:{MEMCACHED_PORT}",
        pod_name(module, ordinal),
        names::headless_service(module.name),
        module.namespace
    )
}

/// The StatefulSet's name for the pod of `ordinal`.
pub fn pod_name(module: &Validated<'_>, ordinal: i32) -> String {
    format!("{}-{ordinal}", names::stateful_set(module.name))
}

/// The factor of a module without one in its spec or its placement: two copies as soon as
/// there are two servers to hold them.
pub fn default_replication_factor(replicas: i32) -> i32 {
    if replicas >= 2 { 2 } else { 1 }
}

/// The placement a module starts with, or the one `manifests` and `stack` print for a file:
/// its pods' servers and its factor.
pub fn initial(module: &Validated<'_>) -> Layout {
    let spec = &module.module.spec;
    Layout {
        servers: pod_servers(module, spec.replicas),
        replication_factor: spec
            .replication_factor
            .unwrap_or_else(|| default_replication_factor(spec.replicas)),
    }
}

/// What the builders need from the placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// What the sidecars are started with (`ZMM_MEMCACHED`, `ZMM_REPLICATION_FACTOR`): the
    /// target during a change, which a sidecar accepts once the change has begun.
    pub sidecar: Layout,
    /// Pods of the StatefulSet: every server of the placement and of its target, so that new
    /// servers exist before the data moves and leaving ones go only once it has moved.
    pub pods: i32,
}

impl Deployment {
    /// A placement with no change under way.
    pub fn stable(layout: Layout) -> Self {
        let pods = i32::try_from(layout.servers.len()).unwrap_or(i32::MAX);
        Self {
            sidecar: layout,
            pods,
        }
    }
}

/// What the reconcile saw of one pod of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: Option<String>,
    /// Both containers ready.
    pub ready: bool,
    /// The memcached container ready: a new server can be filled.
    pub memcached_ready: bool,
    /// The node the pod runs on, and since when that node is NotReady or Unknown (or gone).
    pub node: Option<String>,
    pub node_lost_since: Option<Time>,
}

/// Where a change's Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not finished; the last line the command printed, when it could be read.
    Running {
        progress: Option<String>,
    },
    Succeeded,
    /// Gave up; the command's one-line reason (its pod's termination message).
    Failed {
        reason: String,
    },
}

/// The Job of the change recorded in the status, as the reconcile found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    /// The arguments of its container: which change it carries out.
    pub args: Vec<String>,
    /// The module's metadata.generation when the Job was created: a failed change is tried
    /// again once the spec has changed (more memory, another target).
    pub module_generation: Option<i64>,
    pub state: JobState,
}

/// Everything the next step depends on.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The placement written by an earlier reconcile.
    pub recorded: Option<&'a PlacementStatus>,
    /// Without one: the servers and factor the sidecars already run with (their ConfigMap), for
    /// a module created by an earlier release.
    pub adopted: Option<&'a Layout>,
    /// The Job named in `recorded.change`, if it exists.
    pub job: Option<&'a JobView>,
    pub pods: &'a [PodView],
    pub now: &'a Time,
}

/// Why the placement is not simply in sync, for the module's conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    InSync,
    /// A change is under way (Progressing).
    Changing(String),
    /// The spec asks for a placement that cannot be (Degraded); the data stays where it is.
    Refused(String),
    /// The change's Job failed (Degraded); nothing moves until the spec changes or the Job is
    /// deleted.
    ChangeFailed(String),
    /// Servers are down beyond what the copies cover, or with one copy (Degraded).
    ServersLost(String),
}

/// The step to take, and the placement to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: PlacementStatus,
    pub deployment: Deployment,
    /// Create (server-side apply) the Job of this change: from, to, Job name.
    pub run_job: Option<(Layout, Layout, String)>,
    /// Delete this Job before anything else: it failed and the change is tried again.
    pub delete_failed_job: Option<String>,
    /// Delete this Job once the status is written: it succeeded.
    pub delete_finished_job: Option<String>,
    /// Pods to force-delete: their node is lost and the copies elsewhere cover their data.
    pub delete_pods: Vec<String>,
    pub health: Health,
}

/// The arguments of the Job that changes `from` into `to`.
pub fn change_args(from: &Layout, to: &Layout) -> Vec<String> {
    vec![
        "placement".to_owned(),
        "change".to_owned(),
        "--memcached".to_owned(),
        from.server_list(),
        "--to".to_owned(),
        to.server_list(),
        "--replication-factor".to_owned(),
        to.replication_factor.to_string(),
    ]
}

/// The Job that produces placement `generation`.
pub fn job_name(module: &str, generation: i64) -> String {
    format!("{module}-placement-{generation}")
}

/// Decides the next step. See docs/placement-changes.md for the change itself; this only
/// decides when to start one, when it is done, and what the status says meanwhile.
///
/// The status is written before the Job actions are taken: a Job is created only once the
/// status names it, so that no Job ever runs that the recorded placement does not know of.
pub fn plan(module: &Validated<'_>, observed: Observed<'_>) -> Plan {
    let spec = &module.module.spec;
    let (mut generation, mut current, mut change) = match (observed.recorded, observed.adopted) {
        (Some(recorded), _) => (
            recorded.generation,
            current_layout(recorded),
            recorded.change.clone(),
        ),
        (None, Some(adopted)) => (1, adopted.clone(), None),
        (None, None) => (1, initial(module), None),
    };
    let mut run_job = None;
    let mut delete_failed_job = None;
    let mut delete_finished_job = None;
    let mut failed = None;

    // The factor the spec asks for, else the one recorded: a module never changes factor by itself.
    let factor = spec
        .replication_factor
        .unwrap_or(current.replication_factor);
    let (desired, refusal) = desired_layout(module, &current, factor);

    // Where the recorded change's Job stands.
    let mut job_active = false;
    if let Some(ch) = change.as_mut() {
        let target = target_of(ch);
        let job = observed
            .job
            .filter(|j| ch.job.as_deref() == Some(j.name.as_str()));
        if let Some(job) = job {
            match &job.state {
                JobState::Succeeded if job.args == change_args(&current, &target) => {
                    generation += 1;
                    current = target;
                    delete_finished_job = Some(job.name.clone());
                }
                // Not the change recorded (a hand-made Job of that name): run ours instead.
                JobState::Succeeded => delete_failed_job = Some(job.name.clone()),
                JobState::Failed { reason } => {
                    let spec_changed = job
                        .module_generation
                        .zip(module.module.metadata.generation)
                        .is_some_and(|(then, now)| now > then);
                    if spec_changed || desired.as_ref().is_some_and(|d| *d != target) {
                        delete_failed_job = Some(job.name.clone());
                        ch.message = Some(format!("trying again after: {reason}"));
                    } else {
                        ch.message = Some(format!("failed: {reason}"));
                        failed = Some(reason.clone());
                    }
                }
                JobState::Running { progress } => {
                    job_active = true;
                    ch.message = Some(match progress {
                        Some(line) => format!("running: {line}"),
                        None => "running".to_owned(),
                    });
                }
            }
        }
    }
    if delete_finished_job.is_some() {
        change = None;
    }
    if let Some(ch) = change.as_mut()
        && !job_active
        && failed.is_none()
        && let Some(desired) = &desired
    {
        // No Job runs, so the change may take a new target: the next Job starts from wherever
        // an earlier one left the store (the command resumes or refuses, saying why).
        ch.to = desired.servers.clone();
        ch.replication_factor = desired.replication_factor;
    }
    if change
        .as_ref()
        .is_some_and(|ch| ch.job.is_none() && target_of(ch) == current)
    {
        // Taken back before its Job was decided: nothing was written, nothing to undo.
        change = None;
    }
    if change.is_none()
        && let Some(desired) = &desired
        && *desired != current
    {
        change = Some(PlacementChange {
            to: desired.servers.clone(),
            replication_factor: desired.replication_factor,
            job: None,
            started_at: observed.now.clone(),
            message: None,
        });
    }
    // Start (or start again) the Job of a change that has none running.
    if let Some(ch) = change.as_mut()
        && !job_active
        && failed.is_none()
        && delete_failed_job.is_none()
    {
        let target = target_of(ch);
        let waiting: Vec<&str> = target
            .servers
            .iter()
            .filter(|s| !current.servers.contains(s))
            .filter(|s| !memcached_ready(module, observed.pods, s))
            .map(String::as_str)
            .collect();
        if waiting.is_empty() {
            let name = job_name(module.name, generation + 1);
            ch.job = Some(name.clone());
            ch.message = Some("starting".to_owned());
            run_job = Some((current.clone(), target, name));
        } else {
            ch.message = Some(format!(
                "waiting for the memcached of {} to be ready",
                waiting.join(", ")
            ));
        }
    }

    let (delete_pods, lost) = lost_pods(module, &current, observed);
    let deployment = match &change {
        Some(ch) => {
            // Pods that exist stay while a change is open: a Job that failed may have left
            // items on them, and only a Job that succeeds says where the data is.
            let existing = observed
                .pods
                .iter()
                .filter_map(|p| ordinal(module, &p.name))
                .map(|o| o.saturating_add(1))
                .max()
                .unwrap_or(0);
            let pods = [current.servers.len(), ch.to.len()]
                .into_iter()
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
                .chain([existing])
                .max()
                .unwrap_or(0);
            Deployment {
                sidecar: target_of(ch),
                pods,
            }
        }
        None => Deployment::stable(current.clone()),
    };
    let servers = server_states(module, &current, change.as_ref(), observed.pods);
    let health = if let Some(reason) = failed {
        Health::ChangeFailed(format!(
            "the placement change of Job {} failed: {reason}. The data stays on {}; change the \
             spec (replicas, replicationFactor, memory) or delete the Job to try again",
            change
                .as_ref()
                .and_then(|c| c.job.as_deref())
                .unwrap_or_default(),
            current.describe()
        ))
    } else if let Some(message) = refusal {
        Health::Refused(message)
    } else if let Some(message) = lost {
        Health::ServersLost(message)
    } else if let Some(ch) = &change {
        Health::Changing(format!(
            "moving the data from {} to {}: {}",
            current.describe(),
            target_of(ch).describe(),
            ch.message.as_deref().unwrap_or("starting")
        ))
    } else {
        Health::InSync
    };
    let summary = summary(&current, change.as_ref(), &servers, &health);
    Plan {
        status: PlacementStatus {
            generation,
            replication_factor: current.replication_factor,
            servers,
            summary,
            change,
        },
        deployment,
        run_job,
        delete_failed_job,
        delete_finished_job,
        delete_pods,
        health,
    }
}

fn target_of(change: &PlacementChange) -> Layout {
    Layout {
        servers: change.to.clone(),
        replication_factor: change.replication_factor,
    }
}

/// The layout the data sits on: the recorded servers, less those only joining a change.
fn current_layout(recorded: &PlacementStatus) -> Layout {
    Layout {
        servers: recorded
            .servers
            .iter()
            .filter(|s| !s.joining)
            .map(|s| s.name.clone())
            .collect(),
        replication_factor: recorded.replication_factor,
    }
}

/// The layout the spec asks for, or why it cannot be had.
fn desired_layout(
    module: &Validated<'_>,
    current: &Layout,
    factor: i32,
) -> (Option<Layout>, Option<String>) {
    let replicas = module.module.spec.replicas;
    let desired = Layout {
        servers: pod_servers(module, replicas),
        replication_factor: factor,
    };
    if factor > replicas {
        // Only a recorded factor gets here: validation refuses a spec's own.
        return (
            None,
            Some(format!(
                "replicas ({replicas}) is below the module's replication factor ({factor}, \
                 recorded in status.placement): each item must stay on {factor} servers, so the \
                 {} servers keep running. Set replicas to at least {factor}, or \
                 spec.replicationFactor to {replicas} or less to keep fewer copies",
                current.servers.len()
            )),
        );
    }
    if current.servers == [LOOPBACK_SERVER] {
        if replicas == 1 && factor == current.replication_factor {
            // The same one server under its old name: nothing to change.
            return (Some(current.clone()), None);
        }
        return (
            None,
            Some(format!(
                "this single-pod module was created by an earlier release, whose sidecar lists \
                 its memcached as {LOOPBACK_SERVER}, which no other pod can reach to move the \
                 data; its placement stays as it is. Scaling it needs a one-time rename of that \
                 server to {}, which the operator does not make yet (see docs/operations.md, \"Scaling \
                 a module\")",
                pod_server(module, 0)
            )),
        );
    }
    (Some(desired), None)
}

fn ordinal(module: &Validated<'_>, pod: &str) -> Option<i32> {
    pod.strip_prefix(&names::stateful_set(module.name))?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn pod_of<'a>(module: &Validated<'_>, pods: &'a [PodView], server: &str) -> Option<&'a PodView> {
    // A single-pod module of an earlier release calls its one server by the loopback address.
    pods.iter().find(|p| {
        ordinal(module, &p.name).is_some_and(|o| {
            pod_server(module, o) == server || (o == 0 && server == LOOPBACK_SERVER)
        })
    })
}

fn memcached_ready(module: &Validated<'_>, pods: &[PodView], server: &str) -> bool {
    pod_of(module, pods, server).is_some_and(|p| p.memcached_ready)
}

/// Each server of the placement and of its target, with its state.
fn server_states(
    module: &Validated<'_>,
    current: &Layout,
    change: Option<&PlacementChange>,
    pods: &[PodView],
) -> Vec<ServerStatus> {
    let target: &[String] = change.map(|c| c.to.as_slice()).unwrap_or(&current.servers);
    let health = |name: &str| -> (ServerState, Option<String>) {
        match pod_of(module, pods, name) {
            Some(pod) if pod.ready => (ServerState::InSync, None),
            Some(pod) => match (&pod.node, &pod.node_lost_since) {
                (Some(node), Some(since)) => (
                    ServerState::CatchingUp,
                    Some(format!("node {node} unreachable since {}", since.0)),
                ),
                _ => (
                    ServerState::CatchingUp,
                    Some(format!("pod {} not ready: refilling or starting", pod.name)),
                ),
            },
            None => (
                ServerState::CatchingUp,
                Some("no pod: being created".to_owned()),
            ),
        }
    };
    let mut servers: Vec<ServerStatus> = current
        .servers
        .iter()
        .map(|name| {
            let (state, message) = if target.contains(name) {
                health(name)
            } else {
                (
                    ServerState::Leaving,
                    Some("its items move to the servers that stay".to_owned()),
                )
            };
            ServerStatus {
                name: name.clone(),
                state,
                joining: false,
                message,
            }
        })
        .collect();
    servers.extend(
        target
            .iter()
            .filter(|name| !current.servers.contains(name))
            .map(|name| ServerStatus {
                name: name.clone(),
                state: ServerState::CatchingUp,
                joining: true,
                message: Some("joins with the change under way".to_owned()),
            }),
    );
    servers
}

/// The pods to force-delete because their node is lost, and what the status must say about
/// servers lost beyond what the copies cover.
///
/// A pod on a lost node stays (Terminating or Unknown) until someone deletes it: the
/// StatefulSet never starts a second pod of the same name. Deleting it lets the pod start on
/// another storage node, where its memcached comes back empty under the same name and the
/// sidecars refill it from the other copies. That is only safe while the other copies exist:
/// with one copy, or with as many servers down as there are copies, the lost node's return
/// (a network partition heals, a node reboots with memcached's memory file) is the only way
/// back to the data, and deleting the pod would give it up, so the operator says what to do
/// instead.
fn lost_pods(
    module: &Validated<'_>,
    current: &Layout,
    observed: Observed<'_>,
) -> (Vec<String>, Option<String>) {
    let grace = i64::from(module.module.spec.placement.lost_node_grace_seconds);
    let now = observed.now.0.as_second();
    let lost: Vec<&PodView> = observed
        .pods
        .iter()
        .filter(|p| {
            p.node_lost_since
                .as_ref()
                .is_some_and(|since| now - since.0.as_second() >= grace)
        })
        .collect();
    if lost.is_empty() {
        return (Vec::new(), None);
    }
    let down = current
        .servers
        .iter()
        .filter(|s| pod_of(module, observed.pods, s).is_none_or(|p| !p.ready))
        .count();
    let factor = usize::try_from(current.replication_factor).unwrap_or(1);
    let names: Vec<&str> = lost.iter().map(|p| p.name.as_str()).collect();
    if factor >= 2 && down < factor {
        return (names.iter().map(|n| (*n).to_owned()).collect(), None);
    }
    let delete = names
        .iter()
        .map(|n| {
            format!(
                "kubectl delete pod -n {} {n} --force --grace-period=0",
                module.namespace
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let why = if factor < 2 {
        "with replicationFactor 1 their share of the data is on them alone".to_owned()
    } else {
        format!(
            "{down} servers are down and each item has {factor} copies, so some items may have \
             no copy left"
        )
    };
    (
        Vec::new(),
        Some(format!(
            "the node of pod {} is lost; {why}. If the node comes back, nothing is lost and \
             nothing needs doing. If it will not: `{delete}`, then, once the pods run again, \
             accept the loss with `kubectl exec -n {} {}-0 -c sidecar -- zenko-memcached-sidecar \
             placement accept --memcached {}` (the sidecars refuse to serve until then)",
            names.join(", "),
            module.namespace,
            names::stateful_set(module.name),
            current.server_list()
        )),
    )
}

/// The one line of `kubectl get zmm`.
fn summary(
    current: &Layout,
    change: Option<&PlacementChange>,
    servers: &[ServerStatus],
    health: &Health,
) -> String {
    let base = format!(
        "{} servers, R{}",
        current.servers.len(),
        current.replication_factor
    );
    match health {
        Health::Refused(_) => format!("{base}, change refused"),
        Health::ChangeFailed(_) => format!("{base}, change failed"),
        Health::ServersLost(_) => format!("{base}, servers lost"),
        _ => match change {
            Some(ch) => format!(
                "{base} -> {} servers, R{}",
                ch.to.len(),
                ch.replication_factor
            ),
            None => {
                let behind = servers
                    .iter()
                    .filter(|s| s.state != ServerState::InSync)
                    .count();
                if behind == 0 {
                    format!("{base}, in sync")
                } else {
                    format!("{base}, {behind} catching up")
                }
            }
        },
    }
}
