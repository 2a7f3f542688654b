//! The tools the binary runs instead of serving (`zenko-memcached-sidecar <command>`).

mod check;
mod export;
mod import;
mod placement;
mod store;

pub use check::{Verdict, check};
pub use export::export;
pub use import::import;
pub use placement::placement;
pub use store::open as open_store;
