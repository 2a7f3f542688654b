//! A hook for counting calls by name and outcome; the binary plugs its metrics registry in.

use std::time::Duration;

/// Told about every finished call. `call` is a known API name or `"unknown"`; `outcome` is
/// `"ok"` or an error label (see `MetadataError::label`).
pub trait CallObserver: Send + Sync + 'static {
    fn call_finished(&self, call: &str, outcome: &str, elapsed: Duration);
}
