//! The tools the binary runs instead of serving (`zenko-memcached-sidecar <command>`).

mod check;

pub use check::check;
