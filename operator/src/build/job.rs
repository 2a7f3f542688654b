//! The Job that carries out one placement change: `zenko-memcached-sidecar placement change`
//! in the sidecar image, from the recorded placement to its target.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{self, Component};
use super::statefulset::{pod_security_context, restricted_security_context};
use super::{SIDECAR_UID, object_meta, sidecar_resources};
use crate::placement::{Layout, change_args};
use crate::validate::Validated;

/// The Job's one container, whose termination message the operator reads when it fails.
pub const PLACEMENT_CONTAINER: &str = "placement";

/// The module's metadata.generation when the Job was created: a failed change is tried again
/// once the spec changed since.
pub const MODULE_GENERATION_ANNOTATION: &str = "zenko.io/module-generation";

/// Attempts beyond the first: the command resumes an interrupted change, so a pod lost with
/// its node, or a memcached briefly unreachable, costs only a retry; a refusal fails the same
/// way each time and ends the Job soon enough.
const BACKOFF_LIMIT: i32 = 2;

pub fn placement_job(module: &Validated<'_>, from: &Layout, to: &Layout, name: &str) -> Job {
    let spec = &module.module.spec.sidecar;
    let mut metadata = object_meta(module, name.to_owned(), Component::Placement);
    if let Some(generation) = module.module.metadata.generation {
        metadata.annotations = Some(BTreeMap::from([(
            MODULE_GENERATION_ANNOTATION.to_owned(),
            generation.to_string(),
        )]));
    }
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            // No ttlSecondsAfterFinished: the operator deletes the Job once it has seen it
            // succeed, and keeps a failed one, whose reason the status shows.
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::standard(module.name, Component::Placement)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![Container {
                        name: PLACEMENT_CONTAINER.to_owned(),
                        image: Some(spec.image.clone()),
                        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
                        args: Some(change_args(from, to)),
                        // The command's last line (its reason for refusing) when it fails.
                        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                        resources: Some(sidecar_resources(spec)),
                        security_context: Some(restricted_security_context(SIDECAR_UID)),
                        ..Container::default()
                    }],
                    security_context: Some(pod_security_context()),
                    // The command talks to memcached only, never to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
