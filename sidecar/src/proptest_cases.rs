//! How many cases the property tests run: a bounded number in CI, more on demand.

/// Cases per property: `default`, or `ZMM_PROPTEST_CASES` for a longer run than CI's.
pub fn cases(default: u32) -> u32 {
    std::env::var("ZMM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
