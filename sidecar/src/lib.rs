//! zenko-memcached-sidecar: CloudServer's file DATA (HTTP) and METADATA (socket.io) backends,
//! with every byte kept in memcached.

pub mod admin;
pub mod blob;
pub mod commands;
pub mod config;
pub mod connlimit;
pub mod data;
pub mod health;
pub mod items;
pub mod metadata;
pub mod metrics;
pub mod ordered;
pub mod placement;
pub mod probe;
#[cfg(test)]
mod proptest_cases;
pub mod server;
pub mod transfer;
