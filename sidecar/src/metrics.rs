//! Prometheus metrics of the sidecar, served on the admin port's `/metrics`: those of the APIs
//! its role serves, memcached's errors, and the role itself.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Role;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallNameLabels {
    pub call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

/// What the metrics show of one memcached server, read from the store at each scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerFigures {
    pub server: String,
    /// It answers late or not at all: reads ask it last, until the probe clears it.
    pub suspect: bool,
    pub timeouts: u64,
    /// Seconds spent suspect so far.
    pub suspect_seconds: f64,
    /// The smoothed latency of its answers.
    pub latency_seconds: f64,
}

/// The per-server series.
#[derive(Clone, Default)]
struct ServerSeries {
    suspect: Family<ServerLabels, Gauge>,
    timeouts: Family<ServerLabels, Counter>,
    suspect_seconds: Family<ServerLabels, Gauge<f64, AtomicU64>>,
    latency: Family<ServerLabels, Gauge<f64, AtomicU64>>,
}

type ServersSource = Box<dyn Fn() -> Vec<ServerFigures> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the sidecar reports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub data_requests: Family<RequestLabels, Counter>,
    pub data_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub data_bytes_in: Counter,
    pub data_bytes_out: Counter,
    /// Blob downloads whose body is being sent now.
    pub data_open_downloads: Gauge,
    pub memcached_errors: Family<ErrorLabels, Counter>,
    pub metadata_calls: Family<CallLabels, Counter>,
    pub metadata_latency: Family<CallNameLabels, Histogram, fn() -> Histogram>,
    /// Metadata listings being streamed now, read from its source at each scrape.
    pub metadata_open_streams: Gauge,
    /// 1 while this sidecar refills a server that lost its contents.
    pub refill_running: Gauge,
    /// Items of the running refill's current source not yet looked at.
    pub refill_remaining: Gauge,
    pub refill_items: Counter,
    pub refill_bytes: Counter,
    open_streams_source: Arc<OnceLock<OpenStreamsSource>>,
    servers: ServerSeries,
    servers_source: Arc<OnceLock<ServersSource>>,
}

type OpenStreamsSource = Box<dyn Fn() -> usize + Send + Sync>;

/// One download counted in `zmm_data_open_downloads`; see [`Metrics::open_download`].
pub struct OpenDownload(Gauge);

impl Drop for OpenDownload {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::for_role(Role::Combined)
    }
}

impl Metrics {
    /// The metrics of a sidecar in `role`: an API it does not serve has no series, so that a
    /// dashboard of a data module shows no empty metadata panels and the reverse.
    pub fn for_role(role: Role) -> Metrics {
        let mut registry = Registry::with_prefix("zmm");
        registry.register(
            "sidecar",
            "The sidecar's role: combined, data or metadata",
            Info::new(vec![("role".to_owned(), role.as_str().to_owned())]),
        );
        let data_requests = Family::<RequestLabels, Counter>::default();
        let data_latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let data_bytes_in = Counter::default();
        let data_bytes_out = Counter::default();
        let data_open_downloads = Gauge::default();
        let memcached_errors = Family::<ErrorLabels, Counter>::default();
        let metadata_calls = Family::<CallLabels, Counter>::default();
        let metadata_latency =
            Family::<CallNameLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let metadata_open_streams = Gauge::default();
        let refill_running = Gauge::default();
        let refill_remaining = Gauge::default();
        let refill_items = Counter::default();
        let refill_bytes = Counter::default();
        registry.register(
            "refill_running",
            "1 while this sidecar refills a memcached server that lost its contents",
            refill_running.clone(),
        );
        registry.register(
            "refill_remaining_items",
            "Items the running refill has still to look at on its current source server",
            refill_remaining.clone(),
        );
        registry.register(
            "refill_items",
            "Items copied back to memcached servers that lost their contents",
            refill_items.clone(),
        );
        registry.register(
            "refill_bytes",
            "Bytes copied back to memcached servers that lost their contents",
            refill_bytes.clone(),
        );
        let servers = ServerSeries::default();
        registry.register(
            "memcached_server_suspect",
            "1 while a memcached server answers late or not at all (reads ask it last)",
            servers.suspect.clone(),
        );
        registry.register(
            "memcached_server_timeouts",
            "Exchanges with a memcached server given up on: no answer in time, or none at all",
            servers.timeouts.clone(),
        );
        registry.register(
            "memcached_server_suspect_seconds",
            "Seconds a memcached server has been suspect, over this sidecar's life",
            servers.suspect_seconds.clone(),
        );
        registry.register(
            "memcached_server_latency_seconds",
            "The smoothed latency of a memcached server's answers",
            servers.latency.clone(),
        );
        if role.serves_data() {
            registry.register(
                "data_requests",
                "Data API requests by route and status",
                data_requests.clone(),
            );
            registry.register(
                "data_request_duration_seconds",
                "Data API time to response headers, by route",
                data_latency.clone(),
            );
            registry.register(
                "data_received_bytes",
                "Blob bytes received by the data API",
                data_bytes_in.clone(),
            );
            registry.register(
                "data_sent_bytes",
                "Blob bytes sent by the data API",
                data_bytes_out.clone(),
            );
            registry.register(
                "data_open_downloads",
                "Blob downloads whose body is being sent now",
                data_open_downloads.clone(),
            );
        }
        registry.register(
            "memcached_errors",
            "Failed memcached operations by kind",
            memcached_errors.clone(),
        );
        if role.serves_metadata() {
            registry.register(
                "metadata_calls",
                "Metadata RPC calls by name and outcome",
                metadata_calls.clone(),
            );
            registry.register(
                "metadata_call_duration_seconds",
                "Metadata RPC time to answer, by call",
                metadata_latency.clone(),
            );
            registry.register(
                "metadata_open_streams",
                "Metadata listings being streamed to clients now",
                metadata_open_streams.clone(),
            );
        }
        Metrics {
            registry: Arc::new(registry),
            data_requests,
            data_latency,
            data_bytes_in,
            data_bytes_out,
            data_open_downloads,
            memcached_errors,
            metadata_calls,
            metadata_latency,
            metadata_open_streams,
            refill_running,
            refill_remaining,
            refill_items,
            refill_bytes,
            open_streams_source: Arc::new(OnceLock::new()),
            servers,
            servers_source: Arc::new(OnceLock::new()),
        }
    }
}

impl crate::metadata::CallObserver for Metrics {
    fn call_finished(&self, call: &str, outcome: &str, elapsed: Duration) {
        self.metadata_calls
            .get_or_create(&CallLabels {
                call: call.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.metadata_latency
            .get_or_create(&CallNameLabels {
                call: call.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        if outcome == "storage_full" {
            self.memcached_error("full");
        }
    }
}

impl Metrics {
    pub fn observe_data(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.data_requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.data_latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Count a download in `zmm_data_open_downloads` until the returned guard is dropped
    /// with its response body, however the body ends.
    pub fn open_download(&self) -> OpenDownload {
        self.data_open_downloads.inc();
        OpenDownload(self.data_open_downloads.clone())
    }

    pub fn memcached_error(&self, kind: &'static str) {
        self.memcached_errors
            .get_or_create(&ErrorLabels { kind })
            .inc();
    }

    /// Where `zmm_metadata_open_streams` is read from (the metadata service); set once.
    pub fn set_open_streams_source(&self, source: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.open_streams_source.set(Box::new(source));
    }

    /// Where the per-server series are read from (the replicated store); set once.
    pub fn set_servers_source(
        &self,
        source: impl Fn() -> Vec<ServerFigures> + Send + Sync + 'static,
    ) {
        let _ = self.servers_source.set(Box::new(source));
    }

    fn read_servers(&self) {
        let Some(source) = self.servers_source.get() else {
            return;
        };
        for figures in source() {
            let labels = ServerLabels {
                server: figures.server,
            };
            let series = &self.servers;
            series
                .suspect
                .get_or_create(&labels)
                .set(i64::from(figures.suspect));
            let timeouts = series.timeouts.get_or_create(&labels);
            timeouts.inc_by(figures.timeouts.saturating_sub(timeouts.get()));
            series
                .suspect_seconds
                .get_or_create(&labels)
                .set(figures.suspect_seconds);
            series
                .latency
                .get_or_create(&labels)
                .set(figures.latency_seconds);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        if let Some(source) = self.open_streams_source.get() {
            self.metadata_open_streams
                .set(i64::try_from(source()).unwrap_or(i64::MAX));
        }
        self.read_servers();
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_reports_its_own_series_and_its_name() {
        let combined = Metrics::for_role(Role::Combined).encode();
        assert!(combined.contains("zmm_sidecar_info{role=\"combined\"} 1"));
        assert!(combined.contains("zmm_data_sent_bytes_total 0"));
        assert!(combined.contains("zmm_metadata_open_streams 0"));

        let data = Metrics::for_role(Role::Data).encode();
        assert!(data.contains("zmm_sidecar_info{role=\"data\"} 1"));
        assert!(data.contains("zmm_data_sent_bytes_total 0"));
        assert!(!data.contains("zmm_metadata"), "{data}");

        let metadata = Metrics::for_role(Role::Metadata);
        metadata.memcached_error("full");
        let metadata = metadata.encode();
        assert!(metadata.contains("zmm_metadata_open_streams 0"));
        assert!(metadata.contains("zmm_memcached_errors_total{kind=\"full\"} 1"));
        assert!(!metadata.contains("zmm_data"), "{metadata}");
    }
}
