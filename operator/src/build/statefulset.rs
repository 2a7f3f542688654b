//! The StatefulSet running memcached and the sidecar together on the storage nodes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource,
    ExecAction, HTTPGetAction, HostPathVolumeSource, Lifecycle, LifecycleHandler, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::configmap::CONFIG_HASH_ANNOTATION;
use super::labels::{self, Component, pod_selector};
use super::{names, object_meta};
use crate::crd::{SidecarSpec, SpreadPolicy};
use crate::validate::Validated;

pub const MEMCACHED_PORT: u16 = 11211;
pub const DATA_PORT: u16 = 9991;
pub const METADATA_PORT: u16 = 9990;
pub const ADMIN_PORT: u16 = 9992;

/// A shell command that succeeds only when memcached answers a request in time: a real round
/// trip, which a frozen memcached (a hung process or a stalled node still accepts connections,
/// so a TCP check passes) fails. It runs in memcached's own container, whose official alpine
/// image has busybox `nc` and `timeout`; `quit` makes memcached close the connection at once.
/// Run on an image without `nc`, it passes rather than have a healthy memcached restarted.
pub fn memcached_answers_command() -> String {
    format!(
        "command -v nc >/dev/null 2>&1 || exit 0; printf 'version\\r\\nquit\\r\\n' | \
         timeout 2 nc 127.0.0.1 {MEMCACHED_PORT} | grep -q VERSION"
    )
}

const MEMCACHED_CONTAINER: &str = "memcached";
const SIDECAR_CONTAINER: &str = "sidecar";
const WARM_VOLUME: &str = "warm";
/// Where memcached sees the node directory holding its warm restart memory file.
pub const WARM_MOUNT: &str = "/warm";
/// The uid and gid of the `memcache` user in the official memcached images.
pub const MEMCACHED_UID: i64 = 11211;
/// The uid and gid of the sidecar image (distroless `nonroot`, see the Dockerfile).
pub const SIDECAR_UID: i64 = 65532;
/// Seconds a stopping memcached gets to write its memory file, and the sidecar to finish requests.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;
const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// memcached's command line, derived from the spec and its role's defaults. `-U 0` closes UDP,
/// which the sidecar does not use and which is an amplification risk; `-M` refuses writes
/// instead of evicting data.
pub fn memcached_args(module: &Validated<'_>) -> Vec<String> {
    let spec = &module.module.spec.memcached;
    let settings = &module.settings;
    let mut args = vec![
        "-p".to_owned(),
        MEMCACHED_PORT.to_string(),
        "-U".to_owned(),
        "0".to_owned(),
        "-m".to_owned(),
        settings.memory_limit_mib.to_string(),
        "-I".to_owned(),
        format!("{}k", settings.max_item_size_kib),
        "-t".to_owned(),
        settings.threads.to_string(),
        "-c".to_owned(),
        spec.max_connections.to_string(),
    ];
    if !spec.evictions {
        args.push("-M".to_owned());
    }
    if spec.warm_restart.enabled {
        args.push("-e".to_owned());
        args.push(format!("{WARM_MOUNT}/memory_file"));
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// `pods`: every server of the placement and of its target, which differs from spec.replicas
/// during a change.
pub fn build(module: &Validated<'_>, config_hash: &str, pods: i32) -> StatefulSet {
    let spec = &module.module.spec;
    let mut template_annotations =
        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())]);
    if spec.metrics.enabled {
        template_annotations.extend(metrics_annotations());
    }
    let warm = spec.memcached.warm_restart.enabled;
    StatefulSet {
        metadata: object_meta(module, names::stateful_set(module.name), Component::Storage),
        spec: StatefulSetSpec {
            replicas: Some(pods),
            service_name: Some(names::headless_service(module.name)),
            // Pods do not depend on each other to start; ordered start would only slow recovery.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(pod_selector(module.name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::standard(module.name, Component::Storage)),
                    annotations: Some(template_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    affinity: Some(affinity(module)),
                    topology_spread_constraints: topology_spread(module),
                    tolerations: (!spec.placement.tolerations.is_empty())
                        .then(|| spec.placement.tolerations.clone()),
                    init_containers: (warm && spec.memcached.warm_restart.prepare_directory)
                        .then(|| vec![warm_dir_init_container(module)]),
                    containers: vec![memcached_container(module), sidecar_container(module)],
                    volumes: warm.then(|| vec![warm_volume(module)]),
                    security_context: Some(pod_security_context()),
                    // The sidecar never calls the Kubernetes API.
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// Pods only run on storage nodes: required, because the warm restart file lives on the node.
fn affinity(module: &Validated<'_>) -> Affinity {
    let placement = &module.module.spec.placement;
    let node_affinity = NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: placement.node_label_key.clone(),
                    operator: "In".to_owned(),
                    values: Some(vec![placement.node_label_value.clone()]),
                }]),
                ..NodeSelectorTerm::default()
            }],
        }),
        ..NodeAffinity::default()
    };
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(pod_selector(module.name)),
            ..LabelSelector::default()
        }),
        topology_key: HOSTNAME_TOPOLOGY.to_owned(),
        ..PodAffinityTerm::default()
    };
    let pod_anti_affinity = match placement.spread {
        SpreadPolicy::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
        SpreadPolicy::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..PodAntiAffinity::default()
        },
    };
    Affinity {
        node_affinity: Some(node_affinity),
        pod_anti_affinity: Some(pod_anti_affinity),
        ..Affinity::default()
    }
}

/// With Preferred spreading, anti-affinity alone lets the scheduler pile pods on one node once
/// it gives up; a skew constraint keeps the distribution even among the storage nodes.
fn topology_spread(module: &Validated<'_>) -> Option<Vec<TopologySpreadConstraint>> {
    (module.module.spec.placement.spread == SpreadPolicy::Preferred).then(|| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: HOSTNAME_TOPOLOGY.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(pod_selector(module.name)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    })
}

fn memcached_container(module: &Validated<'_>) -> Container {
    let spec = &module.module.spec.memcached;
    let warm = spec.warm_restart.enabled;
    Container {
        name: MEMCACHED_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(memcached_args(module)),
        ports: Some(vec![container_port("memcache", MEMCACHED_PORT)]),
        readiness_probe: Some(tcp_probe(5)),
        // A frozen memcached is restarted (the sidecars refill it from the other copies).
        liveness_probe: Some(answers_probe()),
        resources: Some(memcached_resources(module)),
        volume_mounts: warm.then(|| {
            vec![VolumeMount {
                name: WARM_VOLUME.to_owned(),
                mount_path: WARM_MOUNT.to_owned(),
                ..VolumeMount::default()
            }]
        }),
        // memcached only writes a restartable memory file when stopped by SIGUSR1; SIGTERM
        // alone would make the next start discard the file.
        lifecycle: warm.then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".to_owned(),
                        "-c".to_owned(),
                        "kill -USR1 1; sleep 10".to_owned(),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(restricted_security_context(MEMCACHED_UID)),
        ..Container::default()
    }
}

fn sidecar_container(module: &Validated<'_>) -> Container {
    let spec = &module.module.spec.sidecar;
    let role = module.role();
    let mut ports = Vec::new();
    if role.serves_data() {
        ports.push(container_port("data", DATA_PORT));
    }
    if role.serves_metadata() {
        ports.push(container_port("metadata", METADATA_PORT));
    }
    ports.push(container_port("admin", ADMIN_PORT));
    Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names::config_map(module.name),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 30)),
        resources: Some(sidecar_resources(spec)),
        security_context: Some(restricted_security_context(SIDECAR_UID)),
        ..Container::default()
    }
}

/// The RuntimeDefault seccomp profile; runAsNonRoot is set per container, because the opt-in
/// init container is root.
pub(super) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Opt-in (`warmRestart.prepareDirectory`): hostPath directories are created root-owned, and
/// memcached runs unprivileged and must own its memory file directory. This is the module's only
/// root container, with CHOWN as its only capability and a read-only root filesystem; by default
/// the administrator prepares the directory on the node and this container does not exist.
fn warm_dir_init_container(module: &Validated<'_>) -> Container {
    let spec = &module.module.spec.memcached;
    Container {
        name: "prepare-warm-restart-dir".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![
            "chown".to_owned(),
            format!("{MEMCACHED_UID}:{MEMCACHED_UID}"),
            WARM_MOUNT.to_owned(),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: WARM_VOLUME.to_owned(),
            mount_path: WARM_MOUNT.to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["CHOWN".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The prometheus.io keys that let a scraper find the sidecar's /metrics: pod annotations on
/// Kubernetes, service labels on Swarm.
pub fn metrics_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), ADMIN_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ])
}

/// The node directory of the warm restart memory file: one directory per module on each node,
/// so that two modules never share a memory file.
pub fn warm_host_path(module: &Validated<'_>) -> String {
    let base = module
        .module
        .spec
        .memcached
        .warm_restart
        .host_path
        .trim_end_matches('/');
    format!("{base}/{}/{}", module.namespace, module.name)
}

/// Without the init container the directory must already exist (`Directory`): a missing one
/// then shows as a mount error on the pod instead of a root-owned directory memcached cannot
/// write to.
fn warm_volume(module: &Validated<'_>) -> Volume {
    let prepare = module.module.spec.memcached.warm_restart.prepare_directory;
    Volume {
        name: WARM_VOLUME.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: warm_host_path(module),
            type_: Some(
                if prepare {
                    "DirectoryOrCreate"
                } else {
                    "Directory"
                }
                .to_owned(),
            ),
        }),
        ..Volume::default()
    }
}

/// memcached's resources: the spec's, or the defaults derived from its memory limit.
pub fn memcached_resources(module: &Validated<'_>) -> ResourceRequirements {
    module
        .module
        .spec
        .memcached
        .resources
        .clone()
        .unwrap_or_else(|| memcached_default_resources(module.settings.memory_limit_mib))
}

/// The sidecar's resources: the spec's, or the documented defaults.
pub fn sidecar_resources(spec: &SidecarSpec) -> ResourceRequirements {
    spec.resources
        .clone()
        .unwrap_or_else(sidecar_default_resources)
}

/// Item memory plus a tenth and 64 MiB for connection buffers and the hash table; the limit
/// equals the request so that a storage pod is never the first one the kernel reclaims from.
fn memcached_default_resources(memory_mib: i32) -> ResourceRequirements {
    let total = i64::from(memory_mib) + i64::from(memory_mib) / 10 + 64;
    let memory = Quantity(format!("{total}Mi"));
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("250m".to_owned())),
            ("memory".to_owned(), memory.clone()),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
        ..ResourceRequirements::default()
    }
}

fn sidecar_default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("128Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("512Mi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Every container but the opt-in init container: a fixed unprivileged uid (so that runAsNonRoot can be checked
/// by the kubelet even for images that name their user), no writable root filesystem, no
/// capabilities, no way to gain privileges.
pub(super) fn restricted_security_context(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn tcp_probe(period_seconds: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("memcache".to_owned()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period_seconds),
        ..Probe::default()
    }
}

/// [`memcached_answers_command`], every 10 s; three misses in a row restart memcached.
fn answers_probe() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                memcached_answers_command(),
            ]),
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        initial_delay_seconds: Some(10),
        ..Probe::default()
    }
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}
