//! What the `crd`, `manifests` and `stack` commands print: YAML, produced from the same code the controller runs.

use kube::{CustomResourceExt, Resource};
use serde::Deserialize;

use crate::build::{self, to_yaml};
use crate::crd::ZenkoMemcachedModule;
use crate::error::{Error, Result};
use crate::stack::{self, StackNetwork, StackOptions};
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
    // A file has no status: the placement a new module starts with.
    let children = build::build_initial(&validated);
    to_yaml(&children.to_json_values()?)
}

/// The Swarm stack for the module in `text`, on `network`. The namespace only names the node
/// directory of the warm restart file (`<hostPath>/<namespace>/<module>`), as on Kubernetes.
/// `current_servers`: see `stack::build`.
pub fn stack_yaml(
    text: &str,
    default_namespace: &str,
    network: &StackNetwork,
    current_servers: Option<u32>,
) -> Result<String> {
    stack::to_yaml(
        &parse_module(text, default_namespace)?,
        network,
        current_servers,
    )
}

/// The Swarm stack of the modules in `texts` (one module, or the production pair), see
/// `stack::build_stack`.
pub fn stack_files_yaml(
    texts: &[String],
    default_namespace: &str,
    options: &StackOptions,
) -> Result<String> {
    let modules = texts
        .iter()
        .map(|text| parse_module(text, default_namespace))
        .collect::<Result<Vec<_>>>()?;
    stack::stack_to_yaml(&modules, options)
}

/// The top-level fields naming the resource type.
const TYPE_FIELDS: [&str; 2] = ["apiVersion", "kind"];

/// `apiVersion` and `kind` of a file, when it has them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileType {
    api_version: Option<String>,
    kind: Option<String>,
}

/// A file may leave out `apiVersion` and `kind`, but not name another resource type.
fn check_type(text: &str) -> Result<()> {
    let file: FileType =
        serde_saphyr::from_str(text).map_err(|e| Error::YamlRead(e.to_string()))?;
    let expected = [
        (
            "apiVersion",
            file.api_version,
            ZenkoMemcachedModule::api_version(&()),
        ),
        ("kind", file.kind, ZenkoMemcachedModule::kind(&())),
    ];
    for (field, found, wanted) in expected {
        if let Some(found) = found
            && found != wanted
        {
            return Err(Error::YamlRead(format!(
                "{field} is {found:?}: a module file holds one {} of {}",
                ZenkoMemcachedModule::kind(&()),
                ZenkoMemcachedModule::api_version(&())
            )));
        }
    }
    Ok(())
}

/// A module read from a file, placed in `default_namespace` when the file names none.
///
/// Parsed strictly: the API server drops fields it does not know, and a file that never goes
/// through it would otherwise do the same silently, so that a misspelt field quietly took its
/// default. Every field the types do not know is named in the error.
pub fn parse_module(text: &str, default_namespace: &str) -> Result<ZenkoMemcachedModule> {
    let mut unknown = Vec::new();
    let mut module: ZenkoMemcachedModule = serde_saphyr::with_deserializer_from_str(text, |yaml| {
        // An optional section (`spec.backup`) shows in the path as `?`: not a field name.
        serde_ignored::deserialize(yaml, |path| {
            unknown.push(path.to_string().replace(".?", ""))
        })
    })
    .map_err(|e| Error::YamlRead(e.to_string()))?;
    // The resource type's own derive reads `apiVersion` and `kind` by skipping them: they are
    // checked here instead.
    unknown.retain(|path| !TYPE_FIELDS.contains(&path.as_str()));
    if !unknown.is_empty() {
        return Err(Error::UnknownFields(unknown));
    }
    check_type(text)?;
    if module.metadata.namespace.is_none() {
        module.metadata.namespace = Some(default_namespace.to_owned());
    }
    Ok(module)
}
