//! Ingest writes for concurrent webhooks in shared batches (key claims in one statement,
//! confirmations and audit rows in one transaction) and settles every publish's verdict,
//! however late: each webhook still gets exactly the answer it would get alone.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use hoox_ingest::server::Limits;

use crate::support::proxy::TcpProxy;
use crate::support::{count, eventually, queue_depth, signal, Options, TestApp};

/// An ingest without a consumer that lets one address open a connection per webhook.
async fn ingest(pool: PgPool) -> TestApp {
    let app = TestApp::with(
        pool,
        Options {
            consumer: false,
            limits: Limits {
                max_connections_per_ip: 1_000,
                ..Limits::default()
            },
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    app
}

fn keyed(key: &str) -> Value {
    let mut body = signal("BTCUSDT");
    body["idempotencyKey"] = json!(key);
    body
}

fn request_id(envelope: &Value) -> Option<Uuid> {
    envelope["result"]["requestId"].as_str()?.parse().ok()
}

/// The request id and confirmation of each stored key, by the producer's key.
async fn keys(pool: &PgPool) -> HashMap<String, (Uuid, bool)> {
    let rows: Vec<(String, Uuid, bool)> =
        sqlx::query_as("SELECT key, request_id, confirmed FROM idempotency_keys")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(key, id, confirmed)| {
            let key = key.strip_prefix("key:").unwrap_or(&key).to_owned();
            (key, (id, confirmed))
        })
        .collect()
}

/// How many ingest rows of `kind` each request id has.
async fn rows_of_kind(pool: &PgPool, kind: &str) -> HashMap<Uuid, i64> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT request_id, count(*) FROM system_logs WHERE worker = 'ingest' AND kind = $1 GROUP BY request_id",
    )
    .bind(kind)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Posts one webhook per key, all at once; returns each key's status and request id.
async fn post_all(app: &TestApp, keys: &[String]) -> Vec<(String, u16, Option<Uuid>)> {
    join_all(keys.iter().map(|key| async move {
        let (status, envelope) = app.post(&keyed(key)).await;
        (key.clone(), status, request_id(&envelope))
    }))
    .await
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn many_concurrent_webhooks_are_each_accepted_confirmed_and_audited_once(pool: PgPool) {
    let app = ingest(pool).await;
    let names: Vec<String> = (0..200).map(|i| format!("many-{i}")).collect();
    let answers = post_all(&app, &names).await;

    let stored = keys(&app.pool).await;
    let accepted = rows_of_kind(&app.pool, "accepted").await;
    for (key, status, id) in &answers {
        assert_eq!(*status, 202, "{key}");
        let id = id.expect("a 202 carries its request id");
        assert_eq!(
            stored[key],
            (id, true),
            "{key}: claimed by its request, confirmed"
        );
        assert_eq!(accepted.get(&id), Some(&1), "{key}: one audit row");
    }
    let ids: HashSet<_> = answers.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(ids.len(), 200, "one request id per webhook");
    assert_eq!(accepted.len(), 200);
    assert_eq!(queue_depth(&app).await, 200);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn concurrent_copies_of_one_key_among_other_webhooks_are_accepted_once(pool: PgPool) {
    let app = ingest(pool).await;
    let mut names: Vec<String> = (0..30).map(|i| format!("other-{i}")).collect();
    names.extend((0..20).map(|_| "same".to_owned()));
    let answers = post_all(&app, &names).await;

    let copies: Vec<_> = answers.iter().filter(|(key, ..)| key == "same").collect();
    let first: Vec<Uuid> = copies
        .iter()
        .filter(|(_, status, _)| *status == 202)
        .filter_map(|(_, _, id)| *id)
        .collect();
    assert_eq!(first.len(), 1, "{copies:?}");
    for (_, status, id) in &copies {
        assert!(*status == 202 || *status == 409, "{copies:?}");
        assert_eq!(*id, Some(first[0]), "every copy names the first request id");
    }
    assert!(answers
        .iter()
        .filter(|(key, ..)| key != "same")
        .all(|(_, status, _)| *status == 202));
    let refused = rows_of_kind(&app.pool, "duplicate_refused").await;
    assert_eq!(
        refused.get(&first[0]),
        Some(&19),
        "each 409 is in the trail"
    );
    assert_eq!(queue_depth(&app).await, 31, "the copies were not queued");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_failed_claim_batch_refuses_each_of_its_webhooks_and_queues_none_of_them(pool: PgPool) {
    // Claiming a "poison" key fails its whole statement, and with it every claim
    // sharing the statement.
    sqlx::raw_sql(
        r#"
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'poison key'; END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON idempotency_keys
            FOR EACH ROW WHEN (NEW.key LIKE 'key:poison%') EXECUTE FUNCTION refuse_poison();
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let app = ingest(pool).await;
    let mut names: Vec<String> = (0..60).map(|i| format!("good-{i}")).collect();
    names.extend((0..6).map(|i| format!("poison-{i}")));
    let answers = post_all(&app, &names).await;

    let stored = keys(&app.pool).await;
    let mut accepted = 0;
    for (key, status, id) in &answers {
        match status {
            202 => {
                accepted += 1;
                let id = id.expect("a 202 carries its request id");
                assert_eq!(stored.get(key), Some(&(id, true)), "{key}");
            }
            503 => assert!(!stored.contains_key(key), "{key}: refused, yet claimed"),
            other => panic!("{key}: unexpected {other}"),
        }
        if key.starts_with("poison") {
            assert_eq!(*status, 503, "{key}");
        }
    }
    assert_eq!(
        queue_depth(&app).await,
        accepted,
        "only the 202s were queued"
    );
    assert_eq!(
        rows_of_kind(&app.pool, "accepted").await.len(),
        accepted as usize
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_failed_audit_batch_leaves_its_keys_unconfirmed_and_resends_queue_under_the_same_id(
    pool: PgPool,
) {
    // The broker confirms, then the transaction confirming the keys and writing the
    // audit rows fails: the answers stay 202 (the broker has the signals), and nothing
    // of that transaction is left behind.
    sqlx::raw_sql(
        "ALTER TABLE system_logs ADD CONSTRAINT no_accepted CHECK (kind <> 'accepted') NOT VALID",
    )
    .execute(&pool)
    .await
    .unwrap();
    let app = ingest(pool).await;
    let names: Vec<String> = (0..40).map(|i| format!("audit-{i}")).collect();
    let answers = post_all(&app, &names).await;
    let stored = keys(&app.pool).await;
    for (key, status, id) in &answers {
        assert_eq!(*status, 202, "{key}");
        assert_eq!(
            stored[key],
            (id.unwrap(), false),
            "{key}: kept, unconfirmed"
        );
    }
    assert_eq!(rows_of_kind(&app.pool, "accepted").await.len(), 0);

    sqlx::raw_sql("ALTER TABLE system_logs DROP CONSTRAINT no_accepted")
        .execute(&app.pool)
        .await
        .unwrap();
    let resent = post_all(&app, &names).await;
    let stored = keys(&app.pool).await;
    for ((key, _, first), (_, status, again)) in answers.iter().zip(&resent) {
        assert_eq!(*status, 202, "{key}: an unconfirmed key is queued again");
        assert_eq!(again, first, "{key}: under its first request id");
        assert_eq!(stored[key], (first.unwrap(), true), "{key}");
    }
    let marked: i64 = count(
        &app.pool,
        "SELECT count(*) FROM system_logs WHERE kind = 'accepted' AND (context->>'resent')::boolean",
    )
    .await;
    assert_eq!(marked, 40, "each resend's audit row says it was resent");
    assert_eq!(queue_depth(&app).await, 80);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_publish_the_broker_refuses_releases_its_key_and_the_resend_is_accepted(pool: PgPool) {
    let app = ingest(pool).await;
    // With its partition queue gone, the broker returns the mandatory message: refused.
    let connection = crate::support::broker().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(app.topology.queue_for("BTCUSDT").into(), Default::default())
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;

    let (status, envelope) = app.post(&keyed("refused")).await;
    assert_eq!(status, 503, "{envelope}");
    assert!(keys(&app.pool).await.is_empty(), "the key was released");

    // The publisher reconnects, declaring the queue again; the resend is a new claim.
    let (status, envelope) = eventually("the resend accepted", || async {
        let answer = app.post(&keyed("refused")).await;
        (answer.0 != 503).then_some(answer)
    })
    .await;
    assert_eq!(status, 202, "{envelope}");
    let id = request_id(&envelope).unwrap();
    assert_eq!(keys(&app.pool).await["refused"], (id, true));
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_confirm_later_than_the_timeout_keeps_the_key_and_is_settled_when_it_comes(pool: PgPool) {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let app = TestApp::with(
        pool,
        Options {
            consumer: false,
            ingest_amqp_url: proxy.url(),
            ..Options::default()
        },
    )
    .await;
    app.ready().await;

    proxy.pause();
    let (status, envelope) = app.post(&keyed("late")).await;
    assert_eq!(status, 503, "no 202 without the confirm: {envelope}");
    let (id, confirmed) = keys(&app.pool).await["late"];
    assert!(
        !confirmed,
        "the outcome is unknown: the key keeps its request id"
    );

    proxy.resume();
    eventually("the late confirm settled", || async {
        let settled = keys(&app.pool).await["late"] == (id, true);
        let audited = rows_of_kind(&app.pool, "accepted").await.get(&id) == Some(&1);
        (settled && audited).then_some(())
    })
    .await;
    let (status, envelope) = app.post(&keyed("late")).await;
    assert_eq!(status, 409, "{envelope}");
    assert_eq!(request_id(&envelope), Some(id));
    assert_eq!(queue_depth(&app).await, 1);
    app.stop().await;
}
