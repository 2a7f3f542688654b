//! The memcached item store against a real memcached server: the semantics the upper layers
//! rely on (CAS, add, expiry, refusal when full, the item size limit, statistics).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::time::Duration;

use bytes::Bytes;
use zenko_memcached_sidecar::items::{
    CasOutcome, Expiry, ItemError, ItemKey, ItemStore, MemcachedStore,
};
use zenko_memcached_testkit::Memcached;

fn key(name: &str) -> ItemKey {
    ItemKey::new(name).unwrap()
}

async fn store(server: &Memcached) -> MemcachedStore {
    MemcachedStore::connect(&[server.address()]).await.unwrap()
}

#[tokio::test]
async fn get_set_add_cas_delete() {
    let server = Memcached::start(&[]);
    let store = store(&server).await;
    let value = |text: &'static str| Bytes::from_static(text.as_bytes());
    assert_eq!(store.get(&key("a")).await.unwrap(), None);
    store
        .set(&key("a"), value("1"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(value("1")));
    assert!(
        !store
            .add(&key("a"), value("2"), Expiry::Never)
            .await
            .unwrap()
    );
    assert!(
        store
            .add(&key("b"), value("2"), Expiry::Never)
            .await
            .unwrap()
    );
    let many = store
        .get_many(&[key("a"), key("zz"), key("b")])
        .await
        .unwrap();
    assert_eq!(many, vec![Some(value("1")), None, Some(value("2"))]);

    let (_, stale) = store.gets(&key("a")).await.unwrap().unwrap();
    store
        .set(&key("a"), value("3"), Expiry::Never)
        .await
        .unwrap();
    let outcome = store
        .cas(&key("a"), value("4"), stale, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Conflict);
    let (current, fresh) = store.gets(&key("a")).await.unwrap().unwrap();
    assert_eq!(current, value("3"));
    let outcome = store
        .cas(&key("a"), value("4"), fresh, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Stored);
    let outcome = store
        .cas(&key("nope"), value("4"), fresh, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::NotFound);

    assert!(store.delete(&key("a")).await.unwrap());
    assert!(!store.delete(&key("a")).await.unwrap());
    // An empty value is a legal item.
    store
        .set(&key("empty"), Bytes::new(), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.get(&key("empty")).await.unwrap(), Some(Bytes::new()));
}

#[tokio::test]
async fn expiry_and_touch() {
    let server = Memcached::start(&[]);
    let store = store(&server).await;
    let short = Expiry::After(Duration::from_secs(1));
    store
        .set(&key("gone"), Bytes::from_static(b"x"), short)
        .await
        .unwrap();
    store
        .set(&key("kept"), Bytes::from_static(b"y"), short)
        .await
        .unwrap();
    assert!(store.touch(&key("kept"), Expiry::Never).await.unwrap());
    assert!(!store.touch(&key("absent"), Expiry::Never).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.get(&key("gone")).await.unwrap(), None);
    assert!(store.get(&key("kept")).await.unwrap().is_some());
}

#[tokio::test]
async fn refuses_when_full_without_evicting() {
    let server = Memcached::start_with(vec![
        "-m".into(),
        "8".into(),
        "-M".into(),
        "-I".into(),
        "1m".into(),
    ]);
    let store = store(&server).await;
    let chunk = Bytes::from(vec![7u8; 512 * 1024]);
    let mut stored = 0;
    let mut refused = None;
    for index in 0..64 {
        match store
            .set(&key(&format!("k{index}")), chunk.clone(), Expiry::Never)
            .await
        {
            Ok(()) => stored += 1,
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(ItemError::Full)),
        "got {refused:?} after {stored} items"
    );
    assert_eq!(server.stat("evictions"), Some(0));
    assert_eq!(store.get(&key("k0")).await.unwrap(), Some(chunk));
}

#[tokio::test]
async fn refuses_items_over_the_limit_and_reports_stats() {
    let server = Memcached::start(&[]);
    let store = store(&server).await;
    let too_big = Bytes::from(vec![1u8; 3 * 1024 * 1024]);
    let refused = store.set(&key("big"), too_big, Expiry::Never).await;
    assert!(
        matches!(refused, Err(ItemError::TooLarge { .. })),
        "got {refused:?}"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.limit_bytes, 64 * 1024 * 1024);
    assert_eq!(stats.item_size_max, 2 * 1024 * 1024);
    assert_eq!(stats.evictions, 0);
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let mut server = Memcached::start(&[]);
    let store = store(&server).await;
    store.ping().await.unwrap();
    // Leaves an idle text-protocol connection behind, dead once the server stops.
    assert!(
        store
            .add(&key("before"), Bytes::from_static(b"x"), Expiry::Never)
            .await
            .unwrap()
    );
    server.stop();
    assert!(matches!(store.ping().await, Err(ItemError::Unavailable(_))));
    assert!(matches!(
        store.get(&key("a")).await,
        Err(ItemError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .add(&key("b"), Bytes::from_static(b"x"), Expiry::Never)
            .await,
        Err(ItemError::Unavailable(_))
    ));
    server.start_again();
    store
        .set(&key("a"), Bytes::from_static(b"back"), Expiry::Never)
        .await
        .unwrap();
    // The text-protocol path dials anew instead of failing on its dead idle connection.
    assert!(
        store
            .add(&key("b"), Bytes::from_static(b"back"), Expiry::Never)
            .await
            .unwrap()
    );
}

/// memcached with evictions off, small enough to fill in a moment.
fn small_full_server() -> Memcached {
    Memcached::start_with(
        ["-m", "8", "-M", "-I", "1m"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

#[tokio::test]
async fn a_refused_cas_or_add_keeps_the_existing_item() {
    let server = small_full_server();
    let store = store(&server).await;
    // memcached runs out of memory per size class: the filler has the victim's size, so the
    // replacement value below finds no room either.
    let size = 100_000;
    let old = Bytes::from(vec![1u8; size]);
    store
        .set(&key("victim"), old.clone(), Expiry::Never)
        .await
        .unwrap();
    let filler = Bytes::from(vec![2u8; size]);
    let mut filled = 0;
    loop {
        match store
            .set(
                &key(&format!("fill{filled}")),
                filler.clone(),
                Expiry::Never,
            )
            .await
        {
            Ok(()) => filled += 1,
            Err(ItemError::Full) => break,
            Err(error) => panic!("filling: {error}"),
        }
        assert!(filled < 1000, "memcached never filled up");
    }
    let (_, token) = store.gets(&key("victim")).await.unwrap().unwrap();
    let new = Bytes::from(vec![3u8; size]);
    let refused = store
        .cas(&key("victim"), new.clone(), token, Expiry::Never)
        .await;
    assert!(matches!(refused, Err(ItemError::Full)), "cas: {refused:?}");
    assert_eq!(
        store.get(&key("victim")).await.unwrap(),
        Some(old.clone()),
        "a refused cas dropped the item"
    );
    let refused = store.add(&key("victim"), new, Expiry::Never).await;
    assert!(matches!(refused, Err(ItemError::Full)), "add: {refused:?}");
    assert_eq!(
        store.get(&key("victim")).await.unwrap(),
        Some(old),
        "a refused add dropped the item"
    );
    // The token still holds: nothing replaced the item behind the refusals.
    assert!(store.delete(&key("fill0")).await.unwrap());
    let outcome = store
        .cas(&key("victim"), filler.clone(), token, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Stored);
    assert_eq!(store.get(&key("victim")).await.unwrap(), Some(filler));
    assert_eq!(server.stat("evictions"), Some(0));
}

/// Three memcached servers and a store over all of them: routing tests need keys on each.
async fn three_servers() -> ([Memcached; 3], MemcachedStore) {
    let servers = [
        Memcached::start(&[]),
        Memcached::start(&[]),
        Memcached::start(&[]),
    ];
    let addresses: Vec<String> = servers.iter().map(Memcached::address).collect();
    let store = MemcachedStore::connect(&addresses).await.unwrap();
    (servers, store)
}

/// `add` and `cas` travel on the store's own connections, `gets` on the meta client: both must
/// pick the same server for a key.
#[tokio::test]
async fn add_and_cas_reach_the_server_the_other_operations_use() {
    let (servers, store) = three_servers().await;
    let value = |n: usize| Bytes::from(format!("value {n}"));
    for n in 0..60 {
        // Written by the meta protocol: `add` must find it and `cas` must replace it.
        let set_key = key(&format!("routed-set-{n}"));
        store.set(&set_key, value(n), Expiry::Never).await.unwrap();
        assert!(
            !store
                .add(&set_key, value(n + 1), Expiry::Never)
                .await
                .unwrap(),
            "{set_key}: add did not see the item set"
        );
        let (_, token) = store.gets(&set_key).await.unwrap().unwrap();
        let outcome = store
            .cas(&set_key, value(n + 2), token, Expiry::Never)
            .await
            .unwrap();
        assert_eq!(outcome, CasOutcome::Stored, "{set_key}");
        assert_eq!(store.get(&set_key).await.unwrap(), Some(value(n + 2)));
        // Written by the text protocol's `add`: the meta client must read it.
        let add_key = key(&format!("routed-add-{n}"));
        assert!(store.add(&add_key, value(n), Expiry::Never).await.unwrap());
        let (added, _) = store.gets(&add_key).await.unwrap().unwrap();
        assert_eq!(added, value(n));
    }
    // Every server got some of the keys, so the agreement above is over all three; and no
    // key landed twice (a misrouted add would have stored a second copy elsewhere).
    let per_server: Vec<u64> = servers
        .iter()
        .map(|server| server.stat("curr_items").unwrap())
        .collect();
    assert!(per_server.iter().all(|&items| items > 0), "{per_server:?}");
    assert_eq!(per_server.iter().sum::<u64>(), 120, "{per_server:?}");
}

/// Gets and sets travel on the store's own connections, `gets` and `delete` on the meta
/// client: both must pick the same server for a key, and values must come back byte for byte
/// whatever they hold.
#[tokio::test]
async fn values_round_trip_and_route_like_the_other_operations() {
    let (servers, store) = three_servers().await;
    let values = [
        Bytes::new(),
        Bytes::from_static(b"\r\nEN\r\nVA 3\r\n"),
        Bytes::from(zenko_memcached_testkit::pseudo_random_bytes(1, 1024 * 1024)),
    ];
    for n in 0..60 {
        let item = key(&format!("route:{n}"));
        let value = values[n % values.len()].clone();
        store
            .set(&item, value.clone(), Expiry::Never)
            .await
            .unwrap();
        // Read back through the meta client's `gets`, then the value path's `get`.
        let (through_meta, _) = store.gets(&item).await.unwrap().unwrap();
        assert_eq!(through_meta, value, "key {n}");
        assert_eq!(store.get(&item).await.unwrap(), Some(value), "key {n}");
        assert!(store.delete(&item).await.unwrap());
        assert_eq!(store.get(&item).await.unwrap(), None);
    }
    // Every server got a share of the keys.
    for server in &servers {
        assert!(server.stat("cmd_set").unwrap() > 5, "{}", server.address());
    }
}

/// A pooled connection that died with its server is replaced on first use: the request after
/// a memcached restart gets the (now empty) server's answer, not an error.
#[tokio::test]
async fn values_survive_a_server_restart() {
    let mut server = Memcached::start(&[]);
    let store = store(&server).await;
    let item = key("restart");
    store
        .set(&item, Bytes::from_static(b"before"), Expiry::Never)
        .await
        .unwrap();
    server.restart();
    assert_eq!(store.get(&item).await.unwrap(), None);
    store
        .set(&item, Bytes::from_static(b"after"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        store.get(&item).await.unwrap(),
        Some(Bytes::from_static(b"after"))
    );
}

/// Multi-gets are pipelined, one exchange per server: values of every size come back in the
/// order asked, misses as `None`, from all three servers at once.
#[tokio::test]
async fn get_many_answers_in_order_across_servers() {
    let (servers, store) = three_servers().await;
    let value = |n: usize| {
        Bytes::from(zenko_memcached_testkit::pseudo_random_bytes(
            n as u64,
            n * 997 % 300_000,
        ))
    };
    let keys: Vec<ItemKey> = (0..90).map(|n| key(&format!("many:{n}"))).collect();
    for (n, item) in keys.iter().enumerate() {
        if n % 3 != 1 {
            store.set(item, value(n), Expiry::Never).await.unwrap();
        }
    }
    let before: Vec<u64> = servers.iter().map(|s| s.stat("cmd_get").unwrap()).collect();
    let found = store.get_many(&keys).await.unwrap();
    for (n, found) in found.into_iter().enumerate() {
        assert_eq!(found, (n % 3 != 1).then(|| value(n)), "key {n}");
    }
    let asked: Vec<u64> = servers
        .iter()
        .zip(before)
        .map(|(server, before)| server.stat("cmd_get").unwrap() - before)
        .collect();
    assert!(asked.iter().all(|&n| n > 0), "{asked:?}");
    assert_eq!(asked.iter().sum::<u64>(), 90);
    assert_eq!(
        store.get_many(&[]).await.unwrap(),
        Vec::<Option<Bytes>>::new()
    );
}

/// A token read names the item's version without its value, and every change makes a new one.
#[tokio::test]
async fn tokens_name_versions_without_sending_values() {
    let server = Memcached::start(&[]);
    let store = store(&server).await;
    let item = key("versioned");
    assert_eq!(store.token(&item).await.unwrap(), None);
    let big = Bytes::from(vec![7u8; 100_000]);
    store.set(&item, big.clone(), Expiry::Never).await.unwrap();
    let (_, first) = store.gets(&item).await.unwrap().unwrap();
    let sent = server.stat("bytes_written").unwrap();
    assert_eq!(store.token(&item).await.unwrap(), Some(first));
    let sent = server.stat("bytes_written").unwrap() - sent;
    // The token's answer and the stats of the check itself, not the value.
    assert!(sent < 4096, "{sent} bytes sent for a token");
    store.set(&item, big.clone(), Expiry::Never).await.unwrap();
    let second = store.token(&item).await.unwrap().unwrap();
    assert_ne!(
        second, first,
        "the same bytes written again are a new version"
    );
    assert_eq!(store.gets(&item).await.unwrap().unwrap().1, second);
    assert!(store.touch(&item, Expiry::Never).await.unwrap());
    let outcome = store
        .cas(&item, Bytes::from_static(b"x"), second, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Stored);
    assert_ne!(store.token(&item).await.unwrap(), Some(second));
    assert!(store.delete(&item).await.unwrap());
    assert_eq!(store.token(&item).await.unwrap(), None);
}

/// The ordered store trusts a cached root record whose token memcached still reports: a
/// memcached restarted warm (SIGUSR1, then the same memory file) must keep counting tokens
/// up rather than hand out old ones again.
#[tokio::test]
async fn tokens_keep_counting_across_a_warm_restart() {
    let dir = tempfile::tempdir().unwrap();
    let memory_file = dir.path().join("memory_file");
    let mut server = Memcached::start(&["-e", memory_file.to_str().unwrap()]);
    let store = store(&server).await;
    let item = key("kept");
    let mut tokens = Vec::new();
    for n in 0..5u8 {
        store
            .set(&item, Bytes::from(vec![n]), Expiry::Never)
            .await
            .unwrap();
        tokens.push(store.token(&item).await.unwrap().unwrap());
    }
    server.stop_gracefully();
    // memcached refuses a memory file stamped in the very second it starts again.
    std::thread::sleep(Duration::from_millis(1100));
    server.start_again();
    let store = self::store(&server).await;
    assert_eq!(store.token(&item).await.unwrap(), tokens.last().copied());
    let other = key("after");
    store
        .set(&other, Bytes::from_static(b"x"), Expiry::Never)
        .await
        .unwrap();
    let after = store.token(&other).await.unwrap().unwrap();
    assert!(
        tokens.iter().all(|token| token.0 < after.0),
        "{tokens:?} then {after:?}"
    );
}

/// Touches go out as one pipelined batch per server, and say which keys were there.
#[tokio::test]
async fn touch_many_keeps_items_and_reports_missing_ones() {
    let (servers, store) = three_servers().await;
    let keys: Vec<ItemKey> = (0..40).map(|n| key(&format!("touched:{n}"))).collect();
    for item in keys.iter().skip(1) {
        store
            .set(
                item,
                Bytes::from_static(b"v"),
                Expiry::After(Duration::from_secs(1)),
            )
            .await
            .unwrap();
    }
    let touched = store.touch_many(&keys, Expiry::Never).await.unwrap();
    assert_eq!(touched.len(), 40);
    assert!(!touched[0]);
    assert!(touched[1..].iter().all(|&kept| kept));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let kept = store.get_many(&keys).await.unwrap();
    assert!(kept[0].is_none());
    assert!(kept[1..].iter().all(Option::is_some));
    let touches: u64 = servers.iter().map(|s| s.stat("cmd_touch").unwrap()).sum();
    assert_eq!(touches, 39);
    assert_eq!(
        store.touch_many(&[], Expiry::Never).await.unwrap(),
        Vec::<bool>::new()
    );
}
