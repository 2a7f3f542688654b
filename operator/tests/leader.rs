//! Leader election on a Lease, against kube's mock API service.

mod common;

use std::time::Duration;

use common::mock_client;
use http::{Method, StatusCode};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::json;
use zenko_memcached_operator::leader::{LeaderElector, Leadership, LeaseConfig, is_expired};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/zmm-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn lease(holder: &str, renewed: i64, transitions: i32) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "zmm-operator", "namespace": "ops", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": MicroTime(at(renewed)), "acquireTime": MicroTime(at(renewed - 100)),
            "leaseTransitions": transitions},
    })
}

fn elector(identity: &str) -> (LeaderElector, common::ApiServer) {
    let (client, api) = mock_client();
    let leases: Api<Lease> = Api::namespaced(client, "ops");
    (
        LeaderElector::new(leases, LeaseConfig::new("zmm-operator", identity)),
        api,
    )
}

async fn attempt(
    elector: LeaderElector,
    now: i64,
) -> tokio::task::JoinHandle<zenko_memcached_operator::Result<Leadership>> {
    tokio::spawn(async move { elector.try_acquire_or_renew(at(now)).await })
}

async fn outcome(
    task: tokio::task::JoinHandle<zenko_memcached_operator::Result<Leadership>>,
) -> Leadership {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap_or_else(|_| panic!("attempt hung"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let (e, mut api) = elector("pod-a");
    let task = attempt(e, 1000).await;
    api.expect(Method::GET, LEASE)
        .await
        .respond_status(404, "NotFound");
    let create = api.expect(Method::POST, LEASES).await;
    assert_eq!(create.body["metadata"]["name"], "zmm-operator");
    assert_eq!(create.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
    create.respond_with_body();
    assert_eq!(outcome(task).await, Leadership::Acquired);
}

#[tokio::test]
async fn the_holder_renews_with_the_resource_version_it_read() {
    let (e, mut api) = elector("pod-a");
    let task = attempt(e, 1005).await;
    api.expect(Method::GET, LEASE)
        .await
        .respond_json(StatusCode::OK, &lease("pod-a", 1000, 3));
    let put = api.expect(Method::PUT, LEASE).await;
    assert_eq!(put.body["metadata"]["resourceVersion"], "41");
    assert_eq!(put.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(put.body["spec"]["renewTime"], json!(MicroTime(at(1005))));
    assert_eq!(put.body["spec"]["leaseTransitions"], 3);
    put.respond_with_body();
    assert_eq!(outcome(task).await, Leadership::Renewed);
}

#[tokio::test]
async fn a_valid_lease_of_another_replica_is_not_touched() {
    let (e, mut api) = elector("pod-b");
    let task = attempt(e, 1010).await;
    api.expect(Method::GET, LEASE)
        .await
        .respond_json(StatusCode::OK, &lease("pod-a", 1000, 3));
    assert_eq!(
        outcome(task).await,
        Leadership::Follower {
            holder: Some("pod-a".into())
        }
    );
    api.expect_no_more().await;
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let (e, mut api) = elector("pod-b");
    let task = attempt(e, 1016).await;
    api.expect(Method::GET, LEASE)
        .await
        .respond_json(StatusCode::OK, &lease("pod-a", 1000, 3));
    let put = api.expect(Method::PUT, LEASE).await;
    assert_eq!(put.body["spec"]["holderIdentity"], "pod-b");
    assert_eq!(put.body["spec"]["leaseTransitions"], 4);
    assert_eq!(put.body["spec"]["acquireTime"], json!(MicroTime(at(1016))));
    assert_eq!(put.body["metadata"]["resourceVersion"], "41");
    put.respond_with_body();
    assert_eq!(outcome(task).await, Leadership::Acquired);
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_means_standing_by() {
    let (e, mut api) = elector("pod-b");
    let task = attempt(e, 1016).await;
    api.expect(Method::GET, LEASE)
        .await
        .respond_json(StatusCode::OK, &lease("pod-a", 1000, 3));
    api.expect(Method::PUT, LEASE)
        .await
        .respond_status(409, "Conflict");
    assert_eq!(outcome(task).await, Leadership::Follower { holder: None });
}

#[test]
fn expiry_follows_renew_time_and_duration() {
    let spec = |holder: Option<&str>| LeaseSpec {
        holder_identity: holder.map(str::to_owned),
        renew_time: Some(MicroTime(at(1000))),
        lease_duration_seconds: Some(15),
        ..LeaseSpec::default()
    };
    assert!(!is_expired(&spec(Some("a")), at(1014)));
    assert!(is_expired(&spec(Some("a")), at(1015)));
    assert!(is_expired(&spec(None), at(1001)));
    assert!(is_expired(&spec(Some("")), at(1001)));
}
