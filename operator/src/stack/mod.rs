//! The Swarm stack generator: the same `ZenkoMemcachedModule` spec, as a `docker-stack.yml`.
//!
//! A pure function of the module, like the Kubernetes builders, and built from the same pieces
//! (validation, memcached's command line, the sidecar's environment, resources, warm restart
//! path), so that a module behaves the same on both orchestrators.
//!
//! Swarm has no StatefulSet: a task of a replicated service has no stable DNS name, yet every
//! sidecar must list the same memcached servers in the same order (it routes keys by rendezvous
//! hashing over that list). So each memcached replica is its own one-task service,
//! `memcached-<i>`, reachable as `<module>-memcached-<i>`; with several replicas and Required
//! spreading, each is pinned to the storage node labelled `io.zenko.slot.<module>=<i>`, which
//! keeps one memcached per node and brings each back to the node holding its memory file.
//! The sidecars are one replicated service, at most one per node, answering on the network to
//! the names of the Kubernetes Services of the module's role.
//!
//! A stack creates its own network, named after the module, or joins a shared one created
//! beforehand: the production layout's data and metadata stacks share one network with
//! CloudServer.

pub mod compose;
mod resources;

use std::collections::BTreeMap;

use compose::{
    COMPOSE_VERSION, Capability, ComposeFile, Deploy, DeployMode, EndpointMode, FailureAction,
    HealthTest, Healthcheck, IsExternal, Mount, MountType, Network, NetworkDriver, Placement, Port,
    PortMode, Protocol, RestartCondition, RestartPolicy, Seconds, Service, ServiceNetwork, Signal,
    UpdateConfig, UpdateOrder,
};

use crate::build::labels::{self, Component};
use crate::build::{
    ADMIN_PORT, DATA_PORT, MEMCACHED_PORT, MEMCACHED_UID, METADATA_PORT, SIDECAR_UID,
    STARTUP_WAIT_SECONDS, TERMINATION_GRACE_SECONDS, WARM_MOUNT, memcached_answers_command,
    memcached_args, memcached_resources, metrics_annotations, names, sidecar_env,
    sidecar_resources, warm_host_path,
};
use crate::crd::{ServiceType, SpreadPolicy, ZenkoMemcachedModule};
use crate::error::{Error, Result};
use crate::placement::{Layout, default_replication_factor};
use crate::validate::{Validated, Violation, Violations, validate};

/// Where the sidecar image (the `sidecar` target of the top-level Dockerfile) installs its binary.
pub const SIDECAR_BINARY: &str = "/usr/local/bin/zenko-memcached-sidecar";

/// The stack's one network key; its real name is the module's name.
const NETWORK: &str = "storage";
const SIDECAR_SERVICE: &str = "sidecar";

/// The Compose service key of memcached replica `slot`.
pub fn memcached_service(slot: u32) -> String {
    format!("memcached-{slot}")
}

/// The DNS name through which sidecars reach memcached replica `slot`, unique across the stacks
/// that share the network.
pub fn memcached_host(module: &str, slot: u32) -> String {
    format!("{module}-memcached-{slot}")
}

/// The node label that pins memcached replica `<i>` of a module with several replicas.
pub fn slot_label(module: &str) -> String {
    format!("io.zenko.slot.{module}")
}

/// The overlay network a stack's services join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackNetwork {
    /// Created by the stack and named after the module.
    Own,
    /// Created beforehand with this name and joined by several stacks: the data and metadata
    /// modules of the production layout, and CloudServer.
    Shared(NetworkName),
}

/// A Docker network name: a letter or digit, then letters, digits, `_`, `.` or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkName(String);

impl std::str::FromStr for NetworkName {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(NetworkName(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a Docker network name (a letter or digit, then letters, digits, \
                 '_', '.' or '-')"
            ))
        }
    }
}

impl NetworkName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The stack of a module, or why the module cannot be deployed.
///
/// `current_servers`: during a change of replicas, how many memcached servers the store is on
/// now. The stack then runs the memcached services of both the current and the new count, and
/// gives the sidecars the current list, so that a new memcached exists before
/// `zenko-memcached-sidecar placement change` moves the data onto it and no sidecar restarts
/// with a list the store does not have yet (it would refuse to serve). Deploying the stack
/// without it afterwards gives the sidecars the new list (see the README, "Scaling a stack").
pub fn build(
    module: &ZenkoMemcachedModule,
    network: &StackNetwork,
    current_servers: Option<u32>,
) -> Result<ComposeFile> {
    let valid = validate(module)?;
    let replicas = u32::try_from(valid.module.spec.replicas).unwrap_or(1);
    let listed = current_servers.unwrap_or(replicas);
    let mut services = BTreeMap::new();
    for slot in 0..replicas.max(listed) {
        services.insert(memcached_service(slot), memcached(&valid, slot)?);
    }
    services.insert(
        SIDECAR_SERVICE.to_owned(),
        sidecar(&valid, replicas, listed)?,
    );
    Ok(ComposeFile {
        version: COMPOSE_VERSION.to_owned(),
        services,
        networks: BTreeMap::from([(
            NETWORK.to_owned(),
            match network {
                StackNetwork::Own => Network::Created {
                    driver: NetworkDriver::Overlay,
                    attachable: true,
                    name: valid.name.to_owned(),
                },
                StackNetwork::Shared(name) => Network::External {
                    external: IsExternal,
                    name: name.as_str().to_owned(),
                },
            },
        )]),
    })
}

/// The `docker-stack.yml` text of a module, headed by a comment saying where it comes from.
pub fn to_yaml(
    module: &ZenkoMemcachedModule,
    network: &StackNetwork,
    current_servers: Option<u32>,
) -> Result<String> {
    let compose = build(module, network, current_servers)?;
    let body = serde_saphyr::to_string(&compose).map_err(|e| Error::YamlWrite(e.to_string()))?;
    let name = module.metadata.name.as_deref().unwrap_or_default();
    Ok(format!(
        "# Swarm stack of the ZenkoMemcachedModule {name}, generated by \
         `zenko-memcached-operator stack`: regenerate it rather than edit it.\n{body}"
    ))
}

fn memcached(module: &Validated<'_>, slot: u32) -> Result<Service> {
    let spec = &module.module.spec;
    let warm = spec.memcached.warm_restart.enabled;
    let mut constraints = vec![storage_constraint(module)];
    if spec.placement.spread == SpreadPolicy::Required && spec.replicas > 1 {
        constraints.push(format!("node.labels.{} == {slot}", slot_label(module.name)));
    }
    Ok(Service {
        image: spec.memcached.image.clone(),
        command: memcached_args(module),
        environment: BTreeMap::new(),
        networks: network(vec![memcached_host(module.name, slot)]),
        ports: Vec::new(),
        volumes: if warm {
            vec![Mount {
                type_: MountType::Bind,
                source: warm_host_path(module),
                target: WARM_MOUNT.to_owned(),
            }]
        } else {
            Vec::new()
        },
        // Swarm replaces a task that stays unhealthy: a frozen memcached too.
        healthcheck: Some(Healthcheck {
            test: HealthTest::Shell(memcached_answers_command()),
            interval: Seconds(10),
            timeout: Seconds(5),
            retries: 3,
            start_period: Seconds(30),
        }),
        // memcached only writes a restartable memory file when stopped by SIGUSR1.
        stop_signal: warm.then_some(Signal::Usr1),
        stop_grace_period: grace_period(),
        read_only: true,
        cap_drop: vec![Capability::All],
        user: format!("{MEMCACHED_UID}:{MEMCACHED_UID}"),
        deploy: Deploy {
            mode: DeployMode::Replicated,
            replicas: 1,
            // Straight to the task: no IPVS between the sidecars' long-lived pooled connections
            // and memcached, whose idle timeout would silently cut them.
            endpoint_mode: EndpointMode::Dnsrr,
            labels: labels::standard(module.name, Component::Storage),
            placement: Placement {
                constraints,
                max_replicas_per_node: None,
            },
            resources: resources::to_compose(&memcached_resources(module), "memcached.resources")?,
            restart_policy: restart_policy(),
            update_config: update_config(1, FailureAction::Pause),
            rollback_config: update_config(1, FailureAction::Pause),
        },
    })
}

/// `listed`: how many memcached servers the sidecars list (the store's current placement).
fn sidecar(module: &Validated<'_>, replicas: u32, listed: u32) -> Result<Service> {
    let spec = &module.module.spec;
    // Swarm has no operator to record a placement: the stack is the placement, and a change of
    // it is made with `zenko-memcached-sidecar placement change` before the stack is deployed
    // with the new list (see the README). Its factor follows the same rule as on Kubernetes.
    let placement = Layout {
        servers: (0..listed)
            .map(|slot| format!("{}:{MEMCACHED_PORT}", memcached_host(module.name, slot)))
            .collect(),
        replication_factor: spec
            .replication_factor
            .unwrap_or_else(|| default_replication_factor(spec.replicas)),
    };
    let role = module.role();
    let mut aliases = Vec::new();
    if role.serves_data() {
        aliases.push(names::data_service(module.name));
    }
    if role.serves_metadata() {
        aliases.push(names::metadata_service(module.name));
    }
    let mut deploy_labels = labels::standard(module.name, Component::Storage);
    if spec.metrics.enabled {
        deploy_labels.extend(metrics_annotations());
    }
    // Swarm has no disruption budget; the nearest knob is how many tasks an update replaces at once.
    let pdb = &spec.pod_disruption_budget;
    let parallelism = if pdb.enabled {
        u32::try_from(pdb.max_unavailable).unwrap_or(1).max(1)
    } else {
        1
    };
    Ok(Service {
        image: spec.sidecar.image.clone(),
        command: Vec::new(),
        environment: sidecar_env(module, &placement),
        networks: network(aliases),
        ports: published_ports(module)?,
        volumes: Vec::new(),
        // The sidecar image has no shell: the binary probes its own readiness endpoint.
        healthcheck: Some(Healthcheck {
            test: HealthTest::Cmd(vec![
                SIDECAR_BINARY.to_owned(),
                "--probe".to_owned(),
                format!("http://127.0.0.1:{ADMIN_PORT}/readyz"),
            ]),
            interval: Seconds(10),
            timeout: Seconds(5),
            retries: 3,
            start_period: Seconds(STARTUP_WAIT_SECONDS),
        }),
        stop_signal: None,
        stop_grace_period: grace_period(),
        read_only: true,
        cap_drop: vec![Capability::All],
        user: format!("{SIDECAR_UID}:{SIDECAR_UID}"),
        deploy: Deploy {
            mode: DeployMode::Replicated,
            replicas,
            endpoint_mode: EndpointMode::Vip,
            labels: deploy_labels,
            placement: Placement {
                constraints: vec![storage_constraint(module)],
                max_replicas_per_node: (spec.placement.spread == SpreadPolicy::Required)
                    .then_some(1),
            },
            resources: resources::to_compose(
                &sidecar_resources(&spec.sidecar),
                "sidecar.resources",
            )?,
            restart_policy: restart_policy(),
            update_config: update_config(parallelism, FailureAction::Rollback),
            rollback_config: update_config(parallelism, FailureAction::Pause),
        },
    })
}

fn storage_constraint(module: &Validated<'_>) -> String {
    let placement = &module.module.spec.placement;
    format!(
        "node.labels.{} == {}",
        placement.node_label_key, placement.node_label_value
    )
}

fn network(aliases: Vec<String>) -> BTreeMap<String, ServiceNetwork> {
    BTreeMap::from([(NETWORK.to_owned(), ServiceNetwork { aliases })])
}

/// ClusterIP keeps the sidecar on the overlay network only (CloudServer attaches to it); the
/// other types publish the ports of the role's servers on every node through the routing mesh.
fn published_ports(module: &Validated<'_>) -> Result<Vec<Port>> {
    let services = &module.module.spec.services;
    if services.type_ == ServiceType::ClusterIP {
        return Ok(Vec::new());
    }
    let settings = &module.settings;
    // Validation already bounds the ports; the conversion only restates it for the type.
    let port = |target: u16, published: i32, field: &'static str| -> Result<Port> {
        let published = u16::try_from(published).map_err(|_| {
            Error::InvalidSpec(Violations(vec![Violation::OutOfRange {
                field,
                value: i64::from(published),
                min: 1,
                max: 65535,
            }]))
        })?;
        Ok(Port {
            target,
            published,
            protocol: Protocol::Tcp,
            mode: PortMode::Ingress,
        })
    };
    let mut ports = Vec::new();
    if let Some(published) = settings.data_port {
        ports.push(port(DATA_PORT, published, "services.dataPort")?);
    }
    if let Some(published) = settings.metadata_port {
        ports.push(port(METADATA_PORT, published, "services.metadataPort")?);
    }
    Ok(ports)
}

fn grace_period() -> Seconds {
    Seconds(u32::try_from(TERMINATION_GRACE_SECONDS).unwrap_or(30))
}

fn restart_policy() -> RestartPolicy {
    RestartPolicy {
        condition: RestartCondition::Any,
        delay: Seconds(5),
        window: Seconds(60),
    }
}

/// Stop-first: a new memcached must not start while the old one still owns the memory file,
/// and with one task per node a start-first sidecar would wait for a free node forever.
fn update_config(parallelism: u32, failure_action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay: Seconds(10),
        failure_action,
        monitor: Seconds(30),
        order: UpdateOrder::StopFirst,
    }
}
