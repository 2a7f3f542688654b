//! Pure functions from a validated module to the Kubernetes objects it should own.
//!
//! Nothing here talks to the API server: the controller applies what these return, and the
//! `manifests` command prints it, so both always agree.

mod backup;
mod configmap;
mod job;
pub mod labels;
mod pdb;
mod services;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::crd::Endpoints;
use crate::placement::Deployment;
use crate::validate::Validated;

pub use configmap::{
    CONFIG_HASH_ANNOTATION, PLACEMENT_KEYS, STARTUP_WAIT_SECONDS, config_hash, sidecar_env,
};
pub use job::{MODULE_GENERATION_ANNOTATION, PLACEMENT_CONTAINER, placement_job};
pub use statefulset::{
    ADMIN_PORT, DATA_PORT, MEMCACHED_PORT, MEMCACHED_UID, METADATA_PORT, SIDECAR_UID,
    TERMINATION_GRACE_SECONDS, WARM_MOUNT, memcached_answers_command, memcached_args,
    memcached_resources, metrics_annotations, sidecar_resources, warm_host_path,
};

/// Every object one module owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    /// Only when the module's role serves data.
    pub data_service: Option<Service>,
    /// Only when the module's role serves metadata.
    pub metadata_service: Option<Service>,
    pub stateful_set: StatefulSet,
    /// Only with more than one replica: with one pod, a budget would block every node drain.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// Only with `spec.backup`.
    pub backup: Option<CronJob>,
}

/// Builds every child of the module, for the placement the operator decided (the servers the
/// sidecars list and the pods the StatefulSet runs).
pub fn build(module: &Validated<'_>, placement: &Deployment) -> Children {
    let config_map = configmap::build(module, &placement.sidecar);
    let hash = config_hash(&config_map);
    Children {
        headless_service: services::headless(module),
        data_service: services::data(module),
        metadata_service: services::metadata(module),
        stateful_set: statefulset::build(module, &hash, placement.pods),
        pod_disruption_budget: pdb::build(module),
        backup: backup::build(module, &placement.sidecar),
        config_map,
    }
}

/// The children of a module without a recorded placement, as it starts: what `manifests`
/// prints for a file.
pub fn build_initial(module: &Validated<'_>) -> Children {
    build(
        module,
        &Deployment::stable(crate::placement::initial(module)),
    )
}

impl Children {
    /// The objects in the order they are applied: configuration and Services before the pods that use them.
    pub fn to_json_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = vec![
            serde_json::to_value(&self.config_map)?,
            serde_json::to_value(&self.headless_service)?,
        ];
        for service in [&self.data_service, &self.metadata_service]
            .into_iter()
            .flatten()
        {
            out.push(serde_json::to_value(service)?);
        }
        out.push(serde_json::to_value(&self.stateful_set)?);
        if let Some(pdb) = &self.pod_disruption_budget {
            out.push(serde_json::to_value(pdb)?);
        }
        if let Some(backup) = &self.backup {
            out.push(serde_json::to_value(backup)?);
        }
        Ok(out)
    }
}

/// Names of the objects of a module, derived from the module's name only, so that they are stable.
pub mod names {
    pub fn stateful_set(module: &str) -> String {
        module.to_owned()
    }
    pub fn headless_service(module: &str) -> String {
        format!("{module}-headless")
    }
    pub fn data_service(module: &str) -> String {
        format!("{module}-data")
    }
    pub fn metadata_service(module: &str) -> String {
        format!("{module}-metadata")
    }
    pub fn config_map(module: &str) -> String {
        format!("{module}-sidecar")
    }
    pub fn pod_disruption_budget(module: &str) -> String {
        module.to_owned()
    }
    pub fn backup(module: &str) -> String {
        format!("{module}-backup")
    }
}

/// The addresses CloudServer is configured with, from the cluster DNS names of the Services
/// the module's role has.
pub fn endpoints(module: &Validated<'_>) -> Endpoints {
    let settings = &module.settings;
    let address = |service: String, port: i32| format!("{service}.{}.svc:{port}", module.namespace);
    Endpoints {
        data: settings
            .data_port
            .map(|port| address(names::data_service(module.name), port)),
        metadata: settings
            .metadata_port
            .map(|port| address(names::metadata_service(module.name), port)),
    }
}

/// Metadata shared by every child: name, namespace, standard labels and the owner reference
/// that makes the child garbage-collected with the module and watched by the controller.
fn object_meta(module: &Validated<'_>, name: String, component: labels::Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(module.namespace.to_owned()),
        labels: Some(labels::standard(module.name, component)),
        owner_references: module.owner_reference().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Serializes objects as one multi-document YAML stream.
pub fn to_yaml<T: Serialize>(objects: &[T]) -> Result<String, crate::error::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        let doc = serde_saphyr::to_string(object)
            .map_err(|e| crate::error::Error::YamlWrite(e.to_string()))?;
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
