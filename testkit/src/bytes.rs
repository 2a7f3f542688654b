//! Deterministic test content: bytes that differ per seed and per position, so a blob that
//! comes back shifted, truncated or mixed with another is caught by a plain comparison.

/// `len` pseudo-random bytes (xorshift) determined by `seed`.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
