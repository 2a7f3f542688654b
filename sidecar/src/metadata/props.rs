//! Property tests of the metadata RPC's argument decoding on arbitrary JSON: the call name,
//! the `{rpcArgs, reqUids, subLevel}` envelope, listing and versioning options, and whole calls
//! against an in-memory store. Malformed input must never panic and must be refused as the
//! caller's mistake (`InvalidArgument`), never as an internal error. The seed corpus
//! `tests/corpus/metadata_calls.jsonl` is replayed too.

#![allow(clippy::unwrap_used)] // test code: a failure should be loud

use std::ops::Bound;
use std::sync::Arc;

use crate::proptest_cases::cases;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::api::{Answer, ArgLimits, Args, Handlers};
use super::errors::MetadataError;
use super::listing::Listing;
use super::rpc::{CallName, CallRequest};
use super::versioning::{
    PutOptions, ReplicationGroupId, VersionIdGenerator, VersionSelector, VersioningEngine,
};
use crate::items::{EmbeddedStore, SharedItemStore};
use crate::ordered::{MemoryOrderedStore, Sublevel};

const CASES: u32 = 2048;

/// Field names the decoders look at, so that generated objects hit them often.
const NAMES: &[&str] = &[
    "rpcArgs",
    "reqUids",
    "subLevel",
    "gt",
    "gte",
    "lt",
    "lte",
    "start",
    "end",
    "limit",
    "reverse",
    "keys",
    "values",
    "versionId",
    "versioning",
    "isNull",
    "deleteNullKey",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(-1.5),
            Just(0.0),
            Just(-0.0),
            Just(1e300),
            Just(-1e300),
            Just(2.5),
            any::<f64>()
        ]
        .prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        Just(Value::from(u64::MAX)),
        "\\PC{0,8}".prop_map(Value::String),
        prop::sample::select(NAMES).prop_map(|name| Value::String(name.to_owned())),
        Just(Value::String(String::new())),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => prop::sample::select(NAMES).prop_map(str::to_owned),
                        1 => "\\PC{0,6}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn is_invalid_argument<T: std::fmt::Debug>(result: &Result<T, MetadataError>) -> bool {
    matches!(result, Ok(_) | Err(MetadataError::InvalidArgument(_)))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn handlers() -> Handlers {
    let items: SharedItemStore = Arc::new(EmbeddedStore::new(16 << 20, 1 << 20));
    let store = Arc::new(MemoryOrderedStore::default());
    Handlers {
        engine: VersioningEngine::new(
            store,
            VersionIdGenerator::new(ReplicationGroupId::default()),
            None,
        ),
        uuid: super::uuid::DeploymentUuid::new(items.clone()),
        items,
        limits: ArgLimits {
            max_key_bytes: 64,
            max_value_bytes: 256,
        },
    }
}

/// Run one call to its end (streams drained), as the socket layer would.
async fn run_call(
    handlers: &Handlers,
    api: super::api::Api,
    db: &Sublevel,
    args: &[Value],
) -> Result<(), MetadataError> {
    use futures::StreamExt;
    match handlers.call(api, db, Args::new(args)).await? {
        Answer::Value(_) => Ok(()),
        Answer::Stream(mut items) => {
            while let Some(item) = items.next().await {
                item?;
            }
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(CASES)))]

    #[test]
    fn call_names_are_known_names_or_invalid_arguments(name in prop_oneof![
        json_value(),
        prop::sample::select(&["put", "get", "del", "getManifest", "createReadStream",
            "rawListKeys", "getUUID", "getDiskUsage", "Put", ""][..])
            .prop_map(|name| Value::String(name.to_owned())),
    ]) {
        let parsed = CallName::parse(&name);
        prop_assert!(is_invalid_argument(&parsed), "{:?}: {:?}", name, parsed);
        if let Ok(call) = parsed {
            prop_assert_eq!(Value::String(call.as_str().to_owned()), name);
        }
    }

    #[test]
    fn call_envelopes_parse_or_are_invalid_arguments(args in json_value()) {
        let parsed = CallRequest::parse(&args);
        prop_assert!(is_invalid_argument(&parsed), "{:?}: {:?}", args, parsed);
        // Model: an object (or null) whose rpcArgs is absent/null/an array and whose subLevel
        // is absent/null/an array of strings.
        let fine = match &args {
            Value::Null => true,
            Value::Object(map) => {
                matches!(map.get("rpcArgs"), None | Some(Value::Null | Value::Array(_)))
                    && match map.get("subLevel") {
                        None | Some(Value::Null) => true,
                        Some(Value::Array(parts)) => parts.iter().all(Value::is_string),
                        Some(_) => false,
                    }
            }
            _ => false,
        };
        prop_assert_eq!(parsed.is_ok(), fine, "{:?}", args);
    }

    #[test]
    fn listing_options_parse_or_are_invalid_arguments(options in json_value()) {
        let parsed = Listing::parse(&options);
        prop_assert!(is_invalid_argument(&parsed), "{:?}: {:?}", options, parsed);
        if let Ok(listing) = parsed {
            // A listing that can match something has its bounds in order.
            if !listing.empty {
                if let (
                    Bound::Included(l) | Bound::Excluded(l),
                    Bound::Included(u) | Bound::Excluded(u),
                ) = (&listing.range.lower, &listing.range.upper) {
                    prop_assert!(l <= u, "{:?}", options);
                }
                prop_assert!(listing.limit != Some(0));
            }
        }
    }

    #[test]
    fn versioning_options_parse_or_are_invalid_arguments(options in json_value()) {
        let put = PutOptions::parse(&options);
        prop_assert!(is_invalid_argument(&put), "{:?}: {:?}", options, put);
        let selector = VersionSelector::parse(&options);
        prop_assert!(is_invalid_argument(&selector), "{:?}: {:?}", options, selector);
    }
}

proptest! {
    // Whole calls go through the versioning engine and a store: fewer, costlier cases.
    #![proptest_config(ProptestConfig::with_cases(cases(CASES) / 4))]

    #[test]
    fn calls_with_arbitrary_arguments_never_fail_internally(
        api in prop::sample::select(&super::api::Api::ALL[..]),
        args in prop::collection::vec(prop_oneof![
            2 => "[a-z\\x00]{0,80}".prop_map(Value::String),
            1 => "\\{\"a\":[0-9]{1,3}\\}".prop_map(Value::String),
            2 => json_value(),
        ], 0..4),
        db in prop::collection::vec("[a-z.#!]{0,6}", 0..3),
    ) {
        let handlers = handlers();
        let db = Sublevel::new(db);
        let outcome = runtime().block_on(async {
            // Something to version and list first.
            let seed = [json!("a"), json!("{\"a\":1}"), json!({"versioning": true})];
            run_call(&handlers, super::api::Api::Put, &db, &seed).await.unwrap();
            run_call(&handlers, api, &db, &args).await
        });
        prop_assert!(
            matches!(outcome, Ok(()) | Err(MetadataError::InvalidArgument(_) | MetadataError::ObjNotFound)),
            "{:?}{:?} on {:?}: {:?}", api, args, db, outcome
        );
    }
}

#[test]
fn corpus_calls_give_their_recorded_answers() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/metadata_calls.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let runtime = runtime();
    let mut count = 0;
    for line in text
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("//"))
    {
        let case: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let handlers = handlers();
        let outcome = CallName::parse(&case["name"])
            .and_then(|name| Ok((name, CallRequest::parse(&case["args"])?)))
            .and_then(|(name, request)| match name {
                CallName::Manifest => Ok(()),
                CallName::Api(api) => runtime.block_on(run_call(
                    &handlers,
                    api,
                    &request.sublevel,
                    &request.rpc_args,
                )),
            });
        let label = match &outcome {
            Ok(()) => "ok",
            Err(error) => error.error_type().name(),
        };
        assert_eq!(Value::from(label), case["expect"], "{line}: {outcome:?}");
        count += 1;
    }
    assert!(count >= 10);
}
