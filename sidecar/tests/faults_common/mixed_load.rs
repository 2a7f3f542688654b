//! A running mixed load on several sidecars, judged against a model of what was acknowledged:
//! blob uploads, downloads and deletes through every sidecar ([`BlobLoad`]), and a metadata
//! load of puts, deletes, gets and listings on each ([`MetadataLoad`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zenko_memcached_testkit::{Memcached, Sidecar};

use super::blob_load::BlobLoad;
use super::metadata_load::{MetadataLoad, verify_metadata};
use super::{BINARY, check_store};

/// The bucket the metadata load writes.
pub const BUCKET: &str = "pb";

pub fn list(servers: &[&Memcached]) -> String {
    servers
        .iter()
        .map(|server| server.address())
        .collect::<Vec<_>>()
        .join(",")
}

/// The sidecar binary on `list` with `factor` copies of everything.
pub fn placement_sidecar(list: &str, factor: u32) -> Sidecar {
    Sidecar::start(
        BINARY,
        &[
            "--memcached",
            list,
            "--replication-factor",
            &factor.to_string(),
            "--refill-rate-mib",
            "256",
        ],
    )
}

/// The running load: blobs through every sidecar, a metadata load on each.
pub struct Load {
    pub blobs: BlobLoad,
    pub metadata: Vec<MetadataLoad>,
    /// Logs of metadata loads already stopped.
    pub logs: Vec<Vec<String>>,
    started: Instant,
}

impl Load {
    pub fn start(sidecars: &[&Sidecar]) -> Load {
        let urls: Vec<String> = sidecars.iter().map(|s| s.data_url()).collect();
        Load {
            blobs: BlobLoad::start(&urls),
            metadata: (0u32..)
                .zip(sidecars)
                .map(|(n, sidecar)| MetadataLoad::start(sidecar, BUCKET, n * 100_000))
                .collect(),
            logs: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Acknowledged uploads and metadata puts so far.
    pub fn acked(&self) -> (u64, usize) {
        let uploads = self.blobs.counts().uploads.load(Ordering::Relaxed);
        (uploads, self.metadata.iter().map(|m| m.count("ACK")).sum())
    }

    /// Wait until the load has had `more` more uploads and metadata puts acknowledged.
    pub async fn progress(&self, more: usize, within: Duration) -> bool {
        let (uploads, puts) = self.acked();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let (now_uploads, now_puts) = self.acked();
            if now_uploads >= uploads + more as u64 && now_puts >= puts + more {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Stop everything; then check the blobs through `blobs_via` and the metadata through
    /// `metadata_via` against the model, and the store with `check`.
    pub async fn stop_and_verify(
        mut self,
        blobs_via: &Sidecar,
        metadata_via: &Sidecar,
        list: &str,
    ) {
        self.blobs.stop().await;
        let mut logs = std::mem::take(&mut self.logs);
        for load in self.metadata.drain(..) {
            logs.push(tokio::task::block_in_place(|| load.stop()));
        }
        let counts = self.blobs.counts();
        println!(
            "blob load: {counts:?}, {} live at the end",
            self.blobs.live()
        );
        let wrong = self.blobs.wrong();
        assert!(
            wrong.is_empty(),
            "wrong answers during the load: {wrong:#?}"
        );
        assert!(
            counts.uploads.load(Ordering::Relaxed) > 0
                && counts.reads.load(Ordering::Relaxed) > 0
                && counts.deletes.load(Ordering::Relaxed) > 0,
            "the blob load did not run: {counts:?}"
        );
        let problems = self.blobs.verify(&blobs_via.data_url()).await;
        assert!(
            problems.is_empty(),
            "blobs differ from the model: {problems:#?}"
        );
        tokio::task::block_in_place(|| {
            verify_metadata(metadata_via, BUCKET, &logs);
            let report = check_store(list);
            println!("check: {}", report.lines().last().unwrap_or_default());
        });
        println!("load and checks took {:?}", self.started.elapsed());
    }
}
