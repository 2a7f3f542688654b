//! The metadata service's error type and its wire encoding as an Arsenal error.

use serde_json::{Map, Value, json};

use crate::items::ItemError;
use crate::ordered::OrderedError;

/// Everything a metadata call can fail with; each maps to one Arsenal error name on the wire.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The key (or the version asked for) does not exist.
    #[error("This object does not exist")]
    ObjNotFound,
    /// The request is malformed: unknown call, wrong argument types, bad options.
    #[error("{0}")]
    InvalidArgument(String),
    /// The ordered store failed (memcached down, full, corrupt database...).
    #[error("metadata storage: {0}")]
    Storage(#[from] OrderedError),
    /// The item store failed (UUID and disk usage live there).
    #[error("metadata storage: {0}")]
    Items(#[from] ItemError),
    /// A stored value is not what the versioning rules expect (for example not JSON).
    #[error("{0}")]
    Internal(String),
}

pub type MetadataResult<T> = Result<T, MetadataError>;

/// Arsenal error names used by this service, with their HTTP-like codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArsenalErrorType {
    ObjNotFound,
    InvalidArgument,
    InternalError,
}

impl ArsenalErrorType {
    pub fn name(self) -> &'static str {
        match self {
            ArsenalErrorType::ObjNotFound => "ObjNotFound",
            ArsenalErrorType::InvalidArgument => "InvalidArgument",
            ArsenalErrorType::InternalError => "InternalError",
        }
    }

    pub fn code(self) -> u16 {
        match self {
            ArsenalErrorType::ObjNotFound => 404,
            ArsenalErrorType::InvalidArgument => 400,
            ArsenalErrorType::InternalError => 500,
        }
    }
}

impl MetadataError {
    pub fn error_type(&self) -> ArsenalErrorType {
        match self {
            MetadataError::ObjNotFound => ArsenalErrorType::ObjNotFound,
            MetadataError::InvalidArgument(_) => ArsenalErrorType::InvalidArgument,
            MetadataError::Storage(_) | MetadataError::Items(_) | MetadataError::Internal(_) => {
                ArsenalErrorType::InternalError
            }
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            MetadataError::ObjNotFound => "not_found",
            MetadataError::InvalidArgument(_) => "invalid_argument",
            MetadataError::Storage(OrderedError::Items(ItemError::Full))
            | MetadataError::Items(ItemError::Full) => "storage_full",
            MetadataError::Storage(_) | MetadataError::Items(_) => "storage",
            MetadataError::Internal(_) => "internal",
        }
    }

    /// The error flattened so that both client generations rebuild it (section 3.5): Arsenal
    /// 8.1.44+ reads `is_arsenal_error`/`type`/`code`/`description`, older lines copy every
    /// property onto an `Error(message)` and test the `<Type>: true` flag.
    pub fn to_wire(&self) -> Value {
        let kind = self.error_type();
        let mut object = Map::new();
        object.insert("is_arsenal_error".into(), Value::Bool(true));
        object.insert("type".into(), json!(kind.name()));
        object.insert("code".into(), json!(kind.code()));
        object.insert("description".into(), json!(self.to_string()));
        object.insert("message".into(), json!(kind.name()));
        object.insert(kind.name().into(), Value::Bool(true));
        object.insert("stack".into(), json!(""));
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_uses_the_universal_encoding() {
        let wire = MetadataError::ObjNotFound.to_wire();
        assert_eq!(
            wire,
            json!({"is_arsenal_error": true, "type": "ObjNotFound", "code": 404,
                   "description": "This object does not exist", "message": "ObjNotFound",
                   "ObjNotFound": true, "stack": ""})
        );
    }

    #[test]
    fn invalid_argument_keeps_its_reason() {
        let wire = MetadataError::InvalidArgument("unknown call \"nope\"".into()).to_wire();
        assert_eq!(wire["type"], "InvalidArgument");
        assert_eq!(wire["code"], 400);
        assert_eq!(wire["InvalidArgument"], true);
        assert_eq!(wire["description"], "unknown call \"nope\"");
    }

    #[test]
    fn storage_full_is_an_internal_error_that_says_so() {
        let error = MetadataError::Storage(OrderedError::Items(ItemError::Full));
        let wire = error.to_wire();
        assert_eq!(wire["type"], "InternalError");
        assert_eq!(wire["code"], 500);
        assert!(
            wire["description"]
                .as_str()
                .unwrap()
                .contains("storage full")
        );
        assert_eq!(error.label(), "storage_full");
    }
}
