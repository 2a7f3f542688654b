//! Test fixtures that start real processes on free loopback ports and stop them on drop:
//! memcached servers (no mock of memcached anywhere) and, for end-to-end tests, the sidecar.

mod memcached;
mod ports;

pub use memcached::Memcached;
pub use ports::free_port;
