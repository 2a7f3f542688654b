//! The zenko-memcached Kubernetes operator: the `ZenkoMemcachedModule` resource and its controller.

pub mod build;
pub mod controller;
pub mod crd;
pub mod error;
pub mod metrics;
pub mod status;
pub mod validate;

pub use error::{Error, Result};
