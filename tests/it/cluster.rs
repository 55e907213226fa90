//! A RabbitMQ cluster loses the node leading the main queue while signals flow: ingest
//! and consumer fail over to the surviving nodes without a restart, producers resend
//! what was refused meanwhile, and every signal still ends in exactly one order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoox_consumer::exchange::Exchange;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::cluster::Cluster;
use crate::support::ledger::Ledger;
use crate::support::{
    assert_exactly_once, count, eventually, eventually_within, signal, Options, TestApp,
};

/// Producers posting at once.
const PRODUCERS: usize = 8;
/// Fills before the leader is stopped, and signals accepted after it.
const EACH_SIDE: usize = 30;
/// How long failing over may take: three Erlang VMs electing a new leader on a 2-core
/// machine that runs the whole suite at once are slow, and the test asserts that the
/// pipeline fails over without a restart, not how fast.
const FAILOVER: Duration = Duration::from_secs(120);

/// One webhook answer a producer saw.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// The HTTP status; `None` when the request got no answer.
    status: Option<u16>,
    /// The envelope's `requestId`.
    request_id: Option<Uuid>,
    /// Whether the request was sent after the leader's node was dead.
    after_stop: bool,
}

impl Answer {
    /// The request id of a 202 or a 409: the signal is queued under it.
    fn accepted(&self) -> Option<Uuid> {
        matches!(self.status, Some(202 | 409))
            .then_some(self.request_id)
            .flatten()
    }
}

async fn post(http: &reqwest::Client, url: &str, key: &str, after_stop: bool) -> Answer {
    let mut body = signal("BTCUSDT");
    body["idempotencyKey"] = json!(key);
    let sent = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .body(body.to_string())
        .send()
        .await;
    let Ok(response) = sent else {
        return Answer {
            status: None,
            request_id: None,
            after_stop,
        };
    };
    let status = Some(response.status().as_u16());
    let envelope: Value = response.json().await.unwrap_or_default();
    let request_id = envelope["result"]["requestId"]
        .as_str()
        .and_then(|s| s.parse().ok());
    Answer {
        status,
        request_id,
        after_stop,
    }
}

/// Everything the producers share: the next key, the stop flags, every answer.
#[derive(Default)]
struct Flow {
    next: AtomicUsize,
    stopped: AtomicBool,
    done: AtomicBool,
    answers: Mutex<Vec<(String, Answer)>>,
}

impl Flow {
    fn answers(&self) -> Vec<(String, Answer)> {
        self.answers.lock().unwrap().clone()
    }

    fn accepted_after_stop(&self) -> usize {
        self.answers()
            .iter()
            .filter(|(_, a)| a.after_stop && a.status == Some(202))
            .count()
    }
}

/// Posts a new key at a time until told it is done, resending each key with the same
/// `idempotencyKey` until it is answered 202 or 409, as TradingView resends after a 5xx.
async fn produce(http: reqwest::Client, url: String, flow: Arc<Flow>) {
    while !flow.done.load(Ordering::SeqCst) {
        let key = format!("cluster-{}", flow.next.fetch_add(1, Ordering::SeqCst));
        loop {
            let answer = post(&http, &url, &key, flow.stopped.load(Ordering::SeqCst)).await;
            flow.answers.lock().unwrap().push((key.clone(), answer));
            if answer.accepted().is_some() {
                break;
            }
            // Pacing, not synchronisation: TradingView waits 5 s between resends; a
            // short pause keeps the test quick without spinning on a reconnecting ingest.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How many connections named `name` the broker lists on `port`.
fn connected(connections: &[(String, u16)], name: &str, port: u16) -> usize {
    connections
        .iter()
        .filter(|(n, p)| n == name && *p == port)
        .count()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn stopping_the_leader_of_the_main_queue_while_signals_flow_loses_and_doubles_nothing(
    pool: PgPool,
) {
    let mut cluster = Cluster::start().await;
    let url = cluster.url();
    let ledger = Arc::new(Ledger::with_latency(Duration::from_millis(2)));
    let app = TestApp::with(
        pool.clone(),
        Options {
            ingest_amqp_url: url.clone(),
            consumer_amqp_url: url.clone(),
            exchanges: vec![ledger.clone() as Arc<dyn Exchange>],
            ..Options::default()
        },
    )
    .await;
    app.ready().await;

    // Both parts connect to the first node of the list, and the first to declare placed
    // the queues' leaders on its own node (3.10's client-local locator): the node to
    // stop carries the leader and both connections.
    let (leader, members) = cluster.queue_replicas(app.topology.queue()).await;
    assert_eq!(
        members,
        cluster.names(),
        "the main queue spans all three nodes"
    );
    let leader_port = cluster.node(&leader).port;
    eventually("ingest and consumer on the leader's node", || async {
        let connections = cluster.connections().await;
        (connected(&connections, "hoox-ingest", leader_port) == 1
            && connected(&connections, "hoox-consumer", leader_port) == 1)
            .then_some(())
    })
    .await;

    let flow = Arc::new(Flow::default());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| tokio::spawn(produce(app.http.clone(), app.webhook_url(), flow.clone())))
        .collect();
    let pool_ref = &pool;
    eventually("fills before the stop", || async {
        let fills = count(pool_ref, "SELECT count(*) FROM fills").await;
        (fills >= EACH_SIDE as i64).then_some(())
    })
    .await;

    cluster.kill(&leader);
    flow.stopped.store(true, Ordering::SeqCst);
    eventually_within("signals accepted after the stop", FAILOVER, || async {
        (flow.accepted_after_stop() >= EACH_SIDE).then_some(())
    })
    .await;
    flow.done.store(true, Ordering::SeqCst);
    for producer in producers {
        tokio::time::timeout(FAILOVER, producer)
            .await
            .expect("every key accepted in time")
            .expect("producer");
    }

    // One request id per key, under which the signal was accepted.
    let answers = flow.answers();
    let mut ids: HashMap<String, Uuid> = HashMap::new();
    for (key, answer) in &answers {
        if let Some(id) = answer.accepted() {
            let first = *ids.entry(key.clone()).or_insert(id);
            assert_eq!(first, id, "{key} accepted under two request ids");
        }
    }
    let keys: HashSet<&String> = answers.iter().map(|(key, _)| key).collect();
    assert_eq!(ids.len(), keys.len(), "every key accepted");
    let accepted: HashSet<Uuid> = ids.values().copied().collect();
    assert_eq!(accepted.len(), keys.len(), "one request id per key");

    let n = i64::try_from(accepted.len()).unwrap();
    eventually_within("every accepted signal filled", FAILOVER, || async {
        (count(pool_ref, "SELECT count(*) FROM fills").await >= n).then_some(())
    })
    .await;
    let filled: HashSet<Uuid> = sqlx::query_scalar("SELECT request_id FROM fills")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        filled, accepted,
        "the fills are exactly the accepted signals"
    );
    let unfilled_202s: Vec<&(String, Answer)> = answers
        .iter()
        .filter(|(_, a)| a.status == Some(202))
        .filter(|(_, a)| a.request_id.is_none_or(|id| !filled.contains(&id)))
        .collect();
    assert!(
        unfilled_202s.is_empty(),
        "202 for signals never filled: {unfilled_202s:?}"
    );
    assert!(
        ledger.counts().values().all(|&n| n == 1),
        "no order placed twice"
    );

    // Both failed over in place: the same ingest and consumer, now on surviving nodes,
    // accepted and filled signals sent after the stop (every accepted id has its fill).
    assert!(flow.accepted_after_stop() >= EACH_SIDE);
    let (new_leader, _) = cluster.queue_replicas(app.topology.queue()).await;
    assert_ne!(new_leader, leader, "a surviving node leads the main queue");
    let survivors: Vec<u16> = cluster
        .names()
        .iter()
        .filter(|name| **name != leader)
        .map(|name| cluster.node(name).port)
        .collect();
    let connections = cluster.connections().await;
    for part in ["hoox-ingest", "hoox-consumer"] {
        let on_survivors: usize = survivors
            .iter()
            .map(|&port| connected(&connections, part, port))
            .sum();
        assert_eq!(on_survivors, 1, "{part} reconnected to a surviving node");
    }

    let connection = hoox_common::amqp::connect(&SecretString::from(url), "hoox-test")
        .await
        .unwrap();
    let ids: Vec<Uuid> = accepted.into_iter().collect();
    assert_exactly_once(&app, &connection, &ledger.accepted(), &ids).await;
    let _ = connection.close(200, "done".into()).await;
    // The queues go with the cluster's directory.
    app.stop_leaving_queues().await;
    drop(cluster);
}
