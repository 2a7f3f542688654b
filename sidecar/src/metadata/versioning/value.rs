//! Stored values as the versioning rules see them: JSON object text, edited textually so that
//! everything else in the value stays byte-exact.

use serde::Deserialize;

use super::version_id::VersionId;
use crate::metadata::errors::{MetadataError, MetadataResult};

/// The separator between an object key and a version id in version keys.
pub const VERSION_SEPARATOR: char = '\u{0}';

/// The few fields of a stored value that versioning decisions depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "versionId", default)]
    pub version_id: Option<String>,
    #[serde(rename = "isPHD", default)]
    pub is_phd: Option<bool>,
    #[serde(rename = "isNull", default)]
    pub is_null: Option<bool>,
    #[serde(rename = "isNull2", default)]
    pub is_null2: Option<bool>,
}

impl VersionInfo {
    /// Parse a stored value; the rules need it to be a JSON object.
    pub fn parse(value: &str) -> MetadataResult<VersionInfo> {
        serde_json::from_str(value).map_err(|error| {
            MetadataError::Internal(format!("stored value is not a JSON object: {error}"))
        })
    }

    pub fn is_null_version(&self) -> bool {
        self.is_null == Some(true)
    }
}

/// A placeholder ("PHD") master: written when the newest version is deleted, until the get
/// path finds the next newest version.
pub fn placeholder(version_id: &VersionId) -> String {
    format!("{{ \"isPHD\": true, \"versionId\": \"{version_id}\" }}")
}

/// Whether a value is a placeholder: a cheap substring test first, as values are large.
pub fn is_placeholder(value: &str) -> bool {
    value.contains("isPHD")
        && serde_json::from_str::<VersionInfo>(value)
            .map(|info| info.is_phd == Some(true))
            .unwrap_or(false)
}

/// Insert `"name":"text"` before the closing brace of a JSON object text (no comma when the
/// object is empty), as the reference does, so the client's bytes are kept as they are.
pub fn append_field(value: &str, name: &str, text: &str) -> MetadataResult<String> {
    let body = value.trim_end();
    let Some(inner) = body.strip_suffix('}') else {
        return Err(MetadataError::InvalidArgument(
            "a versioned value must be a JSON object".into(),
        ));
    };
    if !body.trim_start().starts_with('{') {
        return Err(MetadataError::InvalidArgument(
            "a versioned value must be a JSON object".into(),
        ));
    }
    let needs_comma = !inner.trim_end().ends_with('{');
    let comma = if needs_comma { "," } else { "" };
    let escaped = serde_json::to_string(text)
        .map_err(|error| MetadataError::Internal(format!("cannot encode {name}: {error}")))?;
    Ok(format!("{inner}{comma}\"{name}\":{escaped}}}"))
}

/// Append a boolean field (used to flag preserved null versions).
pub fn append_flag(value: &str, name: &str) -> MetadataResult<String> {
    let body = value.trim_end();
    let inner = body
        .strip_suffix('}')
        .ok_or_else(|| MetadataError::Internal("stored value is not a JSON object".into()))?;
    let comma = if inner.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    Ok(format!("{inner}{comma}\"{name}\":true}}"))
}

pub fn append_version_id(value: &str, version_id: &VersionId) -> MetadataResult<String> {
    append_field(value, "versionId", version_id.as_str())
}

pub fn version_key(key: &str, version_id: &VersionId) -> String {
    format!("{key}{VERSION_SEPARATOR}{version_id}")
}

/// The key of the null version (versioning suspended, or an object from before versioning).
pub fn null_key(key: &str) -> String {
    format!("{key}{VERSION_SEPARATOR}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_inserts_before_the_closing_brace() {
        let vid = VersionId::from_client("v1");
        assert_eq!(
            append_version_id("{\"a\":1}", &vid).unwrap(),
            "{\"a\":1,\"versionId\":\"v1\"}"
        );
        assert_eq!(
            append_version_id("{}", &vid).unwrap(),
            "{\"versionId\":\"v1\"}"
        );
        assert_eq!(
            append_version_id("{ }", &vid).unwrap(),
            "{ \"versionId\":\"v1\"}"
        );
        assert!(append_version_id("not json", &vid).is_err());
    }

    #[test]
    fn placeholders_are_recognised_only_when_flagged() {
        let phd = placeholder(&VersionId::from_client("v9"));
        assert_eq!(phd, "{ \"isPHD\": true, \"versionId\": \"v9\" }");
        assert!(is_placeholder(&phd));
        assert!(!is_placeholder("{\"isPHD\":false}"));
        assert!(!is_placeholder("{\"name\":\"isPHD\"}"));
        assert!(!is_placeholder("isPHD garbage"));
    }

    #[test]
    fn keys_use_the_nul_separator() {
        assert_eq!(version_key("a", &VersionId::from_client("v")), "a\u{0}v");
        assert_eq!(null_key("a"), "a\u{0}");
    }

    #[test]
    fn flags_append() {
        assert_eq!(
            append_flag("{\"a\":1}", "isNull").unwrap(),
            "{\"a\":1,\"isNull\":true}"
        );
    }
}
