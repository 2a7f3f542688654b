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
//!
//! One stack may also hold the production pair (a Data and a Metadata module, their services
//! prefixed by role) and CloudServer in front of the module(s) (`cloudserver`), like Zenko's
//! production stack.

pub mod cloudserver;
pub mod compose;
mod resources;

use std::collections::BTreeMap;

use cloudserver::CloudServer;
use compose::{
    COMPOSE_VERSION, Capability, ComposeFile, Deploy, DeployMode, EndpointMode, FailureAction,
    HealthTest, Healthcheck, IsExternal, Mount, MountType, Network, NetworkDriver, Placement, Port,
    PortMode, Protocol, RestartCondition, RestartPolicy, Seconds, Secret, Service, ServiceNetwork,
    Signal, UpdateConfig, UpdateOrder,
};

use crate::build::labels::{self, Component};
use crate::build::{
    ADMIN_PORT, DATA_PORT, MEMCACHED_PORT, MEMCACHED_UID, METADATA_PORT, SIDECAR_UID,
    STARTUP_WAIT_SECONDS, TERMINATION_GRACE_SECONDS, WARM_MOUNT, memcached_answers_command,
    memcached_args, memcached_resources, metrics_annotations, names, sidecar_env,
    sidecar_resources, warm_host_path,
};
use crate::crd::{Role, ServiceType, SpreadPolicy, ZenkoMemcachedModule};
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

/// What a stack holds besides its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOptions {
    pub network: StackNetwork,
    /// During a change of replicas of a one-module stack: how many memcached servers the store
    /// is on now. The stack then runs the memcached services of both the current and the new
    /// count, and gives the sidecars the current list, so that a new memcached exists before
    /// `zenko-memcached-sidecar placement change` moves the data onto it and no sidecar
    /// restarts with a list the store does not have yet (it would refuse to serve). Deploying
    /// the stack without it afterwards gives the sidecars the new list (docs/operations.md,
    /// "Scaling a stack").
    pub current_servers: Option<u32>,
    /// CloudServer in front of the module(s), as the service `s3`.
    pub cloudserver: Option<CloudServer>,
}

/// The stack of a module, or why the module cannot be deployed (see [`StackOptions`]).
pub fn build(
    module: &ZenkoMemcachedModule,
    network: &StackNetwork,
    current_servers: Option<u32>,
) -> Result<ComposeFile> {
    build_stack(
        std::slice::from_ref(module),
        &StackOptions {
            network: network.clone(),
            current_servers,
            cloudserver: None,
        },
    )
}

/// The stack of one module or of the production pair (a Data and a Metadata module), or why
/// it cannot be deployed. The stack is named after its first module: its own network, and
/// CloudServer's host name and credentials secret.
pub fn build_stack(
    modules: &[ZenkoMemcachedModule],
    options: &StackOptions,
) -> Result<ComposeFile> {
    let valid = modules
        .iter()
        .map(validate)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let pair = match valid.as_slice() {
        [_] => false,
        [a, b] if is_pair(a.role(), b.role()) => true,
        _ => {
            return Err(Error::StackModules(format!(
                "a stack holds one module, or the production pair (one Data and one Metadata \
                 module); got {}",
                valid
                    .iter()
                    .map(|m| format!("{} ({:?})", m.name, m.role()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    if pair && options.current_servers.is_some() {
        return Err(Error::StackModules(
            "--current-servers changes one module: generate the stack of that module alone"
                .to_owned(),
        ));
    }
    let stack_name = valid[0].name;
    let mut services = BTreeMap::new();
    for module in &valid {
        // The pair's services are told apart by role; a module alone keeps the plain names.
        let prefix = if pair {
            format!("{}-", module.role().sidecar_role())
        } else {
            String::new()
        };
        let replicas = u32::try_from(module.module.spec.replicas).unwrap_or(1);
        let listed = options.current_servers.unwrap_or(replicas);
        for slot in 0..replicas.max(listed) {
            services.insert(
                format!("{prefix}{}", memcached_service(slot)),
                memcached(module, slot)?,
            );
        }
        services.insert(
            format!("{prefix}{SIDECAR_SERVICE}"),
            sidecar(module, replicas, listed)?,
        );
    }
    let mut secrets = BTreeMap::new();
    if let Some(cloud) = &options.cloudserver {
        let serving = |data: bool| {
            valid.iter().find(|m| {
                if data {
                    m.role().serves_data()
                } else {
                    m.role().serves_metadata()
                }
            })
        };
        let (Some(data), Some(metadata)) = (serving(true), serving(false)) else {
            return Err(Error::StackModules(
                "CloudServer needs a module serving data and one serving metadata: give a \
                 Combined module, or the Data and the Metadata module of the pair"
                    .to_owned(),
            ));
        };
        services.insert(
            cloudserver::SERVICE.to_owned(),
            cloudserver::service(
                cloud,
                stack_name,
                NETWORK,
                &names::data_service(data.name),
                &names::metadata_service(metadata.name),
            ),
        );
        secrets.insert(
            cloudserver::CREDENTIALS_TARGET.to_owned(),
            Secret {
                external: IsExternal,
                name: cloudserver::credentials_secret(stack_name),
            },
        );
    }
    Ok(ComposeFile {
        version: COMPOSE_VERSION.to_owned(),
        services,
        networks: BTreeMap::from([(
            NETWORK.to_owned(),
            match &options.network {
                StackNetwork::Own => Network::Created {
                    driver: NetworkDriver::Overlay,
                    attachable: true,
                    name: stack_name.to_owned(),
                },
                StackNetwork::Shared(name) => Network::External {
                    external: IsExternal,
                    name: name.as_str().to_owned(),
                },
            },
        )]),
        secrets,
    })
}

fn is_pair(a: Role, b: Role) -> bool {
    matches!(
        (a, b),
        (Role::Data, Role::Metadata) | (Role::Metadata, Role::Data)
    )
}

/// The `docker-stack.yml` text of a module, headed by a comment saying where it comes from.
pub fn to_yaml(
    module: &ZenkoMemcachedModule,
    network: &StackNetwork,
    current_servers: Option<u32>,
) -> Result<String> {
    stack_to_yaml(
        std::slice::from_ref(module),
        &StackOptions {
            network: network.clone(),
            current_servers,
            cloudserver: None,
        },
    )
}

/// The `docker-stack.yml` text of a stack, headed by a comment saying where it comes from.
pub fn stack_to_yaml(modules: &[ZenkoMemcachedModule], options: &StackOptions) -> Result<String> {
    let compose = build_stack(modules, options)?;
    let body = serde_saphyr::to_string(&compose).map_err(|e| Error::YamlWrite(e.to_string()))?;
    let names: Vec<&str> = modules
        .iter()
        .map(|m| m.metadata.name.as_deref().unwrap_or_default())
        .collect();
    let what = match names.as_slice() {
        [one] => format!("the ZenkoMemcachedModule {one}"),
        several => format!("the ZenkoMemcachedModules {}", several.join(" and ")),
    };
    let front = if options.cloudserver.is_some() {
        " with CloudServer in front"
    } else {
        ""
    };
    Ok(format!(
        "# Swarm stack of {what}{front}, generated by `zenko-memcached-operator stack`: \
         regenerate it rather than edit it.\n{body}"
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
        secrets: Vec::new(),
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
        user: Some(format!("{MEMCACHED_UID}:{MEMCACHED_UID}")),
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
    // with the new list (docs/operations.md). Its factor follows the same rule as on Kubernetes.
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
        secrets: Vec::new(),
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
        user: Some(format!("{SIDECAR_UID}:{SIDECAR_UID}")),
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

pub(super) fn grace_period() -> Seconds {
    Seconds(u32::try_from(TERMINATION_GRACE_SECONDS).unwrap_or(30))
}

pub(super) fn restart_policy() -> RestartPolicy {
    RestartPolicy {
        condition: RestartCondition::Any,
        delay: Seconds(5),
        window: Seconds(60),
    }
}

/// Stop-first: a new memcached must not start while the old one still owns the memory file,
/// and with one task per node a start-first sidecar would wait for a free node forever.
pub(super) fn update_config(parallelism: u32, failure_action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay: Seconds(10),
        failure_action,
        monitor: Seconds(30),
        order: UpdateOrder::StopFirst,
    }
}
