//! The deployment UUID: created once in the item store with `add`, so every sidecar sharing
//! the memcached pool, and every restart, answers the same id.

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::errors::{MetadataError, MetadataResult};
use super::stream::random_uuid_v4;
use crate::items::{Expiry, ItemKey, SharedItemStore};

/// The item holding the UUID.
pub const UUID_ITEM: &str = "zenko-metadata:uuid";

pub struct DeploymentUuid {
    items: SharedItemStore,
    cached: OnceCell<String>,
}

impl DeploymentUuid {
    pub fn new(items: SharedItemStore) -> DeploymentUuid {
        DeploymentUuid {
            items,
            cached: OnceCell::new(),
        }
    }

    pub async fn get(&self) -> MetadataResult<String> {
        self.cached
            .get_or_try_init(|| async {
                let key = ItemKey::new(UUID_ITEM)
                    .map_err(|error| MetadataError::Internal(error.to_string()))?;
                // Read first: memcached allocates an `add`'s item before it looks for the key,
                // so on a full memcached an `add` is refused even when the UUID exists.
                if let Some(stored) = self.items.get(&key).await? {
                    return String::from_utf8(stored.to_vec()).map_err(|_| {
                        MetadataError::Internal("deployment UUID item is not UTF-8".into())
                    });
                }
                let fresh = random_uuid_v4();
                // Whoever adds first wins; everyone then reads the winner's id.
                if self
                    .items
                    .add(&key, Bytes::from(fresh.clone()), Expiry::Never)
                    .await?
                {
                    tracing::info!(uuid = %fresh, "deployment UUID created");
                    return Ok(fresh);
                }
                let stored = self.items.get(&key).await?.ok_or_else(|| {
                    MetadataError::Internal("deployment UUID vanished after add".into())
                })?;
                String::from_utf8(stored.to_vec()).map_err(|_| {
                    MetadataError::Internal("deployment UUID item is not UTF-8".into())
                })
            })
            .await
            .cloned()
    }
}
