//! A running blob load for the fault tests: uploads, downloads and deletes through the serving
//! sidecars, every answer judged at once against a model of what was acknowledged.
//!
//! A refusal (`503`, or `500` for a write, or a connection that failed) is always acceptable; a
//! wrong answer never is: other bytes, a `404` for a blob acknowledged and never deleted, a blob
//! served after its delete was acknowledged. Deletes race a read of the same blob on purpose:
//! a read that repairs a replica must not bring a deleted blob back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use tokio::task::JoinHandle;

use super::{blob, get_blob, put_blob};

/// Inside one chunk, several chunks, a partial last chunk (512 KiB chunks).
const SIZES: [usize; 4] = [1, 10_000, 300_000, 1_100_000];
/// Blobs kept at most (uploads wait above it): memcached runs without evictions. High enough
/// that uploads seldom wait in a test of some seconds, so that they meet every fault.
const MAX_LIVE: usize = 250;
/// How long the final check waits out refusals of one blob before calling it unreadable.
const SETTLE: Duration = Duration::from_secs(20);

/// What the sidecars acknowledged of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live,
    /// A delete is in flight.
    Deleting,
    /// Its delete was acknowledged: a read must say 404.
    Deleted,
    /// Its delete failed: either answer is right, other bytes never.
    MaybeDeleted,
}

#[derive(Clone, Copy)]
struct Blob {
    seed: u64,
    size: usize,
    state: State,
}

impl Blob {
    fn bytes(&self) -> Vec<u8> {
        blob(self.seed, self.size)
    }
}

/// What the load did, for the test's report.
#[derive(Debug, Default)]
pub struct Counts {
    pub uploads: AtomicU64,
    pub uploads_refused: AtomicU64,
    pub reads: AtomicU64,
    pub reads_refused: AtomicU64,
    pub deletes: AtomicU64,
    pub deletes_refused: AtomicU64,
}

#[derive(Default)]
struct Model {
    keys: Vec<String>,
    blobs: HashMap<String, Blob>,
}

#[derive(Default)]
struct Shared {
    model: Mutex<Model>,
    wrong: Mutex<Vec<String>>,
    counts: Counts,
    seeds: AtomicU64,
    stop: AtomicBool,
    /// The data URLs of the sidecars that serve; the test changes them as sidecars come and go.
    urls: RwLock<Vec<String>>,
    started: OnceLock<Instant>,
}

impl Shared {
    fn wrong(&self, what: String) {
        println!("[{:.3}] WRONG ANSWER: {what}", self.elapsed());
        self.wrong.lock().unwrap().push(what);
    }

    /// Seconds since the load started, for logs that tell when things happened.
    fn elapsed(&self) -> f64 {
        self.started
            .get()
            .map_or(0.0, |at| at.elapsed().as_secs_f64())
    }

    fn url(&self, turn: usize) -> Option<String> {
        let urls = self.urls.read().unwrap();
        (!urls.is_empty()).then(|| urls[turn % urls.len()].clone())
    }

    fn get(&self, key: &str) -> Blob {
        self.model.lock().unwrap().blobs[key]
    }

    fn set_state(&self, key: &str, state: State) {
        if let Some(blob) = self.model.lock().unwrap().blobs.get_mut(key) {
            blob.state = state;
        }
    }

    /// A random blob for which `wanted` holds (a few tries).
    fn pick(&self, wanted: impl Fn(&Blob) -> bool) -> Option<(String, Blob)> {
        let model = self.model.lock().unwrap();
        for _ in 0..20 {
            if model.keys.is_empty() {
                return None;
            }
            let key = &model.keys[rand::random::<u64>() as usize % model.keys.len()];
            let blob = model.blobs[key];
            if wanted(&blob) {
                return Some((key.clone(), blob));
            }
        }
        None
    }

    fn live(&self) -> usize {
        let model = self.model.lock().unwrap();
        model
            .blobs
            .values()
            .filter(|blob| blob.state == State::Live)
            .count()
    }

    /// Judge a GET of `key` that started with the blob in `before`.
    fn judge_read(&self, key: &str, before: Blob, answer: Result<Vec<u8>, (StatusCode, String)>) {
        let after = self.get(key).state;
        // A delete that was in flight at any time during the read: either answer is right.
        let settled = before.state == after && matches!(after, State::Live | State::Deleted);
        match answer {
            Ok(bytes) if bytes != before.bytes() => {
                self.wrong(format!("GET {key} answered other bytes ({})", bytes.len()))
            }
            Ok(_) if before.state == State::Deleted => self.wrong(format!(
                "GET {key} served a blob whose delete was acknowledged"
            )),
            Ok(_) => {
                self.counts.reads.fetch_add(1, Ordering::Relaxed);
            }
            Err((StatusCode::NOT_FOUND, _)) if after == State::Live => self.wrong(format!(
                "GET {key} answered 404 for a blob acknowledged and never deleted"
            )),
            Err((StatusCode::NOT_FOUND, _)) => {}
            Err((status @ (StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY), body)) => {
                self.counts.reads_refused.fetch_add(1, Ordering::Relaxed);
                println!(
                    "GET {key} refused ({:?} before, {after:?} after): {status} {}",
                    before.state,
                    body.trim()
                );
            }
            // Its manifest read before a racing delete, a chunk after it.
            Err((StatusCode::INTERNAL_SERVER_ERROR, _)) if !settled => {}
            Err((status, body)) => self.wrong(format!(
                "GET {key} ({:?} blob) answered {status}: {body}",
                before.state
            )),
        }
    }
}

/// DELETE a blob: `Ok` for a 204, else the status (`BAD_GATEWAY` when the request itself
/// failed) and body.
async fn delete_blob(client: &Client, url: &str, key: &str) -> Result<(), (StatusCode, String)> {
    let response = client
        .delete(format!("{url}/DataFile/{key}"))
        .send()
        .await
        .map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))?;
    match response.status() {
        StatusCode::NO_CONTENT => Ok(()),
        status => Err((status, response.text().await.unwrap_or_default())),
    }
}

pub struct BlobLoad {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl BlobLoad {
    /// Two uploaders, two downloaders and a deleter, spread over `urls`.
    pub fn start(urls: &[String]) -> BlobLoad {
        let shared = Arc::new(Shared::default());
        *shared.urls.write().unwrap() = urls.to_vec();
        shared.started.get_or_init(Instant::now);
        let mut load = BlobLoad {
            shared,
            tasks: Vec::new(),
        };
        for worker in 0..2 {
            load.spawn(worker, uploader);
            load.spawn(worker, downloader);
        }
        load.spawn(0, deleter);
        load
    }

    fn spawn<F, Fut>(&mut self, worker: usize, task: F)
    where
        F: FnOnce(Arc<Shared>, usize) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push(tokio::spawn(task(self.shared.clone(), worker)));
    }

    /// Requests for `time` to a sidecar that must refuse everything, saying `why`, while the
    /// load goes on: reads of acknowledged blobs, uploads, deletes. It must write nothing, so
    /// the model does not change. How many were refused (the others are wrong answers).
    pub async fn refusals(&self, url: &str, why: &str, time: Duration) -> u64 {
        let client = Client::new();
        let deadline = Instant::now() + time;
        let mut refused = 0;
        for turn in 0u64.. {
            if Instant::now() > deadline {
                break;
            }
            let Some((key, _)) = self.shared.pick(|blob| blob.state == State::Live) else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (what, answer) = match turn % 3 {
                0 => (
                    "PUT",
                    put_blob(&client, url, blob(u64::MAX - turn, 1000))
                        .await
                        .map(drop),
                ),
                1 => ("GET", get_blob(&client, url, &key).await.map(drop)),
                _ => ("DELETE", delete_blob(&client, url, &key).await.map(drop)),
            };
            match answer {
                Err((StatusCode::SERVICE_UNAVAILABLE, body)) if body.contains(why) => refused += 1,
                answer => self.shared.wrong(format!(
                    "a refusing sidecar answered {what} {key} with {answer:?} instead of 503 \
                     saying \"{why}\""
                )),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        refused
    }

    /// The sidecars the load goes to from now on.
    pub fn set_urls(&self, urls: &[String]) {
        *self.shared.urls.write().unwrap() = urls.to_vec();
    }

    /// Seconds since the load started, as its logs print them.
    pub fn elapsed(&self) -> f64 {
        self.shared.elapsed()
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// The wrong answers so far.
    pub fn wrong(&self) -> Vec<String> {
        self.shared.wrong.lock().unwrap().clone()
    }

    /// Stop every task and wait for them.
    pub async fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    /// Read `count` blobs acknowledged and not being deleted through `url`, all at once; each
    /// must come back identical (or be deleted meanwhile): what a test asks while a server is
    /// down or cut off, from which reads must go on. How many were read.
    pub async fn read_now(&self, url: &str, count: usize) -> usize {
        let picks: Vec<(String, Blob)> = (0..count)
            .filter_map(|_| self.shared.pick(|blob| blob.state == State::Live))
            .collect();
        let reads = picks.into_iter().map(|(key, before)| async move {
            let answer = get_blob(&Client::new(), url, &key).await;
            let ok = answer.as_ref().is_ok_and(|bytes| *bytes == before.bytes());
            if !ok && self.shared.get(&key).state == State::Live {
                self.shared.wrong(format!(
                    "GET {key} while one copy was unreachable answered {:?} instead of its \
                     bytes from the other copy",
                    answer.map(|bytes| bytes.len())
                ));
            }
            ok
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Like [`BlobLoad::read_now`], one read after the other: how long each took (a wrong
    /// answer is recorded as such).
    pub async fn read_timed(&self, url: &str, count: usize) -> Vec<Duration> {
        let mut took = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            self.read_now(url, 1).await;
            took.push(started.elapsed());
        }
        took
    }

    /// After the load, with every server up: each blob as the model says, through `url` (a
    /// refusal is waited out a while). The problems found.
    pub async fn verify(&self, url: &str) -> Vec<String> {
        let client = Client::new();
        let blobs: Vec<(String, Blob)> = {
            let model = self.shared.model.lock().unwrap();
            model
                .keys
                .iter()
                .map(|key| (key.clone(), model.blobs[key]))
                .collect()
        };
        let mut problems = Vec::new();
        for (key, blob) in blobs {
            let deadline = Instant::now() + SETTLE;
            let answer = loop {
                match get_blob(&client, url, &key).await {
                    Err((StatusCode::SERVICE_UNAVAILABLE, _)) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    answer => break answer,
                }
            };
            let right = match (&answer, blob.state) {
                (Ok(bytes), State::Live | State::MaybeDeleted) => *bytes == blob.bytes(),
                (Err((StatusCode::NOT_FOUND, _)), State::Deleted | State::MaybeDeleted) => true,
                _ => false,
            };
            if !right {
                problems.push(format!(
                    "blob {key} ({:?}, {} bytes) answered {:?}",
                    blob.state,
                    blob.size,
                    answer.map(|bytes| bytes.len())
                ));
            }
        }
        problems
    }

    /// Blobs acknowledged and not deleted.
    pub fn live(&self) -> usize {
        self.shared.live()
    }
}

async fn uploader(shared: Arc<Shared>, worker: usize) {
    let client = Client::new();
    let mut turn = worker;
    while !shared.stop.load(Ordering::Relaxed) {
        turn += 1;
        let url = shared.url(turn);
        let Some(url) = url.filter(|_| shared.live() < MAX_LIVE) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let seed = shared.seeds.fetch_add(1, Ordering::Relaxed);
        let size = SIZES[seed as usize % SIZES.len()];
        match put_blob(&client, &url, blob(seed, size)).await {
            Ok(key) => {
                let mut model = shared.model.lock().unwrap();
                model.keys.push(key.clone());
                let state = State::Live;
                model.blobs.insert(key, Blob { seed, size, state });
                shared.counts.uploads.fetch_add(1, Ordering::Relaxed);
            }
            Err((
                StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY,
                _,
            )) => {
                shared
                    .counts
                    .uploads_refused
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((status, body)) => shared.wrong(format!("PUT answered {status}: {body}")),
        }
    }
}

async fn downloader(shared: Arc<Shared>, worker: usize) {
    let client = Client::new();
    let mut turn = worker;
    while !shared.stop.load(Ordering::Relaxed) {
        turn += 1;
        let (Some(url), Some((key, before))) = (shared.url(turn), shared.pick(|_| true)) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let answer = get_blob(&client, &url, &key).await;
        if answer.is_err() {
            // Not a busy loop against a sidecar that refuses at once.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.judge_read(&key, before, answer);
    }
}

async fn deleter(shared: Arc<Shared>, worker: usize) {
    let client = Client::new();
    let mut turn = worker;
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(40)).await;
        turn += 1;
        let picked = shared.pick(|blob| blob.state == State::Live);
        let (Some(url), Some((key, blob))) = (shared.url(turn), picked) else {
            continue;
        };
        shared.set_state(&key, State::Deleting);
        let before = Blob {
            state: State::Deleting,
            ..blob
        };
        // A read racing the delete, on another sidecar when there is one: if it repairs a
        // replica the delete already passed, the blob comes back.
        let other = shared.url(turn + 1).unwrap_or_else(|| url.clone());
        let (deleted, racing) = tokio::join!(
            delete_blob(&client, &url, &key),
            get_blob(&client, &other, &key)
        );
        match deleted.map_err(|(status, _)| status) {
            Ok(()) => {
                shared.set_state(&key, State::Deleted);
                shared.counts.deletes.fetch_add(1, Ordering::Relaxed);
            }
            Err(StatusCode::NOT_FOUND) => {
                shared.set_state(&key, State::MaybeDeleted);
                shared.wrong(format!(
                    "DELETE {key} answered 404 for a blob acknowledged and never deleted"
                ));
            }
            Err(
                StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY,
            ) => {
                shared.set_state(&key, State::MaybeDeleted);
                shared
                    .counts
                    .deletes_refused
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                shared.set_state(&key, State::MaybeDeleted);
                shared.wrong(format!("DELETE {key} answered {status}"));
            }
        }
        shared.judge_read(&key, before, racing);
        // Read your delete, on both sidecars.
        for url in [&url, &other] {
            let before = shared.get(&key);
            let answer = get_blob(&client, url, &key).await;
            shared.judge_read(&key, before, answer);
        }
    }
}
