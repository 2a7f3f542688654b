//! The `ZenkoMemcachedModule` custom resource: spec and status types, from which the CRD schema is derived.
//!
//! Everything a user may set is typed and bounded here, so that the API server rejects most mistakes
//! before the operator ever sees them (`kubectl explain zmm.spec` reads the doc comments below).
//! What a schema cannot express (relations between fields) is checked in `validate.rs`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "zenko.io";

/// Desired state of a Zenko memcached storage module: memcached and the CloudServer data/metadata
/// sidecar, run as one StatefulSet on the storage nodes of the cluster. A module serves both
/// backends (`role: Combined`) or one of them (`Data`, `Metadata`): the production layout is a
/// module of each role, each with memcached sized for its own items.
// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "zenko.io",
    version = "v1alpha1",
    kind = "ZenkoMemcachedModule",
    plural = "zenkomemcachedmodules",
    singular = "zenkomemcachedmodule",
    shortname = "zmm",
    category = "zenko",
    namespaced,
    doc = "A Zenko memcached storage module: memcached and the CloudServer data/metadata sidecar on the storage nodes, serving data, metadata or both (spec.role). Its status tells where CloudServer connects.",
    validation = Rule::new("self.spec.role == oldSelf.spec.role").message("spec.role cannot change: a module's memcached holds what its role stores; create a module of the new role instead"),
    status = "ZenkoMemcachedModuleStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.role",
        description = "Combined (data and metadata), Data or Metadata"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Pods whose memcached and sidecar are both ready"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of storage pods"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Available, Progressing or Degraded"
    ),
    printcolumn(
        name = "Placement",
        type_ = "string",
        json_path = ".status.placement.summary",
        description = "The memcached servers, copies of each item, and the change under way"
    ),
    printcolumn(
        name = "Data",
        type_ = "string",
        json_path = ".status.endpoints.data",
        description = "host:port for CloudServer's dataClient",
        priority = "1"
    ),
    printcolumn(
        name = "Metadata",
        type_ = "string",
        json_path = ".status.endpoints.metadata",
        description = "host:port for CloudServer's metadataClient",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ZenkoMemcachedModuleSpec {
    /// What the module serves: Combined (CloudServer's data and metadata from one memcached pool,
    /// for small setups), Data (only the data server: large blob chunks, throughput) or Metadata
    /// (only the metadata server: small items, many writes, listings). Unset memcached and sidecar
    /// sizes take defaults that fit the role, and fields that mean nothing for it are refused.
    /// It cannot change once the module exists.
    #[serde(default)]
    pub role: Role,

    /// Number of storage pods. Each pod runs one memcached and one sidecar; every sidecar spreads
    /// its keys over all memcached pods, so the module's capacity is replicas x memcached.memoryLimitMiB.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 64))]
    pub replicas: i32,

    /// Servers that hold each item, on distinct storage nodes: with 2, losing any one pod, its
    /// memory or its node loses nothing. Between 1 and replicas. When unset: the factor the
    /// module's placement already records (status.placement.replicationFactor), so that an
    /// existing module never changes factor by itself; for a new module 2 when replicas >= 2,
    /// else 1. A change moves the data online, like a change of replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub replication_factor: Option<i32>,

    /// The memcached server that holds every byte of data and metadata.
    #[serde(default)]
    pub memcached: MemcachedSpec,

    /// The sidecar serving CloudServer's DATA (HTTP) and METADATA (socket.io) protocols.
    #[serde(default)]
    pub sidecar: SidecarSpec,

    /// Which nodes run the module and how its pods spread over them.
    #[serde(default)]
    pub placement: PlacementSpec,

    /// The Services through which CloudServer reaches the module.
    #[serde(default)]
    pub services: ServicesSpec,

    /// The PodDisruptionBudget created when replicas > 1.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// Prometheus scraping of the sidecar's /metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsSpec,

    /// Scheduled exports of the module's store (every metadata database, the deployment id and
    /// every blob) to files on a volume: a CronJob running the sidecar image's `export`.
    /// Restore with `zenko-memcached-sidecar import` (docs/operations.md, "Backups").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
}

/// Scheduled exports of a module, kept on a PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to export, in cron syntax (five fields, or @daily, @hourly...), e.g. "0 3 * * *".
    #[schemars(length(min = 1))]
    pub schedule: String,

    /// The PersistentVolumeClaim, in the module's namespace, that the export files are written
    /// to (created beforehand, writable by uid 65532). Files are named
    /// zmm-export-<UTC time>.zmm.
    #[schemars(length(min = 1, max = 253))]
    pub volume_claim: String,

    /// Export files kept on the volume: after each complete export, older ones beyond this
    /// many are deleted.
    #[serde(default = "default_backup_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: i32,

    /// Most bytes read from memcached per second, so that an export does not slow the module
    /// down (e.g. 64MiB, 500KB, unlimited).
    #[serde(default = "default_backup_rate")]
    #[schemars(length(min = 1))]
    pub rate: String,
}

/// memcached settings. The defaults favour not losing data: no evictions and a warm restart file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemcachedSpec {
    /// Container image of memcached (1.6 or later, for warm restart).
    #[serde(default = "default_memcached_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// When to pull the image; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Memory memcached may use for items, in MiB (memcached -m). This is the module's capacity per pod.
    /// Default by role: 1024 (Combined), 4096 (Data), 1024 (Metadata).
    #[serde(
        default,
        rename = "memoryLimitMiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 64, max = 1048576))]
    pub memory_limit_mib: Option<i32>,

    /// Largest item memcached accepts, in KiB (memcached -I). Must hold one sidecar chunk plus 4 KiB,
    /// and be at most half of memoryLimitMiB. Default by role: 2048 (Combined and Data, room for
    /// the chunk), 1024 (Metadata, memcached's default: its items are small).
    #[serde(
        default,
        rename = "maxItemSizeKiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1024, max = 1048576))]
    pub max_item_size_kib: Option<i32>,

    /// Worker threads (memcached -t). Default by role: 4 (Combined and Data), 8 (Metadata, whose
    /// many small requests run in parallel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub threads: Option<i32>,

    /// Maximum simultaneous connections (memcached -c).
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 64, max = 65536))]
    pub max_connections: i32,

    /// Let memcached evict items when full. Off by default (memcached -M): an evicted item is lost
    /// data, while a refused write becomes a clear "storage full" error in CloudServer.
    #[serde(default)]
    pub evictions: bool,

    /// Keep memcached's contents across memcached restarts with a memory file on the storage node.
    #[serde(default)]
    pub warm_restart: WarmRestartSpec,

    /// Container resources of memcached. When unset, the memory request and limit are
    /// memoryLimitMiB plus headroom for connections and the hash table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra memcached command-line arguments, appended after the ones derived from this spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

/// memcached warm restart (memcached -e): the item memory lives in a file on the node and survives
/// a restart of memcached, as long as memcached is stopped gracefully.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmRestartSpec {
    /// Whether memcached keeps its memory in a file on the storage node.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Absolute directory on the storage node under which each module keeps its memory file
    /// (in <hostPath>/<namespace>/<module>). Prefer a tmpfs or DAX mount: the file is as large
    /// as memoryLimitMiB.
    #[serde(default = "default_host_path")]
    #[schemars(regex(pattern = r"^/.*$"))]
    pub host_path: String,

    /// Add an init container that creates the node directory and gives it to memcached's user
    /// (uid 11211). It is the only container of the module that runs as root (with CHOWN alone),
    /// so it is off by default: prepare the directory on each storage node instead
    /// (`install -d -o 11211 -g 11211 <hostPath>/<namespace>/<module>`).
    #[serde(default)]
    pub prepare_directory: bool,
}

/// Sidecar settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Container image of zenko-memcached-sidecar.
    #[serde(default = "default_sidecar_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// When to pull the image; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Container resources of the sidecar. When unset: 100m CPU and 128Mi memory requested, 512Mi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Verbosity of the sidecar's logs.
    #[serde(default)]
    pub log_level: LogLevel,

    /// Size in bytes of the chunks a blob is split into, one memcached item each.
    /// chunkSizeBytes + 4096 must not exceed memcached.maxItemSizeKiB x 1024. Default by role:
    /// 524288 (Combined), 1048576 (Data); refused on a Metadata module, which stores no blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096, max = 1073741824))]
    pub chunk_size_bytes: Option<i32>,

    /// Replication group id that the sidecar writes into the version ids it creates (1 to 7
    /// letters or digits, CloudServer's default and this field's is RG001). Refused on a Data
    /// module, which creates no version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9]{1,7}$"))]
    pub replication_group_id: Option<String>,
}

/// What a module serves.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Role {
    /// CloudServer's data and metadata servers, from one memcached pool.
    #[default]
    Combined,
    /// Only the data server (dataClient, HTTP, port 9991).
    Data,
    /// Only the metadata server (metadataClient, socket.io, port 9990).
    Metadata,
}

impl Role {
    pub fn serves_data(self) -> bool {
        matches!(self, Self::Combined | Self::Data)
    }

    pub fn serves_metadata(self) -> bool {
        matches!(self, Self::Combined | Self::Metadata)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Combined => "Combined",
            Self::Data => "Data",
            Self::Metadata => "Metadata",
        }
    }

    /// The sidecar's `--role` (`ZMM_ROLE`).
    pub fn sidecar_role(self) -> &'static str {
        match self {
            Self::Combined => "combined",
            Self::Data => "data",
            Self::Metadata => "metadata",
        }
    }
}

/// Log verbosity of the sidecar.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Kubernetes image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Where the pods run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Label key that marks storage nodes; pods only run on nodes carrying it with nodeLabelValue.
    #[serde(default = "default_node_label_key")]
    #[schemars(length(min = 1, max = 317))]
    pub node_label_key: String,

    /// Label value that marks storage nodes.
    #[serde(default = "default_node_label_value")]
    #[schemars(length(max = 63))]
    pub node_label_value: String,

    /// Tolerations of the pods, for storage nodes that are tainted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// How replicas spread across storage nodes. Required: at most one pod of the module per node
    /// (needed with warm restart, whose memory file is per node). Preferred: spread when possible.
    #[serde(default)]
    pub spread: SpreadPolicy,

    /// Seconds a pod's node may stay NotReady or Unknown before the operator deletes the pod so
    /// that the StatefulSet recreates it on another storage node, where its memcached is refilled
    /// from the other copies. Only with replicationFactor >= 2: with one copy the node's return
    /// is the only way back to its data.
    #[serde(default = "default_lost_node_grace_seconds")]
    #[schemars(range(min = 10, max = 3600))]
    pub lost_node_grace_seconds: i32,
}

/// Spreading of a module's pods across storage nodes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SpreadPolicy {
    /// At most one pod of the module per node; extra replicas stay Pending.
    #[default]
    Required,
    /// Spread evenly when possible, but allow several pods per node.
    Preferred,
}

/// The Services of the module.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    /// Type of the data and metadata Services.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations added to the data and metadata Services (for example load-balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Port of the data Service (CloudServer dataClient.port), 9991 by default; refused on a
    /// Metadata module, which has no data Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub data_port: Option<i32>,

    /// Port of the metadata Service (CloudServer metadataClient.port), 9990 by default; refused on
    /// a Data module, which has no metadata Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub metadata_port: Option<i32>,
}

/// Kubernetes Service type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// PodDisruptionBudget of the module, only created when replicas > 1.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Whether to create the PodDisruptionBudget.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Pods that voluntary disruptions (node drains) may take down at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 64))]
    pub max_unavailable: i32,
}

/// Metrics settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Annotate the pods for Prometheus scraping of the sidecar's /metrics (port 9992).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Observed state of the module, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZenkoMemcachedModuleStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pods of the StatefulSet.
    #[serde(default)]
    pub replicas: i32,

    /// Pods whose memcached and sidecar are both ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Summary of the conditions.
    #[serde(default)]
    pub phase: Phase,

    /// Where CloudServer connects; set once the Services exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// Available, Progressing and Degraded, with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Which memcached servers hold the data, and the change under way, if any. The operator is
    /// the one writer of the placement: this is the record it works from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStatus>,
}

/// The placement of a module's data: its memcached servers, how many copies of each item, and
/// the change in progress. The sidecars keep the same record in memcached; this one is the
/// operator's, and it moves only once a change's Job has succeeded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// Counts the changes the operator completed: 1 for a module's first placement, one more for
    /// each change (the sidecars' own generations in memcached count finer steps).
    pub generation: i64,

    /// Servers that hold each item.
    pub replication_factor: i32,

    /// The servers of the placement and, during a change, those of its target, each with its
    /// state.
    #[serde(default)]
    pub servers: Vec<ServerStatus>,

    /// One line for `kubectl get zmm`: the servers, the factor, and what is happening.
    #[serde(default)]
    pub summary: String,

    /// The change under way; unset when the data sits on `servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<PlacementChange>,
}

/// One memcached server of the placement.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The server as every sidecar lists it (host:port).
    pub name: String,

    pub state: ServerState,

    /// Only in the target of a change: the server is being filled and holds no item of the
    /// current placement yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joining: bool,

    /// Why the server is not in sync, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a server holds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServerState {
    /// Holds every item it owns.
    InSync,
    /// Being filled: a new server of a change, or one that came back empty and is refilled from
    /// the other copies.
    CatchingUp,
    /// Leaves with the change under way; its items are copied to the servers that stay.
    Leaving,
}

/// A change of the placement, carried out by one Job running `zenko-memcached-sidecar placement
/// change`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementChange {
    /// The servers of the target placement, in the sidecars' order.
    pub to: Vec<String>,

    /// Servers that will hold each item.
    pub replication_factor: i32,

    /// The Job that carries the change out (in the module's namespace), once the operator has
    /// decided to run it: unset while new servers are still starting, when the change can still
    /// be taken back without a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,

    /// When the operator decided the change.
    pub started_at: Time,

    /// Where the change stands: waiting for the new servers, running, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The addresses CloudServer is configured with, as host:port: those of the module's role.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// host:port for CloudServer's dataClient (DATA server, HTTP); unset on a Metadata module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// host:port for CloudServer's metadataClient (METADATA server, socket.io); unset on a Data module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// One-word summary of the module's conditions.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Progressing,
    Available,
    Degraded,
}

fn default_replicas() -> i32 {
    1
}
fn default_backup_keep() -> i32 {
    7
}
fn default_backup_rate() -> String {
    "64MiB".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_memcached_image() -> String {
    "memcached:1.6-alpine".to_owned()
}
fn default_max_connections() -> i32 {
    1024
}
fn default_host_path() -> String {
    "/var/lib/zenko-memcached".to_owned()
}
fn default_sidecar_image() -> String {
    "zenko/zenko-memcached-sidecar:0.1.0".to_owned()
}
fn default_node_label_key() -> String {
    "io.zenko.type".to_owned()
}
fn default_node_label_value() -> String {
    "storage".to_owned()
}
fn default_max_unavailable() -> i32 {
    1
}
fn default_lost_node_grace_seconds() -> i32 {
    30
}

// Defaults are spelled out once, in the serde default functions above, so that a spec parsed
// from `{}` and the schema defaults the API server fills in always agree.
macro_rules! default_from_serde {
    ($($ty:ty),*) => {$(
        impl Default for $ty {
            fn default() -> Self {
                serde_json::from_value(serde_json::json!({}))
                    .unwrap_or_else(|e| unreachable!("every field of {} has a default: {e}", stringify!($ty)))
            }
        }
    )*};
}
default_from_serde!(
    ZenkoMemcachedModuleSpec,
    MemcachedSpec,
    WarmRestartSpec,
    SidecarSpec,
    PlacementSpec,
    ServicesSpec,
    PodDisruptionBudgetSpec,
    MetricsSpec
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_takes_documented_defaults() {
        let spec = ZenkoMemcachedModuleSpec::default();
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.memcached.image, "memcached:1.6-alpine");
        assert!(!spec.memcached.evictions);
        assert!(spec.memcached.warm_restart.enabled);
        assert_eq!(spec.role, Role::Combined);
        assert_eq!(spec.sidecar.chunk_size_bytes, None);
        assert_eq!(spec.placement.node_label_key, "io.zenko.type");
        assert_eq!(spec.placement.node_label_value, "storage");
        assert_eq!(spec.services.data_port, None);
        assert_eq!(spec.services.metadata_port, None);
    }
}
