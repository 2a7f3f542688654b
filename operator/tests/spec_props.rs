//! Property tests of the module spec: arbitrary specs generated field by field from the CRD's
//! types (edge values most of the time) must validate without panicking; an invalid one must
//! list its violations, a valid one must turn into Kubernetes objects and a Swarm stack. Files
//! given to `manifests`/`stack`, mutated byte by byte, must give an answer, never a panic.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use zenko_memcached_operator::build::build_initial;
use zenko_memcached_operator::crd::ZenkoMemcachedModule;
use zenko_memcached_operator::error::Error;
use zenko_memcached_operator::manifests::{manifests_yaml, stack_yaml};
use zenko_memcached_operator::stack::{self, StackNetwork};
use zenko_memcached_operator::validate::validate;

const CASES: u32 = 1024;

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(&[
            i32::MIN, -1, 0, 1, 2, 3, 63, 64, 65, 1023, 1024, 4096, 65535, 65536, 1_044_480,
            1_048_576, 1_048_577, 1_073_741_824, i32::MAX,
        ][..]),
        1 => any::<i32>(),
    ]
    .prop_map(Value::from)
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(String::new()),
        Just("RG001".to_owned()),
        Just("/mnt/zenko".to_owned()),
        Just("/mnt/../etc".to_owned()),
        Just("relative/path".to_owned()),
        Just("x".repeat(300)),
        Just("-m".to_owned()),
        Just("-p=11212".to_owned()),
        Just("io.zenko.type".to_owned()),
        "[a-zA-Z0-9./=-]{0,12}",
        "\\PC{0,10}",
    ]
    .prop_map(Value::String)
}

fn one_of(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::sample::select(names).prop_map(|name| Value::String(name.to_owned()))
}

/// An object with each field either absent (the default applies) or drawn from its strategy.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    fields
        .into_iter()
        .map(|(name, strategy)| prop::option::of(strategy).prop_map(move |v| (name, v)))
        .collect::<Vec<_>>()
        .prop_map(|fields| {
            Value::Object(
                fields
                    .into_iter()
                    .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

fn spec() -> BoxedStrategy<Value> {
    let pull = || one_of(&["Always", "IfNotPresent", "Never"]).boxed();
    let resources = || {
        prop_oneof![
            Just(json!({})),
            Just(json!({"limits": {"memory": "1Gi", "cpu": "2"}})),
            Just(json!({"requests": {"memory": "0"}})),
        ]
        .boxed()
    };
    object(vec![
        ("role", one_of(&["Combined", "Data", "Metadata"]).boxed()),
        ("replicas", int().boxed()),
        ("replicationFactor", int().boxed()),
        (
            "memcached",
            object(vec![
                ("image", text().boxed()),
                ("imagePullPolicy", pull()),
                ("memoryLimitMiB", int().boxed()),
                ("maxItemSizeKiB", int().boxed()),
                ("threads", int().boxed()),
                ("maxConnections", int().boxed()),
                ("evictions", any::<bool>().prop_map(Value::Bool).boxed()),
                (
                    "warmRestart",
                    object(vec![
                        ("enabled", any::<bool>().prop_map(Value::Bool).boxed()),
                        ("hostPath", text().boxed()),
                    ]),
                ),
                ("resources", resources()),
                (
                    "extraArgs",
                    prop::collection::vec(text(), 0..4).prop_map(Value::Array).boxed(),
                ),
            ]),
        ),
        (
            "sidecar",
            object(vec![
                ("image", text().boxed()),
                ("imagePullPolicy", pull()),
                ("resources", resources()),
                (
                    "logLevel",
                    one_of(&["error", "warn", "info", "debug", "trace"]).boxed(),
                ),
                ("chunkSizeBytes", int().boxed()),
                ("replicationGroupId", text().boxed()),
            ]),
        ),
        (
            "placement",
            object(vec![
                ("nodeLabelKey", text().boxed()),
                ("nodeLabelValue", text().boxed()),
                (
                    "tolerations",
                    prop_oneof![
                        Just(json!([])),
                        Just(json!([{"key": "dedicated", "operator": "Equal", "value": "storage", "effect": "NoSchedule"}])),
                        Just(json!([{"operator": "Exists"}])),
                    ]
                    .boxed(),
                ),
                ("spread", one_of(&["Required", "Preferred"]).boxed()),
                ("lostNodeGraceSeconds", int().boxed()),
            ]),
        ),
        (
            "services",
            object(vec![
                ("type", one_of(&["ClusterIP", "NodePort", "LoadBalancer"]).boxed()),
                (
                    "annotations",
                    prop::collection::btree_map("[a-z./-]{1,20}", "\\PC{0,10}", 0..3)
                        .prop_map(|map| json!(map))
                        .boxed(),
                ),
                ("dataPort", int().boxed()),
                ("metadataPort", int().boxed()),
            ]),
        ),
        (
            "podDisruptionBudget",
            object(vec![
                ("enabled", any::<bool>().prop_map(Value::Bool).boxed()),
                ("maxUnavailable", int().boxed()),
            ]),
        ),
        (
            "metrics",
            object(vec![("enabled", any::<bool>().prop_map(Value::Bool).boxed())]),
        ),
    ])
}

fn module() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            4 => Just(Some("store".to_owned())),
            1 => prop::option::of("[a-zA-Z0-9.-]{0,70}"),
        ],
        prop_oneof![4 => Just(Some("zenko".to_owned())), 1 => Just(None)],
        spec(),
    )
        .prop_map(|(name, namespace, spec)| {
            json!({
                "apiVersion": "zenko.io/v1alpha1",
                "kind": "ZenkoMemcachedModule",
                "metadata": {"name": name, "namespace": namespace,
                    "uid": "6d1c2a4e-0000-4000-8000-000000000009", "generation": 1},
                "spec": spec,
            })
        })
}

/// Integration tests have no `lib.rs` beside them, so the failure file is named directly
/// (cargo runs tests from the package directory); it is committed as the regression corpus.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(CASES),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/spec_props.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

/// Cases per property: `default`, or `ZMM_PROPTEST_CASES` for a longer run than CI's.
fn cases(default: u32) -> u32 {
    std::env::var("ZMM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn validation_never_panics_and_valid_specs_build(value in module()) {
        let module: ZenkoMemcachedModule = serde_json::from_value(value.clone())
            .map_err(|e| TestCaseError::fail(format!("generator made an ill-typed spec: {e}: {value}")))?;
        let spec = &module.spec;
        match validate(&module) {
            Ok(validated) => {
                // Independent checks of a few rules: whatever passes keeps them.
                prop_assert!((1..=64).contains(&spec.replicas));
                let settings = &validated.settings;
                if let Some(chunk) = settings.chunk_size_bytes {
                    prop_assert!(i64::from(chunk) < i64::from(settings.max_item_size_kib) * 1024);
                }
                prop_assert!(settings.replication_group_id.is_none_or(|rg| !rg.is_empty()));
                prop_assert!(settings.data_port.is_none_or(|port| (1..=65535).contains(&port)));
                // A field of the other role never passes.
                prop_assert!(spec.role.serves_data() || spec.sidecar.chunk_size_bytes.is_none());
                prop_assert!(spec.role.serves_metadata() || spec.services.metadata_port.is_none());
                let children = build_initial(&validated);
                prop_assert_eq!(children.data_service.is_some(), spec.role.serves_data());
                prop_assert_eq!(children.metadata_service.is_some(), spec.role.serves_metadata());
                let objects = children.to_json_values().unwrap();
                prop_assert!(objects.len() >= 4);
                prop_assert_eq!(
                    children.stateful_set.spec.replicas,
                    Some(spec.replicas)
                );
                let stack = stack::to_yaml(&module, &StackNetwork::Own, None);
                prop_assert!(stack.is_ok(), "{:?}", stack.err());
            }
            Err(Error::InvalidSpec(violations)) => {
                prop_assert!(!violations.0.is_empty());
                prop_assert!(!violations.to_string().is_empty());
                // The Swarm generator refuses it too, with an answer.
                prop_assert!(stack::to_yaml(&module, &StackNetwork::Own, None).is_err());
            }
            Err(Error::MissingObjectKey(_)) => {
                prop_assert!(module.metadata.name.is_none() || module.metadata.namespace.is_none());
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn module_files_mutated_give_an_answer(
        fixture in prop::sample::select(&["ha.yaml", "single.yaml", "invalid.yaml", "preferred-evicting.yaml", "data.yaml", "metadata.yaml"][..]),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
    ) {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, kind, byte) in edits {
            let at = at.index(bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => { bytes.remove(at); }
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        // Any answer is fine; a panic is not.
        let _ = manifests_yaml(&text, "default");
        let _ = stack_yaml(&text, "default", &StackNetwork::Own, None);
    }
}

/// The generator must reach both sides of validation, or the property above proves little.
#[test]
fn generated_specs_are_both_valid_and_invalid() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = module();
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..CASES {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let module: ZenkoMemcachedModule = serde_json::from_value(value).unwrap();
        match validate(&module) {
            Ok(_) => valid += 1,
            Err(_) => invalid += 1,
        }
    }
    println!("{valid} valid, {invalid} invalid specs of {CASES}");
    assert!(
        valid >= 20 && invalid >= 20,
        "{valid} valid, {invalid} invalid"
    );
}
