//! Placement: which memcached servers hold the store, recorded in the store itself.
//!
//! Items are spread over the servers by rendezvous hashing on the server names, so the same
//! key lands on another server once the list changes: a sidecar started with one server more
//! or less than the store was written under would answer "no such blob", "no such key" and
//! empty listings for data that exists. So the list (and the replication factor) a store was
//! written under is kept on every server, in a placement record, and a sidecar whose
//! `--memcached` list disagrees with it does not serve: it stays not ready, saying what differs
//! and what to run, and refuses every request.
//!
//! With a replication factor above one, [`ReplicatedStore`] keeps every item on that many
//! servers; the stores above it do not learn about replicas. A server that lost its contents
//! is refilled from the others in the background ([`refill`]).

mod change;
mod copy;
mod follow;
mod health;
mod hedged;
mod incarnation;
mod layout;
mod record;
mod refill;
mod replicas;
mod value;

pub use change::{ChangeError, ChangeOptions, Target, change, exclusively};
pub use copy::{Dumped, dump};
pub use follow::{Follower, Following, Report, Reports, read_reports};
pub use record::{PLACEMENT_ITEM, Placement, Verdict, accept, describe, establish, recorded};
pub use refill::{RefillRate, refill, watch as watch_refills};
pub use replicas::ReplicatedStore;
