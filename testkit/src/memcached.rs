//! A real memcached server on a free port, started with the flags a test needs.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::netns::Link;
use crate::ports::free_port;
use crate::start::{self, NotServing};

/// The memcached binary: `ZMM_TEST_MEMCACHED` or `memcached` on the PATH.
fn binary() -> String {
    std::env::var("ZMM_TEST_MEMCACHED").unwrap_or_else(|_| "memcached".to_owned())
}

/// [`Memcached::start`]'s flags, then `extra`.
fn default_args(extra: &[&str]) -> Vec<String> {
    ["-m", "64", "-M", "-I", "2m"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// The port of a server alone in its network namespace.
const NAMESPACE_PORT: u16 = 11211;

pub struct Memcached {
    host: Ipv4Addr,
    port: u16,
    /// The network namespace it runs in, if not the test's.
    namespace: Option<String>,
    args: Vec<String>,
    child: Option<Child>,
}

impl Memcached {
    /// memcached with 64 MiB, evictions off (`-M`) and a 2 MiB item limit, plus `extra` flags.
    pub fn start(extra: &[&str]) -> Memcached {
        Memcached::start_with(default_args(extra))
    }

    /// memcached with exactly these flags (besides the address). A server that exits before
    /// listening is started again on another port (see [`crate::start`]).
    pub fn start_with(args: Vec<String>) -> Memcached {
        let mut server = Memcached {
            host: Ipv4Addr::LOCALHOST,
            port: 0,
            namespace: None,
            args,
            child: None,
        };
        start::with_retries("memcached", || {
            server.port = free_port();
            server.try_spawn()
        });
        server
    }

    /// [`Memcached::start`] in the namespace of `link`, on its address: cutting the link cuts
    /// the server off.
    pub fn start_in(link: &Link, extra: &[&str]) -> Memcached {
        let mut server = Memcached {
            host: link.host,
            port: NAMESPACE_PORT,
            namespace: Some(link.namespace.clone()),
            args: default_args(extra),
            child: None,
        };
        // Alone in its namespace, the port is free: no other port to retry on.
        server.spawn();
        server
    }

    /// Start on this server's port and wait until it listens.
    fn try_spawn(&mut self) -> Result<(), NotServing> {
        let (host, port) = (self.host.to_string(), self.port.to_string());
        let mut command = match &self.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, &binary()]);
                command
            }
            None => Command::new(binary()),
        };
        let mut child = command
            .args(["-l", &host, "-p", &port, "-U", "0", "-u", "root"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start memcached ({error}); install it (the README's test command does)"
                )
            });
        start::wait_serving(&mut child, &[self.addr()], Duration::from_secs(10))?;
        self.child = Some(child);
        Ok(())
    }

    /// Start (again) on the same port: a restart must keep its address.
    fn spawn(&mut self) {
        if let Err(not_serving) = self.try_spawn() {
            panic!("memcached on {} {not_serving}", self.addr());
        }
    }

    /// The server's process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.port))
    }

    /// `HOST:PORT`, as the sidecar's `--memcached` takes it.
    pub fn address(&self) -> String {
        self.addr().to_string()
    }

    /// Stop the server (SIGKILL: its memory is gone unless it was started with warm restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the process (SIGSTOP), as a hung process, a kernel or disk stall or a node cut
    /// off looks from outside: the kernel still accepts connections and takes requests, and
    /// nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Let a frozen process go on (SIGCONT): it answers what it was sent meanwhile.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Stop gracefully with SIGUSR1, which makes memcached save its memory file (`-e`).
    pub fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-USR1", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same flags.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Start again after [`Memcached::stop`] or [`Memcached::stop_gracefully`].
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// memcached's write commands so far, from its counters: sets (adds and CAS count as
    /// sets), touches, deletes and counter changes.
    pub fn write_commands(&self) -> u64 {
        [
            "cmd_set",
            "cmd_touch",
            "delete_hits",
            "delete_misses",
            "incr_hits",
            "incr_misses",
            "decr_hits",
            "decr_misses",
        ]
        .iter()
        .map(|name| self.stat(name).unwrap_or(0))
        .sum()
    }

    /// One `stats` figure read straight from the server, for assertions such as `evictions`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).ok()?;
        stream.write_all(b"stats\r\n").ok()?;
        for line in BufReader::new(stream).lines() {
            let line = line.ok()?;
            if line == "END" {
                break;
            }
            let mut fields = line.split(' ');
            if fields.next() == Some("STAT") && fields.next() == Some(name) {
                return fields.next()?.parse().ok();
            }
        }
        None
    }
}

/// One item as memcached's `lru_crawler metadump` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedItem {
    pub key: String,
    /// When it expires, in Unix seconds; `None` for never.
    pub expires: Option<u64>,
}

impl Memcached {
    /// Every live item with its expiry, read with `lru_crawler metadump all`. memcached
    /// answers `BUSY` while its background crawler runs: that is asked again, for a while.
    pub fn items(&self) -> Vec<DumpedItem> {
        for _ in 0..50 {
            match self.metadump() {
                Some(items) => return items,
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("memcached on {} stayed busy crawling", self.addr());
    }

    /// One metadump, or `None` when memcached was busy.
    fn metadump(&self) -> Option<Vec<DumpedItem>> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).expect("connect to memcached");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
            .write_all(b"lru_crawler metadump all\r\n")
            .expect("send metadump");
        let mut items = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line.expect("metadump cut short");
            if line.starts_with("BUSY") {
                return None;
            }
            // Anything but an item line ends the dump: END, or an error.
            if !line.starts_with("key=") {
                assert_eq!(line, "END", "metadump answered");
                break;
            }
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            };
            if let (Some(key), Some(exp)) = (field("key"), field("exp")) {
                items.push(DumpedItem {
                    // metadump writes keys URL-encoded (`:` as `%3A`).
                    key: percent_encoding::percent_decode_str(key)
                        .decode_utf8_lossy()
                        .into_owned(),
                    expires: exp.parse::<i64>().ok().and_then(|e| u64::try_from(e).ok()),
                });
            }
        }
        Some(items)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}
