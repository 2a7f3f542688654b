//! The versioning decision rules for put, get and del, each applied as one atomic batch whose
//! preconditions are the values it read (retried on conflict, as two sidecars may share a
//! database).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::options::{PutOptions, VersionSelector};
use super::value::{
    VersionInfo, append_flag, append_version_id, is_placeholder, null_key, placeholder, version_key,
};
use super::version_id::{VersionId, VersionIdGenerator};
use crate::metadata::errors::{MetadataError, MetadataResult};
use crate::ordered::{Batch, KeyRange, OrderedError, OrderedStore, Sublevel};

/// How often a read-modify-write is retried when another writer changed its keys.
const MAX_ATTEMPTS: u32 = 32;

/// The rules, bound to a store and a version id generator.
#[derive(Clone)]
pub struct VersioningEngine {
    store: Arc<dyn OrderedStore>,
    ids: Arc<VersionIdGenerator>,
    /// Delay before a placeholder left by a version delete is repaired in the background
    /// (the reference waits 15 s); `None` leaves repair to the next get.
    repair_delay: Option<Duration>,
}

/// A planned write and the answer to give once it is applied.
struct Plan {
    batch: Batch,
    result: Option<String>,
    /// A placeholder was written: schedule its repair.
    placeholder_written: bool,
}

fn version_result(version_id: &str) -> String {
    // The reference answers a JSON *string*; ids are plain ASCII, but encode to be safe.
    let encoded = serde_json::Value::String(version_id.to_owned()).to_string();
    format!("{{\"versionId\":{encoded}}}")
}

impl VersioningEngine {
    pub fn new(
        store: Arc<dyn OrderedStore>,
        ids: VersionIdGenerator,
        repair_delay: Option<Duration>,
    ) -> VersioningEngine {
        VersioningEngine {
            store,
            ids: Arc::new(ids),
            repair_delay,
        }
    }

    pub fn store(&self) -> &Arc<dyn OrderedStore> {
        &self.store
    }

    /// Read what the plan needs, plan, write; on a conflict start again from the read.
    async fn apply<F>(
        &self,
        db: &Sublevel,
        key: &str,
        read_master: bool,
        plan: F,
    ) -> MetadataResult<Option<String>>
    where
        F: Fn(Option<&str>) -> MetadataResult<Plan>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let master = if read_master {
                self.store.get(db, key).await?
            } else {
                None
            };
            let planned = plan(master.as_deref())?;
            match self.store.write(db, planned.batch).await {
                Ok(()) => {
                    if planned.placeholder_written {
                        self.schedule_repair(db.clone(), key.to_owned());
                    }
                    return Ok(planned.result);
                }
                Err(OrderedError::Conflict) => {
                    tracing::debug!(attempt, key, "versioned write conflicted, retrying");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(MetadataError::Internal(format!(
            "gave up after {MAX_ATTEMPTS} conflicting writes to the same key"
        )))
    }

    pub async fn put(
        &self,
        db: &Sublevel,
        key: &str,
        value: &str,
        options: &PutOptions,
    ) -> MetadataResult<Option<String>> {
        match options.version_id.as_deref() {
            Some("") => {
                self.apply(db, key, false, |_| {
                    let vid = self.ids.next();
                    let mut batch = Batch::default().put(key, append_version_id(value, &vid)?);
                    if options.delete_null_key {
                        batch = batch.delete(null_key(key));
                    }
                    Ok(Plan {
                        batch,
                        result: Some(version_result(vid.as_str())),
                        placeholder_written: false,
                    })
                })
                .await
            }
            Some("null") => {
                let batch = Batch::default().put(null_key(key), value);
                self.store.write(db, batch).await?;
                Ok(Some(version_result("null")))
            }
            Some(vid) => {
                let vid = VersionId::from_client(vid);
                self.apply(db, key, true, |master| {
                    Ok(Plan {
                        batch: plan_version_specific_put(
                            key,
                            value,
                            &vid,
                            options.is_null,
                            master,
                            &VersionId::infinite(self.ids.replication_group_id()),
                        )?,
                        result: Some(version_result(vid.as_str())),
                        placeholder_written: false,
                    })
                })
                .await
            }
            None if options.versioning => {
                self.apply(db, key, false, |_| {
                    let vid = self.ids.next();
                    let versioned = append_version_id(value, &vid)?;
                    let vkey = version_key(key, &vid);
                    // A fresh id must not collide with another sidecar's version.
                    let batch = Batch::default()
                        .expect(vkey.clone(), None)
                        .put(key, versioned.clone())
                        .put(vkey, versioned);
                    Ok(Plan {
                        batch,
                        result: Some(version_result(vid.as_str())),
                        placeholder_written: false,
                    })
                })
                .await
            }
            None => {
                self.store
                    .write(db, Batch::default().put(key, value))
                    .await?;
                Ok(None)
            }
        }
    }

    pub async fn get(
        &self,
        db: &Sublevel,
        key: &str,
        selector: &VersionSelector,
    ) -> MetadataResult<String> {
        if let Some(vid) = selector.version_id.as_deref() {
            let stored_key = if vid == "null" {
                null_key(key)
            } else {
                version_key(key, &VersionId::from_client(vid))
            };
            return self
                .store
                .get(db, &stored_key)
                .await?
                .ok_or(MetadataError::ObjNotFound);
        }
        let master = self
            .store
            .get(db, key)
            .await?
            .ok_or(MetadataError::ObjNotFound)?;
        if !is_placeholder(&master) {
            return Ok(master);
        }
        self.resolve_placeholder(db, key).await
    }

    /// The latest version of a key whose master is a placeholder; also repairs the master
    /// (only if it is still that placeholder).
    pub async fn resolve_placeholder(&self, db: &Sublevel, key: &str) -> MetadataResult<String> {
        let mut upper = key.to_owned();
        upper.push('\u{1}');
        let range = KeyRange {
            lower: std::ops::Bound::Included(key.to_owned()),
            upper: std::ops::Bound::Excluded(upper),
        };
        // Master, maybe the null key, and the newest version key: enough to find the latest.
        let mut scan = self.store.scan(db, range, false).await?;
        let mut items = Vec::with_capacity(3);
        while items.len() < 3 {
            match scan.next().await {
                Some(item) => items.push(item?),
                None => break,
            }
        }
        drop(scan);
        let mut items = items.into_iter();
        let Some((master_key, master_value)) = items.next() else {
            return Err(MetadataError::ObjNotFound);
        };
        if master_key != key {
            return Err(MetadataError::ObjNotFound);
        }
        if !is_placeholder(&master_value) {
            return Ok(master_value);
        }
        let versions: Vec<(String, String)> = items.collect();
        let latest = latest_version(key, versions, self.ids.replication_group_id());
        let (batch, answer) = match latest {
            None => (
                Batch::default()
                    .expect(key, Some(master_value.clone()))
                    .delete(key),
                Err(MetadataError::ObjNotFound),
            ),
            Some((value, from_null_key)) => {
                let mut batch = Batch::default()
                    .expect(key, Some(master_value.clone()))
                    .put(key, value.clone());
                if from_null_key {
                    batch = batch.delete(null_key(key));
                }
                (batch, Ok(value))
            }
        };
        match self.store.write(db, batch).await {
            Ok(()) => tracing::debug!(key, "placeholder master repaired"),
            Err(OrderedError::Conflict) => {
                tracing::debug!(
                    key,
                    "placeholder changed meanwhile, repair left to its writer"
                )
            }
            Err(error) => tracing::warn!(key, %error, "placeholder repair failed"),
        }
        answer
    }

    fn schedule_repair(&self, db: Sublevel, key: String) {
        let Some(delay) = self.repair_delay else {
            return;
        };
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(error) = engine.resolve_placeholder(&db, &key).await
                && !matches!(error, MetadataError::ObjNotFound)
            {
                tracing::warn!(%key, %error, "scheduled placeholder repair failed");
            }
        });
    }

    pub async fn del(
        &self,
        db: &Sublevel,
        key: &str,
        selector: &VersionSelector,
    ) -> MetadataResult<Option<String>> {
        match selector.version_id.as_deref() {
            None => {
                self.store.write(db, Batch::default().delete(key)).await?;
                Ok(None)
            }
            Some("null") => {
                self.store
                    .write(db, Batch::default().delete(null_key(key)))
                    .await?;
                Ok(Some(version_result("null")))
            }
            Some(vid) => {
                let vid = VersionId::from_client(vid);
                self.apply(db, key, true, |master| {
                    let target = if selector.is_null {
                        null_key(key)
                    } else {
                        version_key(key, &vid)
                    };
                    let mut batch = Batch::default()
                        .expect(key, master.map(str::to_owned))
                        .delete(target);
                    let master_is_target = master.is_some_and(|m| {
                        is_placeholder(m)
                            || VersionInfo::parse(m)
                                .ok()
                                .and_then(|info| info.version_id)
                                .is_some_and(|mv| mv == vid.as_str())
                    });
                    if master_is_target {
                        batch = batch.put(key, placeholder(&self.ids.next()));
                    }
                    Ok(Plan {
                        batch,
                        result: Some(version_result(vid.as_str())),
                        placeholder_written: master_is_target,
                    })
                })
                .await
            }
        }
    }
}

/// The newest of the listed version entries (those after the master, at most two): the null
/// key takes the place its own version id gives it. Returns its value and whether it is the
/// null key.
fn latest_version(
    key: &str,
    versions: Vec<(String, String)>,
    rg: &super::ReplicationGroupId,
) -> Option<(String, bool)> {
    let null = null_key(key);
    let mut versions = versions.into_iter();
    let first = versions.next()?;
    if first.0 != null {
        return Some((first.1, false));
    }
    let null_vid = VersionInfo::parse(&first.1)
        .ok()
        .and_then(|info| info.version_id)
        .map(VersionId::from_client)
        .unwrap_or_else(|| VersionId::infinite(rg));
    let null_position_key = version_key(key, &null_vid);
    match versions.next() {
        Some((next_key, next_value)) if next_key < null_position_key => Some((next_value, false)),
        _ => Some((first.1, true)),
    }
}

/// The batch of a put to a given version `V` (section 3.9): the version key, the master when
/// `V` is not older than it, and the legacy null-version cases.
fn plan_version_specific_put(
    key: &str,
    value: &str,
    vid: &VersionId,
    is_null: Option<bool>,
    master: Option<&str>,
    infinite: &VersionId,
) -> MetadataResult<Batch> {
    let mut batch = Batch::default().expect(key, master.map(str::to_owned));
    if is_null != Some(true) {
        batch = batch.put(version_key(key, vid), value);
    }
    let Some(master) = master else {
        return Ok(batch.put(key, value));
    };
    let info = VersionInfo::parse(master)?;
    // A master without a version id predates versioning: it is the oldest possible version.
    let master_vid = info
        .version_id
        .clone()
        .map(VersionId::from_client)
        .unwrap_or_else(|| infinite.clone());
    if master_vid >= *vid {
        batch = batch.put(key, value);
        let legacy_null = info.version_id.is_none() || info.is_null_version();
        if legacy_null && master_vid != *vid {
            let preserved = if info.version_id.is_none() {
                append_version_id(master, &master_vid)?
            } else {
                master.to_owned()
            };
            match is_null {
                // A CloudServer that knows null keys: keep the old null version there.
                Some(false) => {
                    let mut flagged = preserved;
                    if info.is_null != Some(true) {
                        flagged = append_flag(&flagged, "isNull")?;
                    }
                    if info.is_null2 != Some(true) {
                        flagged = append_flag(&flagged, "isNull2")?;
                    }
                    batch = batch
                        .put(null_key(key), flagged)
                        .delete(version_key(key, &master_vid));
                }
                // An older CloudServer: keep it as a version under its own id.
                None => batch = batch.put(version_key(key, &master_vid), preserved),
                Some(true) => {}
            }
        }
        if is_null == Some(true) && info.version_id.is_some() && !info.is_null_version() {
            // The null version becomes the master: an older null key would shadow nothing.
            batch = batch.delete(null_key(key));
        }
    } else if is_null == Some(true) {
        // Updating the null version while a newer version is master.
        batch = batch
            .put(null_key(key), value)
            .delete(version_key(key, vid));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests;
