//! zenko-memcached-sidecar: CloudServer's file DATA (HTTP) and METADATA (socket.io) backends,
//! with every byte kept in memcached.

pub mod items;
pub mod metadata;
pub mod ordered;
