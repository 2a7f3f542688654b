//! Typed subset of the Compose file format (version 3.8) that `docker stack deploy` reads.
//!
//! Only what the stack generator writes is modelled; enums stand for the strings Compose accepts,
//! so that a typo cannot reach a user's `docker stack deploy`.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

/// The Compose version that has `deploy.placement.max_replicas_per_node` (Docker 19.03 and later).
pub const COMPOSE_VERSION: &str = "3.8";

/// A whole `docker-stack.yml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComposeFile {
    pub version: String,
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Secret>,
}

/// A Swarm secret created beforehand (`docker secret create NAME FILE`) and only read by the
/// stack: the stack never holds a credential itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Secret {
    pub external: IsExternal,
    pub name: String,
}

/// A secret mounted in a service's containers as `/run/secrets/<target>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSecret {
    pub source: String,
    pub target: String,
}

/// One Swarm service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub image: String,
    /// Arguments given to the image's entrypoint (Kubernetes `args`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ServiceSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    pub stop_grace_period: Seconds,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<Capability>,
    /// `uid:gid` the container runs as; numeric, so that it does not depend on the image's
    /// /etc/passwd and cannot be root by accident. `None` only for an image of another
    /// project that must run as its own user (CloudServer, see `stack::cloudserver`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub deploy: Deploy,
}

/// How a service joins a network, with the extra DNS names it answers to there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceNetwork {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A network of the stack: one it creates, or one created beforehand that several stacks join.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Network {
    Created {
        driver: NetworkDriver,
        /// Lets containers of other stacks (CloudServer) join the network.
        attachable: bool,
        /// The network's real name, unprefixed by the stack name, so that another stack can
        /// name it as `external`.
        name: String,
    },
    /// Made by `docker network create --driver overlay --attachable <name>`; the stack only
    /// joins it, and removing the stack leaves it to the other stacks on it.
    External { external: IsExternal, name: String },
}

/// Compose's `external: true`, the only value an external network has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsExternal;

impl Serialize for IsExternal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    Overlay,
}

/// A port in the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub target: u16,
    pub published: u16,
    pub protocol: Protocol,
    pub mode: PortMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// The routing mesh: the port answers on every node of the swarm.
    Ingress,
}

/// A mount in the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub type_: MountType,
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
}

/// A container health check; Swarm restarts unhealthy tasks and waits for health during updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub test: HealthTest,
    pub interval: Seconds,
    pub timeout: Seconds,
    pub retries: u32,
    pub start_period: Seconds,
}

/// The command of a health check: an exec form, or a line for the image's `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    Cmd(Vec<String>),
    Shell(String),
}

impl Serialize for HealthTest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list: Vec<&str> = match self {
            Self::Cmd(argv) => std::iter::once("CMD")
                .chain(argv.iter().map(String::as_str))
                .collect(),
            Self::Shell(line) => vec!["CMD-SHELL", line.as_str()],
        };
        list.serialize(serializer)
    }
}

/// A signal sent to stop a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Signal {
    /// memcached's graceful stop, the only one after which it can restart from its memory file.
    #[serde(rename = "SIGUSR1")]
    Usr1,
}

/// A Linux capability name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Capability {
    #[serde(rename = "ALL")]
    All,
}

/// A duration in whole seconds, written as Compose's `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u32);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}s", self.0))
    }
}

/// The Swarm part of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deploy {
    pub mode: DeployMode,
    pub replicas: u32,
    pub endpoint_mode: EndpointMode,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub placement: Placement,
    pub resources: Resources,
    pub restart_policy: RestartPolicy,
    pub update_config: UpdateConfig,
    pub rollback_config: UpdateConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    Replicated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP balancing over the tasks.
    Vip,
    /// The service name resolves straight to the task addresses.
    Dnsrr,
}

/// Which nodes may run the tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ResourceAmounts>,
}

/// CPUs as a decimal string (`"0.25"`) and memory in Compose units (`"1190M"`, binary).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResourceAmounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay: Seconds,
    pub window: Seconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    Any,
}

/// How Swarm replaces tasks on update (and on rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateConfig {
    pub parallelism: u32,
    pub delay: Seconds,
    pub failure_action: FailureAction,
    pub monitor: Seconds,
    pub order: UpdateOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The old task stops before the new one starts: a memcached's memory file and its node's
    /// one slot are never shared.
    StopFirst,
}
