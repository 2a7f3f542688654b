//! The versioning fields of put/get/del options, read with JavaScript's truthiness rules as
//! the reference does; every other option is ignored.

use serde_json::Value;

use crate::metadata::errors::{MetadataError, MetadataResult};

/// JavaScript truthiness of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// What a put asks of versioning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// `versioning` truthy or `""`: create a new version.
    pub versioning: bool,
    /// `versionId` truthy or `""`: write that version (`""`: overwrite the master).
    pub version_id: Option<String>,
    /// `isNull`: `None` when absent (older CloudServers), otherwise its truthiness.
    pub is_null: Option<bool>,
    pub delete_null_key: bool,
}

/// What a get or del asks of versioning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSelector {
    /// `versionId` when truthy (an empty string means the master).
    pub version_id: Option<String>,
    pub is_null: bool,
}

fn field<'a>(options: &'a Value, name: &str) -> Option<&'a Value> {
    options.as_object().and_then(|o| o.get(name))
}

fn version_id_field(options: &Value, keep_empty: bool) -> MetadataResult<Option<String>> {
    match field(options, "versionId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() && !keep_empty => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) if !truthy(other) => Ok(None),
        Some(_) => Err(MetadataError::InvalidArgument(
            "options.versionId must be a string".into(),
        )),
    }
}

/// Options must be an object; `null`/absent mean none.
fn check_object(options: &Value) -> MetadataResult<()> {
    match options {
        Value::Null | Value::Object(_) => Ok(()),
        _ => Err(MetadataError::InvalidArgument(
            "options must be an object".into(),
        )),
    }
}

impl PutOptions {
    pub fn parse(options: &Value) -> MetadataResult<PutOptions> {
        check_object(options)?;
        let versioning = match field(options, "versioning") {
            Some(Value::String(s)) if s.is_empty() => true,
            Some(value) => truthy(value),
            None => false,
        };
        let is_null = match field(options, "isNull") {
            None | Some(Value::Null) => None,
            Some(value) => Some(truthy(value)),
        };
        Ok(PutOptions {
            versioning,
            version_id: version_id_field(options, true)?,
            is_null,
            delete_null_key: field(options, "deleteNullKey").is_some_and(truthy),
        })
    }
}

impl VersionSelector {
    pub fn parse(options: &Value) -> MetadataResult<VersionSelector> {
        check_object(options)?;
        Ok(VersionSelector {
            version_id: version_id_field(options, false)?,
            is_null: field(options, "isNull").is_some_and(truthy),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_options_follow_javascript_truthiness() {
        assert_eq!(
            PutOptions::parse(&json!({})).unwrap(),
            PutOptions::default()
        );
        assert_eq!(
            PutOptions::parse(&Value::Null).unwrap(),
            PutOptions::default()
        );
        assert!(
            PutOptions::parse(&json!({"versioning": true}))
                .unwrap()
                .versioning
        );
        assert!(
            PutOptions::parse(&json!({"versioning": ""}))
                .unwrap()
                .versioning
        );
        assert!(
            !PutOptions::parse(&json!({"versioning": false}))
                .unwrap()
                .versioning
        );
        assert!(
            !PutOptions::parse(&json!({"versioning": 0}))
                .unwrap()
                .versioning
        );
        let empty =
            PutOptions::parse(&json!({"versionId": "", "isNull": true, "deleteNullKey": true}))
                .unwrap();
        assert_eq!(empty.version_id.as_deref(), Some(""));
        assert_eq!(empty.is_null, Some(true));
        assert!(empty.delete_null_key);
        let other = PutOptions::parse(&json!({"versionId": "v1", "isNull": false})).unwrap();
        assert_eq!(other.is_null, Some(false));
        assert_eq!(
            PutOptions::parse(&json!({"versionId": null}))
                .unwrap()
                .version_id,
            None
        );
        assert!(PutOptions::parse(&json!({"versionId": 5})).is_err());
        assert!(PutOptions::parse(&json!("x")).is_err());
        // Options CloudServer sends that versioning ignores.
        assert_eq!(
            PutOptions::parse(&json!({"overheadField": ["a"], "replayId": "r"})).unwrap(),
            PutOptions::default()
        );
    }

    #[test]
    fn selectors_treat_empty_version_id_as_master() {
        assert_eq!(
            VersionSelector::parse(&json!({"versionId": ""}))
                .unwrap()
                .version_id,
            None
        );
        let sel = VersionSelector::parse(&json!({"versionId": "null", "isNull": 1})).unwrap();
        assert_eq!(sel.version_id.as_deref(), Some("null"));
        assert!(sel.is_null);
    }
}
