//! The project's standard labels, and the subset that selects a module's pods.

use std::collections::BTreeMap;

pub const NAME_KEY: &str = "app.kubernetes.io/name";
pub const INSTANCE_KEY: &str = "app.kubernetes.io/instance";
pub const COMPONENT_KEY: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF_KEY: &str = "app.kubernetes.io/part-of";

pub const APP_NAME: &str = "zenko-memcached";
pub const MANAGER: &str = "zenko-memcached-operator";
pub const PART_OF: &str = "zenko";

/// The role of an object within a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The pods (memcached + sidecar) and what serves them as a whole.
    Storage,
    /// The Service CloudServer's dataClient connects to.
    Data,
    /// The Service CloudServer's metadataClient connects to.
    Metadata,
    /// The Jobs that move the data between placements.
    Placement,
    /// The scheduled exports (`spec.backup`).
    Backup,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Storage => "storage",
            Self::Data => "data",
            Self::Metadata => "metadata",
            Self::Placement => "placement",
            Self::Backup => "backup",
        }
    }
}

/// Labels carried by every object of a module.
pub fn standard(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_KEY.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_KEY.to_owned(), instance.to_owned()),
        (COMPONENT_KEY.to_owned(), component.as_str().to_owned()),
        (MANAGED_BY_KEY.to_owned(), MANAGER.to_owned()),
        (PART_OF_KEY.to_owned(), PART_OF.to_owned()),
    ])
}

/// Labels that select the pods of one module; a StatefulSet selector is immutable, so this
/// set must never change.
pub fn pod_selector(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_KEY.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_KEY.to_owned(), instance.to_owned()),
        (
            COMPONENT_KEY.to_owned(),
            Component::Storage.as_str().to_owned(),
        ),
    ])
}

/// The selector as the `key=value,...` string of the scale subresource.
pub fn selector_string(instance: &str) -> String {
    pod_selector(instance)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
