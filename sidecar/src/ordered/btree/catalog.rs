//! The catalog: a database of its own (under a reserved id) whose keys name every database
//! that ever held a key, for listings across sublevels (the protocol's rawListKeys).

use futures::TryStreamExt;

use super::Inner;
use super::commit::commit_group;
use super::ids::DbId;
use crate::ordered::{Batch, KeyRange, OrderedError, OrderedResult, Sublevel};

/// The name the catalog's root record carries; no path a client sends reaches its id.
pub(super) fn catalog_sublevel() -> Sublevel {
    Sublevel::new(vec!["\u{0}catalog".to_owned()])
}

fn entry_key(sublevel: &Sublevel) -> OrderedResult<String> {
    serde_json::to_string(sublevel.path())
        .map_err(|error| OrderedError::Corrupt(sublevel.clone(), error.to_string()))
}

/// Make sure `sublevel` is listed (one read when it already is).
pub fn register<'a>(
    inner: &'a Inner,
    sublevel: &'a Sublevel,
) -> futures::future::BoxFuture<'a, OrderedResult<()>> {
    Box::pin(register_now(inner, sublevel))
}

async fn register_now(inner: &Inner, sublevel: &Sublevel) -> OrderedResult<()> {
    let catalog = catalog_sublevel();
    let key = entry_key(sublevel)?;
    if inner.get(DbId::catalog(), &catalog, &key).await?.is_some() {
        return Ok(());
    }
    let batch = Batch::default().put(key, "");
    for result in commit_group(inner, DbId::catalog(), &catalog, vec![batch]).await {
        result?;
    }
    Ok(())
}

pub async fn list(inner: &std::sync::Arc<Inner>) -> OrderedResult<Vec<Sublevel>> {
    let catalog = catalog_sublevel();
    let entries: Vec<(String, String)> = super::scan::open(
        inner.clone(),
        DbId::catalog(),
        catalog.clone(),
        KeyRange::all(),
        false,
    )
    .await?
    .try_collect()
    .await?;
    let mut databases = entries
        .into_iter()
        .map(|(key, _)| {
            serde_json::from_str::<Vec<String>>(&key)
                .map(Sublevel::new)
                .map_err(|error| OrderedError::Corrupt(catalog.clone(), error.to_string()))
        })
        .collect::<OrderedResult<Vec<_>>>()?;
    databases.sort();
    Ok(databases)
}
