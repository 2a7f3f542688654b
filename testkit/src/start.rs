//! Starting a server process for a test: wait until it serves, and start it again on new ports
//! when it exits first.
//!
//! On a loaded machine a port can be taken between the check that it is free and the bind, or a
//! memcached that has only just started can refuse a sidecar's first connection; either makes
//! the new process exit while starting. What it printed stays on stderr.

use std::fmt;
use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::ports::wait_for_listener;

/// How many times a server that exits while starting is started.
pub const START_ATTEMPTS: usize = 3;

/// Why a started process is not serving.
#[derive(Debug)]
pub enum NotServing {
    /// It stopped first, with this status.
    Exited(ExitStatus),
    /// It ran without listening until the time was up (it has been killed).
    Silent,
}

impl fmt::Display for NotServing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotServing::Exited(status) => write!(f, "exited while starting ({status})"),
            NotServing::Silent => f.write_str("runs but did not start listening"),
        }
    }
}

/// Wait until each of `addrs`, in order, accepts connections, within `timeout` in all, while
/// `child` runs. Once they answer, the child must still run a moment later: one that lost a
/// port to another process (which then answered in its place) exits on that bind.
pub fn wait_serving(
    child: &mut Child,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(), NotServing> {
    let deadline = Instant::now() + timeout;
    let mut waiting = addrs.iter().peekable();
    while let Some(addr) = waiting.peek() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotServing::Exited(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NotServing::Silent);
        }
        if wait_for_listener(**addr, Duration::from_millis(200)) {
            waiting.next();
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    match child.try_wait() {
        Ok(Some(status)) => Err(NotServing::Exited(status)),
        _ => Ok(()),
    }
}

/// Run `attempt` (which picks new ports and starts `what`) until it serves: again after an
/// exit while starting, up to [`START_ATTEMPTS`] times; a test failure otherwise.
pub fn with_retries(what: &str, mut attempt: impl FnMut() -> Result<(), NotServing>) {
    for round in 1..=START_ATTEMPTS {
        match attempt() {
            Ok(()) => return,
            Err(NotServing::Exited(status)) if round < START_ATTEMPTS => {
                eprintln!("{what} exited while starting ({status}): starting it again");
            }
            Err(not_serving) => panic!("{what} {not_serving}"),
        }
    }
}
