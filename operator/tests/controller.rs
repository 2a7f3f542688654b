//! Controller tests against kube's mock API service: the requests a reconcile makes, in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ApiServer, fixture, mock_client};
use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use prometheus_client::registry::Registry;
use serde_json::json;
use zenko_memcached_operator::controller::{Context, error_policy, reconcile};
use zenko_memcached_operator::crd::ZenkoMemcachedModule;
use zenko_memcached_operator::metrics::{self, Metrics};
use zenko_memcached_operator::{Error, Result};

const CORE: &str = "/api/v1/namespaces/zenko";
const STS: &str = "/apis/apps/v1/namespaces/zenko/statefulsets/store";
const PDB: &str = "/apis/policy/v1/namespaces/zenko/poddisruptionbudgets/store";
const STATUS: &str = "/apis/zenko.io/v1alpha1/namespaces/zenko/zenkomemcachedmodules/store/status";
const CRONJOB: &str = "/apis/batch/v1/namespaces/zenko/cronjobs/store-backup";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/zenko/events";

struct Harness {
    ctx: Arc<Context>,
    api: ApiServer,
    registry: Registry,
}

fn harness() -> Harness {
    let (client, api) = mock_client();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    Harness {
        ctx: Arc::new(Context::new(client, metrics, Some("test-replica".into()))),
        api,
        registry,
    }
}

fn start(
    module: &ZenkoMemcachedModule,
    ctx: &Arc<Context>,
) -> tokio::task::JoinHandle<Result<Action>> {
    tokio::spawn(reconcile(Arc::new(module.clone()), ctx.clone()))
}

async fn finish(task: tokio::task::JoinHandle<Result<Action>>) -> Result<Action> {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap_or_else(|_| panic!("reconcile did not finish"))
        .unwrap_or_else(|e| panic!("reconcile panicked: {e}"))
}

const PODS: &str = "/api/v1/namespaces/zenko/pods";

/// A pod of the module as the API server lists it: `ready` both containers, or memcached only.
fn pod(ordinal: i32, ready: bool, memcached_ready: bool) -> serde_json::Value {
    let status = if ready { "True" } else { "False" };
    json!({
        "metadata": {"name": format!("store-{ordinal}"), "namespace": "zenko",
            "uid": format!("pod-uid-{ordinal}")},
        "spec": {"nodeName": format!("node-{ordinal}"), "containers": []},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": status,
                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [
                {"name": "memcached", "ready": memcached_ready, "restartCount": 0, "image": "m",
                    "imageID": ""},
                {"name": "sidecar", "ready": ready, "restartCount": 0, "image": "s",
                    "imageID": ""},
            ],
        },
    })
}

/// `count` pods, all ready.
fn ready_pods(count: i32) -> Vec<serde_json::Value> {
    (0..count).map(|i| pod(i, true, true)).collect()
}

fn list(kind: &str, items: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Answers what a reconcile reads before it applies anything: the sidecars' ConfigMap when
/// the module has no placement recorded yet (`None`: there is none), then the module's pods.
async fn expect_observation(
    api: &mut ApiServer,
    config_map: Option<Option<serde_json::Value>>,
    pods: Vec<serde_json::Value>,
) {
    if let Some(config_map) = config_map {
        let get = api
            .expect(Method::GET, &format!("{CORE}/configmaps/store-sidecar"))
            .await;
        match config_map {
            Some(body) => get.respond_json(StatusCode::OK, &body),
            None => get.respond_status(404, "NotFound"),
        }
    }
    let listed = api.expect(Method::GET, PODS).await;
    assert!(
        listed
            .uri
            .contains("labelSelector=app.kubernetes.io%2Fcomponent%3Dstorage"),
        "{}",
        listed.uri
    );
    listed.respond_json(StatusCode::OK, &list("PodList", pods));
}

/// Answers the server-side applies of the ConfigMap and the three Services, checking each.
async fn expect_config_and_services(api: &mut ApiServer, uid: &str) {
    expect_config_and_role_services(api, uid, &["store-data", "store-metadata"]).await;
}

/// Answers the server-side applies of the ConfigMap, the headless Service and the client-facing
/// Services named.
async fn expect_config_and_role_services(api: &mut ApiServer, uid: &str, services: &[&str]) {
    let mut paths = vec![
        format!("{CORE}/configmaps/store-sidecar"),
        format!("{CORE}/services/store-headless"),
    ];
    paths.extend(services.iter().map(|s| format!("{CORE}/services/{s}")));
    for path in paths {
        let r = api.expect(Method::PATCH, &path).await;
        assert_apply(&r.uri);
        assert_eq!(
            r.body["metadata"]["ownerReferences"][0]["uid"], uid,
            "{path}"
        );
        r.respond_with_body();
    }
}

/// Answers the look for a backup CronJob of a module without `spec.backup`: there is none.
async fn expect_no_backup(api: &mut ApiServer) {
    api.expect(Method::GET, CRONJOB)
        .await
        .respond_status(404, "NotFound");
}

/// Answers a status apply as the API server does: with the whole module, new status included.
fn respond_module(request: common::Received, module: &ZenkoMemcachedModule) {
    let mut body = serde_json::to_value(module).unwrap_or_else(|e| panic!("{e}"));
    body["status"] = request.body["status"].clone();
    request.respond_json(StatusCode::OK, &body);
}

fn assert_apply(uri: &str) {
    assert!(
        uri.contains("fieldManager=zenko-memcached-operator"),
        "{uri}"
    );
    assert!(uri.contains("force=true"), "{uri}");
}

fn condition<'a>(status: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn failures(registry: &Registry, reason: &str) -> bool {
    let text = metrics::encode(registry).unwrap_or_default();
    text.contains(&format!(
        "zenko_memcached_operator_reconcile_failures_total{{reason=\"{reason}\"}} 1"
    ))
}

#[tokio::test]
async fn a_new_module_gets_its_objects_applied_then_a_progressing_status() {
    let Harness { ctx, mut api, .. } = harness();
    let module = fixture("single.yaml");
    let task = start(&module, &ctx);

    expect_observation(&mut api, Some(None), vec![]).await;
    expect_config_and_services(&mut api, "6d1c2a4e-0000-4000-8000-000000000001").await;
    let sts = api.expect(Method::PATCH, STS).await;
    assert_apply(&sts.uri);
    assert_eq!(sts.body["kind"], "StatefulSet");
    assert_eq!(sts.body["spec"]["replicas"], 1);
    assert_eq!(sts.body["spec"]["serviceName"], "store-headless");
    sts.respond_with_body(); // just created: no status yet

    // one replica: no budget, and none of ours to remove
    api.expect(Method::GET, PDB)
        .await
        .respond_status(404, "NotFound");
    expect_no_backup(&mut api).await;

    let status = api.expect(Method::PATCH, STATUS).await;
    assert_apply(&status.uri);
    assert_eq!(status.body["apiVersion"], "zenko.io/v1alpha1");
    assert_eq!(status.body["kind"], "ZenkoMemcachedModule");
    let s = &status.body["status"];
    assert_eq!(s["phase"], "Progressing");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(s["readyReplicas"], 0);
    assert_eq!(
        s["endpoints"],
        json!({"data": "store-data.zenko.svc:9991", "metadata": "store-metadata.zenko.svc:9990"})
    );
    assert_eq!(condition(s, "Available")["status"], "False");
    assert_eq!(condition(s, "Progressing")["reason"], "RollingOut");
    assert_eq!(condition(s, "Degraded")["status"], "False");
    // a new module starts on its own pods' servers, generation 1
    assert_eq!(s["placement"]["generation"], 1);
    assert_eq!(s["placement"]["replicationFactor"], 1);
    assert_eq!(
        s["placement"]["servers"][0]["name"],
        "store-0.store-headless.zenko.svc:11211"
    );
    assert_eq!(s["placement"]["servers"][0]["state"], "CatchingUp");
    assert!(s["placement"].get("change").is_none());
    respond_module(status, &module);

    // the pod is not there yet: looked at again soon
    assert_eq!(
        finish(task).await.ok(),
        Some(Action::requeue(Duration::from_secs(10)))
    );
    drop(ctx);
    api.expect_no_more().await;
}

#[tokio::test]
async fn a_single_role_module_gets_only_its_service_and_endpoint() {
    for (file, uid, service, endpoints) in [
        (
            "data.yaml",
            "6d1c2a4e-0000-4000-8000-000000000005",
            "store-data",
            json!({"data": "store-data.zenko.svc:9991"}),
        ),
        (
            "metadata.yaml",
            "6d1c2a4e-0000-4000-8000-000000000006",
            "store-metadata",
            json!({"metadata": "store-metadata.zenko.svc:30990"}),
        ),
    ] {
        let Harness { ctx, mut api, .. } = harness();
        let module = fixture(file);
        let task = start(&module, &ctx);
        expect_observation(&mut api, Some(None), ready_pods(1)).await;
        expect_config_and_role_services(&mut api, uid, &[service]).await;
        api.expect(Method::PATCH, STS).await.respond_with_body();
        api.expect(Method::GET, PDB)
            .await
            .respond_status(404, "NotFound");
        expect_no_backup(&mut api).await;
        let status = api.expect(Method::PATCH, STATUS).await;
        assert_eq!(status.body["status"]["endpoints"], endpoints, "{file}");
        respond_module(status, &module);
        assert!(finish(task).await.is_ok(), "{file}");
        drop(ctx);
        api.expect_no_more().await;
    }
}

#[tokio::test]
async fn status_becomes_available_once_the_pods_are_ready() {
    let Harness { ctx, mut api, .. } = harness();
    let module = fixture("ha.yaml");
    let task = start(&module, &ctx);

    expect_observation(&mut api, Some(None), ready_pods(3)).await;
    expect_config_and_services(&mut api, "6d1c2a4e-0000-4000-8000-000000000002").await;
    let sts = api.expect(Method::PATCH, STS).await;
    let mut applied = sts.body.clone();
    applied["metadata"]["generation"] = json!(2);
    applied["status"] = json!({
        "observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
        "currentRevision": "store-7c9", "updateRevision": "store-7c9",
    });
    sts.respond_json(StatusCode::OK, &applied);

    let pdb = api.expect(Method::PATCH, PDB).await;
    assert_apply(&pdb.uri);
    assert_eq!(pdb.body["spec"]["maxUnavailable"], 1);
    pdb.respond_with_body();
    expect_no_backup(&mut api).await;

    let status = api.expect(Method::PATCH, STATUS).await;
    let s = status.body["status"].clone();
    assert_eq!(s["phase"], "Available");
    assert_eq!(s["observedGeneration"], 4);
    assert_eq!(s["readyReplicas"], 3);
    assert_eq!(s["replicas"], 3);
    assert_eq!(
        s["selector"],
        "app.kubernetes.io/component=storage,app.kubernetes.io/instance=store,app.kubernetes.io/name=zenko-memcached"
    );
    assert_eq!(s["endpoints"]["data"], "store-data.zenko.svc:19991");
    assert_eq!(s["endpoints"]["metadata"], "store-metadata.zenko.svc:19990");
    assert_eq!(condition(&s, "Available")["reason"], "AllReplicasReady");
    assert_eq!(condition(&s, "Progressing")["status"], "False");
    assert_eq!(s["placement"]["summary"], "3 servers, R2, in sync");
    respond_module(status, &module);

    assert_eq!(
        finish(task).await.ok(),
        Some(Action::requeue(Duration::from_secs(300)))
    );
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let Harness { ctx, mut api, .. } = harness();
    let mut module = fixture("ha.yaml");
    let ready = json!({
        "observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
        "currentRevision": "store-7c9", "updateRevision": "store-7c9",
    });
    let mut written = None;
    for round in 0..2 {
        let task = start(&module, &ctx);
        // once the placement is recorded, the ConfigMap is not read again
        let config_map = (round == 0).then_some(None);
        expect_observation(&mut api, config_map, ready_pods(3)).await;
        expect_config_and_services(&mut api, "6d1c2a4e-0000-4000-8000-000000000002").await;
        let sts = api.expect(Method::PATCH, STS).await;
        let mut applied = sts.body.clone();
        applied["metadata"]["generation"] = json!(2);
        applied["status"] = ready.clone();
        sts.respond_json(StatusCode::OK, &applied);
        api.expect(Method::PATCH, PDB).await.respond_with_body();
        expect_no_backup(&mut api).await;
        if round == 0 {
            let status = api.expect(Method::PATCH, STATUS).await;
            written = Some(status.body["status"].clone());
            respond_module(status, &module);
        }
        assert!(finish(task).await.is_ok(), "round {round}");
        module.status = written
            .clone()
            .map(|s| serde_json::from_value(s).unwrap_or_else(|e| panic!("{e}")));
    }
    drop(ctx);
    api.expect_no_more().await;
}

#[tokio::test]
async fn a_child_deleted_behind_the_operators_back_is_applied_again() {
    let Harness { ctx, mut api, .. } = harness();
    let mut module = fixture("single.yaml");
    module.status = Some(serde_json::from_value(json!({
        "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "phase": "Available",
        "conditions": [{"type": "Available", "status": "True", "reason": "AllReplicasReady",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    })).unwrap_or_else(|e| panic!("{e}")));
    let task = start(&module, &ctx);

    // a module of an earlier release: its sidecars list memcached as 127.0.0.1, and that is
    // the placement the operator records
    let legacy = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "store-sidecar", "namespace": "zenko"},
        "data": {"ZMM_MEMCACHED": "127.0.0.1:11211", "ZMM_ROLE": "combined"}});
    expect_observation(&mut api, Some(Some(legacy)), ready_pods(1)).await;
    let config_map = api
        .expect(Method::PATCH, &format!("{CORE}/configmaps/store-sidecar"))
        .await;
    assert_eq!(config_map.body["data"]["ZMM_MEMCACHED"], "127.0.0.1:11211");
    assert_eq!(config_map.body["data"]["ZMM_REPLICATION_FACTOR"], "1");
    config_map.respond_with_body();
    // the headless Service is still there
    for path in [format!("{CORE}/services/store-headless")] {
        api.expect(Method::PATCH, &path).await.respond_with_body();
    }
    // the data Service was deleted: the watch on owned Services woke the controller, and the
    // apply recreates it in full (the API server answers 201 Created)
    let data = api
        .expect(Method::PATCH, &format!("{CORE}/services/store-data"))
        .await;
    assert_apply(&data.uri);
    assert_eq!(data.body["spec"]["ports"][0]["port"], 9991);
    assert_eq!(
        data.body["spec"]["selector"]["app.kubernetes.io/instance"],
        "store"
    );
    assert_eq!(
        data.body["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    let mut created = data.body.clone();
    created["metadata"]["uid"] = json!("new-service-uid");
    data.respond_json(StatusCode::CREATED, &created);

    api.expect(Method::PATCH, &format!("{CORE}/services/store-metadata"))
        .await
        .respond_with_body();
    let sts = api.expect(Method::PATCH, STS).await;
    let mut applied = sts.body.clone();
    applied["metadata"]["generation"] = json!(1);
    applied["status"] = json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
        "updatedReplicas": 1, "currentRevision": "r1", "updateRevision": "r1"});
    sts.respond_json(StatusCode::OK, &applied);
    api.expect(Method::GET, PDB)
        .await
        .respond_status(404, "NotFound");
    expect_no_backup(&mut api).await;

    let status = api.expect(Method::PATCH, STATUS).await;
    let s = status.body["status"].clone();
    assert_eq!(s["phase"], "Available");
    // Available never went False: its transition time is kept
    assert_eq!(
        condition(&s, "Available")["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(
        s["placement"]["servers"],
        json!([{"name": "127.0.0.1:11211", "state": "InSync"}])
    );
    respond_module(status, &module);
    assert!(finish(task).await.is_ok());
}

#[tokio::test]
async fn an_invalid_spec_ends_in_degraded_with_nothing_applied() {
    let Harness {
        ctx,
        mut api,
        registry,
    } = harness();
    let module = fixture("invalid.yaml");
    let task = start(&module, &ctx);

    let event = api.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "InvalidSpec");
    assert_eq!(event.body["regarding"]["name"], "store");
    assert_eq!(event.body["regarding"]["kind"], "ZenkoMemcachedModule");
    assert_eq!(
        event.body["reportingController"],
        "zenko-memcached-operator"
    );
    let note = event.body["note"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains("sidecar.chunkSizeBytes (1048576)"), "{note}");
    event.respond_with_body();

    let status = api.expect(Method::PATCH, STATUS).await;
    let s = status.body["status"].clone();
    assert_eq!(s["phase"], "Degraded");
    assert_eq!(s["observedGeneration"], 2);
    let degraded = condition(&s, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("nothing was applied: "), "{message}");
    assert!(
        message.contains("set memcached.maxItemSizeKiB to at least 1028"),
        "{message}"
    );
    assert_eq!(condition(&s, "Available")["status"], "False");
    respond_module(status, &module);

    let result = finish(task).await;
    let error = result
        .err()
        .unwrap_or_else(|| panic!("an invalid spec must fail the reconcile"));
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert_eq!(
        error_policy(Arc::new(module), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(300))
    );
    assert!(failures(&registry, "invalid_spec"));
    drop(ctx);
    // no ConfigMap, Service or StatefulSet was applied
    api.expect_no_more().await;
}

#[tokio::test]
async fn an_api_error_is_reported_and_retried_with_backoff() {
    let Harness {
        ctx,
        mut api,
        registry,
    } = harness();
    let module = fixture("single.yaml");
    let task = start(&module, &ctx);

    expect_observation(&mut api, Some(None), ready_pods(1)).await;
    expect_config_and_services(&mut api, "6d1c2a4e-0000-4000-8000-000000000001").await;
    api.expect(Method::PATCH, STS)
        .await
        .respond_status(403, "Forbidden");

    let event = api.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "Forbidden");
    event.respond_with_body();
    let status = api.expect(Method::PATCH, STATUS).await;
    let degraded = condition(&status.body["status"], "Degraded").clone();
    assert_eq!(degraded["reason"], "Forbidden");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("RBAC"),
        "{degraded}"
    );
    respond_module(status, &module);

    let error = finish(task)
        .await
        .err()
        .unwrap_or_else(|| panic!("expected a failure"));
    assert_eq!(error.metric_label(), "kube_forbidden");
    assert!(failures(&registry, "kube_forbidden"));
    let module = Arc::new(module);
    assert_eq!(
        error_policy(module.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        error_policy(module, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(4))
    );
}

#[tokio::test]
async fn scaling_down_to_one_replica_removes_the_budget_the_module_owns() {
    let Harness { ctx, mut api, .. } = harness();
    let module = fixture("single.yaml");
    let task = start(&module, &ctx);

    expect_observation(&mut api, Some(None), ready_pods(1)).await;
    expect_config_and_services(&mut api, "6d1c2a4e-0000-4000-8000-000000000001").await;
    api.expect(Method::PATCH, STS).await.respond_with_body();
    let get = api.expect(Method::GET, PDB).await;
    get.respond_json(StatusCode::OK, &json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "store", "namespace": "zenko", "uid": "pdb-uid",
            "ownerReferences": [{"apiVersion": "zenko.io/v1alpha1", "kind": "ZenkoMemcachedModule",
                "name": "store", "uid": "6d1c2a4e-0000-4000-8000-000000000001", "controller": true}]},
        "spec": {"maxUnavailable": 1},
    }));
    let delete = api.expect(Method::DELETE, PDB).await;
    assert_eq!(delete.body["preconditions"]["uid"], "pdb-uid");
    delete.respond_json(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
    );
    expect_no_backup(&mut api).await;
    respond_module(api.expect(Method::PATCH, STATUS).await, &module);
    assert!(finish(task).await.is_ok());
}

#[tokio::test]
async fn a_budget_someone_else_owns_is_left_alone() {
    let Harness { ctx, mut api, .. } = harness();
    let module = fixture("single.yaml");
    let task = start(&module, &ctx);

    expect_observation(&mut api, Some(None), ready_pods(1)).await;
    expect_config_and_services(&mut api, "6d1c2a4e-0000-4000-8000-000000000001").await;
    api.expect(Method::PATCH, STS).await.respond_with_body();
    api.expect(Method::GET, PDB).await.respond_json(
        StatusCode::OK,
        &json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "store", "namespace": "zenko", "uid": "theirs"},
        }),
    );
    expect_no_backup(&mut api).await;
    // straight to the status: no DELETE
    respond_module(api.expect(Method::PATCH, STATUS).await, &module);
    assert!(finish(task).await.is_ok());
}

#[tokio::test]
async fn a_module_being_deleted_is_left_to_garbage_collection() {
    let Harness { ctx, api, .. } = harness();
    let mut module = fixture("single.yaml");
    module.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let action = finish(start(&module, &ctx)).await.ok();
    assert_eq!(action, Some(Action::await_change()));
    drop(ctx);
    api.expect_no_more().await;
}

// ---- Placement: changes of servers run as Jobs, lost nodes ----------------------------------

/// A fresh operator (as after a restart) reconciling `module`, whose placement is recorded,
/// past the list of its pods.
async fn begin(
    module: &ZenkoMemcachedModule,
    pods: Vec<serde_json::Value>,
) -> (
    Arc<Context>,
    ApiServer,
    tokio::task::JoinHandle<Result<Action>>,
) {
    let Harness { ctx, mut api, .. } = harness();
    let task = start(module, &ctx);
    expect_observation(&mut api, None, pods).await;
    (ctx, api, task)
}

/// The reconcile ends well and sends nothing more.
async fn end(task: tokio::task::JoinHandle<Result<Action>>, ctx: Arc<Context>, api: ApiServer) {
    assert!(finish(task).await.is_ok());
    drop(ctx);
    api.expect_no_more().await;
}

/// Scaled from 3 to 2 pods, the change's Job created.
fn scaling_down() -> ZenkoMemcachedModule {
    ha_module(
        2,
        changing(stable_placement(1, 3, 2), 2, Some("store-placement-2")),
    )
}

/// A Job that gave up.
fn failed() -> serde_json::Value {
    json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True",
        "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
}

const HA_UID: &str = "6d1c2a4e-0000-4000-8000-000000000002";

fn server(ordinal: i32) -> String {
    format!("store-{ordinal}.store-headless.zenko.svc:11211")
}

fn servers(count: i32) -> Vec<String> {
    (0..count).map(server).collect()
}

/// The ha.yaml module with `replicas`, whose placement (recorded by an earlier reconcile) is
/// `placement`.
fn ha_module(replicas: i32, placement: serde_json::Value) -> ZenkoMemcachedModule {
    let mut module = fixture("ha.yaml");
    module.spec.replicas = replicas;
    module.status = Some(
        serde_json::from_value(json!({"placement": placement})).unwrap_or_else(|e| panic!("{e}")),
    );
    module
}

/// A placement stable on the first `count` servers with factor `factor`.
fn stable_placement(generation: i64, count: i32, factor: i32) -> serde_json::Value {
    let servers: Vec<serde_json::Value> = servers(count)
        .into_iter()
        .map(|name| json!({"name": name, "state": "InSync"}))
        .collect();
    json!({"generation": generation, "replicationFactor": factor, "servers": servers,
        "summary": ""})
}

/// `placement` with a change to the first `to` servers, run by `job` when given.
fn changing(mut placement: serde_json::Value, to: i32, job: Option<&str>) -> serde_json::Value {
    placement["change"] = json!({"to": servers(to), "replicationFactor": 2,
        "startedAt": "2026-01-01T00:00:00Z"});
    if let Some(job) = job {
        placement["change"]["job"] = json!(job);
    }
    placement
}

/// Answers the applies of the ConfigMap, the Services, the StatefulSet and the budget of a
/// module of several replicas, and the look for a backup CronJob it does not have; returns the ConfigMap's data and the StatefulSet's replicas.
async fn expect_children(api: &mut ApiServer) -> (serde_json::Value, i64) {
    let config_map = api
        .expect(Method::PATCH, &format!("{CORE}/configmaps/store-sidecar"))
        .await;
    let data = config_map.body["data"].clone();
    config_map.respond_with_body();
    for service in ["store-headless", "store-data", "store-metadata"] {
        api.expect(Method::PATCH, &format!("{CORE}/services/{service}"))
            .await
            .respond_with_body();
    }
    let sts = api.expect(Method::PATCH, STS).await;
    let replicas = sts.body["spec"]["replicas"].as_i64().unwrap_or_default();
    sts.respond_with_body();
    api.expect(Method::PATCH, PDB).await.respond_with_body();
    expect_no_backup(api).await;
    (data, replicas)
}

/// Answers the GET of the Job `store-placement-2` with `status`, its container changing the
/// first `from` servers into the first `to`.
async fn expect_job(api: &mut ApiServer, (from, to): (i32, i32), status: serde_json::Value) {
    let name = "store-placement-2";
    let args = change_args(from, to);
    let get = api.expect(Method::GET, &format!("{JOBS}/{name}")).await;
    get.respond_json(
        StatusCode::OK,
        &json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "zenko",
                "annotations": {"zenko.io/module-generation": "4"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "placement", "args": args}]}}},
            "status": status,
        }),
    );
}

fn change_args(from: i32, to: i32) -> Vec<String> {
    [
        "placement",
        "change",
        "--memcached",
        &servers(from).join(","),
        "--to",
        &servers(to).join(","),
        "--replication-factor",
        "2",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn deleted() -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})
}

/// The status the reconcile writes; answered with the module as it is then stored.
async fn expect_status(api: &mut ApiServer, module: &ZenkoMemcachedModule) -> serde_json::Value {
    let status = api.expect(Method::PATCH, STATUS).await;
    let written = status.body["status"].clone();
    respond_module(status, module);
    written
}

fn with_status(
    mut module: ZenkoMemcachedModule,
    status: &serde_json::Value,
) -> ZenkoMemcachedModule {
    module.status = Some(serde_json::from_value(status.clone()).unwrap_or_else(|e| panic!("{e}")));
    module
}

const JOBS: &str = "/apis/batch/v1/namespaces/zenko/jobs";

/// Answers the apply that creates the Job `store-placement-2`, checking which change it runs;
/// returns the Job.
async fn expect_job_created(api: &mut ApiServer, (from, to): (i32, i32)) -> serde_json::Value {
    let job = api
        .expect(Method::PATCH, &format!("{JOBS}/store-placement-2"))
        .await;
    assert_apply(&job.uri);
    assert_eq!(
        job.body["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(change_args(from, to))
    );
    let body = job.body.clone();
    job.respond_with_body();
    body
}

#[tokio::test]
async fn scaling_up_adds_the_pod_then_runs_the_change_as_a_job() {
    let Harness { ctx, mut api, .. } = harness();
    let module = ha_module(3, stable_placement(1, 2, 2));

    // first: the StatefulSet grows first, the sidecars are given the target list, no Job yet
    let task = start(&module, &ctx);
    expect_observation(&mut api, None, ready_pods(2)).await;
    let (config, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    assert_eq!(config["ZMM_MEMCACHED"], servers(3).join(","));
    assert_eq!(config["ZMM_REPLICATION_FACTOR"], "2");
    let s = expect_status(&mut api, &module).await;
    let change = &s["placement"]["change"];
    assert_eq!(change["to"], json!(servers(3)));
    assert!(change.get("job").is_none(), "{change}");
    assert_eq!(
        change["message"],
        format!("waiting for the memcached of {} to be ready", server(2))
    );
    assert_eq!(s["placement"]["generation"], 1);
    assert_eq!(s["placement"]["servers"][2]["joining"], true);
    assert_eq!(s["placement"]["servers"][2]["state"], "CatchingUp");
    assert_eq!(condition(&s, "Progressing")["reason"], "PlacementChanging");
    assert!(finish(task).await.is_ok());

    // then: the new pod's memcached is ready (its sidecar waits for the change): the Job runs
    let module = with_status(module, &s);
    let task = start(&module, &ctx);
    let mut pods = ready_pods(2);
    pods.push(pod(2, false, true));
    expect_observation(&mut api, None, pods).await;
    api.expect(Method::GET, "/api/v1/nodes/node-2")
        .await
        .respond_json(
            StatusCode::OK,
            &json!({"metadata": {"name": "node-2"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    let (_, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    let s = expect_status(&mut api, &module).await;
    assert_eq!(s["placement"]["change"]["job"], "store-placement-2");
    let job = expect_job_created(&mut api, (2, 3)).await;
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.local/zenko-memcached-sidecar:1.2.3"
    );
    assert_eq!(
        container["terminationMessagePolicy"],
        "FallbackToLogsOnError"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], HA_UID);
    assert_eq!(
        job["metadata"]["annotations"]["zenko.io/module-generation"],
        "4"
    );
    assert_eq!(
        finish(task).await.ok(),
        Some(Action::requeue(Duration::from_secs(10)))
    );
}

#[tokio::test]
async fn a_succeeded_job_moves_the_placement_to_its_target() {
    let module = ha_module(
        3,
        changing(stable_placement(1, 2, 2), 3, Some("store-placement-2")),
    );
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    expect_job(&mut api, (2, 3), json!({"succeeded": 1})).await;
    let (config, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    assert_eq!(config["ZMM_MEMCACHED"], servers(3).join(","));
    let s = expect_status(&mut api, &module).await;
    let placement = &s["placement"];
    assert_eq!(placement["generation"], 2);
    assert!(placement.get("change").is_none(), "{placement}");
    let states: Vec<&str> = placement["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(states, ["InSync"; 3]);
    assert_eq!(placement["summary"], "3 servers, R2, in sync");
    assert_eq!(condition(&s, "Degraded")["status"], "False");
    // the Job is cleaned up once the status no longer needs it
    let delete = api
        .expect(Method::DELETE, &format!("{JOBS}/store-placement-2"))
        .await;
    assert_eq!(delete.body["propagationPolicy"], "Background");
    delete.respond_json(StatusCode::OK, &deleted());
    end(task, ctx, api).await;
}

#[tokio::test]
async fn scaling_down_keeps_the_pods_until_the_job_succeeds_across_operator_restarts() {
    // first reconcile: every server is there, so the Job runs at once
    let module = ha_module(2, stable_placement(1, 3, 2));
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    let (config, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3, "no pod goes before its data has moved");
    assert_eq!(config["ZMM_MEMCACHED"], servers(2).join(","));
    let s = expect_status(&mut api, &module).await;
    assert_eq!(s["placement"]["servers"][2]["state"], "Leaving");
    expect_job_created(&mut api, (3, 2)).await;
    assert!(finish(task).await.is_ok());
    drop(ctx);

    // the operator restarts: a fresh controller finds the running Job through the status,
    // creates nothing, and shows the Job's progress
    let module = with_status(module, &s);
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    expect_job(&mut api, (3, 2), json!({"active": 1})).await;
    let job_pods = api.expect(Method::GET, PODS).await;
    assert!(
        job_pods
            .uri
            .contains("labelSelector=job-name%3Dstore-placement-2"),
        "{}",
        job_pods.uri
    );
    job_pods.respond_json(
        StatusCode::OK,
        &list(
            "PodList",
            vec![json!({"metadata": {"name": "store-placement-2-x7k2p"},
            "status": {"phase": "Running"}})],
        ),
    );
    let log = api
        .expect(Method::GET, &format!("{PODS}/store-placement-2-x7k2p/log"))
        .await;
    assert!(log.uri.contains("tailLines=1"), "{}", log.uri);
    log.respond_text("placement generation 5: copying\ncopying: 1200 of 5000 items\n");
    let (_, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    let s = expect_status(&mut api, &module).await;
    assert_eq!(
        s["placement"]["change"]["message"],
        "running: copying: 1200 of 5000 items"
    );
    let progressing = condition(&s, "Progressing");
    assert_eq!(progressing["reason"], "PlacementChanging");
    assert!(
        progressing["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("moving the data from 3 servers, 2 copies of each item to 2 servers"),
        "{progressing}"
    );
    end(task, ctx, api).await;

    // the Job succeeded: only now does the StatefulSet shrink
    let module = with_status(module, &s);
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    expect_job(&mut api, (3, 2), json!({"succeeded": 1})).await;
    let (_, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 2);
    let s = expect_status(&mut api, &module).await;
    assert_eq!(s["placement"]["generation"], 2);
    assert_eq!(s["placement"]["summary"], "2 servers, R2, in sync");
    api.expect(Method::DELETE, &format!("{JOBS}/store-placement-2"))
        .await
        .respond_json(StatusCode::OK, &deleted());
    end(task, ctx, api).await;
}

#[tokio::test]
async fn a_job_the_status_names_but_that_is_gone_is_created_again() {
    // the operator stopped after writing the status and before creating the Job
    let module = scaling_down();
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    api.expect(Method::GET, &format!("{JOBS}/store-placement-2"))
        .await
        .respond_status(404, "NotFound");
    let (_, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    let _ = expect_status(&mut api, &module).await;
    expect_job_created(&mut api, (3, 2)).await;
    end(task, ctx, api).await;
}

#[tokio::test]
async fn a_failed_job_shows_its_reason_and_changes_nothing() {
    let module = scaling_down();
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    expect_job(&mut api, (3, 2), failed()).await;
    let refusal = "refused: the data needs 3.1 GiB with 2 copies, the target servers hold 2.0 GiB";
    let terminated = |name: &str, at: &str, message: &str| {
        json!({"metadata": {"name": name, "creationTimestamp": at},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "placement",
                "ready": false, "restartCount": 0, "image": "s", "imageID": "",
                "state": {"terminated": {"exitCode": 1, "message": message}}}]}})
    };
    api.expect(Method::GET, PODS).await.respond_json(
        StatusCode::OK,
        &list(
            "PodList",
            vec![
                terminated(
                    "store-placement-2-b",
                    "2026-01-01T00:02:00Z",
                    &format!("copying\n{refusal}\n"),
                ),
                terminated("store-placement-2-a", "2026-01-01T00:01:00Z", "older"),
            ],
        ),
    );
    let (config, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3, "the StatefulSet stays as it is");
    assert_eq!(config["ZMM_MEMCACHED"], servers(2).join(","));
    let s = expect_status(&mut api, &module).await;
    let degraded = condition(&s, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "PlacementChangeFailed");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(message.contains(refusal), "{message}");
    assert_eq!(s["phase"], "Degraded");
    assert_eq!(s["placement"]["generation"], 1);
    assert_eq!(s["placement"]["summary"], "3 servers, R2, change failed");
    // no Job deleted or created: the same spec would fail the same way
    end(task, ctx, api).await;
}

#[tokio::test]
async fn replicas_below_the_recorded_factor_are_refused_in_status() {
    let module = ha_module(1, stable_placement(1, 2, 2));
    let (ctx, mut api, task) = begin(&module, ready_pods(2)).await;
    expect_config_and_services(&mut api, HA_UID).await;
    let sts = api.expect(Method::PATCH, STS).await;
    assert_eq!(sts.body["spec"]["replicas"], 2, "both servers keep running");
    sts.respond_with_body();
    api.expect(Method::GET, PDB)
        .await
        .respond_status(404, "NotFound");
    expect_no_backup(&mut api).await;
    let s = expect_status(&mut api, &module).await;
    let degraded = condition(&s, "Degraded");
    assert_eq!(degraded["reason"], "PlacementRefused");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("replicas (1) is below the module's replication factor (2"),
        "{message}"
    );
    assert!(message.contains("spec.replicationFactor"), "{message}");
    assert!(s["placement"].get("change").is_none());
    end(task, ctx, api).await;
}

/// A pod not ready on a node NotReady since 2026-01-01 (long past any grace period).
async fn expect_pods_with_a_lost_node(api: &mut ApiServer) {
    expect_observation(
        api,
        None,
        vec![pod(0, true, true), pod(1, false, false), pod(2, true, true)],
    )
    .await;
    api.expect(Method::GET, "/api/v1/nodes/node-1")
        .await
        .respond_json(
            StatusCode::OK,
            &json!({"metadata": {"name": "node-1"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        );
}

#[tokio::test]
async fn a_pod_on_a_lost_node_is_deleted_when_the_other_copies_cover_it() {
    let Harness { ctx, mut api, .. } = harness();
    let module = ha_module(3, stable_placement(1, 3, 2));
    let task = start(&module, &ctx);
    expect_pods_with_a_lost_node(&mut api).await;
    let (_, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    let delete = api.expect(Method::DELETE, &format!("{PODS}/store-1")).await;
    assert_eq!(delete.body["gracePeriodSeconds"], 0);
    assert_eq!(delete.body["preconditions"]["uid"], "pod-uid-1");
    delete.respond_json(StatusCode::OK, &deleted());
    let s = expect_status(&mut api, &module).await;
    let lost = &s["placement"]["servers"][1];
    assert_eq!(lost["state"], "CatchingUp");
    assert!(
        lost["message"]
            .as_str()
            .unwrap_or_default()
            .contains("node node-1 unreachable"),
        "{lost}"
    );
    assert_eq!(s["placement"]["summary"], "3 servers, R2, 1 catching up");
    assert_eq!(condition(&s, "Degraded")["status"], "False");
    end(task, ctx, api).await;
}

#[tokio::test]
async fn with_one_copy_a_lost_node_is_reported_not_deleted() {
    let Harness { ctx, mut api, .. } = harness();
    let mut module = ha_module(3, stable_placement(1, 3, 1));
    module.spec.replication_factor = Some(1);
    let task = start(&module, &ctx);
    expect_pods_with_a_lost_node(&mut api).await;
    let _ = expect_children(&mut api).await;
    // no DELETE: straight to the status
    let s = expect_status(&mut api, &module).await;
    let degraded = condition(&s, "Degraded");
    assert_eq!(degraded["reason"], "ServersLost");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("their share of the data is on them alone"),
        "{message}"
    );
    assert!(
        message.contains("zenko-memcached-sidecar placement accept --memcached"),
        "{message}"
    );
    end(task, ctx, api).await;
}

#[tokio::test]
async fn a_failed_change_is_tried_again_once_the_spec_changes() {
    let mut module = scaling_down();
    // more memory, say: the spec's generation is past the Job's (4)
    module.metadata.generation = Some(5);
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    expect_job(&mut api, (3, 2), failed()).await;
    api.expect(Method::GET, PODS)
        .await
        .respond_json(StatusCode::OK, &list("PodList", vec![]));
    let (_, replicas) = expect_children(&mut api).await;
    assert_eq!(replicas, 3);
    let s = expect_status(&mut api, &module).await;
    let message = s["placement"]["change"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.starts_with("trying again after: "), "{message}");
    assert_eq!(condition(&s, "Degraded")["status"], "False");
    // the old Job goes first; the next reconcile creates it again, from the new spec
    api.expect(Method::DELETE, &format!("{JOBS}/store-placement-2"))
        .await
        .respond_json(StatusCode::OK, &deleted());
    end(task, ctx, api).await;
}

#[tokio::test]
async fn a_backup_gets_its_cronjob_and_loses_it_when_removed() {
    let Harness { ctx, mut api, .. } = harness();
    let mut module = fixture("single.yaml");
    module.spec.backup = Some(
        serde_json::from_value(json!({
            "schedule": "0 3 * * *", "volumeClaim": "zmm-backups", "keep": 5,
        }))
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let uid = "6d1c2a4e-0000-4000-8000-000000000001";
    let task = start(&module, &ctx);
    expect_observation(&mut api, Some(None), ready_pods(1)).await;
    expect_config_and_services(&mut api, uid).await;
    api.expect(Method::PATCH, STS).await.respond_with_body();
    api.expect(Method::GET, PDB)
        .await
        .respond_status(404, "NotFound");
    let cronjob = api.expect(Method::PATCH, CRONJOB).await;
    assert_apply(&cronjob.uri);
    assert_eq!(cronjob.body["kind"], "CronJob");
    assert_eq!(cronjob.body["spec"]["schedule"], "0 3 * * *");
    assert_eq!(cronjob.body["metadata"]["ownerReferences"][0]["uid"], uid);
    // the export reads the servers of the placement, by their pods' names
    let args =
        &cronjob.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[1], "--memcached");
    assert_eq!(args[2], server(0));
    cronjob.respond_with_body();
    respond_module(api.expect(Method::PATCH, STATUS).await, &module);
    assert!(finish(task).await.is_ok());

    // spec.backup removed: the CronJob the module owns goes.
    module.spec.backup = None;
    let task = start(&module, &ctx);
    expect_observation(&mut api, Some(None), ready_pods(1)).await;
    expect_config_and_services(&mut api, uid).await;
    api.expect(Method::PATCH, STS).await.respond_with_body();
    api.expect(Method::GET, PDB)
        .await
        .respond_status(404, "NotFound");
    api.expect(Method::GET, CRONJOB).await.respond_json(StatusCode::OK, &json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "store-backup", "namespace": "zenko", "uid": "cron-uid",
            "ownerReferences": [{"apiVersion": "zenko.io/v1alpha1", "kind": "ZenkoMemcachedModule",
                "name": "store", "uid": uid, "controller": true}]},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {}},
    }));
    let delete = api.expect(Method::DELETE, CRONJOB).await;
    assert_eq!(delete.body["preconditions"]["uid"], "cron-uid");
    delete.respond_json(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
    );
    respond_module(api.expect(Method::PATCH, STATUS).await, &module);
    assert!(finish(task).await.is_ok());
}

#[tokio::test]
async fn a_backup_during_a_scale_up_exports_the_servers_the_sidecars_list() {
    let mut module = ha_module(3, stable_placement(1, 2, 2));
    module.spec.backup = Some(
        serde_json::from_value(json!({
            "schedule": "0 3 * * *", "volumeClaim": "zmm-backups", "keep": 5,
        }))
        .unwrap_or_else(|e| panic!("{e}")),
    );
    // the third pod's memcached is ready: the change starts at once
    let (ctx, mut api, task) = begin(&module, ready_pods(3)).await;
    let config_map = api
        .expect(Method::PATCH, &format!("{CORE}/configmaps/store-sidecar"))
        .await;
    assert_eq!(
        config_map.body["data"]["ZMM_MEMCACHED"],
        servers(3).join(",")
    );
    config_map.respond_with_body();
    for service in ["store-headless", "store-data", "store-metadata"] {
        api.expect(Method::PATCH, &format!("{CORE}/services/{service}"))
            .await
            .respond_with_body();
    }
    api.expect(Method::PATCH, STS).await.respond_with_body();
    api.expect(Method::PATCH, PDB).await.respond_with_body();
    // the CronJob is applied with the children, before the status and the Job
    let cronjob = api.expect(Method::PATCH, CRONJOB).await;
    assert_apply(&cronjob.uri);
    let args =
        &cronjob.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[2], servers(3).join(","));
    assert_eq!(
        cronjob.body["metadata"]["ownerReferences"][0]["uid"],
        HA_UID
    );
    cronjob.respond_with_body();
    let s = expect_status(&mut api, &module).await;
    assert_eq!(s["placement"]["change"]["job"], "store-placement-2");
    expect_job_created(&mut api, (2, 3)).await;
    end(task, ctx, api).await;
}
