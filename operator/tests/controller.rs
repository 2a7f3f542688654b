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
    respond_module(status, &module);

    assert_eq!(
        finish(task).await.ok(),
        Some(Action::requeue(Duration::from_secs(30)))
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

    // the ConfigMap and headless Service are still there
    for path in [
        format!("{CORE}/configmaps/store-sidecar"),
        format!("{CORE}/services/store-headless"),
    ] {
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
    cronjob.respond_with_body();
    respond_module(api.expect(Method::PATCH, STATUS).await, &module);
    assert!(finish(task).await.is_ok());

    // spec.backup removed: the CronJob the module owns goes.
    module.spec.backup = None;
    let task = start(&module, &ctx);
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
