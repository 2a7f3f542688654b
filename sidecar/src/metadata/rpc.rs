//! The Arsenal RPC envelope: the `call` event `(name, {rpcArgs, reqUids, subLevel})` with an
//! ack answering `[null, result]` or `[error]`, and the built-in `getManifest`.

use serde_json::{Value, json};

use super::api::Api;
use super::errors::{MetadataError, MetadataResult};
use crate::ordered::Sublevel;

/// Name of the built-in call listing the others.
pub const GET_MANIFEST: &str = "getManifest";

/// The call named in a `call` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallName {
    Manifest,
    Api(Api),
}

impl CallName {
    pub fn parse(name: &Value) -> MetadataResult<CallName> {
        let Value::String(name) = name else {
            return Err(MetadataError::InvalidArgument(
                "the call name must be a string".into(),
            ));
        };
        if name == GET_MANIFEST {
            return Ok(CallName::Manifest);
        }
        Api::from_name(name)
            .map(CallName::Api)
            .ok_or_else(|| MetadataError::InvalidArgument(format!("unknown call {name:?}")))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallName::Manifest => GET_MANIFEST,
            CallName::Api(api) => api.name(),
        }
    }
}

/// The request part of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRequest {
    pub rpc_args: Vec<Value>,
    /// werelogs' serialized request-id chain, for log correlation.
    pub req_uids: Option<String>,
    pub sublevel: Sublevel,
}

impl CallRequest {
    pub fn parse(args: &Value) -> MetadataResult<CallRequest> {
        let empty = serde_json::Map::new();
        let args = match args {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => {
                return Err(MetadataError::InvalidArgument(
                    "call arguments must be an object".into(),
                ));
            }
        };
        let rpc_args = match args.get("rpcArgs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(_) => {
                return Err(MetadataError::InvalidArgument(
                    "rpcArgs must be an array".into(),
                ));
            }
        };
        let req_uids = match args.get("reqUids") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let sublevel = match args.get("subLevel") {
            None | Some(Value::Null) => Sublevel::root(),
            Some(Value::Array(parts)) => Sublevel::new(
                parts
                    .iter()
                    .map(|part| match part {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(MetadataError::InvalidArgument(
                            "subLevel must be an array of strings".into(),
                        )),
                    })
                    .collect::<MetadataResult<Vec<String>>>()?,
            ),
            Some(_) => {
                return Err(MetadataError::InvalidArgument(
                    "subLevel must be an array of strings".into(),
                ));
            }
        };
        Ok(CallRequest {
            rpc_args,
            req_uids,
            sublevel,
        })
    }
}

/// `{apiVersion, api: [{name}]}` listing every call but `getManifest`.
pub fn manifest() -> Value {
    let api: Vec<Value> = Api::ALL
        .iter()
        .map(|api| json!({"name": api.name()}))
        .collect();
    json!({"apiVersion": "1.0", "api": api})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_with_every_field() {
        let request = CallRequest::parse(&json!({
            "rpcArgs": ["k", "{}", {}], "reqUids": "aaaa:bbbb", "subLevel": ["bkt"]
        }))
        .unwrap();
        assert_eq!(request.rpc_args.len(), 3);
        assert_eq!(request.req_uids.as_deref(), Some("aaaa:bbbb"));
        assert_eq!(request.sublevel, Sublevel::new(vec!["bkt".into()]));
    }

    #[test]
    fn missing_fields_default() {
        let request = CallRequest::parse(&json!({})).unwrap();
        assert!(request.rpc_args.is_empty());
        assert_eq!(request.req_uids, None);
        assert_eq!(request.sublevel, Sublevel::root());
    }

    #[test]
    fn malformed_envelopes_are_invalid_arguments() {
        for bad in [
            json!("x"),
            json!({"rpcArgs": "x"}),
            json!({"subLevel": "bkt"}),
            json!({"subLevel": [1]}),
        ] {
            assert!(matches!(
                CallRequest::parse(&bad),
                Err(MetadataError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            CallName::parse(&json!("getManifest")).unwrap(),
            CallName::Manifest
        );
        assert_eq!(
            CallName::parse(&json!("put")).unwrap(),
            CallName::Api(Api::Put)
        );
        assert!(CallName::parse(&json!("batch")).is_err());
        assert!(CallName::parse(&json!(3)).is_err());
    }

    #[test]
    fn manifest_lists_every_call() {
        let names: Vec<String> = manifest()["api"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
        for needed in [
            "put",
            "get",
            "del",
            "getDiskUsage",
            "createReadStream",
            "rawListKeys",
            "getUUID",
        ] {
            assert!(names.iter().any(|n| n == needed), "{needed}");
        }
        assert_eq!(manifest()["apiVersion"], "1.0");
    }
}
