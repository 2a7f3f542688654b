//! Free loopback ports for test servers.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ports are taken from below Linux's ephemeral range (32768 and up by default): a port the
/// kernel picked for `bind(0)` may be picked again for another test's `bind(0)` or for an
/// outgoing connection before the server that was meant to have it binds it, and a test then
/// talks to the wrong process.
const FIRST: u16 = 20_000;
const COUNT: u16 = 12_000;

/// Ports this process handed out, never handed out twice: tests of one binary run in parallel.
static HANDED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port that was free a moment ago and that no other test of this process got. Tests start
/// their server on it at once.
pub fn free_port() -> u16 {
    let mut handed = HANDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A start that differs between processes, so that test binaries run one after the other
    // (whose servers may still be stopping) do not walk the same ports.
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    let start = (seed % u32::from(COUNT)) as u16;
    for offset in 0..COUNT {
        let port = FIRST + (start + offset) % COUNT;
        if !handed.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    )
}

/// Wait until something accepts connections on `addr`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
