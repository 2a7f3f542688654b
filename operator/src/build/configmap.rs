//! The ConfigMap holding the sidecar's environment, and the hash that rolls the pods when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::labels::Component;
use super::{MEMCACHED_PORT, names, object_meta};
use crate::validate::Validated;

/// Pod template annotation carrying the hash of the ConfigMap data: `envFrom` is only read at
/// container start, so a changed ConfigMap must change the template to reach running pods.
pub const CONFIG_HASH_ANNOTATION: &str = "zenko.io/config-hash";

/// Seconds the sidecar waits for memcached at start: both containers start together.
pub const STARTUP_WAIT_SECONDS: u32 = 60;

pub fn build(module: &Validated<'_>) -> ConfigMap {
    let data = sidecar_env(module, &memcached_servers(module));
    ConfigMap {
        metadata: object_meta(module, names::config_map(module.name), Component::Storage),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The sidecar's environment, shared by Kubernetes (this ConfigMap) and Swarm (the stack's
/// `environment`): only the list of memcached servers differs, because only the way a sidecar
/// reaches each memcached differs. The order of `memcached_servers` is the key routing order and
/// must be the same for every sidecar of a module. Settings of an API the role does not serve
/// are left out.
pub fn sidecar_env(
    module: &Validated<'_>,
    memcached_servers: &[String],
) -> BTreeMap<String, String> {
    let settings = &module.settings;
    let sidecar = &module.module.spec.sidecar;
    let mut env = BTreeMap::from([
        ("ZMM_MEMCACHED".to_owned(), memcached_servers.join(",")),
        (
            "ZMM_ROLE".to_owned(),
            settings.role.sidecar_role().to_owned(),
        ),
        (
            "ZMM_ADMIN_ADDR".to_owned(),
            format!("0.0.0.0:{}", super::ADMIN_PORT),
        ),
        (
            "ZMM_LOG_LEVEL".to_owned(),
            sidecar.log_level.as_str().to_owned(),
        ),
        (
            "ZMM_STARTUP_WAIT".to_owned(),
            STARTUP_WAIT_SECONDS.to_string(),
        ),
    ]);
    if settings.role.serves_data() {
        env.insert(
            "ZMM_DATA_ADDR".to_owned(),
            format!("0.0.0.0:{}", super::DATA_PORT),
        );
    }
    if let Some(chunk_size) = settings.chunk_size_bytes {
        env.insert("ZMM_CHUNK_SIZE".to_owned(), chunk_size.to_string());
    }
    if settings.role.serves_metadata() {
        env.insert(
            "ZMM_METADATA_ADDR".to_owned(),
            format!("0.0.0.0:{}", super::METADATA_PORT),
        );
    }
    if let Some(replication_group_id) = settings.replication_group_id {
        env.insert(
            "ZMM_REPLICATION_GROUP_ID".to_owned(),
            replication_group_id.to_owned(),
        );
    }
    env
}

/// The memcached servers every sidecar uses. With several pods each sidecar must list all of
/// them, in the same order, so that every sidecar maps a key to the same server; the headless
/// Service's per-pod names are stable and resolve before the pods are ready.
fn memcached_servers(module: &Validated<'_>) -> Vec<String> {
    let replicas = module.module.spec.replicas;
    if replicas <= 1 {
        return vec![format!("127.0.0.1:{MEMCACHED_PORT}")];
    }
    super::backup::memcached_by_pod(module)
}

/// Hex SHA-256 over the ConfigMap's sorted keys and values.
pub fn config_hash(config_map: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
