//! The command line of `zenko-memcached-operator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::stack::cloudserver::{self, CloudServer};
use crate::stack::{NetworkName, StackNetwork, StackOptions};

#[derive(Debug, Parser)]
#[command(
    name = "zenko-memcached-operator",
    version,
    about = "Kubernetes operator for zenko-memcached storage modules"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster of the kubeconfig or the in-cluster service account.
    Run(RunArgs),
    /// Print the ZenkoMemcachedModule CustomResourceDefinition as YAML.
    Crd,
    /// Print the objects the operator would create for a module, for review or GitOps.
    Manifests(ManifestsArgs),
    /// Write the Docker Swarm stack (docker-stack.yml) of a module, for `docker stack deploy`.
    Stack(StackArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only watch modules in this namespace; all namespaces when unset.
    #[arg(long, env = "ZMM_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "ZMM_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Elect a leader among replicas of the operator through a Lease.
    #[arg(long, env = "ZMM_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(
        long,
        env = "ZMM_OPERATOR_LEASE_NAME",
        default_value = "zenko-memcached-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease, normally the operator's own (downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Identity of this replica in the Lease, normally the pod name (downward API).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Log format.
    #[arg(long, env = "ZMM_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ManifestsArgs {
    /// The ZenkoMemcachedModule YAML file; `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Namespace of the objects when the module names none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, clap::Args)]
pub struct StackArgs {
    /// The ZenkoMemcachedModule YAML file; `-` reads standard input. Given twice, the Data and
    /// the Metadata module of the production pair, in one stack.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,

    /// Where to write the stack; standard output when unset. Nothing is written when the module is invalid.
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    /// Namespace naming the warm restart directory (<hostPath>/<namespace>/<module>) when the module names none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,

    /// Join this existing attachable overlay network instead of creating one named after the
    /// module: the production layout's data and metadata stacks share one network with
    /// CloudServer (`docker network create --driver overlay --attachable NAME` first).
    #[arg(long, value_name = "NAME")]
    pub network: Option<NetworkName>,

    /// During a change of replicas: how many memcached servers the store is on now. The stack
    /// runs the memcached services of both counts and the sidecars keep the current list, until
    /// `zenko-memcached-sidecar placement change` has moved the data; then generate and deploy
    /// the stack without this flag.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub current_servers: Option<u32>,

    /// Add CloudServer in front of the module(s): the service `s3`, publishing the S3 endpoint
    /// on port 8000 of every node, with its keys from the Swarm secret
    /// `<first module>-s3-credentials` (created beforehand).
    #[arg(long)]
    pub with_cloudserver: bool,

    /// CloudServer's image, with --with-cloudserver.
    #[arg(long, value_name = "IMAGE", default_value = cloudserver::DEFAULT_IMAGE)]
    pub cloudserver_image: String,
}

impl StackArgs {
    pub fn options(&self) -> StackOptions {
        StackOptions {
            network: match &self.network {
                Some(name) => StackNetwork::Shared(name.clone()),
                None => StackNetwork::Own,
            },
            current_servers: self.current_servers,
            cloudserver: self.with_cloudserver.then(|| CloudServer {
                image: self.cloudserver_image.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn manifests_takes_a_file() {
        let cli = Cli::try_parse_from(["zenko-memcached-operator", "manifests", "-f", "m.yaml"])
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Manifests(args) => assert_eq!(args.file, PathBuf::from("m.yaml")),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn stack_writes_to_stdout_unless_told() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Stack(args),
            }) => args,
            other => panic!("parsed {other:?}"),
        };
        let out = parse(&["zenko-memcached-operator", "stack", "-f", "m.yaml"]);
        assert_eq!(out.output, None);
        assert_eq!(out.options().cloudserver, None);
        let pair = parse(&[
            "zenko-memcached-operator",
            "stack",
            "-f",
            "d.yaml",
            "-f",
            "m.yaml",
            "--with-cloudserver",
        ]);
        assert_eq!(pair.files.len(), 2);
        assert!(pair.options().cloudserver.is_some());
        let out = parse(&[
            "zenko-memcached-operator",
            "stack",
            "-f",
            "m.yaml",
            "-o",
            "s.yml",
        ]);
        assert_eq!(out.output, Some(PathBuf::from("s.yml")));
    }

    #[test]
    fn leader_election_can_be_turned_off() {
        let cli = Cli::try_parse_from([
            "zenko-memcached-operator",
            "run",
            "--leader-election",
            "false",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Run(args) => assert!(!args.leader_election),
            other => panic!("parsed {other:?}"),
        }
    }
}
