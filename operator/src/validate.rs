//! Checks that the schema cannot express, turning a module into a `Validated` one that the builders accept.
//!
//! Every message says which field to change and to what, because it ends up in the Degraded
//! condition that a person reads with `kubectl describe zmm`.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::{Role, SpreadPolicy, ZenkoMemcachedModule};
use crate::error::{Error, Result};
use crate::role::{self, NotForRole, Settings};

/// Bytes a memcached item needs beyond the sidecar's chunk (key, item header, CAS).
pub const ITEM_OVERHEAD_BYTES: i64 = 4096;

/// The longest module name whose derived object names stay valid: `<name>-metadata` must be a
/// 63-character DNS label, and StatefulSet pods carry `<name>-<revision hash>` in a label.
pub const MAX_NAME_LEN: usize = 42;

/// A module that passed validation, with the identity every built object needs and its
/// settings once its role's defaults are filled in.
#[derive(Debug, Clone, Copy)]
pub struct Validated<'a> {
    pub module: &'a ZenkoMemcachedModule,
    pub name: &'a str,
    pub namespace: &'a str,
    pub settings: Settings<'a>,
}

impl Validated<'_> {
    pub fn role(&self) -> Role {
        self.settings.role
    }
}

impl Validated<'_> {
    /// The controller owner reference of the children; `None` for a module read from a file
    /// (no uid yet), whose children the API server would reject with a dangling owner.
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        self.module.controller_owner_ref(&())
    }
}

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    BackupSchedule {
        schedule: String,
    },
    BackupVolumeClaim {
        claim: String,
    },
    NameInvalid {
        name: String,
    },
    ChunkTooLarge {
        chunk: i64,
        item_kib: i64,
    },
    ItemSizeOverHalfMemory {
        item_kib: i64,
        memory_mib: i64,
    },
    MemoryTooSmall {
        memory_mib: i64,
    },
    ReplicationGroupId {
        value: String,
    },
    WarmRestartNeedsRequiredSpread,
    PrepareDirectoryWithoutWarmRestart,
    HostPathNotAbsolute {
        path: String,
    },
    NodeLabelEmpty,
    ExtraArgConflicts {
        arg: String,
    },
    MaxUnavailableTooHigh {
        max_unavailable: i32,
        replicas: i32,
    },
    ReplicationFactorAboveReplicas {
        factor: i32,
        replicas: i32,
    },
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    NotForRole(NotForRole),
}

/// The smallest memory limit that leaves memcached room for more than a handful of slabs.
pub const MIN_MEMORY_MIB: i64 = 64;

/// Flags the operator derives itself; overriding them through extraArgs would break the pod.
const RESERVED_FLAGS: &[&str] = &["-p", "--port", "-U", "--udp-port", "-e", "--memory-file"];

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameInvalid { name } => write!(
                f,
                "metadata.name {name:?} must be a DNS label of at most {MAX_NAME_LEN} characters \
                 (lowercase letters, digits and '-', starting with a letter), because Service and \
                 StatefulSet names derive from it; recreate the module with a shorter name"
            ),
            Self::ChunkTooLarge { chunk, item_kib } => write!(
                f,
                "sidecar.chunkSizeBytes ({chunk}) plus {ITEM_OVERHEAD_BYTES} bytes of item overhead \
                 does not fit in memcached.maxItemSizeKiB ({item_kib} KiB = {} bytes); set \
                 memcached.maxItemSizeKiB to at least {} or sidecar.chunkSizeBytes to at most {}",
                item_kib * 1024,
                (chunk + ITEM_OVERHEAD_BYTES + 1023) / 1024,
                item_kib * 1024 - ITEM_OVERHEAD_BYTES
            ),
            Self::ItemSizeOverHalfMemory {
                item_kib,
                memory_mib,
            } => write!(
                f,
                "memcached.maxItemSizeKiB ({item_kib}) is more than half of memcached.memoryLimitMiB \
                 ({memory_mib} MiB), which memcached refuses at start; raise memoryLimitMiB to at \
                 least {} or lower maxItemSizeKiB",
                (item_kib * 2 + 1023) / 1024
            ),
            Self::MemoryTooSmall { memory_mib } => write!(
                f,
                "memcached.memoryLimitMiB ({memory_mib}) is below the minimum of {MIN_MEMORY_MIB}"
            ),
            Self::ReplicationGroupId { value } => write!(
                f,
                "sidecar.replicationGroupId {value:?} must be 1 to 7 letters or digits, such as RG001"
            ),
            Self::PrepareDirectoryWithoutWarmRestart => write!(
                f,
                "memcached.warmRestart.prepareDirectory needs memcached.warmRestart.enabled: \
                 without a memory file there is no directory to prepare, and no reason to run \
                 a root init container"
            ),
            Self::WarmRestartNeedsRequiredSpread => write!(
                f,
                "memcached.warmRestart.enabled needs placement.spread: Required, because two pods \
                 of the module on one node would share the node's memory file; set spread to \
                 Required or disable warm restart"
            ),
            Self::HostPathNotAbsolute { path } => write!(
                f,
                "memcached.warmRestart.hostPath {path:?} must be an absolute path without '..'"
            ),
            Self::NodeLabelEmpty => write!(
                f,
                "placement.nodeLabelKey must not be empty; the default is io.zenko.type"
            ),
            Self::ExtraArgConflicts { arg } => write!(
                f,
                "memcached.extraArgs must not contain {arg:?}: the operator sets the port, UDP and \
                 memory file flags itself; remove it"
            ),
            Self::MaxUnavailableTooHigh {
                max_unavailable,
                replicas,
            } => write!(
                f,
                "podDisruptionBudget.maxUnavailable ({max_unavailable}) must be lower than replicas \
                 ({replicas}), otherwise a drain may take the whole module down"
            ),
            Self::ReplicationFactorAboveReplicas { factor, replicas } => write!(
                f,
                "replicationFactor ({factor}) must be at most replicas ({replicas}): each copy \
                 of an item is on another server. Set replicas to at least {factor}, or \
                 replicationFactor to {replicas} or less (the data is then moved to fewer copies)"
            ),
            Self::BackupSchedule { schedule } => write!(
                f,
                "backup.schedule {schedule:?} is not a cron schedule: give five fields (minute \
                 hour day-of-month month day-of-week, e.g. \"0 3 * * *\") or @daily, @hourly..."
            ),
            Self::BackupVolumeClaim { claim } => write!(
                f,
                "backup.volumeClaim {claim:?} is not a PersistentVolumeClaim name (lowercase \
                 letters, digits, '-' and '.')"
            ),
            Self::OutOfRange {
                field,
                value,
                min,
                max,
            } => write!(f, "{field} ({value}) must be between {min} and {max}"),
            Self::NotForRole(NotForRole {
                field,
                role,
                reason,
            }) => write!(
                f,
                "{field} does not apply to a {} module ({reason}); remove it",
                role.as_str()
            ),
        }
    }
}

/// All the problems of one spec, reported together so that one edit can fix them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Validates a module coming from the API server or from a file.
///
/// Numeric ranges are checked again even though the schema has them, because `manifests` reads
/// files that never went through the API server.
pub fn validate(module: &ZenkoMemcachedModule) -> Result<Validated<'_>> {
    let namespace = module
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = module
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let settings = role::settings(&module.spec);
    let violations = violations(name, module, &settings);
    if violations.is_empty() {
        Ok(Validated {
            module,
            name,
            namespace,
            settings,
        })
    } else {
        Err(Error::InvalidSpec(Violations(violations)))
    }
}

fn violations(name: &str, module: &ZenkoMemcachedModule, settings: &Settings) -> Vec<Violation> {
    let spec = &module.spec;
    let mut found = Vec::new();
    if !is_short_dns_label(name) {
        found.push(Violation::NameInvalid {
            name: name.to_owned(),
        });
    }
    found.extend(
        role::fields_not_for_role(spec)
            .into_iter()
            .map(Violation::NotForRole),
    );
    let memory_mib = i64::from(settings.memory_limit_mib);
    let item_kib = i64::from(settings.max_item_size_kib);
    if memory_mib < MIN_MEMORY_MIB {
        found.push(Violation::MemoryTooSmall { memory_mib });
    }
    if let Some(chunk) = settings.chunk_size_bytes.map(i64::from)
        && chunk + ITEM_OVERHEAD_BYTES > item_kib * 1024
    {
        found.push(Violation::ChunkTooLarge { chunk, item_kib });
    }
    if item_kib * 2 > memory_mib * 1024 {
        found.push(Violation::ItemSizeOverHalfMemory {
            item_kib,
            memory_mib,
        });
    }
    if let Some(rg) = settings.replication_group_id
        && (rg.is_empty() || rg.len() > 7 || !rg.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        found.push(Violation::ReplicationGroupId {
            value: rg.to_owned(),
        });
    }
    let warm = &spec.memcached.warm_restart;
    if warm.prepare_directory && !warm.enabled {
        found.push(Violation::PrepareDirectoryWithoutWarmRestart);
    }
    if warm.enabled {
        if spec.placement.spread != SpreadPolicy::Required {
            found.push(Violation::WarmRestartNeedsRequiredSpread);
        }
        if !warm.host_path.starts_with('/') || warm.host_path.split('/').any(|part| part == "..") {
            found.push(Violation::HostPathNotAbsolute {
                path: warm.host_path.clone(),
            });
        }
    }
    if spec.placement.node_label_key.is_empty() {
        found.push(Violation::NodeLabelEmpty);
    }
    for arg in &spec.memcached.extra_args {
        let flag = arg.split('=').next().unwrap_or(arg);
        if RESERVED_FLAGS.contains(&flag) {
            found.push(Violation::ExtraArgConflicts { arg: arg.clone() });
        }
    }
    if let Some(backup) = &spec.backup {
        let fields = backup.schedule.split_whitespace().count();
        if !(fields == 5 || (fields == 1 && backup.schedule.starts_with('@'))) {
            found.push(Violation::BackupSchedule {
                schedule: backup.schedule.clone(),
            });
        }
        if !is_dns_subdomain(&backup.volume_claim) {
            found.push(Violation::BackupVolumeClaim {
                claim: backup.volume_claim.clone(),
            });
        }
    }
    let pdb = &spec.pod_disruption_budget;
    if spec.replicas > 1 && pdb.enabled && pdb.max_unavailable >= spec.replicas {
        found.push(Violation::MaxUnavailableTooHigh {
            max_unavailable: pdb.max_unavailable,
            replicas: spec.replicas,
        });
    }
    if let Some(factor) = spec.replication_factor
        && factor > spec.replicas
        && (1..=64).contains(&factor)
    {
        found.push(Violation::ReplicationFactorAboveReplicas {
            factor,
            replicas: spec.replicas,
        });
    }
    // Settings the role does not use are `None`: their fields are refused above.
    let ranges: [(&'static str, Option<i32>, i64, i64); 12] = [
        ("replicas", Some(spec.replicas), 1, 64),
        ("replicationFactor", spec.replication_factor, 1, 64),
        (
            "placement.lostNodeGraceSeconds",
            Some(spec.placement.lost_node_grace_seconds),
            10,
            3600,
        ),
        (
            "memcached.memoryLimitMiB",
            Some(settings.memory_limit_mib),
            MIN_MEMORY_MIB,
            1_048_576,
        ),
        (
            "memcached.maxItemSizeKiB",
            Some(settings.max_item_size_kib),
            1024,
            1_048_576,
        ),
        ("memcached.threads", Some(settings.threads), 1, 64),
        (
            "memcached.maxConnections",
            Some(spec.memcached.max_connections),
            64,
            65536,
        ),
        (
            "sidecar.chunkSizeBytes",
            settings.chunk_size_bytes,
            4096,
            1_073_741_824,
        ),
        ("services.dataPort", settings.data_port, 1, 65535),
        ("services.metadataPort", settings.metadata_port, 1, 65535),
        (
            "podDisruptionBudget.maxUnavailable",
            Some(spec.pod_disruption_budget.max_unavailable),
            1,
            64,
        ),
        (
            "backup.keep",
            spec.backup.as_ref().map(|backup| backup.keep),
            1,
            1000,
        ),
    ];
    for (field, value, min, max) in ranges {
        let Some(value) = value else {
            continue;
        };
        let value = i64::from(value);
        // memoryLimitMiB below the minimum has its own, more helpful, message
        let reported_elsewhere = field == "memcached.memoryLimitMiB" && value < min;
        if (min..=max).contains(&value) || reported_elsewhere {
            continue;
        }
        found.push(Violation::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    found
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_short_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ZenkoMemcachedModuleSpec;

    fn module(
        name: &str,
        edit: impl FnOnce(&mut ZenkoMemcachedModuleSpec),
    ) -> ZenkoMemcachedModule {
        let mut spec = ZenkoMemcachedModuleSpec::default();
        edit(&mut spec);
        let mut m = ZenkoMemcachedModule::new(name, spec);
        m.metadata.namespace = Some("zenko".into());
        m
    }

    fn violations_of(m: &ZenkoMemcachedModule) -> Vec<Violation> {
        match validate(m) {
            Err(Error::InvalidSpec(v)) => v.0,
            Ok(_) => Vec::new(),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(validate(&module("store", |_| {})).is_ok());
    }

    #[test]
    fn chunk_must_fit_in_an_item_with_overhead() {
        let m = module("store", |s| {
            s.memcached.max_item_size_kib = Some(1024);
            s.sidecar.chunk_size_bytes = Some(1024 * 1024);
        });
        let v = violations_of(&m);
        assert_eq!(
            v,
            vec![Violation::ChunkTooLarge {
                chunk: 1_048_576,
                item_kib: 1024
            }]
        );
        let msg = v[0].to_string();
        assert!(msg.contains("at least 1028"), "{msg}");
        assert!(msg.contains("at most 1044480"), "{msg}");
        // exactly chunk + overhead is allowed
        let ok = module("store", |s| {
            s.memcached.max_item_size_kib = Some(1024);
            s.sidecar.chunk_size_bytes = Some(1024 * 1024 - 4096);
        });
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn several_violations_are_reported_together() {
        let m = module("Bad_Name", |s| {
            s.memcached.memory_limit_mib = Some(2);
            s.sidecar.replication_group_id = Some("RG-0001".into());
            s.placement.spread = SpreadPolicy::Preferred;
            s.memcached.extra_args = vec!["-p=1234".into()];
        });
        let v = violations_of(&m);
        assert!(v.contains(&Violation::NameInvalid {
            name: "Bad_Name".into()
        }));
        assert!(v.contains(&Violation::MemoryTooSmall { memory_mib: 2 }));
        assert!(v.contains(&Violation::ItemSizeOverHalfMemory {
            item_kib: 2048,
            memory_mib: 2
        }));
        assert!(v.contains(&Violation::ReplicationGroupId {
            value: "RG-0001".into()
        }));
        assert!(v.contains(&Violation::WarmRestartNeedsRequiredSpread));
        assert!(v.contains(&Violation::ExtraArgConflicts {
            arg: "-p=1234".into()
        }));
    }

    #[test]
    fn the_root_init_container_only_comes_with_warm_restart() {
        let m = module("store", |s| {
            s.memcached.warm_restart.enabled = false;
            s.memcached.warm_restart.prepare_directory = true;
            s.placement.spread = SpreadPolicy::Preferred;
        });
        assert_eq!(
            violations_of(&m),
            vec![Violation::PrepareDirectoryWithoutWarmRestart]
        );
        let ok = module("store", |s| {
            s.memcached.warm_restart.prepare_directory = true
        });
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn names_too_long_for_derived_services_are_refused() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            violations_of(&module(&long, |_| {})),
            vec![Violation::NameInvalid { name: long.clone() }]
        );
        assert!(validate(&module(&long[..MAX_NAME_LEN], |_| {})).is_ok());
    }

    #[test]
    fn ranges_are_checked_for_modules_that_skipped_the_schema() {
        let m = module("store", |s| {
            s.replicas = 0;
            s.services.data_port = Some(70000);
        });
        assert_eq!(
            violations_of(&m),
            vec![
                Violation::OutOfRange {
                    field: "replicas",
                    value: 0,
                    min: 1,
                    max: 64
                },
                Violation::OutOfRange {
                    field: "services.dataPort",
                    value: 70000,
                    min: 1,
                    max: 65535
                },
            ]
        );
    }

    #[test]
    fn fields_of_the_other_role_are_refused_by_name() {
        let m = module("store", |s| {
            s.role = Role::Metadata;
            s.sidecar.chunk_size_bytes = Some(1024 * 1024);
        });
        let v = violations_of(&m);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].to_string(),
            "sidecar.chunkSizeBytes does not apply to a Metadata module (it stores no blob); \
             remove it"
        );
        let m = module("store", |s| {
            s.role = Role::Data;
            s.services.metadata_port = Some(9990);
        });
        assert!(
            violations_of(&m)[0]
                .to_string()
                .starts_with("services.metadataPort does not apply to a Data module")
        );
    }

    #[test]
    fn each_role_is_valid_with_its_defaults() {
        for role in [Role::Combined, Role::Data, Role::Metadata] {
            let m = module("store", |s| s.role = role);
            let valid = validate(&m).unwrap_or_else(|e| panic!("{role:?}: {e}"));
            assert_eq!(valid.role(), role);
        }
        // A metadata module needs no room for a chunk: the smallest item size will do.
        let m = module("store", |s| {
            s.role = Role::Metadata;
            s.memcached.max_item_size_kib = Some(1024);
            s.memcached.memory_limit_mib = Some(64);
        });
        assert!(validate(&m).is_ok());
    }

    #[test]
    fn pdb_must_leave_a_pod_up() {
        let m = module("store", |s| {
            s.replicas = 2;
            s.pod_disruption_budget.max_unavailable = 2;
        });
        assert_eq!(
            violations_of(&m),
            vec![Violation::MaxUnavailableTooHigh {
                max_unavailable: 2,
                replicas: 2
            }]
        );
    }

    #[test]
    fn a_replication_factor_above_replicas_or_out_of_range_is_refused_by_name() {
        let m = module("store", |s| {
            s.replicas = 2;
            s.replication_factor = Some(3);
        });
        let v = violations_of(&m);
        assert_eq!(
            v,
            vec![Violation::ReplicationFactorAboveReplicas {
                factor: 3,
                replicas: 2
            }]
        );
        let message = v[0].to_string();
        assert!(
            message.starts_with("replicationFactor (3) must be at most replicas (2)"),
            "{message}"
        );
        let m = module("store", |s| {
            s.replicas = 3;
            s.replication_factor = Some(0);
            s.placement.lost_node_grace_seconds = 1;
        });
        assert_eq!(
            violations_of(&m),
            vec![
                Violation::OutOfRange {
                    field: "replicationFactor",
                    value: 0,
                    min: 1,
                    max: 64
                },
                Violation::OutOfRange {
                    field: "placement.lostNodeGraceSeconds",
                    value: 1,
                    min: 10,
                    max: 3600
                },
            ]
        );
        for factor in [1, 3] {
            let ok = module("store", |s| {
                s.replicas = 3;
                s.replication_factor = Some(factor);
            });
            assert!(validate(&ok).is_ok(), "factor {factor}");
        }
    }

    #[test]
    fn missing_namespace_is_an_error_not_a_panic() {
        let m = ZenkoMemcachedModule::new("store", ZenkoMemcachedModuleSpec::default());
        assert!(matches!(
            validate(&m),
            Err(Error::MissingObjectKey("metadata.namespace"))
        ));
    }
}
