//! Version ids in the reference (Arsenal) format, and the replication group id inside them.

use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest value of the 14-digit time field; the field holds `MAX_TIME - epoch_ms` so that
/// newer versions sort first.
const MAX_TIME: u64 = 99_999_999_999_999;
/// Largest value of the 6-digit sequence field (`MAX_SEQ - sequence within the millisecond`).
const MAX_SEQ: u32 = 999_999;
/// Width the replication group id is padded to inside a version id.
pub const REPLICATION_GROUP_ID_LEN: usize = 7;

/// The replication group id of this deployment (`RG001` unless configured otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicationGroupId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplicationGroupIdError {
    #[error("replication group id is empty")]
    Empty,
    #[error("replication group id is longer than 7 characters")]
    TooLong,
    #[error("replication group id must be ASCII letters and digits")]
    BadCharacter,
}

impl ReplicationGroupId {
    pub fn new(id: impl Into<String>) -> Result<ReplicationGroupId, ReplicationGroupIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ReplicationGroupIdError::Empty);
        }
        if id.len() > REPLICATION_GROUP_ID_LEN {
            return Err(ReplicationGroupIdError::TooLong);
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ReplicationGroupIdError::BadCharacter);
        }
        Ok(ReplicationGroupId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id right-padded with spaces to 7 characters, as it appears inside version ids.
    pub fn padded(&self) -> String {
        format!("{:<width$}", self.0, width = REPLICATION_GROUP_ID_LEN)
    }
}

impl Default for ReplicationGroupId {
    fn default() -> Self {
        ReplicationGroupId("RG001".into())
    }
}

impl fmt::Display for ReplicationGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A raw (internal) version id: compared as strings, smaller means newer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(String);

impl VersionId {
    /// Any id a client sends (ids of other deployments or formats are legal).
    pub fn from_client(id: impl Into<String>) -> VersionId {
        VersionId(id.into())
    }

    /// The id given to objects written before versioning was enabled: older than every
    /// generated id.
    pub fn infinite(rg: &ReplicationGroupId) -> VersionId {
        VersionId(format!("{MAX_TIME:014}{MAX_SEQ:06}{}", rg.padded()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Clock {
    last_ms: u64,
    seq: u32,
    counter: u64,
}

/// Makes strictly decreasing version ids: time, sequence within the millisecond, replication
/// group, and a per-process counter as the trailing "info" part.
pub struct VersionIdGenerator {
    rg: ReplicationGroupId,
    clock: Mutex<Clock>,
}

impl VersionIdGenerator {
    pub fn new(rg: ReplicationGroupId) -> VersionIdGenerator {
        VersionIdGenerator {
            rg,
            clock: Mutex::new(Clock {
                last_ms: 0,
                seq: 0,
                counter: 0,
            }),
        }
    }

    pub fn replication_group_id(&self) -> &ReplicationGroupId {
        &self.rg
    }

    pub fn next(&self) -> VersionId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.next_at(now)
    }

    /// The next id as if the clock read `now_ms`; a clock going backwards is treated as the
    /// last millisecond seen, so ids never go up.
    pub fn next_at(&self, now_ms: u64) -> VersionId {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms > clock.last_ms {
            clock.last_ms = now_ms;
            clock.seq = 0;
        } else if clock.seq < MAX_SEQ {
            clock.seq += 1;
        } else {
            // A million ids in one millisecond: borrow the next millisecond.
            clock.last_ms += 1;
            clock.seq = 0;
        }
        let info = clock.counter;
        clock.counter += 1;
        let time = MAX_TIME.saturating_sub(clock.last_ms);
        VersionId(format!(
            "{time:014}{:06}{}{info}",
            MAX_SEQ - clock.seq,
            self.rg.padded()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_layout() {
        let generator = VersionIdGenerator::new(ReplicationGroupId::default());
        let id = generator.next_at(1_729_591_782_153);
        assert_eq!(id.as_str(), "98270408217846999999RG001  0");
        let id = generator.next_at(1_729_591_782_153);
        assert_eq!(id.as_str(), "98270408217846999998RG001  1");
    }

    #[test]
    fn newer_ids_sort_first() {
        let generator = VersionIdGenerator::new(ReplicationGroupId::default());
        let mut previous = generator.next();
        for _ in 0..5000 {
            let id = generator.next();
            assert!(id < previous, "{id} should sort before {previous}");
            previous = id;
        }
        let later = generator.next_at(u64::MAX / 2);
        assert!(later < previous);
    }

    #[test]
    fn clock_going_back_does_not_break_order() {
        let generator = VersionIdGenerator::new(ReplicationGroupId::default());
        let a = generator.next_at(2_000);
        let b = generator.next_at(1_000);
        assert!(b < a);
    }

    #[test]
    fn infinite_id_is_older_than_any_generated_id() {
        let rg = ReplicationGroupId::default();
        let inf = VersionId::infinite(&rg);
        assert_eq!(inf.as_str(), "99999999999999999999RG001  ");
        let generator = VersionIdGenerator::new(rg);
        assert!(generator.next() < inf);
    }

    #[test]
    fn replication_group_ids_are_checked() {
        assert_eq!(
            ReplicationGroupId::new("RG00001").unwrap().padded(),
            "RG00001"
        );
        assert_eq!(
            ReplicationGroupId::new(""),
            Err(ReplicationGroupIdError::Empty)
        );
        assert_eq!(
            ReplicationGroupId::new("TOOLONG1"),
            Err(ReplicationGroupIdError::TooLong)
        );
        assert_eq!(
            ReplicationGroupId::new("RG 1"),
            Err(ReplicationGroupIdError::BadCharacter)
        );
    }
}
