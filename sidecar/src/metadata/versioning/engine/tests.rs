//! One test per row of the versioning rules (section 3.9), on the in-memory ordered store.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use serde_json::json;

use super::*;
use crate::metadata::versioning::{ReplicationGroupId, VersionIdGenerator};
use crate::ordered::MemoryOrderedStore;

fn engine() -> VersioningEngine {
    let store: Arc<dyn OrderedStore> = Arc::new(MemoryOrderedStore::default());
    VersioningEngine::new(
        store,
        VersionIdGenerator::new(ReplicationGroupId::default()),
        None,
    )
}

fn db() -> Sublevel {
    Sublevel::new(vec!["bucket".into()])
}

async fn dump(engine: &VersioningEngine) -> BTreeMap<String, String> {
    engine
        .store()
        .scan(&db(), KeyRange::all(), false)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn put_opts(value: serde_json::Value) -> PutOptions {
    PutOptions::parse(&value).unwrap()
}

fn sel(value: serde_json::Value) -> VersionSelector {
    VersionSelector::parse(&value).unwrap()
}

fn vid_of(result: &Option<String>) -> String {
    let parsed: serde_json::Value = serde_json::from_str(result.as_deref().unwrap()).unwrap();
    parsed["versionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn plain_put_writes_the_master_only() {
    let e = engine();
    let result = e
        .put(&db(), "k", "{\"a\":1}", &put_opts(json!({})))
        .await
        .unwrap();
    assert_eq!(result, None);
    assert_eq!(
        dump(&e).await,
        BTreeMap::from([("k".into(), "{\"a\":1}".into())])
    );
}

#[tokio::test]
async fn versioning_put_writes_master_and_version_with_the_id_appended() {
    let e = engine();
    let result = e
        .put(
            &db(),
            "k",
            "{\"a\":1}",
            &put_opts(json!({"versioning": true})),
        )
        .await
        .unwrap();
    let vid = vid_of(&result);
    assert_eq!(vid.len(), 28);
    assert!(vid.ends_with("RG001  0"));
    let value = format!("{{\"a\":1,\"versionId\":\"{vid}\"}}");
    assert_eq!(
        dump(&e).await,
        BTreeMap::from([("k".into(), value.clone()), (format!("k\u{0}{vid}"), value)])
    );
}

#[tokio::test]
async fn empty_version_id_overwrites_the_master_and_may_drop_the_null_key() {
    let e = engine();
    e.put(
        &db(),
        "k",
        "{\"old\":1}",
        &put_opts(json!({"versionId": "null"})),
    )
    .await
    .unwrap();
    let r = e
        .put(&db(), "k", "{}", &put_opts(json!({"versionId": ""})))
        .await
        .unwrap();
    let vid = vid_of(&r);
    let state = dump(&e).await;
    assert_eq!(state["k"], format!("{{\"versionId\":\"{vid}\"}}"));
    assert!(state.contains_key("k\u{0}"));
    e.put(
        &db(),
        "k",
        "{}",
        &put_opts(json!({"versionId": "", "isNull": true, "deleteNullKey": true})),
    )
    .await
    .unwrap();
    assert!(!dump(&e).await.contains_key("k\u{0}"));
}

#[tokio::test]
async fn null_version_id_writes_the_null_key_unchanged() {
    let e = engine();
    let r = e
        .put(
            &db(),
            "k",
            "{\"isNull\":true}",
            &put_opts(json!({"versionId": "null"})),
        )
        .await
        .unwrap();
    assert_eq!(r.as_deref(), Some("{\"versionId\":\"null\"}"));
    assert_eq!(
        dump(&e).await,
        BTreeMap::from([("k\u{0}".into(), "{\"isNull\":true}".into())])
    );
}

#[tokio::test]
async fn specific_version_put_without_master_writes_both() {
    let e = engine();
    let r = e
        .put(
            &db(),
            "k",
            "{\"versionId\":\"v5\"}",
            &put_opts(json!({"versionId": "v5"})),
        )
        .await
        .unwrap();
    assert_eq!(r.as_deref(), Some("{\"versionId\":\"v5\"}"));
    let state = dump(&e).await;
    assert_eq!(state.len(), 2);
    assert_eq!(state["k"], "{\"versionId\":\"v5\"}");
    assert_eq!(state["k\u{0}v5"], "{\"versionId\":\"v5\"}");
}

#[tokio::test]
async fn specific_version_put_updates_master_when_not_older() {
    let e = engine();
    let first = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    let updated = format!("{{\"acl\":1,\"versionId\":\"{first}\"}}");
    e.put(
        &db(),
        "k",
        &updated,
        &put_opts(json!({"versionId": first.clone()})),
    )
    .await
    .unwrap();
    let state = dump(&e).await;
    assert_eq!(state["k"], updated);
    assert_eq!(state[&format!("k\u{0}{first}")], updated);
}

#[tokio::test]
async fn specific_version_put_leaves_a_newer_master_alone() {
    let e = engine();
    let old = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    let new = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    let updated = format!("{{\"acl\":1,\"versionId\":\"{old}\"}}");
    e.put(
        &db(),
        "k",
        &updated,
        &put_opts(json!({"versionId": old.clone()})),
    )
    .await
    .unwrap();
    let state = dump(&e).await;
    assert_eq!(state["k"], format!("{{\"versionId\":\"{new}\"}}"));
    assert_eq!(state[&format!("k\u{0}{old}")], updated);
}

#[tokio::test]
async fn null_version_update_under_a_newer_master_goes_to_the_null_key() {
    let e = engine();
    let old = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
        .await
        .unwrap();
    let updated = format!("{{\"isNull\":true,\"versionId\":\"{old}\"}}");
    e.put(
        &db(),
        "k",
        &updated,
        &put_opts(json!({"versionId": old.clone(), "isNull": true})),
    )
    .await
    .unwrap();
    let state = dump(&e).await;
    assert_eq!(state["k\u{0}"], updated);
    assert!(!state.contains_key(&format!("k\u{0}{old}")));
}

#[tokio::test]
async fn null_version_that_is_master_is_updated_in_place() {
    let e = engine();
    let vid = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"isNull\":true}",
            &put_opts(json!({"versionId": ""})),
        )
        .await
        .unwrap(),
    );
    let updated = format!("{{\"isNull\":true,\"acl\":2,\"versionId\":\"{vid}\"}}");
    e.put(
        &db(),
        "k",
        &updated,
        &put_opts(json!({"versionId": vid.clone(), "isNull": true})),
    )
    .await
    .unwrap();
    assert_eq!(dump(&e).await, BTreeMap::from([("k".into(), updated)]));
}

const V1: &str = "98270408217846999999RG001  0";
const V1_VALUE: &str = "{\"versionId\":\"98270408217846999999RG001  0\"}";

#[tokio::test]
async fn legacy_master_is_preserved_as_null_key_when_is_null_is_false() {
    let e = engine();
    e.put(&db(), "k", "{\"old\":1}", &put_opts(json!({})))
        .await
        .unwrap();
    e.put(
        &db(),
        "k",
        V1_VALUE,
        &put_opts(json!({"versionId": V1, "isNull": false})),
    )
    .await
    .unwrap();
    let state = dump(&e).await;
    let inf = VersionId::infinite(&ReplicationGroupId::default());
    assert_eq!(state["k"], V1_VALUE);
    assert_eq!(
        state["k\u{0}"],
        format!("{{\"old\":1,\"versionId\":\"{inf}\",\"isNull\":true,\"isNull2\":true}}")
    );
    assert_eq!(state[&format!("k\u{0}{V1}")], V1_VALUE);
}

#[tokio::test]
async fn legacy_master_is_preserved_as_a_version_when_is_null_is_absent() {
    let e = engine();
    e.put(&db(), "k", "{\"old\":1}", &put_opts(json!({})))
        .await
        .unwrap();
    e.put(&db(), "k", V1_VALUE, &put_opts(json!({"versionId": V1})))
        .await
        .unwrap();
    let state = dump(&e).await;
    let inf = VersionId::infinite(&ReplicationGroupId::default());
    assert_eq!(
        state[&format!("k\u{0}{inf}")],
        format!("{{\"old\":1,\"versionId\":\"{inf}\"}}")
    );
    assert!(!state.contains_key("k\u{0}"));
}

#[tokio::test]
async fn null_put_over_a_regular_master_drops_the_null_key() {
    let e = engine();
    e.put(
        &db(),
        "k",
        "{\"n\":1}",
        &put_opts(json!({"versionId": "null"})),
    )
    .await
    .unwrap();
    let v1 = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    let value = format!("{{\"isNull\":true,\"versionId\":\"{v1}\"}}");
    e.put(
        &db(),
        "k",
        &value,
        &put_opts(json!({"versionId": v1.clone(), "isNull": true})),
    )
    .await
    .unwrap();
    let state = dump(&e).await;
    assert_eq!(state["k"], value);
    assert!(!state.contains_key("k\u{0}"));
}

#[tokio::test]
async fn gets_read_master_null_key_and_versions() {
    let e = engine();
    assert!(matches!(
        e.get(&db(), "k", &sel(json!({}))).await,
        Err(MetadataError::ObjNotFound)
    ));
    let v1 = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"n\":1}",
            &put_opts(json!({"versioning": true})),
        )
        .await
        .unwrap(),
    );
    e.put(
        &db(),
        "k",
        "{\"null\":1}",
        &put_opts(json!({"versionId": "null"})),
    )
    .await
    .unwrap();
    assert!(
        e.get(&db(), "k", &sel(json!({})))
            .await
            .unwrap()
            .contains("\"n\":1")
    );
    assert!(
        e.get(&db(), "k", &sel(json!({"versionId": v1})))
            .await
            .unwrap()
            .contains("\"n\":1")
    );
    assert_eq!(
        e.get(&db(), "k", &sel(json!({"versionId": "null"})))
            .await
            .unwrap(),
        "{\"null\":1}"
    );
    assert!(matches!(
        e.get(&db(), "k", &sel(json!({"versionId": "nope"}))).await,
        Err(MetadataError::ObjNotFound)
    ));
}

#[tokio::test]
async fn plain_delete_removes_only_the_master() {
    let e = engine();
    let v1 = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    assert_eq!(e.del(&db(), "k", &sel(json!({}))).await.unwrap(), None);
    let state = dump(&e).await;
    assert_eq!(state.len(), 1);
    assert!(state.contains_key(&format!("k\u{0}{v1}")));
    // Deleting what does not exist is not an error.
    assert_eq!(
        e.del(&db(), "missing", &sel(json!({}))).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn deleting_the_null_version() {
    let e = engine();
    e.put(&db(), "k", "{}", &put_opts(json!({"versionId": "null"})))
        .await
        .unwrap();
    let r = e
        .del(&db(), "k", &sel(json!({"versionId": "null"})))
        .await
        .unwrap();
    assert_eq!(r.as_deref(), Some("{\"versionId\":\"null\"}"));
    assert!(dump(&e).await.is_empty());
}

#[tokio::test]
async fn deleting_an_older_version_keeps_the_master() {
    let e = engine();
    let v1 = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    let v2 = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    let r = e
        .del(&db(), "k", &sel(json!({"versionId": v1.clone()})))
        .await
        .unwrap();
    assert_eq!(r, Some(format!("{{\"versionId\":\"{v1}\"}}")));
    let state = dump(&e).await;
    assert_eq!(state["k"], format!("{{\"versionId\":\"{v2}\"}}"));
    assert_eq!(state.len(), 2);
}

#[tokio::test]
async fn deleting_the_latest_version_leaves_a_placeholder_that_get_repairs() {
    let e = engine();
    let v1 = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"n\":1}",
            &put_opts(json!({"versioning": true})),
        )
        .await
        .unwrap(),
    );
    let v2 = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"n\":2}",
            &put_opts(json!({"versioning": true})),
        )
        .await
        .unwrap(),
    );
    e.del(&db(), "k", &sel(json!({"versionId": v2.clone()})))
        .await
        .unwrap();
    let master = dump(&e).await["k"].clone();
    assert!(is_placeholder(&master));
    let fresh = VersionInfo::parse(&master).unwrap().version_id.unwrap();
    assert_ne!(fresh, v2, "the placeholder gets a fresh id");
    assert!(master.starts_with("{ \"isPHD\": true, \"versionId\": \""));
    let got = e.get(&db(), "k", &sel(json!({}))).await.unwrap();
    assert_eq!(got, format!("{{\"n\":1,\"versionId\":\"{v1}\"}}"));
    assert_eq!(dump(&e).await["k"], got, "master repaired");
    // Deleting the last version: placeholder, then the get removes the master.
    e.del(&db(), "k", &sel(json!({"versionId": v1})))
        .await
        .unwrap();
    assert!(matches!(
        e.get(&db(), "k", &sel(json!({}))).await,
        Err(MetadataError::ObjNotFound)
    ));
    assert!(dump(&e).await.is_empty());
}

#[tokio::test]
async fn placeholder_resolution_puts_the_null_key_in_its_version_order() {
    let e = engine();
    let v1 = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"n\":1}",
            &put_opts(json!({"versioning": true})),
        )
        .await
        .unwrap(),
    );
    // A null version newer than v1 (suspended versioning), then a newer regular version.
    let null_vid = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"isNull\":true}",
            &put_opts(json!({"versionId": ""})),
        )
        .await
        .unwrap(),
    );
    let null_value = format!("{{\"isNull\":true,\"versionId\":\"{null_vid}\"}}");
    e.put(
        &db(),
        "k",
        &null_value,
        &put_opts(json!({"versionId": "null"})),
    )
    .await
    .unwrap();
    let v3 = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"n\":3}",
            &put_opts(json!({"versioning": true})),
        )
        .await
        .unwrap(),
    );
    e.del(&db(), "k", &sel(json!({"versionId": v3})))
        .await
        .unwrap();
    assert_eq!(
        e.get(&db(), "k", &sel(json!({}))).await.unwrap(),
        null_value
    );
    let state = dump(&e).await;
    assert_eq!(state["k"], null_value);
    assert!(
        !state.contains_key("k\u{0}"),
        "null key moved to the master"
    );
    assert!(state.contains_key(&format!("k\u{0}{v1}")));
}

#[tokio::test]
async fn deleting_the_null_key_by_is_null() {
    let e = engine();
    let vid = vid_of(
        &e.put(
            &db(),
            "k",
            "{\"isNull\":true}",
            &put_opts(json!({"versionId": ""})),
        )
        .await
        .unwrap(),
    );
    e.put(
        &db(),
        "k",
        "{\"isNull\":true}",
        &put_opts(json!({"versionId": "null"})),
    )
    .await
    .unwrap();
    e.del(&db(), "k", &sel(json!({"versionId": vid, "isNull": true})))
        .await
        .unwrap();
    let state = dump(&e).await;
    assert!(!state.contains_key("k\u{0}"));
    assert!(is_placeholder(&state["k"]));
}

#[tokio::test]
async fn scheduled_repair_runs_after_the_delay() {
    let store: Arc<dyn OrderedStore> = Arc::new(MemoryOrderedStore::default());
    let e = VersioningEngine::new(
        store,
        VersionIdGenerator::new(ReplicationGroupId::default()),
        Some(Duration::from_millis(20)),
    );
    e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
        .await
        .unwrap();
    let v2 = vid_of(
        &e.put(&db(), "k", "{}", &put_opts(json!({"versioning": true})))
            .await
            .unwrap(),
    );
    e.del(&db(), "k", &sel(json!({"versionId": v2})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!is_placeholder(&dump(&e).await["k"]));
}

#[tokio::test]
async fn versioned_put_of_a_non_object_is_refused() {
    let e = engine();
    assert!(matches!(
        e.put(&db(), "k", "[1]", &put_opts(json!({"versioning": true})))
            .await,
        Err(MetadataError::InvalidArgument(_))
    ));
}

/// A store whose first write conflicts, as if another sidecar wrote in between.
struct ConflictOnce {
    inner: MemoryOrderedStore,
    conflicts: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl OrderedStore for ConflictOnce {
    async fn get(&self, db: &Sublevel, key: &str) -> crate::ordered::OrderedResult<Option<String>> {
        self.inner.get(db, key).await
    }
    async fn write(&self, db: &Sublevel, batch: Batch) -> crate::ordered::OrderedResult<()> {
        if self
            .conflicts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            return Err(OrderedError::Conflict);
        }
        self.inner.write(db, batch).await
    }
    async fn scan(
        &self,
        db: &Sublevel,
        range: KeyRange,
        reverse: bool,
    ) -> crate::ordered::OrderedResult<crate::ordered::ScanStream> {
        self.inner.scan(db, range, reverse).await
    }
    async fn databases(&self) -> crate::ordered::OrderedResult<Vec<Sublevel>> {
        self.inner.databases().await
    }
}

#[tokio::test]
async fn conflicts_are_retried() {
    let store = Arc::new(ConflictOnce {
        inner: MemoryOrderedStore::default(),
        conflicts: Default::default(),
    });
    let e = VersioningEngine::new(
        store.clone(),
        VersionIdGenerator::new(ReplicationGroupId::default()),
        None,
    );
    let r = e
        .put(&db(), "k", "{}", &put_opts(json!({"versionId": "v1"})))
        .await
        .unwrap();
    assert_eq!(r.as_deref(), Some("{\"versionId\":\"v1\"}"));
    assert_eq!(store.conflicts.load(std::sync::atomic::Ordering::SeqCst), 2);
}
