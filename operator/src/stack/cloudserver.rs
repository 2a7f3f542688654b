//! CloudServer in front of the module: the `s3` service a stack gets with `--with-cloudserver`.
//!
//! CloudServer is the application that uses the module, not part of it: it runs from its
//! official image, configured only through what that image reads at start (Zenko's production
//! stack does the same). The variables, and where CloudServer reads them:
//! - `S3DATA=file`, `S3METADATA=file`: the "file" data and metadata backends, that is the
//!   remote DATA and METADATA servers (scality/cloudserver `lib/Config.js`,
//!   `_configureBackends`);
//! - `DATA_HOST`, `METADATA_HOST`: written into `config.json` as `dataClient.host` and
//!   `metadataClient.host` (scality/cloudserver `docker-entrypoint.sh`). The entrypoint sets no
//!   port: `config.json` keeps `dataClient.port` 9991 and `metadataClient.port` 9990, which
//!   are the sidecar's ports on the stack's network whatever the module publishes;
//! - `ENDPOINT`: a host name added to `restEndpoints`, so that path-style requests to it are
//!   served (`docker-entrypoint.sh`); IP addresses and `localhost` always are;
//! - `SCALITY_ACCESS_KEY_ID`, `SCALITY_SECRET_ACCESS_KEY`: the account's keys
//!   (`lib/Config.js`), from the Swarm secret mounted on `/run/secrets/s3-credentials`, a file
//!   of `export` lines that the entrypoint sources (`docker-entrypoint.sh`).
//!
//! `charts/tests/check_chart.py` checks these names against the list of what the image reads.

use std::collections::BTreeMap;

use super::compose::{
    Capability, Deploy, DeployMode, EndpointMode, FailureAction, HealthTest, Healthcheck,
    Placement, Port, PortMode, Protocol, Resources, Seconds, Service, ServiceNetwork,
    ServiceSecret,
};
use super::{grace_period, restart_policy, update_config};
use crate::build::labels;

/// The image of the `s3` service unless `--cloudserver-image` names another.
pub const DEFAULT_IMAGE: &str = "zenko/cloudserver:8.7.33";
/// CloudServer's S3 port (`config.json` `port`), published on every node of the swarm.
pub const S3_PORT: u16 = 8000;
/// The Compose key of the service.
pub const SERVICE: &str = "s3";
/// Where the credentials file is mounted: `/run/secrets/s3-credentials`, the path the
/// image's entrypoint sources.
pub const CREDENTIALS_TARGET: &str = "s3-credentials";
/// What the `s3` service runs: CloudServer's S3 server alone (`yarn start` would also start
/// its own local data and metadata daemons, which the module replaces).
const COMMAND: [&str; 2] = ["node", "index.js"];
/// CloudServer's health-check route; it answers only local addresses by default
/// (`healthChecks.allowFrom` in `config.json`), so the check runs inside the container, with
/// the image's own node.
const HEALTH_PROBE: &str = "require('http').get('http://127.0.0.1:8000/_/healthcheck', \
     (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))";

/// The `s3` service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudServer {
    pub image: String,
}

/// The DNS name of the `s3` service on the stack's network, and the endpoint CloudServer
/// serves path-style requests for.
pub fn host(stack: &str) -> String {
    format!("{stack}-s3")
}

/// The name of the Swarm secret holding the credentials, created before the stack is deployed.
pub fn credentials_secret(stack: &str) -> String {
    format!("{stack}-s3-credentials")
}

/// CloudServer's environment: the file backends, on the sidecars that serve data and metadata.
pub fn environment(
    data_host: &str,
    metadata_host: &str,
    endpoint: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("S3DATA".to_owned(), "file".to_owned()),
        ("S3METADATA".to_owned(), "file".to_owned()),
        ("DATA_HOST".to_owned(), data_host.to_owned()),
        ("METADATA_HOST".to_owned(), metadata_host.to_owned()),
        ("ENDPOINT".to_owned(), endpoint.to_owned()),
    ])
}

/// The `s3` service of stack `stack` on network key `network`.
pub fn service(
    cloudserver: &CloudServer,
    stack: &str,
    network: &str,
    data_host: &str,
    metadata_host: &str,
) -> Service {
    let endpoint = host(stack);
    Service {
        image: cloudserver.image.clone(),
        command: COMMAND.iter().map(|s| (*s).to_owned()).collect(),
        environment: environment(data_host, metadata_host, &endpoint),
        networks: BTreeMap::from([(
            network.to_owned(),
            ServiceNetwork {
                aliases: vec![endpoint],
            },
        )]),
        ports: vec![Port {
            target: S3_PORT,
            published: S3_PORT,
            protocol: Protocol::Tcp,
            mode: PortMode::Ingress,
        }],
        volumes: Vec::new(),
        secrets: vec![ServiceSecret {
            source: CREDENTIALS_TARGET.to_owned(),
            target: CREDENTIALS_TARGET.to_owned(),
        }],
        healthcheck: Some(Healthcheck {
            test: HealthTest::Cmd(vec![
                "node".to_owned(),
                "-e".to_owned(),
                HEALTH_PROBE.to_owned(),
            ]),
            interval: Seconds(10),
            timeout: Seconds(5),
            retries: 3,
            start_period: Seconds(60),
        }),
        stop_signal: None,
        stop_grace_period: grace_period(),
        // The image's entrypoint rewrites its config.json in place, as the image's own user
        // (root): the root filesystem stays writable and the user is the image's. Every
        // capability is dropped all the same; port 8000 needs none.
        read_only: false,
        cap_drop: vec![Capability::All],
        user: None,
        deploy: Deploy {
            mode: DeployMode::Replicated,
            replicas: 1,
            endpoint_mode: EndpointMode::Vip,
            labels: BTreeMap::from([
                (labels::NAME_KEY.to_owned(), "cloudserver".to_owned()),
                (labels::INSTANCE_KEY.to_owned(), stack.to_owned()),
                (labels::COMPONENT_KEY.to_owned(), "s3".to_owned()),
                (labels::PART_OF_KEY.to_owned(), labels::PART_OF.to_owned()),
            ]),
            // Stateless: any node may run it.
            placement: Placement {
                constraints: Vec::new(),
                max_replicas_per_node: None,
            },
            resources: Resources::default(),
            restart_policy: restart_policy(),
            update_config: update_config(1, FailureAction::Rollback),
            rollback_config: update_config(1, FailureAction::Pause),
        },
    }
}
