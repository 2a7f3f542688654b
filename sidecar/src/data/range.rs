//! The `Range` header as the reference data server reads it: one `bytes=` range or nothing.
//! Anything else is ignored (the whole blob is sent), which is not what RFC 9110 would do.

/// A syntactically valid range spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=a-b` or `bytes=a-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`.
    Suffix(u64),
}

/// What to send for a blob of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    Whole,
    /// `206` with these inclusive bounds.
    Partial {
        start: u64,
        end: u64,
    },
    /// `416`.
    Unsatisfiable,
}

/// Parse a header value; `None` for anything not exactly `bytes=<digits?>-<digits?>`.
pub fn parse(value: &str) -> Option<RangeSpec> {
    let spec = value.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let number = |text: &str| -> Option<Option<u64>> {
        if text.is_empty() {
            return Some(None);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits beyond u64 mean "past any blob", which saturating keeps true.
        Some(Some(text.bytes().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })))
    };
    match (number(first)?, number(last)?) {
        (None, None) => None,
        (None, Some(count)) => Some(RangeSpec::Suffix(count)),
        (Some(start), Some(end)) if start > end => None,
        (Some(start), end) => Some(RangeSpec::From { start, end }),
    }
}

/// The first byte a request for `spec` reads, when it does not depend on the blob's size.
pub fn first_byte(spec: Option<RangeSpec>) -> Option<u64> {
    match spec {
        None => Some(0),
        Some(RangeSpec::From { start, .. }) => Some(start),
        Some(RangeSpec::Suffix(_)) => None,
    }
}

pub fn select(spec: Option<RangeSpec>, size: u64) -> Selection {
    match spec {
        None => Selection::Whole,
        Some(RangeSpec::From { start, .. }) if start >= size => Selection::Unsatisfiable,
        Some(RangeSpec::From { start, end }) => Selection::Partial {
            start,
            end: end.map_or(size - 1, |end| end.min(size - 1)),
        },
        Some(RangeSpec::Suffix(0)) => Selection::Unsatisfiable,
        Some(RangeSpec::Suffix(_)) if size == 0 => Selection::Whole,
        Some(RangeSpec::Suffix(count)) => Selection::Partial {
            start: size.saturating_sub(count),
            end: size - 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(header: &str, size: u64) -> Selection {
        select(parse(header), size)
    }

    #[test]
    fn follows_the_reference_table() {
        use Selection::*;
        assert_eq!(pick("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(pick("bytes=90-200", 100), Partial { start: 90, end: 99 });
        assert_eq!(pick("bytes=10-", 100), Partial { start: 10, end: 99 });
        assert_eq!(pick("bytes=100-", 100), Unsatisfiable);
        assert_eq!(pick("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(pick("bytes=0-", 0), Unsatisfiable);
        assert_eq!(pick("bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(pick("bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(pick("bytes=-10", 0), Whole);
        assert_eq!(pick("bytes=-0", 100), Unsatisfiable);
        assert_eq!(pick("bytes=99999999999999999999999-", 100), Unsatisfiable);
        assert_eq!(
            pick("bytes=0-99999999999999999999999", 100),
            Partial { start: 0, end: 99 }
        );
    }

    #[test]
    fn knows_the_first_byte_before_the_size_unless_counted_from_the_end() {
        assert_eq!(first_byte(parse("bytes=7-9")), Some(7));
        assert_eq!(first_byte(parse("bytes=7-")), Some(7));
        assert_eq!(first_byte(None), Some(0));
        assert_eq!(first_byte(parse("bytes=-7")), None);
    }

    #[test]
    fn ignores_malformed_ranges() {
        for header in [
            "bytes=5-2",
            "bytes=-",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes= 0-9",
            "bytes=a-b",
            "0-9",
            "",
        ] {
            assert_eq!(parse(header), None, "{header}");
            assert_eq!(pick(header, 100), Selection::Whole);
        }
    }
}
