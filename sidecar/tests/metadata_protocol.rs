#![allow(clippy::unwrap_used)]
//! The metadata service driven by the real npm socket.io clients of both generations (4.x and
//! 2.x), through `tests/js/scenario.js` (and `tests/js/deletes.js`), on the router the binary
//! serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zenko_memcached_sidecar::items::ItemError;
use zenko_memcached_sidecar::items::{EmbeddedStore, MemcachedStore, SharedItemStore};
use zenko_memcached_sidecar::metadata::{MetadataConfig, MetadataService, router};
use zenko_memcached_sidecar::ordered::{
    Batch, KeyRange, MemoryOrderedStore, OrderedError, OrderedResult, OrderedStore, ScanStream,
    Sublevel,
};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// A metadata server on a free loopback port; dropped with its task.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(store: Arc<dyn OrderedStore>, items: SharedItemStore) -> Server {
    let config = MetadataConfig {
        placeholder_repair_delay: Some(Duration::from_secs(1)),
        ..MetadataConfig::default()
    };
    let app = router(MetadataService::new(store, items, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

async fn memory_server() -> Server {
    let items: SharedItemStore = Arc::new(EmbeddedStore::new(64 << 20, 2 << 20));
    serve(Arc::new(MemoryOrderedStore::default()), items).await
}

/// Run one scenario; returns its output, panicking with it unless it passed.
async fn scenario(
    server: &Server,
    generation: &str,
    name: &str,
    transport: Option<&str>,
) -> String {
    assert!(
        js_dir().join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(js_dir())
        .arg("scenario.js")
        .arg(server.addr.port().to_string())
        .arg(generation)
        .arg(name);
    if let Some(transport) = transport {
        command.arg(transport);
    }
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("scenario timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("PASS {name}")),
        "scenario {name} (socket.io {generation}.x, {transport:?}) failed:\n{stdout}\n{stderr}"
    );
    stdout
}

macro_rules! both_generations {
    ($($test:ident => ($name:expr, $transport:expr);)*) => {
        mod v4_clients {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = memory_server().await;
                    scenario(&server, "4", $name, $transport).await;
                }
            )*
        }
        mod v2_clients {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = memory_server().await;
                    scenario(&server, "2", $name, $transport).await;
                }
            )*
        }
    };
}

both_generations! {
    manifest => ("manifest", None);
    cloudserver_call_sequences => ("cloudserver", None);
    cloudserver_call_sequences_over_polling_only => ("cloudserver", Some("polling"));
    stream_flow_control => ("flow", None);
    hangup_mid_stream => ("hangup", None);
    missing_acks_end_the_stream => ("noack", None);
    ten_megabyte_value_over_polling => ("big", Some("polling"));
    ten_megabyte_value_over_websocket => ("big", Some("websocket"));
    malformed_payloads => ("malformed", None);
}

fn uuid_of(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("UUID "))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_is_stable_across_restarts_with_memcached() {
    let memcached = zenko_memcached_testkit::Memcached::start(&[]);
    let connect = || async {
        let items: SharedItemStore = Arc::new(
            MemcachedStore::connect(&[memcached.address()])
                .await
                .unwrap(),
        );
        items
    };
    let first_server = serve(Arc::new(MemoryOrderedStore::default()), connect().await).await;
    let first_output = scenario(&first_server, "4", "uuid", None).await;
    let first = uuid_of(&first_output);
    let total: u64 = first_output
        .lines()
        .find_map(|line| line.strip_prefix("TOTAL "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(Some(total), memcached.stat("limit_maxbytes"));
    drop(first_server);
    // A new process (new service, new connections) over the same memcached.
    let second_server = serve(Arc::new(MemoryOrderedStore::default()), connect().await).await;
    let second = uuid_of(&scenario(&second_server, "2", "uuid", None).await);
    assert_eq!(first, second);
    assert_eq!(first.len(), 36);
    // A second sidecar sharing the pool answers the same id.
    let third_server = serve(Arc::new(MemoryOrderedStore::default()), connect().await).await;
    assert_eq!(
        uuid_of(&scenario(&third_server, "4", "uuid", None).await),
        first
    );
}

/// An ordered store whose memcached is full: every operation fails that way.
struct FullStore;

#[async_trait::async_trait]
impl OrderedStore for FullStore {
    async fn get(&self, _: &Sublevel, _: &str) -> OrderedResult<Option<String>> {
        Err(OrderedError::Items(ItemError::Full))
    }
    async fn write(&self, _: &Sublevel, _: Batch) -> OrderedResult<()> {
        Err(OrderedError::Items(ItemError::Full))
    }
    async fn scan(&self, _: &Sublevel, _: KeyRange, _: bool) -> OrderedResult<ScanStream> {
        Err(OrderedError::Items(ItemError::Full))
    }
    async fn databases(&self) -> OrderedResult<Vec<Sublevel>> {
        Err(OrderedError::Items(ItemError::Full))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_is_reported_to_both_generations() {
    let items: SharedItemStore = Arc::new(EmbeddedStore::new(64 << 20, 2 << 20));
    let server = serve(Arc::new(FullStore), items).await;
    scenario(&server, "4", "full", None).await;
    scenario(&server, "2", "full", None).await;
}

/// The delete cases of `tests/js/deletes.js` (run on the binary and memcached by
/// `metadata_deletes.rs`) against the in-memory ordered store: a control that their checks
/// hold on a store that deletes correctly, so a failure there points at the memcached store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cases_pass_on_the_in_memory_store() {
    assert!(
        js_dir().join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    let server = memory_server().await;
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(js_dir())
        .args(["deletes.js", &server.addr.port().to_string(), "4", "all"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("delete cases timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !stdout.contains("FAIL"),
        "delete cases failed on the in-memory store:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
