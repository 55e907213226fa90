//! A request id is executed at most once whatever the broker delivers: a message
//! published twice, copies in one batch, copies racing on two consumers, and a dead
//! letter copied back by hand. One bad signal never takes its batch down with it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hoox::commands::dlq;
use hoox_common::logs::Worker;
use hoox_consumer::exchange::Exchange;
use hoox_consumer::store::{self, Claim};
use hoox_consumer::worker::{Batch, Incoming, Slot};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::exchanges::provider;
use crate::support::exchanges::{Kind, MockExchange};
use crate::support::ledger::Ledger;
use crate::support::{
    assert_exactly_once, broker, count, eventually, message_for, publish_raw, publish_signed,
    wait_for_dead_letters, Options, TestApp, INTERNAL_KEY,
};

/// An app whose consumers the test starts itself, once the queue holds what it wants.
fn without_consumer() -> Options {
    Options {
        consumer: false,
        ..Options::default()
    }
}

async fn fills(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM fills").await
}

/// Audit rows of deliveries acknowledged as copies of an attempt that already ran.
async fn copies_refused(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM system_logs WHERE request_id = $1 AND kind = 'copy_refused'",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_message_published_twice_in_one_batch_and_again_later_trades_once(pool: PgPool) {
    let mut app = TestApp::with(pool.clone(), without_consumer()).await;
    let connection = broker().await;
    let message = message_for("BTCUSDT", Utc::now());
    // Both copies wait in the queue, so the consumer takes them in one batch.
    publish_signed(&app, &connection, &message).await;
    publish_signed(&app, &connection, &message).await;
    let ledger = Arc::new(Ledger::default());
    app.start_consumer(vec![ledger.clone() as Arc<dyn Exchange>]);
    eventually("the fill and the refused copy", || async {
        (fills(&pool).await == 1 && copies_refused(&pool, message.request_id).await == 1)
            .then_some(())
    })
    .await;

    publish_signed(&app, &connection, &message).await;
    eventually("the late copy refused", || async {
        (copies_refused(&pool, message.request_id).await == 2).then_some(())
    })
    .await;
    assert_eq!(ledger.accepted().len(), 1, "one order reached the exchange");
    assert_exactly_once(&app, &connection, &ledger.accepted(), &[message.request_id]).await;
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn copies_racing_on_two_consumers_trade_each_signal_once(pool: PgPool) {
    let mut app = TestApp::with(pool.clone(), without_consumer()).await;
    let connection = broker().await;
    // Slow orders keep each request id in flight while its copy reaches the other consumer.
    let ledger = Arc::new(Ledger::with_latency(Duration::from_millis(20)));
    app.start_consumer(vec![ledger.clone() as Arc<dyn Exchange>]);
    app.start_consumer(vec![ledger.clone() as Arc<dyn Exchange>]);
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];
    let messages: Vec<_> = (0..40)
        .map(|i| message_for(symbols[i % symbols.len()], Utc::now()))
        .collect();
    for message in &messages {
        publish_signed(&app, &connection, message).await;
        publish_signed(&app, &connection, message).await;
    }
    eventually("every signal filled", || async {
        (fills(&pool).await == 40).then_some(())
    })
    .await;
    // Every copy is accounted for: refused at once, or deferred and refused later.
    let ids: Vec<Uuid> = messages.iter().map(|m| m.request_id).collect();
    eventually("every copy refused", || async {
        let refused: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM system_logs WHERE request_id = ANY($1) AND kind = 'copy_refused'",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
        (refused == 40).then_some(())
    })
    .await;
    assert!(ledger.counts().values().all(|&n| n == 1), "no order twice");
    assert_exactly_once(&app, &connection, &ledger.accepted(), &ids).await;
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_dead_letter_copied_back_to_the_main_queue_runs_only_through_replay(pool: PgPool) {
    let mut app = TestApp::with(pool.clone(), without_consumer()).await;
    let connection = broker().await;
    app.set_config(hoox_common::runtime_config::KILL_SWITCH, "true")
        .await;
    let message = message_for("BTCUSDT", Utc::now());
    publish_signed(&app, &connection, &message).await;
    let ledger = Arc::new(Ledger::default());
    app.start_consumer(vec![ledger.clone() as Arc<dyn Exchange>]);
    let letters = wait_for_dead_letters(&app, &connection, 1).await;
    assert_eq!(letters[0].reason, "kill_switch");
    app.set_config(hoox_common::runtime_config::KILL_SWITCH, "false")
        .await;

    // Someone with broker access copies the signed dead letter back, body and signature.
    let read = dlq::DlqRead::open(
        &connection,
        &app.topology,
        Some(&SecretString::from(INTERNAL_KEY.to_owned())),
    )
    .await
    .unwrap();
    let letter = read.letters[0].clone();
    read.finish().await.unwrap();
    // The same message, signed with the same key: what the DLQ holds, byte for byte.
    let copied: hoox_common::message::QueueMessage =
        serde_json::from_value(letter.message.clone().unwrap()).unwrap();
    assert_eq!(copied.request_id, message.request_id);
    let (copied_body, copied_signature) =
        copied.encode(&SecretString::from(INTERNAL_KEY.to_owned()));
    publish_raw(&app, &connection, &copied_body, &copied_signature).await;
    eventually("the copy refused", || async {
        (copies_refused(&pool, message.request_id).await == 1).then_some(())
    })
    .await;
    assert!(
        ledger.accepted().is_empty(),
        "a dead letter never trades by copy"
    );
    assert_eq!(fills(&pool).await, 0);

    // The operator's replay is a new generation, and it runs.
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    let (replayed, _) = dlq::replay(
        &connection,
        &app.topology,
        &key,
        &pool,
        Worker::Cli,
        Some(message.request_id),
    )
    .await
    .unwrap();
    assert_eq!(replayed[0].replays, 1);
    assert_eq!(app.wait_for_fill(&message.request_id.to_string()).await, 1);
    assert_eq!(ledger.accepted().len(), 1);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn an_out_of_range_quantity_and_a_panic_dead_letter_their_signal_alone(pool: PgPool) {
    let mut app = TestApp::with(pool.clone(), without_consumer()).await;
    let connection = broker().await;
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    // A quantity at Decimal's maximum, signed as if an older ingest had let it through.
    // Routed to Bybit, whose lot step it must be floored to.
    let huge = message_for("BTCUSDT", Utc::now());
    let mut body: Value = serde_json::to_value(&huge).unwrap();
    body["signal"]["exchange"] = Value::String("bybit".to_owned());
    body["signal"]["quantity"] = Value::String("79228162514264337593543950335".to_owned());
    let huge_body = serde_json::to_vec(&body).unwrap();
    let huge_signature =
        hoox_common::signing::hmac_sha256_hex(key.expose_secret().as_bytes(), &huge_body);
    let panics = message_for("PANICUSDT", Utc::now());
    let fine = message_for("BTCUSDT", Utc::now());
    publish_raw(&app, &connection, &huge_body, &huge_signature).await;
    publish_signed(&app, &connection, &panics).await;
    publish_signed(&app, &connection, &fine).await;

    let ledger = Arc::new(Ledger::panicking_on("PANICUSDT"));
    let bybit = MockExchange::start(Kind::Bybit).await;
    app.start_consumer(vec![
        ledger.clone() as Arc<dyn Exchange>,
        provider(Kind::Bybit, &bybit, Duration::from_secs(5)),
    ]);
    assert_eq!(app.wait_for_fill(&fine.request_id.to_string()).await, 1);
    let letters = wait_for_dead_letters(&app, &connection, 2).await;
    let reason_of = |id: Uuid| {
        letters
            .iter()
            .find(|l| l.request_id == Some(id))
            .map(|l| (l.reason.clone(), l.attempts))
    };
    assert_eq!(reason_of(panics.request_id), Some(("fatal".to_owned(), 1)));
    assert!(matches!(
        reason_of(huge.request_id).as_ref().map(|(r, _)| r.as_str()),
        Some("fatal" | "invalid")
    ));
    assert!(bybit.orders().is_empty(), "nothing reached Bybit");

    // The consumer survived: the next signal is executed too.
    let next = message_for("BTCUSDT", Utc::now());
    publish_signed(&app, &connection, &next).await;
    assert_eq!(app.wait_for_fill(&next.request_id.to_string()).await, 1);
    assert_exactly_once(
        &app,
        &connection,
        &ledger.accepted(),
        &[
            huge.request_id,
            panics.request_id,
            fine.request_id,
            next.request_id,
        ],
    )
    .await;
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_dead_letter_whose_signal_already_filled_is_never_replayed(pool: PgPool) {
    let mut app = TestApp::with(pool.clone(), without_consumer()).await;
    let connection = broker().await;
    let message = message_for("BTCUSDT", Utc::now());
    publish_signed(&app, &connection, &message).await;
    let ledger = Arc::new(Ledger::default());
    app.start_consumer(vec![ledger.clone() as Arc<dyn Exchange>]);
    assert_eq!(app.wait_for_fill(&message.request_id.to_string()).await, 1);

    // A copy of the filled signal sits in the DLQ (as the broker's poison copy would).
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    let (body, signature) = message.encode(&key);
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let id = message.request_id.to_string();
    let headers = hoox_common::amqp::signed_headers(Some(&signature), Some(&id));
    hoox_common::amqp::publish_confirmed(&channel, &app.topology.dlq(), &body, headers, None)
        .await
        .unwrap();
    wait_for_dead_letters(&app, &connection, 1).await;

    let named = dlq::replay(
        &connection,
        &app.topology,
        &key,
        &pool,
        Worker::Cli,
        Some(message.request_id),
    )
    .await;
    assert!(
        named.is_err(),
        "replaying a filled signal's copy is refused"
    );
    let (replayed, skipped) =
        dlq::replay(&connection, &app.topology, &key, &pool, Worker::Cli, None)
            .await
            .unwrap();
    assert_eq!((replayed.len(), skipped), (0, 1));
    assert_eq!(
        wait_for_dead_letters(&app, &connection, 1).await.len(),
        1,
        "left in place"
    );
    assert_eq!(ledger.accepted().len(), 1);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn an_attempt_interrupted_after_its_order_is_resumed_by_lookup_not_placed_again(
    pool: PgPool,
) {
    let ledger = Arc::new(Ledger::default());
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    let worker = crate::support::worker_on(&pool, ledger.clone());
    let message = message_for("BTCUSDT", Utc::now());
    let (body, signature) = message.encode(&key);
    let delivery = Incoming {
        body,
        signature: Some(signature),
        redelivered: false,
    };
    let token = CancellationToken::new();
    let batch = Batch {
        id: Uuid::new_v4(),
        size: 1,
    };
    let attempt = worker.attempt(&message, "trade-execution");

    // The order is placed, then the consumer dies before its outcome commits: its
    // lease connection, which holds the claim, closes with it, and the attempt stays
    // `running`.
    let mut lease = pool.acquire().await.unwrap().detach();
    let claims = store::claim(&mut lease, std::slice::from_ref(&attempt))
        .await
        .unwrap();
    assert_eq!(claims, [Claim::Run { resumed: false }]);
    let interrupted = worker
        .run(&message, &delivery, false, batch, Slot::new().0)
        .await;
    assert!(interrupted.fill.is_some());
    drop(lease);
    assert_eq!(ledger.accepted().len(), 1);

    // The broker redelivers it (possibly with the flag unset, as after a copy).
    let (_lease, claims) = eventually("the dead consumer's claim let go", || async {
        let mut lease = pool.acquire().await.unwrap().detach();
        let claims = store::claim(&mut lease, std::slice::from_ref(&attempt))
            .await
            .unwrap();
        (claims != [Claim::Busy]).then_some((lease, claims))
    })
    .await;
    assert_eq!(claims, [Claim::Run { resumed: true }]);
    let resumed = worker
        .run(&message, &delivery, true, batch, Slot::new().0)
        .await;
    let fill = resumed.fill.clone().expect("found and recorded");
    assert_eq!(
        fill.exchange_order_id.as_deref(),
        Some(format!("ledger-{}", message.request_id.simple()).as_str())
    );
    worker.commit(&[&resumed], &token).await.unwrap();
    assert_eq!(
        ledger.accepted().len(),
        1,
        "the order was looked up, not placed again"
    );
    assert_eq!(fills(&pool).await, 1);
}
