//! The CronJob of a module's scheduled exports (`spec.backup`): the sidecar image's `export`
//! into a directory on a PersistentVolumeClaim, keeping the newest files.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{self, Component};
use super::statefulset::restricted_security_context;
use super::{SIDECAR_UID, names, object_meta};
use crate::placement::Layout;
use crate::validate::Validated;

/// Where the claim is mounted in the export's container.
pub const BACKUP_MOUNT: &str = "/backups";

/// The export of the servers the sidecars list (`placement`).
pub fn build(module: &Validated<'_>, placement: &Layout) -> Option<CronJob> {
    let spec = &module.module.spec;
    let backup = spec.backup.as_ref()?;
    let container = Container {
        name: "export".to_owned(),
        image: Some(spec.sidecar.image.clone()),
        image_pull_policy: spec
            .sidecar
            .image_pull_policy
            .map(|p| p.as_str().to_owned()),
        args: Some(vec![
            "export".to_owned(),
            "--memcached".to_owned(),
            memcached_by_pod(module, placement).join(","),
            "--out".to_owned(),
            BACKUP_MOUNT.to_owned(),
            "--keep".to_owned(),
            backup.keep.to_string(),
            "--rate".to_owned(),
            backup.rate.clone(),
            "--progress".to_owned(),
            "lines".to_owned(),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: "backups".to_owned(),
            mount_path: BACKUP_MOUNT.to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_security_context(SIDECAR_UID)),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "backups".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: backup.volume_claim.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        }]),
        restart_policy: Some("Never".to_owned()),
        security_context: Some(PodSecurityContext {
            // The claim's files belong to the sidecar's group, whatever the volume's owner.
            fs_group: Some(SIDECAR_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    Some(CronJob {
        metadata: object_meta(module, names::backup(module.name), Component::Backup),
        spec: CronJobSpec {
            schedule: backup.schedule.clone(),
            // Two exports at once would only compete for memcached.
            concurrency_policy: Some("Forbid".to_owned()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels::standard(module.name, Component::Backup)),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        },
        ..CronJob::default()
    })
}

/// Every memcached of the placement by its pod's name: the export runs in a pod of its own, so
/// a one-pod module of an earlier release, whose sidecar lists `127.0.0.1`, is reached by its
/// pod's name (a single server holds every key whatever its name, which the export knows).
fn memcached_by_pod(module: &Validated<'_>, placement: &Layout) -> Vec<String> {
    let count = i32::try_from(placement.servers.len()).unwrap_or(i32::MAX);
    crate::placement::pod_servers(module, count.max(1))
}
