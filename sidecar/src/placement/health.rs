//! How each memcached server has been answering, from what this sidecar sees of it: the usual
//! latency of its answers (estimated as TCP estimates round trips), its timeouts, and whether it
//! is suspect. Reads use it to wait for a server only as long as its answers usually take
//! before asking another owner (hedging), to give up on it after a deadline derived from the
//! same figures rather than memcached's fixed I/O timeout, and to ask a suspect server last, so
//! that once a server is known to hang, reads take their usual time. A suspect server is cleared
//! only by the probe (`ReplicatedStore::ping`, every second), never by a read's luck.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest wait before a read asks another owner too: below it, a hedge would double the
/// reads of a healthy store for nothing.
const HEDGE_MIN: Duration = Duration::from_millis(2);
/// The longest: a read of a few items never waits longer for one owner while another is there.
const HEDGE_MAX: Duration = Duration::from_millis(150);
/// The shortest time a server may take before it counts as silent.
const SILENT_MIN: Duration = Duration::from_secs(2);
/// The longest: memcached's own I/O timeout.
pub(super) const SILENT_MAX: Duration = Duration::from_secs(5);
/// Before any answer was seen: what a local network gives.
const FIRST_ESTIMATE: Duration = Duration::from_millis(1);
/// Probes in a row that a suspect server must answer in time to be trusted again.
const PROBES_TO_CLEAR: u32 = 2;

/// One server's health.
#[derive(Debug)]
pub struct ServerHealth {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Smoothed latency and its mean deviation, in seconds (RFC 6298's estimator).
    smoothed: f64,
    deviation: f64,
    /// Since when the server is suspect, if it is.
    suspect_since: Option<Instant>,
    /// Probes answered in time in a row while suspect.
    good_probes: u32,
    timeouts: u64,
    /// Seconds spent suspect, over the suspect periods that ended.
    suspect_seconds: f64,
}

/// What the metrics show of a server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthFigures {
    pub suspect: bool,
    pub timeouts: u64,
    pub suspect_seconds: f64,
    pub latency: Duration,
}

impl Default for ServerHealth {
    fn default() -> ServerHealth {
        ServerHealth {
            state: Mutex::new(State {
                smoothed: FIRST_ESTIMATE.as_secs_f64(),
                deviation: FIRST_ESTIMATE.as_secs_f64() / 2.0,
                suspect_since: None,
                good_probes: 0,
                timeouts: 0,
                suspect_seconds: 0.0,
            }),
        }
    }
}

impl ServerHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An answer that took `elapsed`.
    pub fn answered(&self, elapsed: Duration) {
        let sample = elapsed.as_secs_f64();
        let mut state = self.state();
        state.deviation = 0.75 * state.deviation + 0.25 * (state.smoothed - sample).abs();
        state.smoothed = 0.875 * state.smoothed + 0.125 * sample;
    }

    /// No answer within [`ServerHealth::silent_after`], or a failed exchange: suspect from now.
    pub fn timed_out(&self) {
        let mut state = self.state();
        state.timeouts += 1;
        state.good_probes = 0;
        if state.suspect_since.is_none() {
            state.suspect_since = Some(Instant::now());
        }
    }

    /// The probe's verdict: answered in time or not.
    pub fn probed(&self, answered_in: Option<Duration>) {
        let Some(elapsed) = answered_in.filter(|took| *took <= self.silent_after()) else {
            self.timed_out();
            return;
        };
        self.answered(elapsed);
        let mut state = self.state();
        if let Some(since) = state.suspect_since {
            state.good_probes += 1;
            if state.good_probes >= PROBES_TO_CLEAR {
                state.suspect_seconds += since.elapsed().as_secs_f64();
                state.suspect_since = None;
                state.good_probes = 0;
            }
        }
    }

    pub fn is_suspect(&self) -> bool {
        self.state().suspect_since.is_some()
    }

    /// How long the server has been suspect, if it is.
    pub fn suspect_for(&self) -> Option<Duration> {
        self.state().suspect_since.map(|since| since.elapsed())
    }

    /// How long a read waits for this server before asking another owner too: the latency its
    /// answers rarely exceed.
    pub fn hedge_after(&self) -> Duration {
        let state = self.state();
        Duration::from_secs_f64(state.smoothed + 4.0 * state.deviation).clamp(HEDGE_MIN, HEDGE_MAX)
    }

    /// How long an exchange may take before the server counts as silent: many times what its
    /// answers usually take, so that load makes no server suspect.
    pub fn silent_after(&self) -> Duration {
        let state = self.state();
        Duration::from_secs_f64(20.0 * (state.smoothed + 4.0 * state.deviation))
            .clamp(SILENT_MIN, SILENT_MAX)
    }

    pub fn figures(&self) -> HealthFigures {
        let state = self.state();
        HealthFigures {
            suspect: state.suspect_since.is_some(),
            timeouts: state.timeouts,
            suspect_seconds: state.suspect_seconds
                + state
                    .suspect_since
                    .map_or(0.0, |since| since.elapsed().as_secs_f64()),
            latency: Duration::from_secs_f64(state.smoothed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_follow_the_usual_latency_within_bounds() {
        let health = ServerHealth::default();
        for _ in 0..50 {
            health.answered(Duration::from_micros(200));
        }
        assert_eq!(health.hedge_after(), HEDGE_MIN);
        assert_eq!(health.silent_after(), SILENT_MIN);
        for _ in 0..50 {
            health.answered(Duration::from_millis(40));
        }
        assert!(health.hedge_after() > Duration::from_millis(40));
        assert!(health.hedge_after() <= HEDGE_MAX);
        assert!(health.silent_after() >= SILENT_MIN);
        assert!(health.silent_after() <= SILENT_MAX);
    }

    #[test]
    fn a_timeout_makes_it_suspect_until_probes_answer() {
        let health = ServerHealth::default();
        health.timed_out();
        assert!(health.is_suspect());
        // Reads that happen to be answered do not clear it: only probes do.
        health.answered(Duration::from_micros(300));
        assert!(health.is_suspect());
        health.probed(Some(Duration::from_micros(300)));
        assert!(health.is_suspect());
        health.probed(None);
        health.probed(Some(Duration::from_micros(300)));
        assert!(health.is_suspect(), "a failed probe starts the count over");
        health.probed(Some(Duration::from_micros(300)));
        assert!(!health.is_suspect());
        let figures = health.figures();
        assert_eq!(figures.timeouts, 2);
        assert!(!figures.suspect);
    }
}
