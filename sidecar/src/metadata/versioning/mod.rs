//! CloudServer's server-side versioning (Arsenal's request processor): version ids, version
//! and null keys, placeholder masters and their repair, over the ordered store.

mod engine;
mod options;
mod value;
mod version_id;

pub use engine::VersioningEngine;
pub use options::{PutOptions, VersionSelector, truthy};
pub use value::{VERSION_SEPARATOR, is_placeholder, null_key, placeholder, version_key};
pub use version_id::{ReplicationGroupId, ReplicationGroupIdError, VersionId, VersionIdGenerator};
