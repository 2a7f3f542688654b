//! Which server holds a key: rendezvous (highest random weight) hashing over the server names,
//! with a hash this project specifies rather than one a toolchain may change.
//!
//! Every key scores each server and goes to the highest score; a key's owners are its servers
//! in falling score order. The `memcache` crate's default router hashes with std's
//! `DefaultHasher`, whose algorithm Rust does not promise to keep: a sidecar built with another
//! toolchain could look for every item on another server and answer "not found" for data that
//! exists. So the hash is written down here, giving the owners stores were written under:
//!
//! - `h(bytes)` = SipHash-1-3 with both keys zero over the 8-byte little-endian length of
//!   `bytes` followed by `bytes` (what `DefaultHasher` computes for a byte slice today);
//! - `score(key, server)` = SplitMix64's finalizer of `h(key) XOR h(server name)`;
//! - ties go to the server listed first.
//!
//! The placement record names this scheme ([`SCHEME`]), so that a sidecar routing another way
//! refuses to serve instead of answering from the wrong servers.

use std::hash::Hasher;

use memcache::exp::Router;
use siphasher::sip::SipHasher13;

/// The routing scheme's name, as placement records carry it.
pub const SCHEME: &str = "rendezvous-siphash13";

/// The router of every path that maps keys to servers (see the module's documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rendezvous;

/// SipHash-1-3 (zero keys) of the length-prefixed bytes.
fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0, 0);
    hasher.write(&(bytes.len() as u64).to_le_bytes());
    hasher.write(bytes);
    hasher.finish()
}

/// SplitMix64's finalizer: spreads the combined hash over the whole range.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Rendezvous {
    /// The index in `servers` of the server that holds `key` (0 for an empty list).
    pub fn server(key: &[u8], servers: &[String]) -> usize {
        let key_hash = hash(key);
        let mut best: Option<(usize, u64)> = None;
        for (index, server) in servers.iter().enumerate() {
            let score = mix(key_hash ^ hash(server.as_bytes()));
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((index, score));
            }
        }
        best.map_or(0, |(index, _)| index)
    }
}

impl Router for Rendezvous {
    fn route(&self, key: &[u8], servers: &[String]) -> usize {
        Rendezvous::server(key, servers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("zmm-{i}.zmm.zenko.svc:11211"))
            .collect()
    }

    /// A fold of the servers 2,000 keys go to over one to seven servers.
    fn fingerprint() -> u64 {
        let mut fold: u64 = 0;
        for count in 1..=7 {
            let servers = names(count);
            for n in 0..2000u64 {
                let key = format!("b:{n:x}:{}", n * 7919);
                let server = Rendezvous::server(key.as_bytes(), &servers) as u64;
                fold = fold.wrapping_mul(31).wrapping_add(server);
            }
        }
        fold
    }

    /// Fixed keys and server names give fixed servers, whatever the toolchain: stores are read
    /// where they were written. The values are those the `memcache` crate's default router
    /// gave with the toolchains every earlier release was built with (checked when the scheme
    /// was written down), so stores written before keep their owners.
    #[test]
    fn golden_owners() {
        let servers = names(5);
        let keys = [
            "b:0123456789abcdef",
            "o:bucket:r",
            "o:__metastore:p:7",
            "zmm:epoch",
            "zmm:epoch:1",
            "",
        ];
        let routed: Vec<usize> = keys
            .iter()
            .map(|key| Rendezvous::server(key.as_bytes(), &servers))
            .collect();
        assert_eq!(
            routed,
            [4, 1, 1, 2, 0, 0],
            "the routing of fixed keys changed"
        );
        assert_eq!(
            hash(b""),
            EMPTY_HASH,
            "SipHash-1-3 (zero keys) of an empty slice"
        );
        assert_eq!(
            fingerprint(),
            FINGERPRINT,
            "the routing of 14,000 keys changed"
        );
    }

    const EMPTY_HASH: u64 = 0xbd60_acb6_58c7_9e45;
    const FINGERPRINT: u64 = 0x565b_76c2_ee9e_27f4;
}
