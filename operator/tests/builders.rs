//! Builder tests from YAML fixtures: what the operator would apply for a module.

mod common;

use common::{fixture, fixture_text};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use zenko_memcached_operator::build::{self, CONFIG_HASH_ANNOTATION, Children};
use zenko_memcached_operator::crd::ZenkoMemcachedModule;
use zenko_memcached_operator::validate::validate;

fn children(module: &ZenkoMemcachedModule) -> Children {
    let valid = validate(module).unwrap_or_else(|e| panic!("fixture should be valid: {e}"));
    build::build_initial(&valid)
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec
        .template
        .spec
        .as_ref()
        .unwrap_or_else(|| panic!("no pod spec"))
}

fn container<'a>(sts: &'a StatefulSet, name: &str) -> &'a Container {
    pod(sts)
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} container"))
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn node_affinity_requires_the_storage_label() {
    let single = children(&fixture("single.yaml"));
    let affinity = json(&pod(&single.stateful_set).affinity);
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        serde_json::json!([{"matchExpressions": [
            {"key": "io.zenko.type", "operator": "In", "values": ["storage"]}
        ]}])
    );
    let ha = children(&fixture("ha.yaml"));
    let affinity = json(&pod(&ha.stateful_set).affinity);
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0],
        serde_json::json!({"key": "example.com/role", "operator": "In", "values": ["zenko-storage"]})
    );
}

#[test]
fn tolerations_are_copied_from_the_spec() {
    let ha = children(&fixture("ha.yaml"));
    assert_eq!(
        json(&pod(&ha.stateful_set).tolerations),
        serde_json::json!([{"key": "dedicated", "operator": "Equal", "value": "storage", "effect": "NoSchedule"}])
    );
    assert!(
        pod(&children(&fixture("single.yaml")).stateful_set)
            .tolerations
            .is_none()
    );
}

#[test]
fn required_spread_puts_one_pod_per_node() {
    let ha = children(&fixture("ha.yaml"));
    let anti = json(&pod(&ha.stateful_set).affinity)["podAntiAffinity"].clone();
    let required = &anti["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(required["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        required["labelSelector"]["matchLabels"],
        serde_json::json!({
            "app.kubernetes.io/name": "zenko-memcached",
            "app.kubernetes.io/instance": "store",
            "app.kubernetes.io/component": "storage",
        })
    );
    assert!(
        anti.get("preferredDuringSchedulingIgnoredDuringExecution")
            .is_none()
    );
    assert!(pod(&ha.stateful_set).topology_spread_constraints.is_none());
}

#[test]
fn preferred_spread_uses_soft_anti_affinity_and_a_skew_constraint() {
    let c = children(&fixture("preferred-evicting.yaml"));
    let spec = pod(&c.stateful_set);
    let anti = json(&spec.affinity)["podAntiAffinity"].clone();
    assert!(
        anti.get("requiredDuringSchedulingIgnoredDuringExecution")
            .is_none()
    );
    assert_eq!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let spread = json(&spec.topology_spread_constraints);
    assert_eq!(spread[0]["maxSkew"], 1);
    assert_eq!(spread[0]["whenUnsatisfiable"], "ScheduleAnyway");
}

#[test]
fn memcached_flags_follow_the_spec() {
    let ha = children(&fixture("ha.yaml"));
    let args = container(&ha.stateful_set, "memcached")
        .args
        .clone()
        .unwrap_or_default();
    assert_eq!(
        args,
        [
            "-p",
            "11211",
            "-U",
            "0",
            "-m",
            "4096",
            "-I",
            "1024k",
            "-t",
            "8",
            "-c",
            "4096",
            "-M",
            "-e",
            "/warm/memory_file",
            "-o",
            "hashpower=20"
        ]
    );
    let evicting = children(&fixture("preferred-evicting.yaml"));
    let args = container(&evicting.stateful_set, "memcached")
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        !args.contains(&"-M".to_owned()),
        "evictions enabled: {args:?}"
    );
    assert!(
        !args.contains(&"-e".to_owned()),
        "warm restart disabled: {args:?}"
    );
    assert!(pod(&evicting.stateful_set).volumes.is_none());
}

#[test]
fn warm_restart_uses_a_per_module_host_path_prepared_by_the_admin() {
    let ha = children(&fixture("ha.yaml"));
    let spec = pod(&ha.stateful_set);
    let volumes = json(&spec.volumes);
    // `Directory`: a directory the admin did not prepare fails the mount visibly.
    assert_eq!(
        volumes,
        serde_json::json!([{"name": "warm", "hostPath": {"path": "/mnt/zenko/zenko/store", "type": "Directory"}}])
    );
    assert!(
        spec.init_containers.is_none(),
        "no root init container unless asked"
    );
    let memcached = container(&ha.stateful_set, "memcached");
    assert_eq!(json(&memcached.volume_mounts)[0]["mountPath"], "/warm");
    assert!(
        memcached.lifecycle.is_some(),
        "graceful SIGUSR1 stop keeps the memory file"
    );
}

#[test]
fn prepare_directory_adds_the_only_root_container_with_chown_alone() {
    let mut module = fixture("ha.yaml");
    module.spec.memcached.warm_restart.prepare_directory = true;
    let prepared = children(&module);
    let spec = pod(&prepared.stateful_set);
    assert_eq!(
        json(&spec.volumes)[0]["hostPath"]["type"],
        "DirectoryOrCreate"
    );
    let init = spec.init_containers.clone().unwrap_or_default();
    assert_eq!(init.len(), 1);
    assert_eq!(
        init[0].command,
        Some(vec!["chown".into(), "11211:11211".into(), "/warm".into()])
    );
    assert_eq!(
        json(&init[0].security_context),
        serde_json::json!({
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["CHOWN"], "drop": ["ALL"]},
        })
    );
}

#[test]
fn every_container_is_non_root_read_only_without_capabilities() {
    for name in ["single.yaml", "ha.yaml", "preferred-evicting.yaml"] {
        let built = children(&fixture(name));
        let spec = pod(&built.stateful_set);
        assert_eq!(
            json(&spec.security_context),
            serde_json::json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            "{name}: pod seccomp profile"
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(spec.init_containers.is_none(), "{name}: init containers");
        assert!(
            spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none(),
            "{name}: host namespaces"
        );
        for (which, uid) in [("memcached", 11211), ("sidecar", 65532)] {
            let context = &container(&built.stateful_set, which).security_context;
            assert_eq!(
                json(context),
                serde_json::json!({
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true,
                    "runAsUser": uid,
                    "runAsGroup": uid,
                    "capabilities": {"drop": ["ALL"]},
                }),
                "{name}: {which}"
            );
        }
    }
}

#[test]
fn ports_of_containers_and_services() {
    let ha = children(&fixture("ha.yaml"));
    let ports = |c: &Container| -> Vec<(String, i32)> {
        c.ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect()
    };
    assert_eq!(
        ports(container(&ha.stateful_set, "memcached")),
        [("memcache".into(), 11211)]
    );
    assert_eq!(
        ports(container(&ha.stateful_set, "sidecar")),
        [
            ("data".into(), 9991),
            ("metadata".into(), 9990),
            ("admin".into(), 9992)
        ]
    );
    let service_ports = |s: &Option<Service>| {
        json(
            &s.as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.ports.clone()),
        )
    };
    assert_eq!(
        service_ports(&ha.data_service),
        serde_json::json!([{"name": "data", "port": 19991, "targetPort": "data", "protocol": "TCP"}])
    );
    assert_eq!(
        service_ports(&ha.metadata_service),
        serde_json::json!([{"name": "metadata", "port": 19990, "targetPort": "metadata", "protocol": "TCP"}])
    );
    let data = json(&ha.data_service);
    assert_eq!(data["metadata"]["name"], "store-data");
    assert_eq!(data["spec"]["type"], "LoadBalancer");
    assert_eq!(
        data["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-internal"],
        "true"
    );
    let headless = json(&ha.headless_service);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        ha.stateful_set.spec.service_name.as_deref(),
        Some("store-headless")
    );
    // probes hit the sidecar's admin port and memcached's port
    let sidecar = json(container(&ha.stateful_set, "sidecar"));
    assert_eq!(
        sidecar["readinessProbe"]["httpGet"],
        serde_json::json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        sidecar["livenessProbe"]["httpGet"],
        serde_json::json!({"path": "/healthz", "port": "admin"})
    );
    let memcached = json(container(&ha.stateful_set, "memcached"));
    assert_eq!(memcached["readinessProbe"]["tcpSocket"]["port"], "memcache");
    // Its liveness is a real round trip (a frozen memcached still accepts connections).
    assert_eq!(
        memcached["livenessProbe"]["exec"]["command"],
        serde_json::json!(["/bin/sh", "-c", build::memcached_answers_command()])
    );
    assert_eq!(memcached["livenessProbe"]["timeoutSeconds"], 5);
}

#[test]
fn sidecar_reads_its_configmap_and_reaches_every_memcached() {
    let ha = children(&fixture("ha.yaml"));
    let data = ha.config_map.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("ZMM_MEMCACHED").map(String::as_str),
        Some(
            "store-0.store-headless.zenko.svc:11211,store-1.store-headless.zenko.svc:11211,\
             store-2.store-headless.zenko.svc:11211"
        )
    );
    assert_eq!(
        data.get("ZMM_CHUNK_SIZE").map(String::as_str),
        Some("1044480")
    );
    assert_eq!(
        data.get("ZMM_REPLICATION_GROUP_ID").map(String::as_str),
        Some("RG002")
    );
    assert_eq!(data.get("ZMM_LOG_LEVEL").map(String::as_str), Some("debug"));
    assert_eq!(data.get("ZMM_STARTUP_WAIT").map(String::as_str), Some("60"));
    let sidecar = json(container(&ha.stateful_set, "sidecar"));
    assert_eq!(
        sidecar["envFrom"][0]["configMapRef"]["name"],
        "store-sidecar"
    );
    assert_eq!(
        sidecar["image"],
        "registry.local/zenko-memcached-sidecar:1.2.3"
    );

    // two copies of each item by default with several servers
    assert_eq!(
        data.get("ZMM_REPLICATION_FACTOR").map(String::as_str),
        Some("2")
    );

    // A new single-pod module names its memcached as the others would, so that it can grow:
    // a Job can reach it by that name to move the data.
    let single = children(&fixture("single.yaml"));
    let data = single.config_map.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("ZMM_MEMCACHED").map(String::as_str),
        Some("store-0.store-headless.zenko.svc:11211")
    );
    assert_eq!(
        data.get("ZMM_REPLICATION_FACTOR").map(String::as_str),
        Some("1")
    );
}

#[test]
fn pdb_only_when_more_than_one_replica() {
    assert!(
        children(&fixture("single.yaml"))
            .pod_disruption_budget
            .is_none()
    );
    let ha = children(&fixture("ha.yaml"));
    let pdb = json(&ha.pod_disruption_budget);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "store"
    );
    let mut disabled = fixture("ha.yaml");
    disabled.spec.pod_disruption_budget.enabled = false;
    assert!(children(&disabled).pod_disruption_budget.is_none());
}

#[test]
fn every_object_has_the_owner_reference_and_standard_labels() {
    for file in ["single.yaml", "ha.yaml", "preferred-evicting.yaml"] {
        let module = fixture(file);
        let uid = module.metadata.uid.clone().unwrap_or_default();
        let objects = children(&module)
            .to_json_values()
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = if module.spec.replicas > 1 { 6 } else { 5 };
        assert_eq!(objects.len(), expected, "{file}");
        for o in objects {
            let what = format!("{file}: {} {}", o["kind"], o["metadata"]["name"]);
            assert_eq!(
                o["metadata"]["ownerReferences"],
                serde_json::json!([{
                    "apiVersion": "zenko.io/v1alpha1", "kind": "ZenkoMemcachedModule",
                    "name": module.metadata.name.clone().unwrap_or_default(), "uid": uid,
                    "controller": true,
                }]),
                "{what}"
            );
            let labels = &o["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/name"], "zenko-memcached",
                "{what}"
            );
            assert_eq!(
                labels["app.kubernetes.io/instance"], o["metadata"]["ownerReferences"][0]["name"],
                "{what}"
            );
            assert_eq!(
                labels["app.kubernetes.io/managed-by"], "zenko-memcached-operator",
                "{what}"
            );
            assert_eq!(labels["app.kubernetes.io/part-of"], "zenko", "{what}");
            assert!(labels["app.kubernetes.io/component"].is_string(), "{what}");
            assert_eq!(o["metadata"]["namespace"], "zenko", "{what}");
        }
    }
}

#[test]
fn a_spec_change_produces_a_new_pod_template() {
    let before = fixture("ha.yaml");
    let template = |m: &ZenkoMemcachedModule| children(m).stateful_set.spec.template;
    let hash = |m: &ZenkoMemcachedModule| {
        template(m)
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
            .unwrap_or_default()
    };
    // same spec, same template: applying it again does not roll the pods
    assert_eq!(template(&before), template(&before.clone()));

    // a memcached flag changes the container args
    let mut memory = before.clone();
    memory.spec.memcached.memory_limit_mib = Some(8192);
    assert_ne!(template(&memory), template(&before));
    assert_eq!(hash(&memory), hash(&before));

    // a sidecar setting only changes the ConfigMap, and its hash rolls the pods
    let mut log = before.clone();
    log.spec.sidecar.log_level = zenko_memcached_operator::crd::LogLevel::Trace;
    assert_ne!(hash(&log), hash(&before));
    assert_eq!(hash(&log).len(), 64);
    assert_ne!(template(&log), template(&before));
}

/// The environment the sidecar of a module gets from its ConfigMap.
fn sidecar_env(children: &Children) -> std::collections::BTreeMap<String, String> {
    children.config_map.data.clone().unwrap_or_default()
}

/// memcached's memory (-m), item size (-I) and threads (-t).
fn memcached_sizes(children: &Children) -> Vec<String> {
    let args = container(&children.stateful_set, "memcached")
        .args
        .clone()
        .unwrap_or_default();
    ["-m", "-I", "-t"]
        .iter()
        .map(|name| {
            let at = args.iter().position(|a| a == name);
            at.and_then(|at| args.get(at + 1))
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn container_ports(children: &Children) -> Vec<String> {
    container(&children.stateful_set, "sidecar")
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect()
}

#[test]
fn a_data_module_builds_only_the_data_side_sized_for_chunks() {
    let module = fixture("data.yaml");
    let data = children(&module);
    assert!(data.data_service.is_some());
    assert!(data.metadata_service.is_none(), "no metadata Service");
    assert_eq!(container_ports(&data), ["data", "admin"]);
    let env = sidecar_env(&data);
    assert_eq!(env.get("ZMM_ROLE").map(String::as_str), Some("data"));
    assert_eq!(
        env.get("ZMM_CHUNK_SIZE").map(String::as_str),
        Some("1048576")
    );
    assert!(env.contains_key("ZMM_DATA_ADDR"));
    for absent in ["ZMM_METADATA_ADDR", "ZMM_REPLICATION_GROUP_ID"] {
        assert!(!env.contains_key(absent), "{absent} in {env:?}");
    }
    assert_eq!(memcached_sizes(&data), ["4096", "2048k", "4"]);
    let valid = validate(&module).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = build::endpoints(&valid);
    assert_eq!(endpoints.data.as_deref(), Some("store-data.zenko.svc:9991"));
    assert_eq!(endpoints.metadata, None);
    let objects = data.to_json_values().unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<String> = objects
        .iter()
        .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
        .collect();
    assert_eq!(
        kinds,
        [
            "\"ConfigMap\" \"store-sidecar\"",
            "\"Service\" \"store-headless\"",
            "\"Service\" \"store-data\"",
            "\"StatefulSet\" \"store\""
        ]
    );
}

#[test]
fn a_metadata_module_builds_only_the_metadata_side_sized_for_small_items() {
    let module = fixture("metadata.yaml");
    let metadata = children(&module);
    assert!(metadata.data_service.is_none(), "no data Service");
    let service = json(&metadata.metadata_service);
    assert_eq!(service["metadata"]["name"], "store-metadata");
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["port"], 30990);
    assert_eq!(container_ports(&metadata), ["metadata", "admin"]);
    let env = sidecar_env(&metadata);
    assert_eq!(env.get("ZMM_ROLE").map(String::as_str), Some("metadata"));
    assert_eq!(
        env.get("ZMM_REPLICATION_GROUP_ID").map(String::as_str),
        Some("RG002")
    );
    for absent in ["ZMM_DATA_ADDR", "ZMM_CHUNK_SIZE"] {
        assert!(!env.contains_key(absent), "{absent} in {env:?}");
    }
    assert_eq!(memcached_sizes(&metadata), ["1024", "1024k", "8"]);
    let valid = validate(&module).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = build::endpoints(&valid);
    assert_eq!(endpoints.data, None);
    assert_eq!(
        endpoints.metadata.as_deref(),
        Some("store-metadata.zenko.svc:30990")
    );
}

#[test]
fn a_combined_module_keeps_both_sides_and_the_old_defaults() {
    let single = children(&fixture("single.yaml"));
    assert!(single.data_service.is_some() && single.metadata_service.is_some());
    assert_eq!(container_ports(&single), ["data", "metadata", "admin"]);
    let env = sidecar_env(&single);
    assert_eq!(env.get("ZMM_ROLE").map(String::as_str), Some("combined"));
    assert_eq!(
        env.get("ZMM_CHUNK_SIZE").map(String::as_str),
        Some("524288")
    );
    assert_eq!(
        env.get("ZMM_REPLICATION_GROUP_ID").map(String::as_str),
        Some("RG001")
    );
    assert_eq!(memcached_sizes(&single), ["1024", "2048k", "4"]);
}

#[test]
fn fields_that_do_not_apply_to_the_role_are_refused_by_name() {
    let text = fixture_text("not-for-role.yaml");
    let err = zenko_memcached_operator::manifests::manifests_yaml(&text, "default")
        .err()
        .unwrap_or_else(|| panic!("a metadata module with a chunk size accepted"))
        .to_string();
    assert!(
        err.contains("sidecar.chunkSizeBytes does not apply to a Metadata module")
            && err.contains("services.dataPort does not apply to a Metadata module"),
        "{err}"
    );
}

#[test]
fn module_files_are_parsed_strictly() {
    let text = fixture_text("misspelt.yaml");
    let manifests = zenko_memcached_operator::manifests::manifests_yaml(&text, "default");
    let stack = zenko_memcached_operator::manifests::stack_yaml(
        &text,
        "default",
        &zenko_memcached_operator::stack::StackNetwork::Own,
        None,
    );
    for answer in [manifests, stack] {
        let err = answer
            .err()
            .unwrap_or_else(|| panic!("misspelt fields accepted"))
            .to_string();
        assert!(
            err.contains("unknown field spec.rol, spec.memcached.memoryLimitMib"),
            "{err}"
        );
    }
    // What the issue saw: `role: Data` in a file is read, not dropped.
    let data = zenko_memcached_operator::manifests::parse_module(
        "metadata: {name: store}\nspec: {role: Data}\n",
        "default",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.spec.role, zenko_memcached_operator::crd::Role::Data);
    let unknown_role = zenko_memcached_operator::manifests::parse_module(
        "metadata: {name: store}\nspec: {role: Storage}\n",
        "default",
    );
    assert!(unknown_role.is_err());
    let other_kind = zenko_memcached_operator::manifests::parse_module(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: store}\nspec: {}\n",
        "default",
    );
    assert!(
        other_kind
            .err()
            .is_some_and(|e| e.to_string().contains("apiVersion is \"apps/v1\"")),
    );
}

#[test]
fn the_shipped_examples_are_valid_modules() {
    for example in [
        "module.yaml",
        "module-ha.yaml",
        "production-data.yaml",
        "production-metadata.yaml",
    ] {
        let path = format!("{}/../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let yaml = zenko_memcached_operator::manifests::manifests_yaml(&text, "default")
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(yaml.contains("kind: StatefulSet"), "{example}");
        // a module from a file has no uid: no dangling owner reference is printed
        assert!(!yaml.contains("ownerReferences"), "{example}");
    }
}

#[test]
fn manifests_refuse_an_invalid_module_with_the_reason() {
    let path = format!("{}/tests/fixtures/invalid.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let err = zenko_memcached_operator::manifests::manifests_yaml(&text, "default")
        .err()
        .unwrap_or_else(|| panic!("invalid module accepted"));
    assert!(err.to_string().contains("sidecar.chunkSizeBytes"), "{err}");
    let garbage = zenko_memcached_operator::manifests::manifests_yaml("spec: [", "default");
    assert!(garbage.is_err());
}

// ---- Placement: the Job, the status placement, the StatefulSet and ConfigMap during a change --

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use zenko_memcached_operator::crd::{ServerState, ZenkoMemcachedModuleStatus};
use zenko_memcached_operator::placement::{
    self, Health, JobState, JobView, Layout, Observed, Plan, PodView,
};

fn server(i: i32) -> String {
    format!("store-{i}.store-headless.zenko.svc:11211")
}

fn layout(count: i32, replication_factor: i32) -> Layout {
    Layout {
        servers: (0..count).map(server).collect(),
        replication_factor,
    }
}

/// Pods `store-0`… with both containers ready, or only memcached (`ready: false`).
fn pods(count: i32, ready: bool) -> Vec<PodView> {
    (0..count)
        .map(|i| PodView {
            name: format!("store-{i}"),
            uid: None,
            ready,
            memcached_ready: true,
            node: Some(format!("node-{i}")),
            node_lost_since: None,
        })
        .collect()
}

fn at(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_else(|e| panic!("{e}")))
}

/// The step the operator takes for `module` with these pods and this Job.
fn plan_of(module: &ZenkoMemcachedModule, pods: &[PodView], job: Option<&JobView>) -> Plan {
    let valid = validate(module).unwrap_or_else(|e| panic!("{e}"));
    placement::plan(
        &valid,
        Observed {
            recorded: module.status.as_ref().and_then(|s| s.placement.as_ref()),
            adopted: None,
            job,
            pods,
            now: &at(1_800_000_000),
        },
    )
}

fn with_placement(module: &ZenkoMemcachedModule, plan: &Plan) -> ZenkoMemcachedModule {
    let mut next = module.clone();
    next.status = Some(ZenkoMemcachedModuleStatus {
        placement: Some(plan.status.clone()),
        ..ZenkoMemcachedModuleStatus::default()
    });
    next
}

#[test]
fn the_placement_job_runs_the_change_command_in_the_sidecar_image() {
    let module = fixture("scaling-down.yaml");
    let valid = validate(&module).unwrap_or_else(|e| panic!("{e}"));
    let job = json(&build::placement_job(
        &valid,
        &layout(3, 2),
        &layout(2, 2),
        "store-placement-4",
    ));
    assert_eq!(job["metadata"]["name"], "store-placement-4");
    assert_eq!(
        job["metadata"]["annotations"]["zenko.io/module-generation"],
        "6"
    );
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["uid"],
        "6d1c2a4e-0000-4000-8000-000000000007"
    );
    // not selected by the module's Services or StatefulSet
    assert_eq!(
        job["metadata"]["labels"]["app.kubernetes.io/component"],
        "placement"
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
        "placement"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "placement");
    assert_eq!(
        container["image"],
        "registry.local/zenko-memcached-sidecar:1.2.3"
    );
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        container["args"],
        serde_json::json!([
            "placement",
            "change",
            "--memcached",
            format!("{},{},{}", server(0), server(1), server(2)),
            "--to",
            format!("{},{}", server(0), server(1)),
            "--replication-factor",
            "2",
        ])
    );
    assert_eq!(
        container["terminationMessagePolicy"],
        "FallbackToLogsOnError"
    );
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(job["spec"]["backoffLimit"], 2);
}

#[test]
fn during_a_change_the_statefulset_keeps_every_server_and_sidecars_get_the_target() {
    let module = fixture("scaling-down.yaml");
    let running = JobView {
        name: "store-placement-4".into(),
        args: placement::change_args(&layout(3, 2), &layout(2, 2)),
        module_generation: Some(6),
        state: JobState::Running { progress: None },
    };
    let plan = plan_of(&module, &pods(3, true), Some(&running));
    assert_eq!(plan.deployment.pods, 3);
    assert_eq!(plan.deployment.sidecar, layout(2, 2));
    assert_eq!(plan.run_job, None, "one Job at a time");
    assert!(
        matches!(plan.health, Health::Changing(_)),
        "{:?}",
        plan.health
    );
    let valid = validate(&module).unwrap_or_else(|e| panic!("{e}"));
    let built = build::build(&valid, &plan.deployment);
    assert_eq!(built.stateful_set.spec.replicas, Some(3));
    let env = sidecar_env(&built);
    assert_eq!(
        env.get("ZMM_MEMCACHED").cloned(),
        Some(format!("{},{}", server(0), server(1)))
    );
    let states: Vec<ServerState> = plan.status.servers.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            ServerState::InSync,
            ServerState::InSync,
            ServerState::Leaving
        ]
    );

    // succeeded: generation 4 on two servers, the StatefulSet shrinks, the Job goes
    let done = JobView {
        state: JobState::Succeeded,
        ..running
    };
    let plan = plan_of(&module, &pods(3, true), Some(&done));
    assert_eq!(plan.status.generation, 4);
    assert_eq!(plan.status.change, None);
    assert_eq!(plan.deployment.pods, 2);
    assert_eq!(
        plan.delete_finished_job.as_deref(),
        Some("store-placement-4")
    );
    assert_eq!(plan.status.summary, "2 servers, R2, in sync");
}

#[test]
fn a_change_of_servers_does_not_roll_the_pods() {
    let module = fixture("ha.yaml");
    let valid = validate(&module).unwrap_or_else(|e| panic!("{e}"));
    let three = build::build(&valid, &placement::Deployment::stable(layout(3, 2)));
    let four = build::build(&valid, &placement::Deployment::stable(layout(4, 2)));
    let three_factor_3 = build::build(&valid, &placement::Deployment::stable(layout(3, 3)));
    // the sidecars started from now on get the new list and factor …
    assert_ne!(three.config_map, four.config_map);
    assert_ne!(three.config_map, three_factor_3.config_map);
    // … but the pod template is the same: no memcached restarts
    for other in [&four, &three_factor_3] {
        assert_eq!(
            three.stateful_set.spec.template,
            other.stateful_set.spec.template
        );
    }
    assert_eq!(four.stateful_set.spec.replicas, Some(4));
}

#[test]
fn a_scale_up_waits_for_the_new_memcached_and_can_be_taken_back_until_its_job_runs() {
    let mut module = fixture("ha.yaml");
    module.spec.replicas = 2;
    let first = plan_of(&module, &pods(2, true), None);
    assert_eq!(first.status.generation, 1);
    assert_eq!(first.status.replication_factor, 2);

    module.spec.replicas = 3;
    let module = with_placement(&module, &first);
    // the third pod does not exist yet
    let waiting = plan_of(&module, &pods(2, true), None);
    assert_eq!(waiting.deployment.pods, 3);
    assert_eq!(waiting.run_job, None);
    let change = waiting
        .status
        .change
        .clone()
        .unwrap_or_else(|| panic!("no change"));
    assert_eq!(change.job, None);
    assert_eq!(
        change.message.as_deref(),
        Some(format!("waiting for the memcached of {} to be ready", server(2)).as_str())
    );
    let joining = &waiting.status.servers[2];
    assert!(joining.joining && joining.state == ServerState::CatchingUp);
    assert_eq!(waiting.status.summary, "2 servers, R2 -> 3 servers, R2");

    // taken back while the pod was still starting: nothing ran, nothing to undo
    let mut back = with_placement(&module, &waiting);
    back.spec.replicas = 2;
    let cancelled = plan_of(&back, &pods(3, false), None);
    assert_eq!(cancelled.status.change, None);
    assert_eq!(cancelled.deployment.pods, 2);
    assert_eq!(cancelled.status.generation, 1);

    // the new memcached is ready (its sidecar waits for the change): the Job runs
    let started = plan_of(
        &with_placement(&module, &waiting),
        &{
            let mut p = pods(2, true);
            p.extend(pods(3, false).into_iter().skip(2));
            p
        },
        None,
    );
    let (from, to, name) = started.run_job.clone().unwrap_or_else(|| panic!("no Job"));
    assert_eq!(
        (from, to, name.as_str()),
        (layout(2, 2), layout(3, 2), "store-placement-2")
    );
    assert_eq!(
        started
            .status
            .change
            .as_ref()
            .and_then(|c| c.job.as_deref()),
        Some("store-placement-2")
    );
}

#[test]
fn a_change_of_factor_alone_is_a_placement_change() {
    let mut module = fixture("ha.yaml");
    module.spec.replication_factor = Some(2);
    let first = plan_of(&module, &pods(3, true), None);
    let mut module = with_placement(&module, &first);
    module.spec.replication_factor = Some(3);
    let plan = plan_of(&module, &pods(3, true), None);
    let (from, to, _) = plan.run_job.unwrap_or_else(|| panic!("no Job"));
    assert_eq!((from, to), (layout(3, 2), layout(3, 3)));
    assert_eq!(plan.deployment.sidecar, layout(3, 3));
    // a module recorded with one copy keeps it when the spec leaves the factor unset, although
    // the default for three servers is two: a factor never changes by itself
    let mut single_copy = fixture("ha.yaml");
    single_copy.spec.replication_factor = Some(1);
    let recorded = plan_of(&single_copy, &pods(3, true), None);
    single_copy.spec.replication_factor = None;
    let kept = plan_of(
        &with_placement(&single_copy, &recorded),
        &pods(3, true),
        None,
    );
    assert_eq!(kept.status.change, None);
    assert_eq!(kept.status.replication_factor, 1);
    assert_eq!(kept.deployment.sidecar, layout(3, 1));
}

#[test]
fn a_backup_is_a_cronjob_exporting_to_its_claim() {
    let single = children(&fixture("single.yaml"));
    assert!(single.backup.is_none(), "no spec.backup, no CronJob");
    let module = fixture("backup.yaml");
    let cronjob = children(&module)
        .backup
        .unwrap_or_else(|| panic!("no CronJob for spec.backup"));
    let cronjob = json(&cronjob);
    assert_eq!(cronjob["metadata"]["name"], "store-backup");
    assert_eq!(
        cronjob["metadata"]["ownerReferences"][0]["uid"],
        "6d1c2a4e-0000-4000-8000-000000000001"
    );
    assert_eq!(cronjob["spec"]["schedule"], "0 3 * * *");
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], json(&module.spec.sidecar.image));
    // The one pod's memcached by its pod name (the export runs in a pod of its own).
    assert_eq!(
        container["args"],
        serde_json::json!([
            "export",
            "--memcached",
            "store-0.store-headless.zenko.svc:11211",
            "--out",
            "/backups",
            "--keep",
            "5",
            "--rate",
            "64MiB",
            "--progress",
            "lines"
        ])
    );
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/backups");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "zmm-backups"
    );
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["restartPolicy"], "Never");
}

#[test]
fn backup_fields_are_checked_and_misspelt_ones_named() {
    let text = fixture_text("backup.yaml");
    for (from, to, named) in [
        ("keep", "kep", "unknown field spec.backup.kep"),
        ("volumeClaim", "volumeClam", "missing field `volumeClaim`"),
    ] {
        let misspelt = text.replace(from, to);
        let err = zenko_memcached_operator::manifests::manifests_yaml(&misspelt, "default")
            .err()
            .unwrap_or_else(|| panic!("misspelt backup field {to} accepted"))
            .to_string();
        assert!(err.contains(named), "{err}");
    }
    let wrong = text
        .replace("\"0 3 * * *\"", "every night")
        .replace("zmm-backups", "Backups!")
        .replace("keep: 5", "keep: 0");
    let module = zenko_memcached_operator::manifests::parse_module(&wrong, "default")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = validate(&module)
        .err()
        .unwrap_or_else(|| panic!("a bad backup accepted"))
        .to_string();
    assert!(
        err.contains("backup.schedule \"every night\" is not a cron schedule"),
        "{err}"
    );
    assert!(err.contains("backup.volumeClaim \"Backups!\""), "{err}");
    assert!(
        err.contains("backup.keep (0) must be between 1 and 1000"),
        "{err}"
    );
}

#[test]
fn a_backups_export_reads_the_servers_the_sidecars_list() {
    let mut module = fixture("backup.yaml");
    module.spec.replicas = 3;
    let valid = validate(&module).unwrap_or_else(|e| panic!("{e}"));
    let export_servers = |deployment: &placement::Deployment| -> serde_json::Value {
        let built = build::build(&valid, deployment);
        let cronjob = json(
            &built
                .backup
                .as_ref()
                .unwrap_or_else(|| panic!("no CronJob for spec.backup")),
        );
        let args =
            &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(args[1], "--memcached");
        // the same list as the sidecars'
        assert_eq!(
            args[2].as_str(),
            sidecar_env(&built).get("ZMM_MEMCACHED").map(String::as_str)
        );
        args[2].clone()
    };
    // a module started as it is: its three pods
    assert_eq!(
        export_servers(&placement::Deployment::stable(placement::initial(&valid))),
        serde_json::json!(format!("{},{},{}", server(0), server(1), server(2)))
    );
    // during a scale from 3 to 4 (four pods run): the target list the sidecars are given
    let changing = placement::Deployment {
        sidecar: layout(4, 2),
        pods: 4,
    };
    assert_eq!(
        export_servers(&changing),
        serde_json::json!(layout(4, 2).server_list())
    );

    // a one-pod module of an earlier release lists its memcached as 127.0.0.1, which the
    // export's own pod cannot reach: its pod's name instead
    let mut single = fixture("backup.yaml");
    single.spec.replicas = 1;
    let valid = validate(&single).unwrap_or_else(|e| panic!("{e}"));
    let legacy = placement::Deployment::stable(Layout {
        servers: vec![placement::LOOPBACK_SERVER.to_owned()],
        replication_factor: 1,
    });
    let built = build::build(&valid, &legacy);
    assert_eq!(
        sidecar_env(&built).get("ZMM_MEMCACHED").map(String::as_str),
        Some(placement::LOOPBACK_SERVER)
    );
    let cronjob = json(&built.backup.unwrap_or_else(|| panic!("no CronJob")));
    assert_eq!(
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][2],
        server(0)
    );
}
