//! What the `crd`, `manifests` and `stack` commands print: YAML, produced from the same code the controller runs.

use kube::CustomResourceExt;

use crate::build::{self, to_yaml};
use crate::crd::ZenkoMemcachedModule;
use crate::error::{Error, Result};
use crate::stack;
use crate::validate::validate;

/// The CustomResourceDefinition, as shipped in the chart.
pub fn crd_yaml() -> Result<String> {
    to_yaml(&[ZenkoMemcachedModule::crd()])
}

/// The objects the operator would create for the module in `text`, placed in
/// `default_namespace` when the file names none. A module read from a file has no uid yet, so
/// these objects carry no owner reference: the operator adds it when it applies them.
pub fn manifests_yaml(text: &str, default_namespace: &str) -> Result<String> {
    let module = parse_module(text, default_namespace)?;
    let validated = validate(&module)?;
    let children = build::build(&validated);
    to_yaml(&children.to_json_values()?)
}

/// The Swarm stack for the module in `text`. The namespace only names the node directory of
/// the warm restart file (`<hostPath>/<namespace>/<module>`), as on Kubernetes.
pub fn stack_yaml(text: &str, default_namespace: &str) -> Result<String> {
    stack::to_yaml(&parse_module(text, default_namespace)?)
}

/// A module read from a file, placed in `default_namespace` when the file names none.
pub fn parse_module(text: &str, default_namespace: &str) -> Result<ZenkoMemcachedModule> {
    let mut module: ZenkoMemcachedModule =
        serde_saphyr::from_str(text).map_err(|e| Error::YamlRead(e.to_string()))?;
    if module.metadata.namespace.is_none() {
        module.metadata.namespace = Some(default_namespace.to_owned());
    }
    Ok(module)
}
