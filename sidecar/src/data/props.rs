//! Property tests of the data API's input parsing (URL, `Range`, `Content-Length`), each
//! against a small independent model of the grammar, plus a replay of the seed corpus in
//! `tests/corpus/`. Case counts keep the whole suite to a few seconds in `scripts/test`.

#![allow(clippy::unwrap_used)] // test code: a failure should be loud

use crate::proptest_cases::cases;
use axum::http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;

use super::error::ApiError;
use super::{content_length, path, range};

/// Cases per property; cheap parsers, so many.
const CASES: u32 = 4096;

/// What the reference answers for a path: the key, or the error name.
fn path_model(input: &str) -> Result<Option<String>, &'static str> {
    // decodeURI: `%` must be followed by two hex digits; reserved characters stay escaped;
    // the decoded bytes must be UTF-8.
    let mut bytes = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '%' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(chars[i].encode_utf8(&mut buf).as_bytes());
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            chars.get(i + 1).and_then(|c| c.to_digit(16)),
            chars.get(i + 2).and_then(|c| c.to_digit(16)),
        ) else {
            return Err("InvalidURI");
        };
        let byte = (hi * 16 + lo) as u8;
        if ";/?:@&=+$,#".contains(byte as char) {
            bytes.extend(chars[i..i + 3].iter().map(|&c| c as u8));
        } else {
            bytes.push(byte);
        }
        i += 3;
    }
    let decoded = String::from_utf8(bytes).map_err(|_| "InvalidURI")?;
    let rest = decoded.strip_prefix('/').ok_or("InvalidURI")?;
    let mut parts = rest.splitn(2, '/');
    let service = parts.next().unwrap_or("");
    let key = parts.next();
    if service.is_empty() || !service.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("InvalidURI");
    }
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if key.is_some_and(|key| !key.chars().all(hex)) {
        return Err("InvalidURI");
    }
    if service != "DataFile" && service != "PassthroughFile" {
        return Err("InvalidAction");
    }
    Ok(key.filter(|k| !k.is_empty()).map(str::to_owned))
}

fn path_outcome(input: &str) -> Result<Option<String>, &'static str> {
    path::parse(input).map(|t| t.key).map_err(|e| e.kind().0)
}

/// Paths built from the pieces the grammar cares about, so that many are valid or nearly so.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("DataFile".to_owned()),
        Just("PassthroughFile".to_owned()),
        Just("diskUsage".to_owned()),
        Just("?".to_owned()),
        "%[0-9a-fA-F+\\-gz%]{0,2}",
        "[0-9a-f]{1,8}",
        "[A-Za-z0-9]{1,4}",
        "[ -~]{1,3}",
        "\\PC{1,2}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// The `Range` grammar: `bytes=<digits?>-<digits?>`, not both empty, start <= end.
fn range_model(value: &str) -> Option<range::RangeSpec> {
    let spec = value.strip_prefix("bytes=")?;
    let dash = spec.find('-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    let number = |t: &str| -> Option<Option<u64>> {
        if t.is_empty() {
            Some(None)
        } else if t.chars().all(|c| c.is_ascii_digit()) {
            let t = t.trim_start_matches('0');
            Some(Some(if t.len() > 20 {
                u64::MAX
            } else {
                u64::try_from(t.parse::<u128>().unwrap_or(0)).unwrap_or(u64::MAX)
            }))
        } else {
            None
        }
    };
    match (number(first)?, number(last)?) {
        (None, None) => None,
        (None, Some(n)) => Some(range::RangeSpec::Suffix(n)),
        (Some(a), Some(b)) if a > b => None,
        (Some(a), b) => Some(range::RangeSpec::From { start: a, end: b }),
    }
}

fn select_model(spec: Option<range::RangeSpec>, size: u64) -> range::Selection {
    use range::Selection::*;
    let (size, last) = (u128::from(size), u128::from(size).saturating_sub(1));
    let partial = |a: u128, b: u128| Partial {
        start: a as u64,
        end: b as u64,
    };
    match spec {
        None => Whole,
        Some(range::RangeSpec::From { start, end }) => {
            if u128::from(start) >= size {
                Unsatisfiable
            } else {
                partial(start.into(), end.map_or(last, |e| u128::from(e).min(last)))
            }
        }
        Some(range::RangeSpec::Suffix(0)) => Unsatisfiable,
        Some(range::RangeSpec::Suffix(_)) if size == 0 => Whole,
        Some(range::RangeSpec::Suffix(n)) => partial(size.saturating_sub(n.into()), last),
    }
}

fn range_strategy() -> impl Strategy<Value = String> {
    let digits = prop_oneof![
        Just(String::new()),
        "[0-9]{1,3}",
        "[0-9]{18,25}",
        Just(u64::MAX.to_string()),
        "0{1,5}[1-9]",
    ];
    prop_oneof![
        4 => (
            prop_oneof![Just("bytes="), Just("bytes= "), Just("Bytes="), Just("")],
            digits.clone(),
            prop_oneof![Just("-"), Just("--"), Just(","), Just("")],
            digits,
            prop_oneof![Just(""), Just(",1-2"), Just(" "), Just("x")],
        )
            .prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}")),
        1 => "\\PC{0,20}",
    ]
}

fn size_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..2000, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
}

fn length_outcome(value: Option<&[u8]>) -> Option<Result<u64, &'static str>> {
    let mut headers = HeaderMap::new();
    if let Some(value) = value {
        // Only what hyper could hand over: a valid header value.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_bytes(value).ok()?);
    }
    Some(content_length(&headers).map_err(|e| e.kind().0))
}

fn length_model(value: Option<&[u8]>) -> Result<u64, &'static str> {
    let value = value.ok_or("MissingContentLength")?;
    let text = std::str::from_utf8(value).map_err(|_| "InvalidInput")?;
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return Err("InvalidInput");
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 20 {
        return Err("InvalidInput");
    }
    let n: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| "InvalidInput")?
    };
    u64::try_from(n).map_err(|_| "InvalidInput")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(CASES)))]

    #[test]
    fn path_parse_follows_the_model(input in path_strategy()) {
        prop_assert_eq!(path_outcome(&input), path_model(&input), "{:?}", input);
    }

    #[test]
    fn path_parse_never_panics_on_any_text(input in "\\PC{0,64}|[\\x00-\\x7f]{0,64}") {
        prop_assert_eq!(path_outcome(&input), path_model(&input), "{:?}", input);
    }

    #[test]
    fn disk_usage_is_exactly_one_request(path in path_strategy(), query in prop::option::of("\\PC{0,12}|diskUsage")) {
        prop_assert_eq!(
            path::is_disk_usage(&path, query.as_deref()),
            path == "/DataFile" && query.as_deref() == Some("diskUsage")
        );
    }

    #[test]
    fn range_follows_the_model_and_stays_in_the_blob(value in range_strategy(), size in size_strategy()) {
        let spec = range::parse(&value);
        prop_assert_eq!(spec, range_model(&value), "{:?}", value);
        let selection = range::select(spec, size);
        prop_assert_eq!(selection, select_model(spec, size), "{:?} of {}", value, size);
        match selection {
            range::Selection::Partial { start, end } => {
                prop_assert!(start <= end && end < size, "{:?} of {}: {:?}", value, size, selection);
            }
            // Anything outside the grammar sends the whole blob.
            range::Selection::Whole => prop_assert!(spec.is_none() || size == 0),
            range::Selection::Unsatisfiable => prop_assert!(spec.is_some()),
        }
    }

    #[test]
    fn content_length_follows_the_model(value in prop::option::of(prop_oneof![
        "[0-9]{1,25}".prop_map(String::into_bytes),
        "[+\\- 0-9a-f]{0,6}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
    ])) {
        if let Some(outcome) = length_outcome(value.as_deref()) {
            prop_assert_eq!(outcome, length_model(value.as_deref()), "{:?}", value);
        }
    }
}

/// Lines of a corpus file, without comments and blank lines, split on tabs.
fn corpus(name: &str) -> Vec<Vec<String>> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    std::fs::read_to_string(&file)
        .unwrap_or_else(|error| panic!("{}: {error}", file.display()))
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn corpus_paths_give_their_recorded_answers() {
    let cases = corpus("data_paths.tsv");
    assert!(cases.len() >= 10);
    for case in cases {
        let (input, expected) = (&case[0], &case[1]);
        let outcome = match path_outcome(input) {
            Ok(Some(key)) => format!("key {key}"),
            Ok(None) => "no key".to_owned(),
            Err(name) => name.to_owned(),
        };
        assert_eq!(&outcome, expected, "{input:?}");
        assert_eq!(path_outcome(input), path_model(input), "{input:?}");
    }
}

#[test]
fn corpus_ranges_give_their_recorded_answers() {
    let cases = corpus("ranges.tsv");
    assert!(cases.len() >= 10);
    for case in cases {
        let (value, size, expected) = (&case[0], case[1].parse::<u64>().unwrap(), &case[2]);
        let outcome = match range::select(range::parse(value), size) {
            range::Selection::Whole => "whole".to_owned(),
            range::Selection::Unsatisfiable => "416".to_owned(),
            range::Selection::Partial { start, end } => format!("{start}-{end}"),
        };
        assert_eq!(&outcome, expected, "{value:?} of {size}");
    }
}

#[test]
fn corpus_content_lengths_give_their_recorded_answers() {
    let cases = corpus("content_lengths.tsv");
    assert!(cases.len() >= 5);
    for case in cases {
        let (value, expected) = (&case[0], &case[1]);
        let value = (value != "<absent>").then_some(value.as_bytes());
        let outcome = match length_outcome(value).unwrap() {
            Ok(n) => n.to_string(),
            Err(name) => name.to_owned(),
        };
        assert_eq!(&outcome, expected, "{value:?}");
    }
}

#[test]
fn entity_too_large_is_a_real_arsenal_answer() {
    let error = ApiError::EntityTooLarge {
        declared: 10,
        max: 5,
    };
    assert_eq!(error.kind().0, "EntityTooLarge");
    assert_eq!(error.kind().1.as_u16(), 400);
}
