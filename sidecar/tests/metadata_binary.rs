//! The metadata service of the real sidecar binary, on its memcached ordered store: CloudServer's
//! call sequences from both socket.io client generations, and acknowledged writes surviving
//! `kill -9` of the sidecar and a restart.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod js_common;

use js_common::scenario;
use zenko_memcached_testkit::{Memcached, Sidecar};

const BINARY: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

fn sidecar(memcached: &Memcached) -> Sidecar {
    let sidecar = Sidecar::start(BINARY, &["--memcached", &memcached.address()]);
    assert!(
        zenko_memcached_testkit::wait_for_listener(
            std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port)),
            std::time::Duration::from_secs(10)
        ),
        "no metadata listener"
    );
    sidecar
}

#[test]
fn cloudserver_call_sequences_on_memcached() {
    for generation in ["4", "2"] {
        let memcached = Memcached::start(&[]);
        let sidecar = sidecar(&memcached);
        scenario(&sidecar, generation, "cloudserver");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_and_restart() {
    let memcached = Memcached::start(&[]);
    let mut sidecar = sidecar(&memcached);
    let written = scenario(&sidecar, "4", "persistWrite");
    assert!(written.contains("VERSIONS "), "{written}");
    sidecar.kill_and_restart();
    assert!(zenko_memcached_testkit::wait_for_listener(
        std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.metadata_port)),
        std::time::Duration::from_secs(10)
    ));
    scenario(&sidecar, "2", "persistRead");
    scenario(&sidecar, "4", "persistRead");
}
