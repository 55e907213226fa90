//! Prometheus metrics: one recorder per process, the public metric names in one place,
//! and the mapping from events to counters, so `/metrics` and the audit trail count
//! the same things.
//!
//! The names are a public interface (dashboards and alerts depend on them); the README
//! documents each.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::event::Event;

/// `hoox_webhooks_total{status}`: webhooks answered, by HTTP status.
pub const WEBHOOKS_TOTAL: &str = "hoox_webhooks_total";
/// `hoox_webhook_duration_seconds`: time to answer a webhook.
pub const WEBHOOK_DURATION: &str = "hoox_webhook_duration_seconds";
/// `hoox_publish_duration_seconds`: time from publish to the broker's confirm.
pub const PUBLISH_DURATION: &str = "hoox_publish_duration_seconds";
/// `hoox_batch_size`: deliveries per consumer batch.
pub const BATCH_SIZE: &str = "hoox_batch_size";
/// `hoox_orders_total{exchange,outcome}`: order attempts by outcome.
pub const ORDERS_TOTAL: &str = "hoox_orders_total";
/// `hoox_exchange_request_duration_seconds{exchange,endpoint}`: exchange HTTP calls.
pub const EXCHANGE_REQUEST_DURATION: &str = "hoox_exchange_request_duration_seconds";
/// `hoox_retries_total{exchange}`: retries scheduled.
pub const RETRIES_TOTAL: &str = "hoox_retries_total";
/// `hoox_dead_letters_total{reason}`: signals dead-lettered, by reason.
pub const DEAD_LETTERS_TOTAL: &str = "hoox_dead_letters_total";
/// `hoox_signal_to_order_seconds`: from the webhook's receipt to the exchange's answer.
pub const SIGNAL_TO_ORDER: &str = "hoox_signal_to_order_seconds";
/// `hoox_kill_switch`: 1 while trading is halted.
pub const KILL_SWITCH: &str = "hoox_kill_switch";
/// `hoox_broker_connected`: 1 while this process holds a broker connection.
pub const BROKER_CONNECTED: &str = "hoox_broker_connected";
/// `hoox_database_connected`: 1 while this process reaches its database.
pub const DATABASE_CONNECTED: &str = "hoox_database_connected";

/// Latency buckets, in seconds: from a millisecond to the exchanges' timeouts.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs this process's recorder (once; later calls return the same handle) and
/// gives the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_SIZE.to_owned()),
                        &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0],
                    )
                });
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder (a test harness's) may be installed already: this
            // handle then renders nothing, which is the caller's choice.
            let _ = ::metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts what `event` means for the metrics.
pub fn record(event: &Event) {
    match event {
        Event::OrderPlaced { exchange, .. } => {
            counter!(ORDERS_TOTAL, "exchange" => exchange.as_str(), "outcome" => "placed")
                .increment(1);
        }
        Event::OrderFound { exchange, .. } => {
            counter!(ORDERS_TOTAL, "exchange" => exchange.as_str(), "outcome" => "found")
                .increment(1);
        }
        Event::AttemptFailed {
            exchange, class, ..
        } => {
            let exchange = exchange.map_or("none", |e| e.as_str());
            counter!(ORDERS_TOTAL, "exchange" => exchange, "outcome" => class.clone()).increment(1);
        }
        Event::RetryScheduled { exchange, .. } => {
            let exchange = exchange.map_or("none", |e| e.as_str());
            counter!(RETRIES_TOTAL, "exchange" => exchange).increment(1);
        }
        Event::DeadLettered { reason, .. } => {
            counter!(DEAD_LETTERS_TOTAL, "reason" => reason.as_str()).increment(1);
        }
        Event::Filled {
            signal_to_order_seconds,
            ..
        } => histogram!(SIGNAL_TO_ORDER).record(*signal_to_order_seconds),
        _ => {}
    }
}

/// Counts a webhook answered with `status` after `elapsed`.
pub fn webhook_answered(status: u16, elapsed: Duration) {
    counter!(WEBHOOKS_TOTAL, "status" => status.to_string()).increment(1);
    histogram!(WEBHOOK_DURATION).record(elapsed.as_secs_f64());
}

/// Records a publish confirmed (or refused) after `elapsed`.
pub fn publish_took(elapsed: Duration) {
    histogram!(PUBLISH_DURATION).record(elapsed.as_secs_f64());
}

/// Records a consumer batch of `size` deliveries.
pub fn batch_taken(size: usize) {
    histogram!(BATCH_SIZE).record(size as f64);
}

/// Records an exchange HTTP call to `endpoint` (a path, never a query) after `elapsed`.
pub fn exchange_request(exchange: &'static str, endpoint: &str, elapsed: Duration) {
    histogram!(EXCHANGE_REQUEST_DURATION, "exchange" => exchange, "endpoint" => endpoint.to_owned())
        .record(elapsed.as_secs_f64());
}

/// The `/metrics` body: the state gauges read now (the kill switch, the broker
/// connection, a database round trip), then everything recorded so far.
pub async fn scrape(kill_switch: bool, broker: bool, pool: &sqlx::PgPool) -> String {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    .is_ok_and(|done| done.is_ok());
    gauge!(KILL_SWITCH).set(f64::from(u8::from(kill_switch)));
    gauge!(BROKER_CONNECTED).set(f64::from(u8::from(broker)));
    gauge!(DATABASE_CONNECTED).set(f64::from(u8::from(database)));
    install().render()
}

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
