//! The CRD shipped in the chart must be what `crd` prints; regenerate it with
//! `cargo run -p zenko-memcached-operator -- crd > charts/zenko-memcached-operator/crds/zenkomemcachedmodules.zenko.io.yaml`.

#[test]
fn shipped_crd_matches_the_rust_types() {
    let path = format!(
        "{}/../charts/zenko-memcached-operator/crds/zenkomemcachedmodules.zenko.io.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let generated =
        zenko_memcached_operator::manifests::crd_yaml().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        shipped == generated,
        "{path} is stale; regenerate it with: cargo run -p zenko-memcached-operator -- crd > \
         charts/zenko-memcached-operator/crds/zenkomemcachedmodules.zenko.io.yaml"
    );
}

#[test]
fn crd_has_short_name_status_and_printer_columns() {
    let crd = zenko_memcached_operator::manifests::crd_yaml().unwrap_or_else(|e| panic!("{e}"));
    let crd: serde_json::Value = serde_saphyr::from_str(&crd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["zmm"])
    );
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Role",
            "Ready",
            "Replicas",
            "Phase",
            "Placement",
            "Data",
            "Metadata",
            "Age"
        ]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["minimum"], 1.0);
    assert_eq!(spec["replicas"]["default"], 1);
    assert_eq!(
        spec["placement"]["properties"]["spread"]["enum"],
        serde_json::json!(["Required", "Preferred"])
    );
    assert!(spec["memcached"]["properties"]["evictions"]["description"].is_string());
    // no schema default for the factor: unset means "the recorded one" (see crd.rs)
    assert!(spec["replicationFactor"]["default"].is_null());
    assert_eq!(spec["replicationFactor"]["minimum"], 1.0);
    assert_eq!(
        spec["placement"]["properties"]["lostNodeGraceSeconds"]["default"],
        30
    );
    // spec.backup (scheduled exports) next to the placement's fields
    let backup = &spec["backup"]["properties"];
    for field in ["schedule", "volumeClaim", "keep", "rate"] {
        assert!(backup[field].is_object(), "spec.backup.{field}");
    }
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert!(status["placement"].is_object());
}

#[test]
fn crd_schema_takes_a_role_from_three_and_keeps_it() {
    let crd = zenko_memcached_operator::manifests::crd_yaml().unwrap_or_else(|e| panic!("{e}"));
    let crd: serde_json::Value = serde_saphyr::from_str(&crd).unwrap_or_else(|e| panic!("{e}"));
    let version = &crd["spec"]["versions"][0];
    let root = &version["schema"]["openAPIV3Schema"];
    let role = &root["properties"]["spec"]["properties"]["role"];
    assert_eq!(
        role["enum"],
        serde_json::json!(["Combined", "Data", "Metadata"])
    );
    assert_eq!(role["default"], "Combined");
    assert_eq!(role["type"], "string");
    // The API server refuses a change of role (a CEL transition rule on the object).
    let rules = root["x-kubernetes-validations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == "self.spec.role == oldSelf.spec.role"),
        "{rules:?}"
    );
    // Sizes that depend on the role have no schema default: the operator fills them in.
    let memcached = &root["properties"]["spec"]["properties"]["memcached"]["properties"];
    for field in ["memoryLimitMiB", "maxItemSizeKiB", "threads"] {
        assert!(memcached[field]["default"].is_null(), "{field}");
        assert!(memcached[field]["minimum"].is_number(), "{field}");
    }
    let column = version["additionalPrinterColumns"][0].clone();
    assert_eq!(column["jsonPath"], ".spec.role");
}
