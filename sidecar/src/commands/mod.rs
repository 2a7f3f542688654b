//! The tools the binary runs instead of serving (`zenko-memcached-sidecar <command>`).

mod check;
mod placement;

pub use check::{Verdict, check};
pub use placement::placement;
