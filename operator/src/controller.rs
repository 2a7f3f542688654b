//! The reconcile loop: validate → build → apply → status, with failures turned into events,
//! the Degraded condition and a per-module backoff.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::build::{self, Children, labels, names};
use crate::crd::{Phase, ZenkoMemcachedModule, ZenkoMemcachedModuleStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::placement::{self, Health, JobState, JobView, Layout, Observed, Plan, PodView};
use crate::status::{self, Observation};
use crate::validate::{Validated, validate};

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = labels::MANAGER;

/// Longest event note the API server accepts.
const MAX_EVENT_NOTE: usize = 1024;

/// Longest progress line of a placement Job kept in the status.
const MAX_PROGRESS: usize = 200;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    recorder: Recorder,
    /// Consecutive failures per module (namespace/name), reset by a successful reconcile.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn note_failure(&self, module: &ZenkoMemcachedModule) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key(module)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn forget_failures(&self, module: &ZenkoMemcachedModule) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&key(module));
    }
}

fn key(module: &ZenkoMemcachedModule) -> String {
    format!(
        "{}/{}",
        module.namespace().unwrap_or_default(),
        module.name_any()
    )
}

/// Reconciles one module; failures are recorded before they reach `error_policy`.
pub async fn reconcile(module: Arc<ZenkoMemcachedModule>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    if module.metadata.deletion_timestamp.is_some() {
        // The children go with the module through their owner references.
        return Ok(Action::await_change());
    }
    match apply_module(&module, &ctx).await {
        Ok(action) => {
            ctx.forget_failures(&module);
            Ok(action)
        }
        Err(error) => {
            ctx.metrics.reconcile_failed(&error);
            record_failure(&module, &ctx, &error).await;
            Err(error)
        }
    }
}

/// Retries a failed module with exponential backoff; an invalid spec waits for an edit, which
/// triggers a reconcile by itself.
pub fn error_policy(module: Arc<ZenkoMemcachedModule>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx.note_failure(&module);
    warn!(module = %key(&module), %error, attempts, "reconcile failed");
    Action::requeue(retry_delay(error, attempts))
}

/// 2 s, 4 s, 8 s … capped at five minutes.
pub fn retry_delay(error: &Error, attempts: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    if matches!(error, Error::InvalidSpec(_)) {
        return MAX;
    }
    let exponent = attempts.clamp(1, 8);
    Duration::from_secs(1u64 << exponent).min(MAX)
}

async fn apply_module(module: &ZenkoMemcachedModule, ctx: &Context) -> Result<Action> {
    let validated = validate(module)?;
    if module.metadata.uid.is_none() {
        return Err(Error::MissingObjectKey("metadata.uid"));
    }
    let now = now();
    let recorded = module.status.as_ref().and_then(|s| s.placement.as_ref());
    let adopted = match recorded {
        Some(_) => None,
        None => adopted_layout(&ctx.client, &validated).await?,
    };
    let pods = observe_pods(&ctx.client, &validated).await?;
    let job_name = recorded
        .and_then(|p| p.change.as_ref())
        .and_then(|c| c.job.as_deref());
    let job = match job_name {
        Some(name) => observe_job(&ctx.client, validated.namespace, name).await?,
        None => None,
    };
    let plan = placement::plan(
        &validated,
        Observed {
            recorded,
            adopted: adopted.as_ref(),
            job: job.as_ref(),
            pods: &pods,
            now: &now,
        },
    );
    let children = build::build(&validated, &plan.deployment);
    let stateful_set = apply_children(&ctx.client, &validated, &children).await?;
    delete_lost_pods(&ctx.client, &validated, &plan, &pods).await?;
    let status = status::compute(
        module,
        Observation::Applied {
            module: &validated,
            stateful_set: &stateful_set,
            placement: &plan,
        },
        &now,
    );
    let phase = status.phase;
    // An unchanged status is not written again: each write is a watch event and a new reconcile.
    if module.status.as_ref() != Some(&status) {
        patch_status(&ctx.client, validated.namespace, validated.name, &status).await?;
    }
    // Only once the status names the Job (see placement::plan).
    run_placement_jobs(&ctx.client, &validated, &plan).await?;
    let settled = plan.health == Health::InSync
        && plan
            .status
            .servers
            .iter()
            .all(|s| s.state == crate::crd::ServerState::InSync);
    Ok(match phase {
        Phase::Available if settled => Action::requeue(Duration::from_secs(300)),
        // A change, a server catching up or a lost node: the Job's and the pods' progress are
        // looked at often (the Job's own events wake the controller too).
        _ if !settled => Action::requeue(Duration::from_secs(10)),
        // Owned StatefulSet updates trigger reconciles too; this only bounds a missed one.
        _ => Action::requeue(Duration::from_secs(30)),
    })
}

/// The servers and factor the sidecars of a module created by an earlier release run with,
/// from their ConfigMap: the placement recorded in their memcached. `None` for a new module.
async fn adopted_layout(client: &Client, module: &Validated<'_>) -> Result<Option<Layout>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), module.namespace);
    let Some(existing) = api.get_opt(&names::config_map(module.name)).await? else {
        return Ok(None);
    };
    let data = existing.data.unwrap_or_default();
    let servers: Vec<String> = data
        .get("ZMM_MEMCACHED")
        .map(|list| {
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if servers.is_empty() {
        return Ok(None);
    }
    // Earlier releases never set it: the sidecar's default, one copy.
    let replication_factor = data
        .get("ZMM_REPLICATION_FACTOR")
        .and_then(|f| f.parse().ok())
        .unwrap_or(1);
    Ok(Some(Layout {
        servers,
        replication_factor,
    }))
}

/// The module's pods, and for those not ready, whether their node is lost.
async fn observe_pods(client: &Client, module: &Validated<'_>) -> Result<Vec<PodView>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), module.namespace);
    let selector = labels::selector_string(module.name);
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut pods = Vec::with_capacity(listed.items.len());
    for pod in listed.items {
        let status = pod.status.clone().unwrap_or_default();
        let ready_condition = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        let ready = ready_condition.is_some_and(|c| c.status == "True");
        let memcached_ready = status
            .container_statuses
            .iter()
            .flatten()
            .any(|c| c.name == "memcached" && c.ready);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        // A ready pod's node is fine; only a pod that is not ready costs a look at its node.
        let node_lost_since = match (&node, ready) {
            (Some(node), false) => match nodes.get_opt(node).await? {
                Some(found) => found
                    .status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .find(|c| c.type_ == "Ready" && c.status != "True")
                    .and_then(|c| c.last_transition_time),
                // The node was removed from the cluster: lost since the pod stopped being ready.
                None => ready_condition.and_then(|c| c.last_transition_time.clone()),
            },
            _ => None,
        };
        pods.push(PodView {
            name: pod.name_any(),
            uid: pod.metadata.uid.clone(),
            ready,
            memcached_ready,
            node,
            node_lost_since,
        });
    }
    Ok(pods)
}

/// The Job of the change recorded in the status, with its progress or its reason for failing.
async fn observe_job(client: &Client, namespace: &str, name: &str) -> Result<Option<JobView>> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let Some(job) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let status = job.status.clone().unwrap_or_default();
    let failed_condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    let state = if status.succeeded.unwrap_or(0) > 0 {
        JobState::Succeeded
    } else if let Some(condition) = failed_condition {
        let from_pods = termination_message(client, namespace, name).await?;
        JobState::Failed {
            reason: from_pods
                .or_else(|| condition.message.clone())
                .unwrap_or_else(|| "the Job failed without a message".to_owned()),
        }
    } else {
        JobState::Running {
            progress: progress(client, namespace, name).await,
        }
    };
    let args = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    let module_generation = job
        .annotations()
        .get(build::MODULE_GENERATION_ANNOTATION)
        .and_then(|g| g.parse().ok());
    Ok(Some(JobView {
        name: name.to_owned(),
        args,
        module_generation,
        state,
    }))
}

fn job_pods_selector(job: &str) -> String {
    format!("job-name={job}")
}

/// The last line the command wrote before it failed (`FallbackToLogsOnError`), from the most
/// recent of the Job's pods.
async fn termination_message(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<Option<String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut pods = api
        .list(&ListParams::default().labels(&job_pods_selector(job)))
        .await?
        .items;
    pods.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    Ok(pods.iter().rev().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == build::PLACEMENT_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .as_deref()
            .map(str::trim)
            .and_then(|m| m.lines().last())
            .map(str::to_owned)
    }))
}

/// The last progress line of the Job's running pod; best effort, since the status only shows it.
async fn progress(client: &Client, namespace: &str, job: &str) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(&job_pods_selector(job)))
        .await
        .ok()?;
    let running = pods
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))?;
    let params = LogParams {
        container: Some(build::PLACEMENT_CONTAINER.to_owned()),
        tail_lines: Some(1),
        ..LogParams::default()
    };
    let log = api.logs(&running.name_any(), &params).await.ok()?;
    log.lines()
        .last()
        .map(|l| truncate(l.trim(), MAX_PROGRESS))
        .filter(|l| !l.is_empty())
}

/// Force-deletes the pods whose node is lost (see `placement::lost_pods`), each only if it is
/// still the pod that was seen.
async fn delete_lost_pods(
    client: &Client,
    module: &Validated<'_>,
    plan: &Plan,
    pods: &[PodView],
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), module.namespace);
    for name in &plan.delete_pods {
        let uid = pods
            .iter()
            .find(|p| &p.name == name)
            .and_then(|p| p.uid.clone());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        info!(module = module.name, pod = %name, "deleting a pod whose node is lost");
        ignore_not_found(api.delete(name, &params).await.map(|_| ()))?;
    }
    Ok(())
}

/// The Job actions of the plan, taken once the status records them.
async fn run_placement_jobs(client: &Client, module: &Validated<'_>, plan: &Plan) -> Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), module.namespace);
    // Background: the Job's pods go with it, and a new Job of the same name waits until the
    // old one is gone (its create is retried by the next reconcile).
    let background = DeleteParams::background();
    for name in [&plan.delete_failed_job, &plan.delete_finished_job]
        .into_iter()
        .flatten()
    {
        ignore_not_found(api.delete(name, &background).await.map(|_| ()))?;
    }
    if let Some((from, to, name)) = &plan.run_job {
        info!(module = module.name, job = %name, "running a placement change");
        apply(
            client,
            module.namespace,
            &build::placement_job(module, from, to, name),
        )
        .await?;
    }
    Ok(())
}

fn ignore_not_found(result: kube::Result<()>) -> Result<()> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

/// Applies every child, configuration before the pods that read it, and returns the applied
/// StatefulSet (with its status) for the module's status.
async fn apply_children(
    client: &Client,
    module: &Validated<'_>,
    children: &Children,
) -> Result<StatefulSet> {
    let ns = module.namespace;
    apply(client, ns, &children.config_map).await?;
    apply(client, ns, &children.headless_service).await?;
    // A module's role never changes (the CRD refuses it), so a single-role module never has the
    // other role's Service to remove.
    for service in [&children.data_service, &children.metadata_service]
        .into_iter()
        .flatten()
    {
        apply(client, ns, service).await?;
    }
    let stateful_set = apply(client, ns, &children.stateful_set).await?;
    match &children.pod_disruption_budget {
        Some(pdb) => {
            apply(client, ns, pdb).await?;
        }
        None => {
            delete_owned::<PodDisruptionBudget>(
                client,
                module,
                &names::pod_disruption_budget(module.name),
            )
            .await?
        }
    }
    // `spec.backup` removed: its CronJob goes (the export files on the volume stay).
    match &children.backup {
        Some(backup) => {
            apply(client, ns, backup).await?;
        }
        None => delete_owned::<CronJob>(client, module, &names::backup(module.name)).await?,
    }
    Ok(stateful_set)
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("metadata.name of a child"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(name, &params, &Patch::Apply(object)).await?)
}

/// Remove a child the spec no longer asks for (scaling down to one replica leaves a budget
/// that would block every drain of that node; a removed `spec.backup` leaves its CronJob);
/// only an object this module owns is removed.
async fn delete_owned<K>(client: &Client, module: &Validated<'_>, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), module.namespace);
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    let owner_uid = module.module.metadata.uid.as_deref();
    let owned = existing
        .owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == owner_uid);
    if owned {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.meta().uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        api.delete(name, &params).await?;
    }
    Ok(())
}

async fn patch_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &ZenkoMemcachedModuleStatus,
) -> Result<()> {
    let api: Api<ZenkoMemcachedModule> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": ZenkoMemcachedModule::api_version(&()),
        "kind": ZenkoMemcachedModule::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// The condition reason and the message a person reads for a failure.
fn failure_reason(error: &Error) -> (&'static str, String) {
    match error {
        Error::InvalidSpec(violations) => {
            ("InvalidSpec", format!("nothing was applied: {violations}"))
        }
        Error::Kube(kube::Error::Api(s)) if s.code == 403 => (
            "Forbidden",
            format!(
                "the operator may not change the module's objects ({}); check its RBAC rules",
                s.message
            ),
        ),
        Error::Kube(e) => (
            "ApplyFailed",
            format!("applying the module's objects failed, will retry: {e}"),
        ),
        other => ("ReconcileFailed", other.to_string()),
    }
}

/// Publishes a Warning event and writes Degraded; both are best effort, since the original
/// error is what the controller retries on.
async fn record_failure(module: &ZenkoMemcachedModule, ctx: &Context, error: &Error) {
    let (reason, message) = failure_reason(error);
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(truncate(&message, MAX_EVENT_NOTE)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &module.object_ref(&())).await {
        warn!(module = %key(module), error = %e, "could not publish event");
    }
    let (Some(namespace), Some(name)) = (module.namespace(), module.metadata.name.as_deref())
    else {
        return;
    };
    let status = status::compute(
        module,
        Observation::Failed {
            reason,
            message: &message,
        },
        &now(),
    );
    if module.status.as_ref() == Some(&status) {
        return;
    }
    if let Err(e) = patch_status(&ctx.client, &namespace, name, &status).await {
        warn!(module = %key(module), error = %e, "could not write the Degraded status");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Runs the controller until a termination signal: watches the modules (in one namespace or
/// all) and the children the operator manages, so that an edited or deleted child is put back.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) -> Result<()> {
    let client = ctx.client.clone();
    let modules: Api<ZenkoMemcachedModule> = scoped(&client, namespace);
    // Fail early with a clear message instead of a watcher retrying forever.
    if let Err(e) = modules.list(&ListParams::default().limit(1)).await {
        tracing::error!(
            error = %e,
            "cannot list ZenkoMemcachedModules: is the CRD installed (kubectl apply -f \
             charts/zenko-memcached-operator/crds/) and may the operator list them?"
        );
        return Err(e.into());
    }
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY_KEY,
        labels::MANAGER
    ));
    info!(
        namespace = namespace.unwrap_or("<all>"),
        "controller starting"
    );
    Controller::new(modules, watcher::Config::default().any_semantic())
        .owns(scoped::<StatefulSet>(&client, namespace), owned.clone())
        .owns(scoped::<Service>(&client, namespace), owned.clone())
        .owns(scoped::<ConfigMap>(&client, namespace), owned.clone())
        .owns(
            scoped::<PodDisruptionBudget>(&client, namespace),
            owned.clone(),
        )
        .owns(scoped::<Job>(&client, namespace), owned.clone())
        .owns(scoped::<CronJob>(&client, namespace), owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => info!(module = %object, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile error"),
            }
        })
        .await;
    Ok(())
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Violation, Violations};

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let e = Error::MissingObjectKey("x");
        assert_eq!(retry_delay(&e, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(&e, 2), Duration::from_secs(4));
        assert_eq!(retry_delay(&e, 8), Duration::from_secs(256));
        assert_eq!(retry_delay(&e, 30), Duration::from_secs(256));
        let invalid = Error::InvalidSpec(Violations(vec![Violation::NodeLabelEmpty]));
        assert_eq!(retry_delay(&invalid, 1), Duration::from_secs(300));
    }

    #[test]
    fn event_notes_are_cut_on_a_char_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(&text, MAX_EVENT_NOTE);
        assert!(cut.len() <= MAX_EVENT_NOTE);
        assert!(text.starts_with(&cut));
    }
}
