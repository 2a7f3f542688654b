//! The metadata API handlers: put, get, del, getDiskUsage, createReadStream, rawListKeys,
//! getUUID, over the versioning engine and the ordered store.

use std::ops::Bound;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use super::errors::{MetadataError, MetadataResult};
use super::listing::Listing;
use super::stream::ItemStream;
use super::uuid::DeploymentUuid;
use super::versioning::{PutOptions, VersionSelector, VersioningEngine};
use crate::items::SharedItemStore;
use crate::ordered::{KeyRange, OrderedStore, Sublevel};

/// The calls of the service, as the manifest lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Put,
    Get,
    Del,
    GetDiskUsage,
    CreateReadStream,
    RawListKeys,
    GetUuid,
}

impl Api {
    pub const ALL: [Api; 7] = [
        Api::Put,
        Api::Get,
        Api::Del,
        Api::GetDiskUsage,
        Api::CreateReadStream,
        Api::RawListKeys,
        Api::GetUuid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Api::Put => "put",
            Api::Get => "get",
            Api::Del => "del",
            Api::GetDiskUsage => "getDiskUsage",
            Api::CreateReadStream => "createReadStream",
            Api::RawListKeys => "rawListKeys",
            Api::GetUuid => "getUUID",
        }
    }

    pub fn from_name(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == name)
    }
}

/// What a call answers: a value, or a stream whose marker is the value.
pub enum Answer {
    Value(Value),
    Stream(ItemStream),
}

/// Positional arguments of a call, checked one by one.
pub struct Args<'a>(&'a [Value]);

impl<'a> Args<'a> {
    pub fn new(args: &'a [Value]) -> Args<'a> {
        Args(args)
    }

    fn string(&self, index: usize, what: &str) -> MetadataResult<&'a str> {
        match self.0.get(index) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(MetadataError::InvalidArgument(format!(
                "{what} must be a string"
            ))),
            None => Err(MetadataError::InvalidArgument(format!("{what} is missing"))),
        }
    }

    /// A key argument, refused when over `max` bytes: the ordered store could not keep it and
    /// would fail with an internal error, while this is the caller's mistake.
    fn key(&self, index: usize, max: usize) -> MetadataResult<&'a str> {
        let key = self.string(index, "key")?;
        if key.len() > max {
            return Err(MetadataError::InvalidArgument(format!(
                "key too long: {} bytes, the limit is {max}",
                key.len()
            )));
        }
        Ok(key)
    }

    fn options(&self, index: usize) -> &'a Value {
        self.0.get(index).unwrap_or(&Value::Null)
    }
}

pub struct Handlers {
    pub engine: VersioningEngine,
    pub items: SharedItemStore,
    pub uuid: DeploymentUuid,
    pub limits: ArgLimits,
}

/// Size limits on call arguments, checked before anything reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value of a `put`, in bytes.
    pub max_value_bytes: usize,
}

/// The ordered store keeps keys of up to 8 KiB (`TreeConfig::key_max_bytes`); a versioned
/// object is also stored under `key\0versionId`, so user keys leave room for that suffix.
pub const MAX_KEY_BYTES: usize = (8 << 10) - 128;

impl Default for ArgLimits {
    fn default() -> ArgLimits {
        ArgLimits {
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: 64 << 20,
        }
    }
}

/// Longest `versionId` option: the room `MAX_KEY_BYTES` leaves for the version suffix, so that
/// a key of the maximum length with a version still fits the ordered store's key limit.
pub const MAX_VERSION_ID_BYTES: usize = 127;

fn check_version_id(version_id: Option<&str>) -> MetadataResult<()> {
    match version_id {
        Some(id) if id.len() > MAX_VERSION_ID_BYTES => {
            Err(MetadataError::InvalidArgument(format!(
                "versionId too long: {} bytes, the limit is {MAX_VERSION_ID_BYTES}",
                id.len()
            )))
        }
        _ => Ok(()),
    }
}

fn result_or_null(result: Option<String>) -> Value {
    result.map_or(Value::Null, Value::String)
}

impl Handlers {
    fn store(&self) -> &Arc<dyn OrderedStore> {
        self.engine.store()
    }

    pub async fn call(&self, api: Api, db: &Sublevel, args: Args<'_>) -> MetadataResult<Answer> {
        let value = match api {
            Api::Put => {
                let key = args.key(0, self.limits.max_key_bytes)?;
                let value = args.string(1, "value")?;
                if value.len() > self.limits.max_value_bytes {
                    return Err(MetadataError::InvalidArgument(format!(
                        "value too large: {} bytes, the limit is {}",
                        value.len(),
                        self.limits.max_value_bytes
                    )));
                }
                let options = PutOptions::parse(args.options(2))?;
                check_version_id(options.version_id.as_deref())?;
                result_or_null(self.engine.put(db, key, value, &options).await?)
            }
            Api::Get => {
                let key = args.key(0, self.limits.max_key_bytes)?;
                let selector = VersionSelector::parse(args.options(1))?;
                check_version_id(selector.version_id.as_deref())?;
                Value::String(self.engine.get(db, key, &selector).await?)
            }
            Api::Del => {
                let key = args.key(0, self.limits.max_key_bytes)?;
                let selector = VersionSelector::parse(args.options(1))?;
                check_version_id(selector.version_id.as_deref())?;
                result_or_null(self.engine.del(db, key, &selector).await?)
            }
            Api::GetDiskUsage => self.disk_usage().await?,
            Api::GetUuid => Value::String(self.uuid.get().await?),
            Api::CreateReadStream => {
                let listing = Listing::parse(args.options(0))?;
                return Ok(Answer::Stream(self.read_stream(db, listing).await?));
            }
            Api::RawListKeys => {
                let listing = Listing::parse_key_stream(args.options(0))?;
                return Ok(Answer::Stream(self.raw_keys(listing).await?));
            }
        };
        Ok(Answer::Value(value))
    }

    /// `{available, free, total}` of memcached's memory.
    async fn disk_usage(&self) -> MetadataResult<Value> {
        let stats = self.items.stats().await?;
        let free = stats.limit_bytes.saturating_sub(stats.used_bytes);
        Ok(json!({"available": free, "free": free, "total": stats.limit_bytes}))
    }

    async fn read_stream(&self, db: &Sublevel, listing: Listing) -> MetadataResult<ItemStream> {
        if listing.empty {
            return Ok(stream::empty().boxed());
        }
        let scan = self
            .store()
            .scan(db, listing.range.clone(), listing.reverse)
            .await?;
        let limit = listing
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(scan
            .take(limit)
            .map(move |item| {
                item.map(|(key, value)| listing.item(key, value))
                    .map_err(MetadataError::from)
            })
            .boxed())
    }

    /// Every key of every database in level-sublevel's physical encoding
    /// (`!<path joined by #>!<key>`), options applied to the encoded keys. Items are the key
    /// strings alone, as the reference's key stream gives them: CloudServer's `countItems`
    /// tests each item with `.includes`.
    async fn raw_keys(&self, listing: Listing) -> MetadataResult<ItemStream> {
        if listing.empty {
            return Ok(stream::empty().boxed());
        }
        let mut prefixes: Vec<(String, Sublevel)> = self
            .store()
            .databases()
            .await?
            .into_iter()
            .map(|db| (format!("!{}!", db.path().join("#")), db))
            .collect();
        // Databases come out in the order of their encoded prefixes; keys of one prefix all
        // sort before those of a greater one unless a sublevel name contains `!` or `#`.
        prefixes.sort();
        if listing.reverse {
            prefixes.reverse();
        }
        let store = self.store().clone();
        let range = listing.range.clone();
        let reverse = listing.reverse;
        let per_db = stream::iter(prefixes).then(move |(prefix, db)| {
            let store = store.clone();
            let range = range.clone();
            async move {
                let inner = match db_range(&prefix, &range) {
                    Some(inner) => store.scan(&db, inner, reverse).await?,
                    None => stream::empty().boxed(),
                };
                Ok::<_, MetadataError>(inner.map(move |item| {
                    item.map(|(key, value)| (format!("{prefix}{key}"), value))
                        .map_err(MetadataError::from)
                }))
            }
        });
        let limit = listing
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let range = listing.range.clone();
        Ok(per_db
            .try_flatten()
            .try_filter(move |(key, _)| std::future::ready(range.contains(key)))
            .take(limit)
            .map(move |item| item.map(|(key, value)| listing.item(key, value)))
            .boxed())
    }
}

/// The part of a raw-key range that falls inside one database, in that database's own keys;
/// `None` when the range misses the database entirely. Bounds that do not start with the
/// prefix only tell whether the whole database is in or out.
fn db_range(prefix: &str, range: &KeyRange) -> Option<KeyRange> {
    let lower = match &range.lower {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(b) | Bound::Excluded(b) => match b.strip_prefix(prefix) {
            Some(rest) => match &range.lower {
                Bound::Excluded(_) => Bound::Excluded(rest.to_owned()),
                _ => Bound::Included(rest.to_owned()),
            },
            None if b.as_str() < prefix => Bound::Unbounded,
            None => return None,
        },
    };
    let upper = match &range.upper {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(b) | Bound::Excluded(b) => match b.strip_prefix(prefix) {
            Some(rest) => match &range.upper {
                Bound::Excluded(_) => Bound::Excluded(rest.to_owned()),
                _ => Bound::Included(rest.to_owned()),
            },
            None if b.as_str() > prefix => Bound::Unbounded,
            None => return None,
        },
    };
    Some(KeyRange { lower, upper })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ranges_translate_per_database() {
        let all = KeyRange::all();
        assert_eq!(db_range("!b!", &all), Some(KeyRange::all()));
        let r = KeyRange {
            lower: Bound::Included("!b!k".into()),
            upper: Bound::Excluded("!c!".into()),
        };
        assert_eq!(
            db_range("!b!", &r),
            Some(KeyRange {
                lower: Bound::Included("k".into()),
                upper: Bound::Unbounded
            })
        );
        assert_eq!(db_range("!a!", &r), None);
        assert_eq!(db_range("!d!", &r), None);
    }

    /// Handlers over an in-memory store holding `!!root`, `!b!k1`, `!b!k2` and `!c#d!k3`.
    async fn handlers_with_keys() -> Handlers {
        use super::super::versioning::{ReplicationGroupId, VersionIdGenerator};
        use crate::items::EmbeddedStore;
        use crate::ordered::MemoryOrderedStore;
        let items: SharedItemStore = Arc::new(EmbeddedStore::new(1 << 20, 1 << 16));
        let handlers = Handlers {
            engine: VersioningEngine::new(
                Arc::new(MemoryOrderedStore::default()),
                VersionIdGenerator::new(ReplicationGroupId::default()),
                None,
            ),
            uuid: DeploymentUuid::new(items.clone()),
            items,
            limits: ArgLimits::default(),
        };
        for (db, key) in [
            (vec![], "root"),
            (vec!["b"], "k2"),
            (vec!["b"], "k1"),
            (vec!["c", "d"], "k3"),
        ] {
            let db = Sublevel::new(db.into_iter().map(str::to_owned).collect());
            let args = [json!(key), json!("{\"v\":1}"), json!({})];
            assert!(handlers.call(Api::Put, &db, Args::new(&args)).await.is_ok());
        }
        handlers
    }

    async fn raw_list(handlers: &Handlers, options: Value) -> Vec<Value> {
        let args = [options];
        let db = Sublevel::new(vec!["ignored".to_owned()]);
        match handlers.call(Api::RawListKeys, &db, Args::new(&args)).await {
            Ok(Answer::Stream(items)) => items.try_collect().await.unwrap(),
            Ok(Answer::Value(value)) => panic!("a value instead of a stream: {value}"),
            Err(error) => panic!("{error}"),
        }
    }

    #[tokio::test]
    async fn raw_keys_are_key_strings_whatever_the_options() {
        let handlers = handlers_with_keys().await;
        let all = json!(["!!root", "!b!k1", "!b!k2", "!c#d!k3"]);
        for options in [
            json!({}),
            Value::Null,
            json!({"values": false}),
            json!({"keys": false}),
            json!({"keys": false, "values": false}),
        ] {
            assert_eq!(
                Value::Array(raw_list(&handlers, options.clone()).await),
                all,
                "{options}"
            );
        }
        let ranged = raw_list(
            &handlers,
            json!({"gte": "!b!", "lt": "!b\"", "keys": false}),
        )
        .await;
        assert_eq!(ranged, vec![json!("!b!k1"), json!("!b!k2")]);
        let last = raw_list(&handlers, json!({"reverse": true, "limit": 1})).await;
        assert_eq!(last, vec![json!("!c#d!k3")]);
    }

    #[test]
    fn api_names_round_trip() {
        for api in Api::ALL {
            assert_eq!(Api::from_name(api.name()), Some(api));
        }
        assert_eq!(Api::from_name("getManifest"), None);
        assert_eq!(Api::from_name("nope"), None);
    }
}
