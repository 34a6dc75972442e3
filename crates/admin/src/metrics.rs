//! The process's metrics recorder with every description registered: the
//! ingress's HTTP and live metrics, the publisher's, the worker's, the
//! webhook dispatcher's and the admin gauges (docs/operations.md lists them).

use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the recorder (once per process) and describes every metric.
pub fn install() -> PrometheusHandle {
    let handle = ingress::metrics::install();
    worker::describe_metrics();
    delivery::describe_metrics();
    crate::gauges::describe();
    handle
}
