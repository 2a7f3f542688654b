//! Test fixtures that start real processes on free loopback ports and stop them on drop:
//! memcached servers (no mock of memcached anywhere) and the sidecar binary.

mod bytes;
mod memcached;
mod ports;
mod sidecar;
mod start;

pub use bytes::pseudo_random_bytes;
pub use memcached::{DumpedItem, Memcached};
pub use ports::{free_port, wait_for_listener};
pub use sidecar::{Role, Sidecar};
