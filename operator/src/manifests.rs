//! What the `crd` and `manifests` commands print: YAML, produced from the same code the controller runs.

use kube::CustomResourceExt;

use crate::build::{self, to_yaml};
use crate::crd::ZenkoMemcachedModule;
use crate::error::{Error, Result};
use crate::validate::validate;

/// The CustomResourceDefinition, as shipped in the chart.
pub fn crd_yaml() -> Result<String> {
    to_yaml(&[ZenkoMemcachedModule::crd()])
}

/// The objects the operator would create for the module in `text`, placed in
/// `default_namespace` when the file names none. A module read from a file has no uid yet, so
/// these objects carry no owner reference: the operator adds it when it applies them.
pub fn manifests_yaml(text: &str, default_namespace: &str) -> Result<String> {
    let mut module: ZenkoMemcachedModule =
        serde_saphyr::from_str(text).map_err(|e| Error::YamlRead(e.to_string()))?;
    if module.metadata.namespace.is_none() {
        module.metadata.namespace = Some(default_namespace.to_owned());
    }
    let validated = validate(&module)?;
    let children = build::build(&validated);
    to_yaml(&children.to_json_values()?)
}
