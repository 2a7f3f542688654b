//! Network namespaces for fault tests: each memcached on its own address in a namespace of its
//! own, joined to the test's (root) namespace by a veth pair, so that a test can cut one
//! server's link while the server runs.
//!
//! Addresses are a private 10.x.y.0/24 that nothing on the machine routes: each link takes a
//! /30 of it (root side .1, namespace side .2), and the whole /24 gets a blackhole route in the
//! root namespace, so that a packet for an address whose link is gone is dropped here and never
//! follows the default route out of the machine. Names and the /24 are unique per run, so tests
//! running at once do not clash. Everything is removed on drop, also when the test panics.
//!
//! Needs root and iproute2 (`ip netns`); without them [`Network::new`] fails the test with a
//! message saying so, never skips it.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Links one test may create (a /30 each within its /24).
const MAX_LINKS: u8 = 63;
/// /24s tried before giving up: one in use (another run's) is skipped.
const SUBNET_ATTEMPTS: u32 = 20;

static RUNS: AtomicU32 = AtomicU32::new(0);

/// `ip ARGS` in the root namespace: its stdout, or what went wrong.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run `ip` ({error})"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Fail the test with what is missing: these tests must not pass without their network.
fn required(result: Result<String, String>) -> String {
    result.unwrap_or_else(|error| {
        panic!(
            "network namespaces unavailable: {error}. The partition tests need root and \
             iproute2 (`ip netns`, veth pairs)"
        )
    })
}

/// One server's namespace and the veth pair that joins it to the root namespace.
#[derive(Clone, Debug)]
pub struct Link {
    /// The namespace, for `ip netns exec`.
    pub namespace: String,
    /// The root namespace's end of the pair.
    outer: String,
    /// The namespace's end: cutting the link sets it down, so that packets are dropped at the
    /// pair (the root end and its route stay: nothing goes elsewhere).
    inner: String,
    /// The address inside the namespace, where its server listens.
    pub host: Ipv4Addr,
}

impl Link {
    /// Cut the link: packets to and from the namespace are dropped from now on, as on a
    /// partitioned network (no reset, no "unreachable": connections just go quiet).
    pub fn cut(&self) {
        self.set_inner("down");
    }

    /// Restore the link after [`Link::cut`].
    pub fn restore(&self) {
        self.set_inner("up");
    }

    fn set_inner(&self, state: &str) {
        let namespace = self.namespace.as_str();
        required(ip(&[
            "netns",
            "exec",
            namespace,
            "ip",
            "link",
            "set",
            &self.inner,
            state,
        ]));
    }
}

/// The namespaces and links of one test, removed on drop. Declare it before the servers that
/// use it, so that it is dropped after them.
pub struct Network {
    tag: String,
    /// 10.x.y.0/24
    subnet: [u8; 3],
    links: Vec<Link>,
}

impl Network {
    /// A private /24 of the test's own; fails the test when namespaces cannot be made.
    pub fn new() -> Network {
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let seed = std::process::id()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(run.wrapping_mul(40_503))
            .wrapping_add(nanos);
        let tag = format!("{:06x}", seed & 0xff_ffff);
        required(ip(&["netns", "list"]));
        for attempt in 0..SUBNET_ATTEMPTS {
            let pick = seed.wrapping_add(attempt.wrapping_mul(7_919));
            // 10.200.0.0 to 10.249.255.0: far from the ranges hosts and clusters usually use.
            let subnet = [10, 200 + (pick % 50) as u8, (pick >> 8) as u8];
            if let Some(network) = Network::claim(&tag, subnet) {
                return network;
            }
        }
        panic!("network namespaces: no free 10.x.y.0/24 found for the test's addresses");
    }

    /// Take the /24 if nothing on the machine routes into it: its blackhole route is then ours.
    fn claim(tag: &str, subnet: [u8; 3]) -> Option<Network> {
        let prefix = format!("{}.{}.{}.0/24", subnet[0], subnet[1], subnet[2]);
        // Another run's /24 (or a real network) already there: `add` refuses. Any other
        // refusal (not root, no iproute2) fails the test.
        if let Err(error) = ip(&["route", "add", "blackhole", &prefix]) {
            if error.contains("File exists") {
                return None;
            }
            required(Err(error));
        }
        let network = Network {
            tag: tag.to_owned(),
            subnet,
            links: Vec::new(),
        };
        // Nothing more specific inside it, and nothing covering it but the default route.
        let inside = required(ip(&["-4", "route", "show", "root", &prefix]));
        let covering = required(ip(&["-4", "route", "show", "match", &prefix]));
        let foreign = |routes: &str| {
            routes
                .lines()
                .any(|line| !line.starts_with("default") && !line.starts_with("blackhole"))
        };
        if foreign(&inside) || foreign(&covering) {
            return None; // dropped: its blackhole route goes
        }
        Some(network)
    }

    fn prefix(&self) -> String {
        let [a, b, c] = self.subnet;
        format!("{a}.{b}.{c}.0/24")
    }

    /// A new namespace joined to this one by its own link, with its address up.
    pub fn link(&mut self) -> &Link {
        let index = u8::try_from(self.links.len())
            .ok()
            .filter(|index| *index < MAX_LINKS)
            .expect("too many links for one test network");
        let [a, b, c] = self.subnet;
        let base = index * 4;
        let outer_addr = format!("{a}.{b}.{c}.{}/30", base + 1);
        let host = Ipv4Addr::new(a, b, c, base + 2);
        let link = Link {
            namespace: format!("zmm-{}-{index}", self.tag),
            outer: format!("zmm{}o{index}", self.tag),
            inner: format!("zmm{}i{index}", self.tag),
            host,
        };
        let inner_addr = format!("{host}/30");
        let (ns, outer, inner) = (
            link.namespace.clone(),
            link.outer.clone(),
            link.inner.clone(),
        );
        // Recorded first, so that drop removes whatever part of it gets made.
        self.links.push(link);
        for step in [
            vec!["netns", "add", &ns],
            vec![
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
            vec!["link", "set", &inner, "netns", &ns],
            vec!["addr", "add", &outer_addr, "dev", &outer],
            vec!["link", "set", &outer, "up"],
            vec![
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &inner_addr,
                "dev",
                &inner,
            ],
            vec!["netns", "exec", &ns, "ip", "link", "set", &inner, "up"],
            vec!["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
        ] {
            required(ip(&step));
        }
        &self.links[self.links.len() - 1]
    }
}

impl Default for Network {
    fn default() -> Network {
        Network::new()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for link in &self.links {
            // Deleting one end of a pair deletes both; the namespace goes with its last process.
            let _ = ip(&["link", "del", &link.outer]);
            let _ = ip(&["netns", "del", &link.namespace]);
        }
        let _ = ip(&["route", "del", "blackhole", &self.prefix()]);
    }
}
