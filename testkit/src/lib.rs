//! Test fixtures that start real processes on free loopback ports and stop them on drop:
//! memcached servers (no mock of memcached anywhere), the sidecar binary, and network namespaces
//! that put a server on an address of its own whose link a test can cut.

mod bytes;
mod memcached;
mod netns;
mod ports;
mod sidecar;
mod start;

pub use bytes::pseudo_random_bytes;
pub use memcached::{DumpedItem, Memcached};
pub use netns::{Link, Network};
pub use ports::{free_port, wait_for_listener};
pub use sidecar::{Role, Sidecar};
