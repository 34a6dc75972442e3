//! Prometheus metrics: the process-wide recorder (every role installs it; the
//! admin listener's `/metrics` renders it) and the HTTP request metrics.
//!
//! - `escalations_http_requests_total{route,status}`: every answered request;
//!   `route` is the matched path template (`/widget/v1/conversations/{id}/end`),
//!   or `unmatched`, so the label stays bounded whatever the clients send.
//! - `escalations_http_request_duration_seconds{route}`: time to answer.
//! - The broker's `escalations_publish_*` metrics (see `broker::describe_metrics`).
//!
//! The recorder is global to the process (the `metrics` facade has one slot),
//! so it is installed once and its handle shared by every [`crate::AppState`]
//! built afterwards, which is what tests that build several apps need.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by route template and status.
pub const HTTP_REQUESTS_TOTAL: &str = "escalations_http_requests_total";
/// Time to answer a request, by route template.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "escalations_http_request_duration_seconds";
/// Reconnections of the live hub to the broker.
pub const LIVE_RECONNECTS_TOTAL: &str = "escalations_ingress_live_reconnects_total";
/// Live messages received, by `outcome`: `delivered`, `verdict`, `undecodable`.
pub const LIVE_MESSAGES_TOTAL: &str = "escalations_ingress_live_messages_total";

/// Buckets of every `_seconds` histogram (requests, publish confirms, batch
/// commits, webhook attempts). They go past the webhook timeout (10 s by
/// default, `webhooks.timeout_secs`), so a timed-out attempt lands in a bucket
/// of its own rather than in `+Inf` with everything slow.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0];

/// Buckets of every `_batch_size` histogram (worker batches, webhook
/// settlements): powers of two up to past the largest batch (`worker.max_batch`,
/// 256 by default).
pub const BATCH_SIZE_BUCKETS: [f64; 12] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];

/// How often histogram samples are folded into buckets when nobody scrapes,
/// so their memory stays bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first call.
///
/// If another recorder was installed first (by code outside this crate), the
/// returned handle renders only what is recorded through it, i.e. nothing;
/// that is logged once.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".to_owned()), &BATCH_SIZE_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(error) = metrics::set_global_recorder(recorder) {
                tracing::warn!(%error, "a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests answered, by route template and status.");
    describe_histogram!(HTTP_REQUEST_DURATION_SECONDS, Unit::Seconds, "Time to answer an HTTP request.");
    describe_counter!(LIVE_RECONNECTS_TOTAL, "Times the live hub reconnected to the broker.");
    describe_counter!(LIVE_MESSAGES_TOTAL, "Live messages received by this ingress, by outcome.");
    broker::describe_metrics();
}

/// Middleware recording [`HTTP_REQUESTS_TOTAL`] and [`HTTP_REQUEST_DURATION_SECONDS`].
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS_TOTAL, "route" => route, "status" => status).increment(1);
    response
}
