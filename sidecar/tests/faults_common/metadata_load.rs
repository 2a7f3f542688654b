//! The metadata side of the fault tests' running load: `faults.js load-faults` against a
//! sidecar (puts, deletes, gets and listings, each answer judged against the model there), its
//! log kept for the final check against the model (`faults.js verify`).

use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use zenko_memcached_testkit::Sidecar;

use super::{node, spawn_node};

/// Writers of one load (besides a deleter, a reader and a lister).
const WRITERS: &str = "3";
/// A load that is never stopped ends by itself after this many seconds.
const MAX_SECONDS: &str = "300";

pub struct MetadataLoad {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl MetadataLoad {
    /// Keys `obj-FIRST` and on in `bucket`: loads on one bucket take ranges 100000 apart.
    pub fn start(sidecar: &Sidecar, bucket: &str, first: u32) -> MetadataLoad {
        let first = first.to_string();
        let mut child = spawn_node(
            sidecar,
            "load-faults",
            &[bucket, &first, WRITERS, MAX_SECONDS],
        );
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("BAD ") {
                    println!("WRONG ANSWER (metadata): {line}");
                }
                kept.lock().unwrap().push(line);
            }
        });
        MetadataLoad {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Lines of the log starting with `tag` and a space so far (`ACK`, `BAD`...).
    pub fn count(&self, tag: &str) -> usize {
        let prefix = format!("{tag} ");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.starts_with(&prefix))
            .count()
    }

    /// End the load (its stdin closes) and wait for it: its log, once it said PASS (no wrong
    /// answer during the load).
    pub fn stop(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let lines = self.lines.lock().unwrap().clone();
        let tagged = |tag: &str| -> Vec<&str> {
            lines
                .iter()
                .filter(|line| line.starts_with(tag))
                .map(String::as_str)
                .collect()
        };
        println!("metadata load: {}", tagged("COUNTS ").join(" "));
        assert!(
            status.success() && lines.iter().any(|line| line == "PASS load-faults"),
            "the metadata load met wrong answers:\n{}\n{}",
            tagged("BAD ").join("\n"),
            tagged("FAIL ").join("\n")
        );
        lines
    }
}

impl Drop for MetadataLoad {
    fn drop(&mut self) {
        // A test that failed before stopping it: no node left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// After the loads: `faults.js verify` through `sidecar` of every load's log on `bucket`. Every
/// acknowledged key is there with its value, every acknowledged delete done, and the listing
/// is the model's; panics otherwise.
pub fn verify_metadata(sidecar: &Sidecar, bucket: &str, logs: &[Vec<String>]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.log");
    let mut out = std::fs::File::create(&file).unwrap();
    for line in logs.iter().flatten() {
        writeln!(out, "{line}").unwrap();
    }
    drop(out);
    let verified = node(sidecar, "verify", &[bucket, file.to_str().unwrap()]);
    let count = |tag: &str| -> usize {
        verified
            .lines()
            .filter_map(|line| line.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
            .next_back()
            .unwrap_or_else(|| panic!("no {tag} count:\n{verified}"))
    };
    let found = ["LOST", "UNLISTED", "UNDELETED", "HALF"].map(|tag| (tag, count(tag)));
    let summary = verified
        .lines()
        .find(|line| line.starts_with("ACKED "))
        .unwrap_or_default();
    println!("metadata verified: {summary}, {found:?} (all must be 0)");
    assert!(
        found.iter().all(|(_, n)| *n == 0),
        "the metadata differs from the model:\n{verified}"
    );
}
