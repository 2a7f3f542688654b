//! The placement record through the real binary on real memcached servers: a store written
//! under one server list is never served under another (a server added, removed, or restarted
//! empty): the sidecar stays up, not ready, says what differs and what to run, and refuses
//! every request (data `503`, metadata `InternalError`), never answering "not found", an empty
//! listing or other bytes; with the list it was written under, in any order, it serves
//! everything acknowledged.

#![allow(clippy::unwrap_used)]

mod faults_common;

use reqwest::{Client, StatusCode};
use zenko_memcached_testkit::{Memcached, Sidecar};

use faults_common::{BINARY, admin_get, blob, get_blob, node, put_blob, recorded};

fn sidecar_on(servers: &[&Memcached]) -> Sidecar {
    sidecar_with(servers, &[])
}

fn sidecar_with(servers: &[&Memcached], extra: &[&str]) -> Sidecar {
    let list = servers
        .iter()
        .map(|server| server.address())
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec!["--memcached", list.as_str()];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(BINARY, &args);
    assert!(
        zenko_memcached_testkit::wait_for_listener(
            sidecar.metadata_addr(),
            std::time::Duration::from_secs(10)
        ),
        "no metadata listener"
    );
    sidecar
}

/// Every request is refused with `expected` in the answer, and nothing is written.
async fn refuses(sidecar: &Sidecar, blobs: &[(String, Vec<u8>)], expected: &str) {
    let (status, body) = admin_get(sidecar, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(expected), "/readyz said: {body}");
    assert_eq!(body.lines().count(), 1, "one line: {body}");
    let client = Client::new();
    for (key, _) in blobs {
        let answer = get_blob(&client, &sidecar.data_url(), key).await;
        match answer {
            Err((StatusCode::SERVICE_UNAVAILABLE, body)) => {
                assert!(body.contains(expected), "{body}")
            }
            other => panic!(
                "blob {key} answered {:?} instead of 503",
                other.map(|bytes| bytes.len())
            ),
        }
    }
    let refused = put_blob(&client, &sidecar.data_url(), blob(99, 1000)).await;
    assert!(
        matches!(refused, Err((StatusCode::SERVICE_UNAVAILABLE, _))),
        "{refused:?}"
    );
    node(sidecar, "expect-refused", &[expected]);
}

/// Every blob reads back identical and the metadata equals `snapshot`.
async fn serves(sidecar: &Sidecar, blobs: &[(String, Vec<u8>)], snapshot: &str) {
    // Ready once the health probe has reached every server (one may just have restarted).
    assert!(
        faults_common::eventually(std::time::Duration::from_secs(10), || {
            admin_get(sidecar, "/readyz").0 == 200
        }),
        "{:?}",
        admin_get(sidecar, "/readyz")
    );
    let client = Client::new();
    for (key, bytes) in blobs {
        assert!(
            get_blob(&client, &sidecar.data_url(), key).await.unwrap() == *bytes,
            "blob {key} differs"
        );
    }
    assert_eq!(node(sidecar, "snapshot", &[]), snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_served_only_under_the_server_list_it_was_written_under() {
    let a = Memcached::start(&[]);
    let mut b = Memcached::start(&[]);
    let c = Memcached::start(&[]);

    let first = sidecar_on(&[&a, &b]);
    let client = Client::new();
    let mut blobs = Vec::new();
    for seed in 0..30u64 {
        let size = [1, 100_000, 700_000, 1_300_000][seed as usize % 4];
        let bytes = blob(seed, size);
        let key = put_blob(&client, &first.data_url(), bytes.clone())
            .await
            .unwrap();
        blobs.push((key, bytes));
    }
    node(&first, "populate", &["200"]);
    let snapshot = node(&first, "snapshot", &[]);
    drop(first);

    // One server more, as scaling a module up would give.
    let more = sidecar_on(&[&a, &b, &c]);
    refuses(&more, &blobs, "differs from the store's placement").await;
    let (_, body) = admin_get(&more, "/readyz");
    assert!(
        body.contains(&format!("{} not in it", c.address())),
        "{body}"
    );
    assert!(
        body.contains(&format!("--memcached {},{}", a.address(), b.address()))
            || body.contains(&format!("--memcached {},{}", b.address(), a.address())),
        "{body}"
    );
    drop(more);
    // What each server holds, as the operator's command shows it.
    let three = [&a, &b, &c].map(|server| server.address()).join(",");
    let shown = std::process::Command::new(BINARY)
        .args(["placement", "show", "--memcached", &three])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(&format!("{}: placement generation 1", a.address()))
            && shown.contains(&format!("{}: placement generation 1", b.address()))
            && shown.contains(&format!("{}: nothing of this deployment", c.address())),
        "{shown}"
    );
    // One server less.
    let fewer = sidecar_on(&[&a]);
    refuses(&fewer, &blobs, "missing from --memcached").await;
    drop(fewer);
    // Nothing was written meanwhile: the new server holds nothing of the deployment.
    assert!(c.items().is_empty(), "{:?}", c.items().len());

    // The same servers in another order: served, everything there.
    let reordered = sidecar_on(&[&b, &a]);
    serves(&reordered, &blobs, &snapshot).await;
    drop(reordered);

    // One server restarted empty (no warm restart): its share is gone, so refuse.
    b.restart();
    let after_loss = sidecar_on(&[&a, &b]);
    refuses(&after_loss, &blobs, "hold no placement record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_placement_records_is_adopted_under_its_own_list_only() {
    let a = Memcached::start(&[]);
    let b = Memcached::start(&[]);
    let c = Memcached::start(&[]);
    let first = sidecar_on(&[&a, &b]);
    node(&first, "populate", &["100"]);
    let snapshot = node(&first, "snapshot", &[]);
    let client = Client::new();
    let bytes = blob(7, 50_000);
    let key = put_blob(&client, &first.data_url(), bytes.clone())
        .await
        .unwrap();
    let blobs = vec![(key, bytes)];
    drop(first);
    // As an earlier release left it: no placement record anywhere.
    for server in [&a, &b] {
        let raw = zenko_memcached_sidecar::items::MemcachedStore::connect(&[server.address()])
            .await
            .unwrap();
        use zenko_memcached_sidecar::items::ItemStore;
        let key = zenko_memcached_sidecar::items::ItemKey::new(
            zenko_memcached_sidecar::placement::PLACEMENT_ITEM,
        )
        .unwrap();
        assert!(raw.delete(&key).await.unwrap());
    }
    // Under another list (its items are not where that list routes them): refused.
    let other = sidecar_on(&[&a, &c]);
    refuses(&other, &blobs, "").await;
    drop(other);
    // Under its own list: adopted (the record is written) and served.
    let adopted = sidecar_on(&[&a, &b]);
    serves(&adopted, &blobs, &snapshot).await;
    drop(adopted);
    let again = sidecar_on(&[&a, &b, &c]);
    refuses(&again, &blobs, "differs from the store's placement").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_copies_servers_restarted_empty_one_after_another_lose_nothing() {
    let mut servers = [
        Memcached::start(&[]),
        Memcached::start(&[]),
        Memcached::start(&[]),
    ];
    let list = servers
        .iter()
        .map(Memcached::address)
        .collect::<Vec<_>>()
        .join(",");
    let factor = ["--replication-factor", "2", "--refill-rate-mib", "256"];
    let [a, b, c] = &servers;
    let mut sidecar = sidecar_with(&[a, b, c], &factor);
    let client = Client::new();
    let mut blobs = Vec::new();
    for seed in 0..20u64 {
        let bytes = blob(seed, [1, 90_000, 1_300_000][seed as usize % 3]);
        let key = put_blob(&client, &sidecar.data_url(), bytes.clone())
            .await
            .unwrap();
        blobs.push((key, bytes));
    }
    node(&sidecar, "populate", &["200"]);
    let snapshot = node(&sidecar, "snapshot", &[]);

    // kill -9 of one memcached, back empty: the running sidecar serves everything, and
    // refills it in the background; then the next one, and the next.
    for victim in [1, 2, 0] {
        servers[victim].restart();
        serves(&sidecar, &blobs, &snapshot).await;
        assert!(
            faults_common::eventually(std::time::Duration::from_secs(60), || recorded(
                &list,
                &servers[victim]
            )),
            "server {victim} was not refilled"
        );
        let copied = faults_common::metric(&sidecar, "zmm_refill_items_total").unwrap_or(0.0);
        assert!(copied > 0.0, "refill copied {copied} items");
        assert_eq!(
            faults_common::metric(&sidecar, "zmm_refill_running"),
            Some(0.0)
        );
        serves(&sidecar, &blobs, &snapshot).await;
    }
    // The metadata check reads the store with its replicas, as the sidecars do.
    faults_common::check_store(&list);
    // A sidecar started now serves it all too.
    sidecar.kill_and_restart();
    assert!(zenko_memcached_testkit::wait_for_listener(
        sidecar.metadata_addr(),
        std::time::Duration::from_secs(10)
    ));
    serves(&sidecar, &blobs, &snapshot).await;
    drop(sidecar);
    // An operator's accept keeps the factor the store is written with.
    let accepted = std::process::Command::new(BINARY)
        .args(["placement", "accept", "--memcached", &list])
        .output()
        .unwrap();
    assert!(accepted.status.success());
    let shown = std::process::Command::new(BINARY)
        .args(["placement", "show", "--memcached", &list])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(
        shown.matches("placement generation 2").count(),
        3,
        "{shown}"
    );
    assert_eq!(shown.matches("replication factor 2").count(), 3, "{shown}");
    let [a, b, c] = &servers;
    let (_, body) = {
        let one = sidecar_with(&[a, b, c], &["--replication-factor", "1"]);
        admin_get(&one, "/readyz")
    };
    assert!(body.contains("--replication-factor 2"), "{body}");
}
