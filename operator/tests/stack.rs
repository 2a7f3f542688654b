//! Swarm stack generator tests: golden files, the top-level docker-stack.yml, the docker client's
//! schema check, the CLI's refusal of invalid modules, and the derivations shared with Kubernetes.
//!
//! `UPDATE_GOLDEN=1 cargo test -p zenko-memcached-operator --test stack` rewrites the golden files
//! and the top-level docker-stack.yml after an intended change; review the diff before committing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture;
use zenko_memcached_operator::build::{self, memcached_args};
use zenko_memcached_operator::manifests::{stack_files_yaml, stack_yaml};
use zenko_memcached_operator::stack::cloudserver::{self, CloudServer};
use zenko_memcached_operator::stack::compose::{Capability, ComposeFile, Network};
use zenko_memcached_operator::stack::{self, SIDECAR_BINARY, StackNetwork, StackOptions};
use zenko_memcached_operator::validate::validate;

const OPERATOR: &str = env!("CARGO_BIN_EXE_zenko-memcached-operator");

/// Inputs (relative to tests/fixtures), the golden file each must produce (in fixtures/stack), and
/// the shared network it joins (`None`: its own).
const GOLDEN: &[(&str, &str, Option<&str>)] = &[
    ("single.yaml", "single.stack.yml", None),
    ("ha.yaml", "ha.stack.yml", None),
    (
        "preferred-evicting.yaml",
        "preferred-evicting.stack.yml",
        None,
    ),
    ("stack/published.yaml", "published.stack.yml", None),
    ("data.yaml", "data.stack.yml", None),
    ("metadata.yaml", "metadata.stack.yml", None),
    (
        "../../../examples/production-data.yaml",
        "production-data.stack.yml",
        Some(SHARED_NETWORK),
    ),
    (
        "../../../examples/production-metadata.yaml",
        "production-metadata.stack.yml",
        Some(SHARED_NETWORK),
    ),
];

/// Stacks with CloudServer in front: the module files (from the repository's top) and the
/// file each must produce (from the repository's top): the combined example, and the
/// production pair in one stack, the example next to docker-stack.yml.
const WITH_CLOUDSERVER: &[(&[&str], &str)] = &[
    (
        &["examples/module.yaml"],
        "operator/tests/fixtures/stack/module-s3.stack.yml",
    ),
    (
        &[
            "examples/production-data.yaml",
            "examples/production-metadata.yaml",
        ],
        "docker-stack-production.yml",
    ),
];

/// The network of the production layout (docs/production.md): both stacks and CloudServer join it.
const SHARED_NETWORK: &str = "zenko-storage";

fn stack_network(shared: Option<&str>) -> StackNetwork {
    match shared {
        Some(name) => StackNetwork::Shared(name.parse().unwrap_or_else(|e| panic!("{e}"))),
        None => StackNetwork::Own,
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// What the `stack` command prints for a file (the CLI's default namespace included).
fn generate(input: &Path) -> String {
    generate_on(input, &StackNetwork::Own)
}

fn generate_on(input: &Path, network: &StackNetwork) -> String {
    stack_yaml(&read(input), "default", network, None)
        .unwrap_or_else(|e| panic!("{}: {e}", input.display()))
}

/// Compares `actual` with the file at `expected`, or rewrites it under UPDATE_GOLDEN=1.
fn check_golden(actual: &str, expected: &Path) -> Option<String> {
    if updating() {
        std::fs::write(expected, actual).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
        return None;
    }
    let wanted = std::fs::read_to_string(expected).unwrap_or_default();
    (wanted != actual).then(|| expected.display().to_string())
}

fn golden_paths() -> Vec<(PathBuf, PathBuf, StackNetwork)> {
    GOLDEN
        .iter()
        .map(|(input, golden, shared)| {
            (
                fixtures().join(input),
                fixtures().join("stack").join(golden),
                stack_network(*shared),
            )
        })
        .collect()
}

#[test]
fn golden_files_match() {
    let mut stale: Vec<String> = golden_paths()
        .iter()
        .filter_map(|(input, golden, network)| check_golden(&generate_on(input, network), golden))
        .collect();
    // The stacks with CloudServer, the example next to docker-stack.yml among them.
    stale.extend(WITH_CLOUDSERVER.iter().filter_map(|(inputs, file)| {
        check_golden(&generate_with_cloudserver(inputs), &repo_root().join(file))
    }));
    assert!(
        stale.is_empty(),
        "the generator's output differs from {stale:?}; if the change is intended, run \
         UPDATE_GOLDEN=1 cargo test -p zenko-memcached-operator --test stack and review the diff"
    );
}

#[test]
fn top_level_docker_stack_is_the_example_modules() {
    let actual = generate(&repo_root().join("examples/module.yaml"));
    let stale = check_golden(&actual, &repo_root().join("docker-stack.yml"));
    assert!(
        stale.is_none(),
        "docker-stack.yml is not the stack of examples/module.yaml; regenerate it with \
         cargo run -p zenko-memcached-operator -- stack -f examples/module.yaml -o docker-stack.yml"
    );
}

fn with_cloudserver() -> StackOptions {
    StackOptions {
        network: StackNetwork::Own,
        current_servers: None,
        cloudserver: Some(CloudServer {
            image: cloudserver::DEFAULT_IMAGE.to_owned(),
        }),
    }
}

/// The stack of module files given from the repository's top, with CloudServer.
fn generate_with_cloudserver(inputs: &[&str]) -> String {
    let texts: Vec<String> = inputs.iter().map(|i| read(&repo_root().join(i))).collect();
    stack_files_yaml(&texts, "default", &with_cloudserver())
        .unwrap_or_else(|e| panic!("{inputs:?}: {e}"))
}

fn build_with_cloudserver(inputs: &[&str]) -> ComposeFile {
    let modules: Vec<_> = inputs
        .iter()
        .map(|i| {
            zenko_memcached_operator::manifests::parse_module(
                &read(&repo_root().join(i)),
                "default",
            )
            .unwrap_or_else(|e| panic!("{i}: {e}"))
        })
        .collect();
    stack::build_stack(&modules, &with_cloudserver()).unwrap_or_else(|e| panic!("{inputs:?}: {e}"))
}

#[test]
fn cloudserver_reaches_the_servers_of_the_modules_on_the_stacks_network() {
    let combined = build_with_cloudserver(WITH_CLOUDSERVER[0].0);
    let env = &combined.services["s3"].environment;
    assert_eq!(env["DATA_HOST"], "zenko-storage-data");
    assert_eq!(env["METADATA_HOST"], "zenko-storage-metadata");
    assert_eq!(
        sidecar_aliases(&combined),
        [env["DATA_HOST"].clone(), env["METADATA_HOST"].clone()]
    );

    let pair = build_with_cloudserver(WITH_CLOUDSERVER[1].0);
    assert_eq!(
        pair.services.keys().collect::<Vec<_>>(),
        [
            "data-memcached-0",
            "data-memcached-1",
            "data-memcached-2",
            "data-sidecar",
            "metadata-memcached-0",
            "metadata-memcached-1",
            "metadata-memcached-2",
            "metadata-sidecar",
            "s3"
        ]
    );
    let s3 = &pair.services["s3"];
    // Each host is the alias of the sidecar serving it, and the servers listen on the ports
    // CloudServer's config.json keeps (the entrypoint sets hosts only).
    assert_eq!(
        pair.services["data-sidecar"].networks["storage"].aliases,
        [s3.environment["DATA_HOST"].clone()]
    );
    assert_eq!(
        pair.services["metadata-sidecar"].networks["storage"].aliases,
        [s3.environment["METADATA_HOST"].clone()]
    );
    assert_eq!(
        pair.services["data-sidecar"].environment["ZMM_ROLE"],
        "data"
    );
    assert_eq!(s3.environment["S3DATA"], "file");
    assert_eq!(s3.environment["S3METADATA"], "file");
    assert_eq!(s3.environment["ENDPOINT"], "zenko-data-s3");
    assert_eq!(s3.networks["storage"].aliases, ["zenko-data-s3"]);
    // The stack is named after its first module; the keys come from a secret made beforehand.
    assert_eq!(
        pair.networks["storage"],
        Network::Created {
            driver: zenko_memcached_operator::stack::compose::NetworkDriver::Overlay,
            attachable: true,
            name: "zenko-data".to_owned(),
        }
    );
    assert_eq!(
        pair.secrets["s3-credentials"].name,
        "zenko-data-s3-credentials"
    );
    assert_eq!(s3.secrets[0].target, "s3-credentials");
    assert_eq!(
        s3.ports
            .iter()
            .map(|p| (p.target, p.published))
            .collect::<Vec<_>>(),
        [(8000, 8000)]
    );
    // CloudServer needs no storage node, and keeps no capability.
    assert!(s3.deploy.placement.constraints.is_empty());
    assert_eq!(s3.cap_drop, [Capability::All]);
}

#[test]
fn a_stack_refuses_modules_that_are_not_one_module_or_the_pair() {
    let out = |args: &[&str]| {
        Command::new(OPERATOR)
            .current_dir(repo_root())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{OPERATOR}: {e}"))
    };
    let two = out(&[
        "stack",
        "-f",
        "examples/module.yaml",
        "-f",
        "examples/module-ha.yaml",
    ]);
    assert!(!two.status.success());
    let stderr = String::from_utf8_lossy(&two.stderr);
    assert!(
        stderr.contains("one module, or the production pair") && stderr.contains("Combined"),
        "{stderr}"
    );
    // CloudServer needs both servers: a Data module alone has no metadata to give it.
    let half = out(&[
        "stack",
        "--with-cloudserver",
        "-f",
        "examples/production-data.yaml",
    ]);
    assert!(!half.status.success());
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("one serving metadata"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
    // The command writes what the test compares with the example.
    let pair = out(&[
        "stack",
        "--with-cloudserver",
        "-f",
        "examples/production-data.yaml",
        "-f",
        "examples/production-metadata.yaml",
    ]);
    assert!(
        pair.status.success(),
        "{}",
        String::from_utf8_lossy(&pair.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&pair.stdout),
        read(&repo_root().join("docker-stack-production.yml"))
    );
}

#[test]
fn docker_accepts_every_generated_stack() {
    let mut files: Vec<PathBuf> = golden_paths().into_iter().map(|(_, g, _)| g).collect();
    files.push(repo_root().join("docker-stack.yml"));
    files.extend(
        WITH_CLOUDSERVER
            .iter()
            .map(|(_, file)| repo_root().join(file)),
    );
    for file in files {
        let output = Command::new("docker")
            .args(["stack", "config", "-c"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the docker client ({e}); it checks the Compose schema without a \
                     daemon: install it (scripts/test does when it is missing)"
                )
            });
        assert!(
            output.status.success(),
            "docker stack config refused {} (a client older than Docker 23 has no `stack config`):\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn run_stack(input: &Path, output: &Path) -> std::process::Output {
    Command::new(OPERATOR)
        .args(["stack", "-f"])
        .arg(input)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("{OPERATOR}: {e}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn invalid_module_gives_one_clear_error_and_writes_nothing() {
    let invalid = fixtures().join("invalid.yaml");
    let fresh = scratch("fresh.yml");
    let out = run_stack(&invalid, &fresh);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("invalid spec: sidecar.chunkSizeBytes (1048576)")
            && stderr.contains("set memcached.maxItemSizeKiB to at least 1028"),
        "{stderr}"
    );
    assert!(
        !fresh.exists(),
        "an invalid module must not create the output"
    );

    let existing = scratch("existing.yml");
    std::fs::write(&existing, "keep me\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(!run_stack(&invalid, &existing).status.success());
    assert_eq!(
        read(&existing),
        "keep me\n",
        "an invalid module must not truncate the output"
    );
}

#[test]
fn valid_module_is_written_to_the_output_file() {
    let (input, golden, _) = &golden_paths()[1];
    let written = scratch("ha.yml");
    let out = run_stack(input, &written);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(read(&written), read(golden));
}

fn compose(name: &str) -> ComposeFile {
    stack::build(&fixture(name), &StackNetwork::Own, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_service_is_pinned_to_storage_nodes() {
    let single = compose("single.yaml");
    for (name, service) in &single.services {
        assert_eq!(
            service.deploy.placement.constraints,
            vec!["node.labels.io.zenko.type == storage".to_owned()],
            "{name}"
        );
    }
    let ha = compose("ha.yaml");
    assert_eq!(
        ha.services.keys().collect::<Vec<_>>(),
        ["memcached-0", "memcached-1", "memcached-2", "sidecar"]
    );
    // with several replicas each memcached is pinned to its own slot node: one per node, and
    // back to the node holding its memory file after a restart
    assert_eq!(
        ha.services["memcached-2"].deploy.placement.constraints,
        [
            "node.labels.example.com/role == zenko-storage",
            "node.labels.io.zenko.slot.store == 2"
        ]
    );
    let sidecar = &ha.services["sidecar"].deploy;
    assert_eq!(sidecar.replicas, 3);
    assert_eq!(sidecar.placement.max_replicas_per_node, Some(1));
    // Preferred spreading (no warm restart) may share nodes: no slots, no per-node maximum
    let preferred = compose("preferred-evicting.yaml");
    assert_eq!(
        preferred.services["memcached-1"]
            .deploy
            .placement
            .constraints
            .len(),
        1
    );
    assert_eq!(
        preferred.services["sidecar"]
            .deploy
            .placement
            .max_replicas_per_node,
        None
    );
}

#[test]
fn memcached_and_sidecar_settings_are_the_kubernetes_ones() {
    for name in [
        "single.yaml",
        "ha.yaml",
        "preferred-evicting.yaml",
        "data.yaml",
        "metadata.yaml",
    ] {
        let module = fixture(name);
        let valid = validate(&module).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kube = build::build_initial(&valid);
        let stack = compose(name);
        assert_eq!(
            stack.services["memcached-0"].command,
            memcached_args(&valid),
            "{name}"
        );
        // the environment is the ConfigMap's but for how the sidecar reaches memcached
        let mut kube_env = kube.config_map.data.clone().unwrap_or_default();
        let mut swarm_env = stack.services["sidecar"].environment.clone();
        let servers = swarm_env.remove("ZMM_MEMCACHED").unwrap_or_default();
        kube_env.remove("ZMM_MEMCACHED");
        assert_eq!(swarm_env, kube_env, "{name}");
        let module_name = module.metadata.name.as_deref().unwrap_or_default();
        let expected: Vec<String> = (0..module.spec.replicas)
            .map(|i| format!("{module_name}-memcached-{i}:11211"))
            .collect();
        assert_eq!(servers, expected.join(","), "{name}");
    }
}

#[test]
fn warm_restart_stops_memcached_with_sigusr1_on_a_node_directory() {
    let yaml = generate(&fixtures().join("ha.yaml"));
    assert!(yaml.contains("stop_signal: SIGUSR1"), "{yaml}");
    assert!(
        yaml.contains("source: /mnt/zenko/zenko/store\n      target: /warm"),
        "{yaml}"
    );
    let cold = generate(&fixtures().join("preferred-evicting.yaml"));
    assert!(
        !cold.contains("stop_signal") && !cold.contains("/warm"),
        "{cold}"
    );
    assert!(
        !cold.contains("\n    - -M\n"),
        "evictions allowed: no -M\n{cold}"
    );
}

#[test]
fn ports_are_published_only_outside_cluster_ip() {
    assert!(compose("single.yaml").services["sidecar"].ports.is_empty());
    let yaml = generate(&fixtures().join("stack/published.yaml"));
    assert!(
        yaml.contains(
            "- target: 9991\n      published: 30991\n      protocol: tcp\n      mode: ingress"
        ),
        "{yaml}"
    );
    assert!(yaml.contains("published: 30990"), "{yaml}");
}

#[test]
fn sidecar_healthcheck_runs_the_binary_the_image_installs() {
    let dockerfile = read(&repo_root().join("Dockerfile"));
    let sidecar_target = dockerfile
        .split("AS sidecar\n")
        .nth(1)
        .and_then(|rest| rest.split("\nFROM ").next())
        .unwrap_or_else(|| panic!("the Dockerfile has no sidecar target"));
    assert!(
        sidecar_target.contains(&format!("ENTRYPOINT [\"{SIDECAR_BINARY}\"]")),
        "the Dockerfile's sidecar target must run {SIDECAR_BINARY}, which the stack's health check runs"
    );
}

#[test]
fn every_service_runs_unprivileged_on_a_read_only_root() {
    let dockerfile = read(&repo_root().join("Dockerfile"));
    for name in ["single.yaml", "ha.yaml", "preferred-evicting.yaml"] {
        let file = compose(name);
        for (service, spec) in &file.services {
            assert!(spec.read_only, "{name} {service}: read_only");
            assert_eq!(
                spec.cap_drop,
                [Capability::All],
                "{name} {service}: cap_drop ALL"
            );
            let user = spec.user.as_deref().unwrap_or("0:0");
            let (uid, gid) = user.split_once(':').unwrap_or(("0", "0"));
            assert!(
                uid.parse::<u32>().is_ok_and(|uid| uid != 0) && gid.parse::<u32>().is_ok(),
                "{name} {service}: numeric non-root user, got {:?}",
                spec.user
            );
        }
        assert_eq!(
            file.services["memcached-0"].user,
            Some(format!("{}:{}", build::MEMCACHED_UID, build::MEMCACHED_UID))
        );
        // The sidecar runs as the user its image declares, so files it could write match.
        assert!(
            dockerfile.contains(&format!(
                "USER {}\n",
                file.services["sidecar"].user.as_deref().unwrap_or_default()
            )),
            "{name}: the sidecar's user must be the Dockerfile's USER"
        );
    }
}

fn sidecar_aliases(file: &ComposeFile) -> Vec<String> {
    file.services["sidecar"].networks["storage"].aliases.clone()
}

fn published(file: &ComposeFile) -> Vec<(u16, u16)> {
    file.services["sidecar"]
        .ports
        .iter()
        .map(|p| (p.target, p.published))
        .collect()
}

#[test]
fn each_role_gets_only_its_services_aliases_and_ports() {
    assert_eq!(
        sidecar_aliases(&compose("single.yaml")),
        ["store-data", "store-metadata"]
    );
    let data = compose("data.yaml");
    assert_eq!(sidecar_aliases(&data), ["store-data"]);
    let env = &data.services["sidecar"].environment;
    assert_eq!(env.get("ZMM_ROLE").map(String::as_str), Some("data"));
    assert!(!env.contains_key("ZMM_METADATA_ADDR"), "{env:?}");

    let metadata = compose("metadata.yaml");
    assert_eq!(sidecar_aliases(&metadata), ["store-metadata"]);
    assert_eq!(
        metadata.services["sidecar"].environment.get("ZMM_ROLE"),
        Some(&"metadata".to_owned())
    );
    // NodePort publishes the metadata port alone: the data port stays free for a data stack.
    assert_eq!(published(&metadata), [(9990, 30990)]);
    assert_eq!(
        published(&compose("stack/published.yaml")),
        [(9991, 30991), (9990, 30990)]
    );
}

#[test]
fn the_production_stacks_deploy_side_by_side_on_one_shared_network() {
    let network = stack_network(Some(SHARED_NETWORK));
    let build = |example: &str| {
        let text = read(&repo_root().join("examples").join(example));
        let module = zenko_memcached_operator::manifests::parse_module(&text, "default")
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        stack::build(&module, &network, None).unwrap_or_else(|e| panic!("{example}: {e}"))
    };
    let data = build("production-data.yaml");
    let metadata = build("production-metadata.yaml");
    for file in [&data, &metadata] {
        assert_eq!(
            file.networks["storage"],
            Network::External {
                external: zenko_memcached_operator::stack::compose::IsExternal,
                name: SHARED_NETWORK.to_owned(),
            }
        );
    }
    assert_eq!(sidecar_aliases(&data), ["zenko-data-data"]);
    assert_eq!(sidecar_aliases(&metadata), ["zenko-metadata-metadata"]);
    // On one network every name a service answers to must be unique across the two stacks,
    // and two stacks on the same nodes must not share a memory file, a slot label or a port.
    let mut names = Vec::new();
    let mut ports = Vec::new();
    let mut dirs = Vec::new();
    let mut slots = Vec::new();
    for file in [&data, &metadata] {
        // Every memcached of a module binds the module's directory, each on its own node.
        let mut module_dirs = std::collections::BTreeSet::new();
        for service in file.services.values() {
            names.extend(service.networks["storage"].aliases.iter().cloned());
            ports.extend(service.ports.iter().map(|p| p.published.to_string()));
            module_dirs.extend(service.volumes.iter().map(|m| m.source.clone()));
            slots.extend(
                service
                    .deploy
                    .placement
                    .constraints
                    .iter()
                    .filter(|c| c.contains("io.zenko.slot"))
                    .cloned(),
            );
        }
        assert_eq!(module_dirs.len(), 1, "{module_dirs:?}");
        dirs.extend(module_dirs);
    }
    for list in [&names, &ports, &dirs] {
        let mut unique = list.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            list.len(),
            "shared between the stacks: {list:?}"
        );
    }
    assert!(
        slots.iter().any(|c| c.contains("slot.zenko-data "))
            && slots.iter().any(|c| c.contains("slot.zenko-metadata ")),
        "{slots:?}"
    );
    // The stack command writes the same with --network.
    let out = scratch("production-data.yml");
    let status = Command::new(OPERATOR)
        .args(["stack", "--network", SHARED_NETWORK, "-f"])
        .arg(repo_root().join("examples/production-data.yaml"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{OPERATOR}: {e}"));
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        read(&out),
        read(&fixtures().join("stack/production-data.stack.yml"))
    );
    let bad = Command::new(OPERATOR)
        .args(["stack", "--network", "bad/name", "-f"])
        .arg(repo_root().join("examples/production-data.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{OPERATOR}: {e}"));
    assert!(!bad.status.success());
}

#[test]
fn during_a_scale_up_the_stack_adds_memcached_and_the_sidecars_keep_the_current_list() {
    let mut module = fixture("ha.yaml");
    module.spec.replicas = 4;
    // the store is on three servers until `placement change` has moved the data
    let during =
        stack::build(&module, &StackNetwork::Own, Some(3)).unwrap_or_else(|e| panic!("{e}"));
    assert!(during.services.contains_key("memcached-3"));
    let env = &during.services["sidecar"].environment;
    assert_eq!(
        env.get("ZMM_MEMCACHED").map(String::as_str),
        Some("store-memcached-0:11211,store-memcached-1:11211,store-memcached-2:11211")
    );
    assert_eq!(
        env.get("ZMM_REPLICATION_FACTOR").map(String::as_str),
        Some("2")
    );
    // afterwards, the sidecars get the four servers
    let after = stack::build(&module, &StackNetwork::Own, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        after.services["sidecar"].environment["ZMM_MEMCACHED"].contains("store-memcached-3:11211")
    );
    // a scale-down keeps the leaving server until the data has moved: the old stack does that,
    // and so does the new one given the current count
    module.spec.replicas = 2;
    let down = stack::build(&module, &StackNetwork::Own, Some(3)).unwrap_or_else(|e| panic!("{e}"));
    assert!(down.services.contains_key("memcached-2"));
    assert_eq!(
        down.services["sidecar"].environment["ZMM_MEMCACHED"],
        "store-memcached-0:11211,store-memcached-1:11211,store-memcached-2:11211"
    );
}
