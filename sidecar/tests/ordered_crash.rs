//! Durability across a crash: a child process writes atomic two-key batches from several
//! tasks and prints each acknowledged one; it is killed with SIGKILL, and a fresh store must
//! hold every acknowledged batch, and every batch whole or not at all.

#![allow(clippy::unwrap_used)]

mod ordered_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zenko_memcached_sidecar::ordered::{Batch, OrderedStore};
use zenko_memcached_testkit::Memcached;

use ordered_common::{all, db, open, small_pages};

const CHILD_ENV: &str = "ORDERED_CRASH_WRITER_MEMCACHED";

/// The child's body: runs only when re-executed by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_child() {
    let Ok(address) = std::env::var(CHILD_ENV) else {
        return;
    };
    let items = std::sync::Arc::new(
        zenko_memcached_sidecar::items::MemcachedStore::connect(&[address])
            .await
            .unwrap(),
    );
    let store = zenko_memcached_sidecar::ordered::MemcachedOrderedStore::open(items, small_pages())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    let id = format!("{task}-{i:06}");
                    let value = format!("value of {id}");
                    let batch = Batch::default()
                        .put(format!("a/{id}"), value.clone())
                        .put(format!("b/{id}"), value);
                    store.write(&db("crash"), batch).await.unwrap();
                    println!("ACK {id}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let server = Memcached::start(&[]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, server.address())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(id.to_owned());
            }
        }
        acked
    });
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    assert!(
        acked.len() > 100,
        "only {} writes in {:?}",
        acked.len(),
        started.elapsed()
    );

    let store = open(&server, small_pages()).await;
    let content: BTreeMap<String, String> = all(&store, &db("crash")).await.into_iter().collect();
    for id in &acked {
        let value = format!("value of {id}");
        assert_eq!(content.get(&format!("a/{id}")), Some(&value), "lost {id}");
    }
    let a: Vec<&str> = content
        .keys()
        .filter_map(|k| k.strip_prefix("a/"))
        .collect();
    let b: Vec<&str> = content
        .keys()
        .filter_map(|k| k.strip_prefix("b/"))
        .collect();
    assert_eq!(a, b, "a batch was applied in part");
    assert!(a.len() >= acked.len());
    assert_eq!(store.databases().await.unwrap(), vec![db("crash")]);
    println!("{} acknowledged, {} present", acked.len(), a.len());
}
