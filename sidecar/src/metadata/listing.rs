//! Listing options (LevelUP range options) → key range, direction, limit and item shape.

use std::ops::Bound;

use serde_json::{Value, json};

use super::errors::{MetadataError, MetadataResult};
use crate::ordered::KeyRange;

/// What an item of a listing looks like on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemShape {
    KeyAndValue,
    KeyOnly,
    ValueOnly,
}

/// A parsed listing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub range: KeyRange,
    pub reverse: bool,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub shape: ItemShape,
    /// Nothing can match (limit 0, keys and values both off, `gt` with `gte`).
    pub empty: bool,
}

fn bound(options: &serde_json::Map<String, Value>, name: &str) -> MetadataResult<Option<String>> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(MetadataError::InvalidArgument(format!(
            "listing option {name} must be a string"
        ))),
    }
}

fn flag_on(options: &serde_json::Map<String, Value>, name: &str) -> bool {
    // LevelUP: only an explicit `false` turns keys/values off.
    !matches!(options.get(name), Some(Value::Bool(false)))
}

impl Listing {
    pub fn parse(options: &Value) -> MetadataResult<Listing> {
        let empty_map = serde_json::Map::new();
        let options = match options {
            Value::Null => &empty_map,
            Value::Object(map) => map,
            _ => {
                return Err(MetadataError::InvalidArgument(
                    "listing options must be an object".into(),
                ));
            }
        };
        let reverse = options
            .get("reverse")
            .is_some_and(super::versioning::truthy);
        let gt = bound(options, "gt")?;
        let gte = bound(options, "gte")?;
        let lt = bound(options, "lt")?;
        let lte = bound(options, "lte")?;
        // Legacy `start`/`end`: inclusive, and swapped when listing backwards.
        let (start, end) = (bound(options, "start")?, bound(options, "end")?);
        let (start, end) = if reverse { (end, start) } else { (start, end) };
        let lower = match (gt.clone(), gte.or(start)) {
            (Some(gt), _) => Bound::Excluded(gt),
            (None, Some(gte)) => Bound::Included(gte),
            (None, None) => Bound::Unbounded,
        };
        // With both `lt` and `lte`, `lt` wins (observed on the reference).
        let upper = match (lt, lte.or(end)) {
            (Some(lt), _) => Bound::Excluded(lt),
            (None, Some(lte)) => Bound::Included(lte),
            (None, None) => Bound::Unbounded,
        };
        let limit = match options.get("limit") {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f < 0.0 => None,
                Some(f) => Some(f.floor() as u64),
                None => None,
            },
            _ => None,
        };
        let (keys, values) = (flag_on(options, "keys"), flag_on(options, "values"));
        let shape = match (keys, values) {
            (true, false) => ItemShape::KeyOnly,
            (false, true) => ItemShape::ValueOnly,
            _ => ItemShape::KeyAndValue,
        };
        let inverted = match (&lower, &upper) {
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
                l > u
            }
            _ => false,
        };
        // `gt` together with `gte` matches nothing on the reference.
        let both_lower = gt.is_some() && options.get("gte").is_some_and(|v| !v.is_null());
        let empty = limit == Some(0) || (!keys && !values) || both_lower || inverted;
        Ok(Listing {
            range: KeyRange { lower, upper },
            reverse,
            limit,
            shape,
            empty,
        })
    }

    /// Options of a key stream (the reference answers `rawListKeys` with LevelUP's
    /// `createKeyStream`, which sets `keys: true, values: false` over whatever the caller
    /// sent): every item is the key string, and `keys`/`values` neither change the shape nor
    /// empty the listing.
    pub fn parse_key_stream(options: &Value) -> MetadataResult<Listing> {
        let mut options = match options {
            Value::Null => serde_json::Map::new(),
            Value::Object(map) => map.clone(),
            // Refused as any listing's options would be.
            other => return Listing::parse(other),
        };
        options.insert("keys".into(), Value::Bool(true));
        options.insert("values".into(), Value::Bool(false));
        Listing::parse(&Value::Object(options))
    }

    /// One wire item.
    pub fn item(&self, key: String, value: String) -> Value {
        match self.shape {
            ItemShape::KeyAndValue => json!({"key": key, "value": value}),
            ItemShape::KeyOnly => Value::String(key),
            ItemShape::ValueOnly => Value::String(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Listing {
        Listing::parse(&v).unwrap()
    }

    #[test]
    fn defaults_list_everything_with_keys_and_values() {
        let l = parse(json!({}));
        assert_eq!(l.range, KeyRange::all());
        assert!(!l.reverse && !l.empty);
        assert_eq!(l.limit, None);
        assert_eq!(
            l.item("k".into(), "v".into()),
            json!({"key": "k", "value": "v"})
        );
        assert_eq!(parse(Value::Null), l);
    }

    #[test]
    fn bounds_map_to_the_range() {
        let l = parse(json!({"gte": "photos/", "lt": "photos0"}));
        assert_eq!(l.range.lower, Bound::Included("photos/".into()));
        assert_eq!(l.range.upper, Bound::Excluded("photos0".into()));
        let l = parse(json!({"gt": "a", "lte": "z"}));
        assert_eq!(l.range.lower, Bound::Excluded("a".into()));
        assert_eq!(l.range.upper, Bound::Included("z".into()));
    }

    #[test]
    fn corner_cases_of_the_reference() {
        assert!(parse(json!({"limit": 0})).empty);
        assert_eq!(parse(json!({"limit": -1})).limit, None);
        assert_eq!(parse(json!({"limit": "3"})).limit, None);
        assert_eq!(parse(json!({"limit": 2.7})).limit, Some(2));
        assert!(parse(json!({"keys": false, "values": false})).empty);
        assert!(parse(json!({"gt": "a", "gte": "b"})).empty);
        let l = parse(json!({"lt": "m", "lte": "z"}));
        assert_eq!(l.range.upper, Bound::Excluded("m".into()));
        assert!(parse(json!({"gte": "z", "lt": "a"})).empty);
    }

    #[test]
    fn item_shapes() {
        let l = parse(json!({"values": false}));
        assert_eq!(l.item("k".into(), "v".into()), json!("k"));
        let l = parse(json!({"keys": false}));
        assert_eq!(l.item("k".into(), "v".into()), json!("v"));
        assert!(parse(json!({"reverse": true})).reverse);
    }

    #[test]
    fn key_streams_give_key_strings_whatever_keys_and_values_say() {
        for options in [
            json!({}),
            Value::Null,
            json!({"values": false}),
            json!({"keys": false}),
            json!({"keys": true, "values": true}),
            json!({"keys": false, "values": false}),
        ] {
            let l = Listing::parse_key_stream(&options).unwrap();
            assert_eq!(l.shape, ItemShape::KeyOnly, "{options}");
            assert!(!l.empty, "{options}");
            assert_eq!(l.item("k".into(), "v".into()), json!("k"), "{options}");
        }
        let l = Listing::parse_key_stream(&json!({"gte": "!a!", "limit": 0})).unwrap();
        assert_eq!(l.range.lower, Bound::Included("!a!".into()));
        assert!(l.empty);
        assert!(Listing::parse_key_stream(&json!("x")).is_err());
        assert!(Listing::parse_key_stream(&json!({"lt": 1})).is_err());
    }

    #[test]
    fn legacy_start_end_and_bad_types() {
        let l = parse(json!({"start": "a", "end": "c"}));
        assert_eq!(l.range.lower, Bound::Included("a".into()));
        assert_eq!(l.range.upper, Bound::Included("c".into()));
        let l = parse(json!({"start": "c", "end": "a", "reverse": true}));
        assert_eq!(l.range.lower, Bound::Included("a".into()));
        assert!(Listing::parse(&json!({"gt": 3})).is_err());
        assert!(Listing::parse(&json!([1])).is_err());
    }
}
