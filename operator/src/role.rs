//! What a module's role decides besides which servers it runs: the memcached and sidecar settings
//! that fit it when the spec leaves them unset, and the fields that mean nothing for it.
//!
//! A data module holds blob chunks and is sized for throughput: memory for many chunks, 1 MiB
//! chunks (fewer memcached operations per byte) and an item size with room for them. A metadata
//! module holds small pages, root records and values, written often and listed: memcached's
//! default 1 MiB item size (pages are at most 64 KiB and large values are split, so the larger
//! limit chunks need buys nothing) and more worker threads for many small requests at once. A combined module keeps the
//! defaults the project always had.

use crate::build::{DATA_PORT, METADATA_PORT};
use crate::crd::{Role, ZenkoMemcachedModuleSpec};

/// CloudServer's default replication group id.
pub const DEFAULT_REPLICATION_GROUP_ID: &str = "RG001";

/// The defaults of one role.
struct Defaults {
    memory_limit_mib: i32,
    max_item_size_kib: i32,
    threads: i32,
    /// `None`: the role stores no blob.
    chunk_size_bytes: Option<i32>,
}

fn defaults(role: Role) -> Defaults {
    match role {
        Role::Combined => Defaults {
            memory_limit_mib: 1024,
            max_item_size_kib: 2048,
            threads: 4,
            chunk_size_bytes: Some(524_288),
        },
        Role::Data => Defaults {
            memory_limit_mib: 4096,
            max_item_size_kib: 2048,
            threads: 4,
            chunk_size_bytes: Some(1_048_576),
        },
        Role::Metadata => Defaults {
            memory_limit_mib: 1024,
            max_item_size_kib: 1024,
            threads: 8,
            chunk_size_bytes: None,
        },
    }
}

/// A module's settings once its role's defaults fill what the spec leaves unset; `None` for what
/// the role does not use (whatever the spec says: validation refuses such fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings<'a> {
    pub role: Role,
    pub memory_limit_mib: i32,
    pub max_item_size_kib: i32,
    pub threads: i32,
    pub chunk_size_bytes: Option<i32>,
    pub replication_group_id: Option<&'a str>,
    pub data_port: Option<i32>,
    pub metadata_port: Option<i32>,
}

pub fn settings(spec: &ZenkoMemcachedModuleSpec) -> Settings<'_> {
    let role = spec.role;
    let defaults = defaults(role);
    let data = role.serves_data();
    let metadata = role.serves_metadata();
    Settings {
        role,
        memory_limit_mib: spec
            .memcached
            .memory_limit_mib
            .unwrap_or(defaults.memory_limit_mib),
        max_item_size_kib: spec
            .memcached
            .max_item_size_kib
            .unwrap_or(defaults.max_item_size_kib),
        threads: spec.memcached.threads.unwrap_or(defaults.threads),
        chunk_size_bytes: defaults
            .chunk_size_bytes
            .map(|default| spec.sidecar.chunk_size_bytes.unwrap_or(default)),
        replication_group_id: metadata.then(|| {
            spec.sidecar
                .replication_group_id
                .as_deref()
                .unwrap_or(DEFAULT_REPLICATION_GROUP_ID)
        }),
        data_port: data.then(|| spec.services.data_port.unwrap_or(i32::from(DATA_PORT))),
        metadata_port: metadata.then(|| {
            spec.services
                .metadata_port
                .unwrap_or(i32::from(METADATA_PORT))
        }),
    }
}

/// A field the spec sets that its role does not use, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotForRole {
    pub field: &'static str,
    pub role: Role,
    pub reason: &'static str,
}

/// Every field of `spec` that its role does not use.
pub fn fields_not_for_role(spec: &ZenkoMemcachedModuleSpec) -> Vec<NotForRole> {
    let role = spec.role;
    let set = [
        (
            "sidecar.chunkSizeBytes",
            spec.sidecar.chunk_size_bytes.is_some(),
            role.serves_data(),
            "it stores no blob",
        ),
        (
            "services.dataPort",
            spec.services.data_port.is_some(),
            role.serves_data(),
            "it has no data Service",
        ),
        (
            "sidecar.replicationGroupId",
            spec.sidecar.replication_group_id.is_some(),
            role.serves_metadata(),
            "it writes no version id",
        ),
        (
            "services.metadataPort",
            spec.services.metadata_port.is_some(),
            role.serves_metadata(),
            "it has no metadata Service",
        ),
    ];
    set.into_iter()
        .filter(|(_, is_set, used, _)| *is_set && !used)
        .map(|(field, _, _, reason)| NotForRole {
            field,
            role,
            reason,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(role: Role) -> ZenkoMemcachedModuleSpec {
        ZenkoMemcachedModuleSpec {
            role,
            ..ZenkoMemcachedModuleSpec::default()
        }
    }

    #[test]
    fn each_role_has_defaults_that_fit_it() {
        let combined = spec(Role::Combined);
        let combined = settings(&combined);
        assert_eq!(
            (
                combined.memory_limit_mib,
                combined.max_item_size_kib,
                combined.threads,
                combined.chunk_size_bytes,
            ),
            (1024, 2048, 4, Some(524_288))
        );
        assert_eq!(combined.replication_group_id, Some("RG001"));
        assert_eq!(
            (combined.data_port, combined.metadata_port),
            (Some(9991), Some(9990))
        );

        let data = spec(Role::Data);
        let data = settings(&data);
        assert_eq!(data.chunk_size_bytes, Some(1_048_576));
        assert!(data.memory_limit_mib > combined.memory_limit_mib);
        assert_eq!(data.replication_group_id, None);
        assert_eq!((data.data_port, data.metadata_port), (Some(9991), None));

        let metadata = spec(Role::Metadata);
        let metadata = settings(&metadata);
        assert_eq!(metadata.chunk_size_bytes, None);
        assert!(metadata.max_item_size_kib < data.max_item_size_kib);
        assert!(metadata.threads > data.threads);
        assert_eq!(
            (metadata.data_port, metadata.metadata_port),
            (None, Some(9990))
        );
    }

    #[test]
    fn what_the_spec_sets_wins_over_the_role() {
        let mut data = spec(Role::Data);
        data.memcached.memory_limit_mib = Some(512);
        data.sidecar.chunk_size_bytes = Some(65_536);
        let settings = settings(&data);
        assert_eq!(settings.memory_limit_mib, 512);
        assert_eq!(settings.chunk_size_bytes, Some(65_536));
    }

    #[test]
    fn fields_of_the_other_role_are_named() {
        let mut metadata = spec(Role::Metadata);
        metadata.sidecar.chunk_size_bytes = Some(65_536);
        metadata.services.data_port = Some(9991);
        metadata.services.metadata_port = Some(19990);
        let fields: Vec<&str> = fields_not_for_role(&metadata)
            .iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["sidecar.chunkSizeBytes", "services.dataPort"]);

        let mut data = spec(Role::Data);
        data.sidecar.replication_group_id = Some("RG002".into());
        data.services.metadata_port = Some(9990);
        let fields: Vec<&str> = fields_not_for_role(&data).iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            ["sidecar.replicationGroupId", "services.metadataPort"]
        );

        let mut combined = spec(Role::Combined);
        combined.sidecar.chunk_size_bytes = Some(65_536);
        combined.sidecar.replication_group_id = Some("RG002".into());
        assert!(fields_not_for_role(&combined).is_empty());
    }
}
