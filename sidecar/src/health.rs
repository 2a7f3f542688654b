//! Readiness: whether memcached answers, watched by a background probe and updated at once by
//! requests that find it unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::items::SharedItemStore;

#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        let was = self.ready.swap(ready, Ordering::Relaxed);
        if was != ready {
            if ready {
                tracing::info!("memcached reachable: ready");
            } else {
                tracing::warn!("memcached unreachable: not ready");
            }
        }
    }

    /// Probe memcached every `interval` until the runtime stops.
    pub fn watch(&self, items: SharedItemStore, interval: Duration) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                health.set_ready(items.ping().await.is_ok());
                tokio::time::sleep(interval).await;
            }
        })
    }
}
