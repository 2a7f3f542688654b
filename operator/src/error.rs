//! The operator's one error type, with the label each variant carries in the failure metrics.

use crate::validate::Violations;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is well-formed for the API server but cannot be turned into working pods.
    #[error("invalid spec: {0}")]
    InvalidSpec(Violations),

    /// A field the API server always sets (namespace, uid) is missing: the object did not come from it.
    #[error("the module has no {0}; it must come from the API server")]
    MissingObjectKey(&'static str),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("could not serialize an object: {0}")]
    Serialization(#[from] serde_json::Error),

    #[error("could not read YAML: {0}")]
    YamlRead(String),

    #[error(
        "unknown field {}: check the spelling against `kubectl explain zmm.spec` \
         (or the CRD printed by `zenko-memcached-operator crd`)",
        .0.join(", ")
    )]
    UnknownFields(Vec<String>),

    #[error("could not write YAML: {0}")]
    YamlWrite(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A resource amount the Swarm stack cannot express (Kubernetes checks its own at apply time).
    #[error(
        "{field} {value:?} is not a Kubernetes quantity the stack generator understands; \
         use forms such as 250m, 0.5, 512Mi or 2Gi"
    )]
    InvalidQuantity { field: String, value: String },

    /// Modules that cannot share one Swarm stack.
    #[error("{0}")]
    StackModules(String),

    #[error("leadership of Lease {0} was lost")]
    LeadershipLost(String),
}

impl Error {
    /// A short, bounded label for the `reason` of the failure metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "invalid_spec",
            Self::MissingObjectKey(_) => "missing_object_key",
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "kube_conflict",
            Self::Kube(kube::Error::Api(status)) if status.code == 403 => "kube_forbidden",
            Self::Kube(_) => "kube_api",
            Self::Serialization(_) => "serialization",
            Self::YamlRead(_) | Self::YamlWrite(_) | Self::UnknownFields(_) => "yaml",
            Self::Io { .. } => "io",
            Self::LeadershipLost(_) => "leadership_lost",
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::StackModules(_) => "stack_modules",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
