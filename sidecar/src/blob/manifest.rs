//! The manifest: the small item written last that makes a blob visible and says how its
//! bytes are cut into chunks.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    format: u32,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("unreadable blob manifest: {0}")]
pub struct BadManifest(String);

impl Manifest {
    pub fn new(size: u64, chunk_size: u64) -> Manifest {
        Manifest {
            format: FORMAT,
            size,
            chunk_size,
            chunks: size.div_ceil(chunk_size),
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, BadManifest> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| BadManifest(error.to_string()))?;
        if manifest.format != FORMAT {
            return Err(BadManifest(format!(
                "format {} is not {FORMAT}",
                manifest.format
            )));
        }
        if manifest.chunk_size == 0
            || manifest.chunks != manifest.size.div_ceil(manifest.chunk_size)
        {
            return Err(BadManifest("chunk count does not match size".into()));
        }
        Ok(manifest)
    }

    /// How many bytes chunk `index` holds.
    pub fn chunk_len(&self, index: u64) -> u64 {
        (self.size - index * self.chunk_size).min(self.chunk_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_counts_chunks() {
        let manifest = Manifest::new(10, 4);
        assert_eq!(manifest.chunks, 3);
        assert_eq!(manifest.chunk_len(2), 2);
        assert_eq!(Manifest::decode(&manifest.encode()).unwrap(), manifest);
        assert_eq!(Manifest::new(0, 4).chunks, 0);
        assert_eq!(Manifest::new(8, 4).chunks, 2);
    }

    #[test]
    fn rejects_inconsistent_manifests() {
        assert!(Manifest::decode(b"{}").is_err());
        let lying = br#"{"format":1,"size":10,"chunk_size":4,"chunks":2}"#;
        assert!(Manifest::decode(lying).is_err());
        let zero = br#"{"format":1,"size":0,"chunk_size":0,"chunks":0}"#;
        assert!(Manifest::decode(zero).is_err());
    }
}
