//! The zenko-memcached Kubernetes operator: the `ZenkoMemcachedModule` resource, the builders of
//! the objects it owns, the controller that applies them, and the Swarm stack generator.

pub mod build;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod placement;
pub mod role;
pub mod run;
pub mod server;
pub mod stack;
pub mod status;
pub mod validate;

pub use error::{Error, Result};
