//! The HTTP load generator: webhooks over real keep-alive connections, in a closed loop
//! (a fixed number of connections, each sending its next request when the last is
//! answered: the saturation rate) and in an open loop (requests sent on a fixed
//! schedule whether or not earlier ones were answered, each timed from when it was
//! due, so a stall shows in the tail instead of delaying the requests behind it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

/// A pooling HTTP/1.1 client: idle connections are kept and reused, and a request that
/// finds none idle opens one more.
pub(super) type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A client keeping up to `connections` idle connections. Idle ones are dropped after
/// two seconds, before ingest's own idle limit closes them under a request.
pub(super) fn client(connections: usize) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(connections)
        .build(connector)
}

/// Where webhooks go, and what they say.
pub(super) struct Target {
    uri: Uri,
    api_key: String,
    symbols: Vec<String>,
}

impl Target {
    /// Webhooks to `POST http://<addr>/webhook` with `api_key`, cycling through `symbols`.
    pub(super) fn new(
        addr: SocketAddr,
        api_key: String,
        symbols: Vec<String>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!symbols.is_empty(), "the load needs at least one symbol");
        Ok(Self {
            uri: format!("http://{addr}/webhook").parse()?,
            api_key,
            symbols,
        })
    }

    /// The `n`th webhook: a small market buy on Bybit with its own idempotency key.
    fn body(&self, n: u64) -> Bytes {
        let symbol = &self.symbols[(n % self.symbols.len() as u64) as usize];
        Bytes::from(
            serde_json::json!({
                "apiKey": self.api_key,
                "exchange": "bybit",
                "action": "LONG",
                "symbol": symbol,
                "quantity": "0.001",
                "idempotencyKey": Uuid::new_v4().to_string(),
            })
            .to_string(),
        )
    }
}

/// How a webhook was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Answer {
    /// The HTTP status; 0 when there was none (connection failed, or no answer in time).
    pub(super) status: u16,
    /// The `requestId` of a 202.
    pub(super) request_id: Option<Uuid>,
}

/// Sends the `n`th webhook and reads its whole answer, giving up after `timeout`.
pub(super) async fn send(client: &Client, target: &Target, n: u64, timeout: Duration) -> Answer {
    let request = Request::post(target.uri.clone())
        .header("content-type", "application/json")
        .body(Full::new(target.body(n)));
    let Ok(request) = request else {
        return Answer {
            status: 0,
            request_id: None,
        };
    };
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let request_id = (status == 202)
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v.pointer("/result/requestId")?.as_str()?.parse().ok());
        Some(Answer { status, request_id })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(Answer {
            status: 0,
            request_id: None,
        })
}

/// Counts of answers by status (0: none).
pub(super) type Statuses = BTreeMap<u16, u64>;

/// What a closed loop achieved inside its measured window.
#[derive(Debug, Clone)]
pub(super) struct Throughput {
    /// Webhooks answered 202 inside the window.
    pub(super) accepted: u64,
    /// Every other answer inside the window, by status.
    pub(super) refused: Statuses,
    /// The measured window (the warm-up excluded).
    pub(super) window: Duration,
}

/// Keeps `connections` webhooks in flight for `warmup` and then `window`, counting the
/// answers that arrive inside `window`.
pub(super) async fn saturate(
    client: &Client,
    target: &Arc<Target>,
    connections: usize,
    warmup: Duration,
    window: Duration,
    timeout: Duration,
) -> Throughput {
    let measured_from = Instant::now() + warmup;
    let end = measured_from + window;
    let workers: Vec<_> = (0..connections)
        .map(|worker| {
            let (client, target) = (client.clone(), Arc::clone(target));
            tokio::spawn(async move {
                let mut counts = Statuses::new();
                let mut n = worker as u64;
                while Instant::now() < end {
                    let answer = send(&client, &target, n, timeout).await;
                    n += connections as u64;
                    let done = Instant::now();
                    if done >= measured_from && done < end {
                        *counts.entry(answer.status).or_default() += 1;
                    }
                }
                counts
            })
        })
        .collect();
    let mut refused = Statuses::new();
    for worker in workers {
        for (status, n) in worker.await.unwrap_or_default() {
            *refused.entry(status).or_default() += n;
        }
    }
    let accepted = refused.remove(&202).unwrap_or(0);
    Throughput {
        accepted,
        refused,
        window,
    }
}

/// An open loop's schedule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// Webhooks per second.
    pub(super) rate: f64,
    /// How long to keep sending.
    pub(super) duration: Duration,
    /// Most webhooks in flight at once; a webhook due while this many are in flight
    /// waits (and its wait counts in its latency).
    pub(super) max_in_flight: usize,
    /// How long one webhook may wait for its answer.
    pub(super) timeout: Duration,
}

impl Schedule {
    /// How many webhooks the schedule sends: one every `1 / rate` s, from 0 until
    /// `duration`.
    pub(super) fn count(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate).ceil() as u64
    }
}

/// One webhook of an open loop.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// When it was due: latency counts from here, not from when it could be sent.
    pub(super) due: Instant,
    /// When its answer had arrived (or it was given up).
    pub(super) answered: Instant,
    /// The answer.
    pub(super) answer: Answer,
}

/// What an open loop did.
#[derive(Debug, Clone)]
pub(super) struct OpenLoop {
    /// Every webhook, in the order they finished.
    pub(super) sent: Vec<Sent>,
    /// Webhooks that came due while `max_in_flight` were in flight.
    pub(super) cap_hits: u64,
}

/// Sends webhooks on `schedule`, each in its own task, whatever happened to earlier ones.
pub(super) async fn open_loop(
    client: &Client,
    target: &Arc<Target>,
    schedule: Schedule,
) -> OpenLoop {
    let in_flight = Arc::new(Semaphore::new(schedule.max_in_flight.max(1)));
    let (done, mut finished) = mpsc::unbounded_channel();
    let mut cap_hits = 0;
    let start = Instant::now();
    for n in 0..schedule.count() {
        let due = start + Duration::from_secs_f64(n as f64 / schedule.rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = match Arc::clone(&in_flight).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                cap_hits += 1;
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                permit
            }
        };
        let (client, target, done) = (client.clone(), Arc::clone(target), done.clone());
        tokio::spawn(async move {
            let answer = send(&client, &target, n, schedule.timeout).await;
            let _ = done.send(Sent {
                due,
                answered: Instant::now(),
                answer,
            });
            drop(permit);
        });
    }
    drop(done);
    let mut sent = Vec::new();
    while let Some(one) = finished.recv().await {
        sent.push(one);
    }
    OpenLoop { sent, cap_hits }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::routing::post;
    use axum::Router;

    use super::*;

    /// A local server whose `/webhook` counts each request, waits `answer_after` (for
    /// ever when `None`), then answers 202.
    async fn server(answer_after: Option<Duration>) -> (SocketAddr, Arc<AtomicU64>) {
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let app = Router::new().route(
            "/webhook",
            post(move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    match answer_after {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending::<()>().await,
                    }
                    let id = Uuid::new_v4();
                    (
                        axum::http::StatusCode::ACCEPTED,
                        format!(r#"{{"success":true,"result":{{"requestId":"{id}","status":"queued"}},"error":null}}"#),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, received)
    }

    fn target(addr: SocketAddr) -> Arc<Target> {
        Arc::new(Target::new(addr, "key".into(), vec!["BTCUSDT".into()]).unwrap())
    }

    #[tokio::test]
    async fn the_open_loop_sends_every_webhook_on_schedule_though_none_is_ever_answered() {
        let (addr, received) = server(None).await;
        let schedule = Schedule {
            rate: 200.0,
            duration: Duration::from_millis(500),
            max_in_flight: 1000,
            timeout: Duration::from_millis(300),
        };
        assert_eq!(schedule.count(), 100);

        let run = open_loop(&client(8), &target(addr), schedule).await;

        // Nothing was ever answered, yet every webhook due reached the server: none
        // waited for an earlier one.
        assert_eq!(received.load(Ordering::SeqCst), 100);
        assert_eq!(run.sent.len(), 100);
        assert!(run.sent.iter().all(|s| s.answer.status == 0));
        assert_eq!(run.cap_hits, 0);
        let mut due: Vec<Instant> = run.sent.iter().map(|s| s.due).collect();
        due.sort();
        let step = Duration::from_millis(5);
        for pair in due.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap.abs_diff(step) < Duration::from_micros(10), "{gap:?}");
        }
    }

    #[tokio::test]
    async fn a_webhook_waiting_behind_slow_ones_counts_its_wait_from_when_it_was_due() {
        let wait = Duration::from_millis(50);
        let (addr, received) = server(Some(wait)).await;
        // One in flight at a time, due every 10 ms, answered after 50 ms: each waits
        // longer than the one before.
        let schedule = Schedule {
            rate: 100.0,
            duration: Duration::from_millis(300),
            max_in_flight: 1,
            timeout: Duration::from_secs(10),
        };

        let run = open_loop(&client(1), &target(addr), schedule).await;

        assert_eq!(received.load(Ordering::SeqCst), 30);
        assert!(run.cap_hits > 0);
        assert!(run.sent.iter().all(|s| s.answer.status == 202));
        assert!(run.sent.iter().all(|s| s.answer.request_id.is_some()));
        // The last was due at 290 ms and answered no sooner than 30 × 50 ms.
        let start = run.sent.iter().map(|s| s.due).min().unwrap();
        let last = run.sent.iter().max_by_key(|s| s.due).unwrap();
        assert_eq!(last.due - start, Duration::from_millis(290));
        assert!(last.answered - last.due >= wait * 30 - Duration::from_millis(290));
    }

    #[tokio::test]
    async fn the_closed_loop_counts_answers_by_status() {
        let (addr, received) = server(Some(Duration::from_millis(5))).await;
        let run = saturate(
            &client(4),
            &target(addr),
            4,
            Duration::from_millis(50),
            Duration::from_millis(200),
            Duration::from_secs(5),
        )
        .await;
        assert!(run.accepted > 0);
        assert!(run.refused.is_empty(), "{:?}", run.refused);
        assert!(received.load(Ordering::SeqCst) >= run.accepted);
    }
}
