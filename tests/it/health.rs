//! `hoox health`, run as the real binary against the test's database and queues: its
//! exit status and its JSON say whether the deployment can take and execute signals.

use std::process::Output;

use hoox_common::amqp::{publish_confirmed, signed_headers, text};
use hoox_common::message::{HEADER_ATTEMPTS, HEADER_REASON};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::exchanges::{Kind, MockExchange, Permissions, KEY, SECRET};
use crate::support::{broker, dead_letters, eventually, url_of_database, TestApp};

/// Runs `hoox health --json ARGS` as configured by `command`; gives its exit code and
/// its report.
async fn health(mut command: tokio::process::Command, args: &[&str]) -> (i32, Value) {
    let output: Output = command
        .arg("health")
        .arg("--json")
        .args(args)
        .output()
        .await
        .unwrap();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("health printed no JSON ({err}): {output:?}"));
    (output.status.code().expect("exited"), report)
}

/// The `check` of every problem (or warning) in `report`.
fn checks(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["check"].as_str().unwrap().to_owned())
        .collect()
}

/// The report's entry for `exchange`'s live environment.
fn live<'a>(report: &'a Value, exchange: &str) -> &'a Value {
    report["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exchange"] == exchange && e["testnet"] == false)
        .unwrap()
}

/// Waits until a consumer of the app is attached to its main queue.
async fn consumer_attached(app: &TestApp) {
    let connection = broker().await;
    let mut names = vec![app.topology.queue().to_owned()];
    names.extend(app.topology.partition_queues());
    eventually(
        "a consumer on the main queue and on each partition",
        || async {
            let channel = connection.create_channel().await.ok()?;
            for name in &names {
                let queue = channel
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .ok()?;
                if queue.consumer_count() == 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let _ = connection.close(200, "done".into()).await;
}

/// A running pipeline whose exchanges are three mocks, with their keys in the
/// environment of the returned command.
async fn with_mock_exchanges(
    app: &TestApp,
    bybit_secret: &str,
) -> (tokio::process::Command, [MockExchange; 3]) {
    let bybit = MockExchange::start(Kind::Bybit).await;
    let binance = MockExchange::start(Kind::Binance).await;
    let mexc = MockExchange::start(Kind::MexcSpot).await;
    let mut command = app.hoox();
    command
        .env("BYBIT_API_KEY", KEY)
        .env("BYBIT_API_SECRET", bybit_secret)
        .env("BYBIT_BASE_URL", bybit.url())
        .env("BINANCE_API_KEY", KEY)
        .env("BINANCE_API_SECRET", SECRET)
        .env("BINANCE_BASE_URL", binance.url())
        .env("BINANCE_WALLET_URL", binance.url())
        .env("MEXC_API_KEY", KEY)
        .env("MEXC_API_SECRET", SECRET)
        .env("MEXC_BASE_URL", mexc.url());
    (command, [bybit, binance, mexc])
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_running_pipeline_is_healthy_and_reports_every_queue(pool: PgPool) {
    let app = TestApp::start(pool).await;
    consumer_attached(&app).await;

    let (code, report) = health(app.hoox(), &[]).await;

    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["healthy"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["broker"]["reachable"], true);
    assert_eq!(report["database"]["migrationsCurrent"], true);
    let queues = report["queues"].as_array().unwrap();
    let tiers = app.topology.retry_policy().tiers().len();
    let partitions = usize::from(app.topology.partitions());
    assert_eq!(
        queues.len(),
        partitions + tiers + 2,
        "main, each partition, each tier, DLQ: {report:#}"
    );
    assert_eq!(queues[0]["name"], app.topology.queue());
    assert_eq!(queues[0]["role"], "main");
    assert!(queues[0]["consumers"].as_u64().unwrap() >= 1);
    assert_eq!(queues[0]["messages"], 0);
    for (p, queue) in queues[1..=partitions].iter().enumerate() {
        let p = u16::try_from(p).unwrap();
        assert_eq!(queue["name"], app.topology.partition_queue(p));
        assert_eq!(queue["role"], "partition");
        assert!(queue["consumers"].as_u64().unwrap() >= 1, "{report:#}");
    }
    assert!(queues.iter().all(|q| q["exists"] == true));
    assert_eq!(report["deadLetters"]["count"], 0);
    assert_eq!(report["killSwitch"], false);
    assert_eq!(report["lastFillAt"], Value::Null);
    assert!(live(&report, "bybit")["keysConfigured"] == false);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn an_unreachable_broker_is_a_problem_named_by_host_without_the_password(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let mut command = app.hoox();
    // Port 9 (discard) is closed on a test machine: the node refuses at once.
    command.env("AMQP_URL", "amqp://hoox:s3cretpw@127.0.0.1:9/%2f");

    let (code, report) = health(command, &[]).await;

    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["healthy"], false);
    assert_eq!(report["broker"]["reachable"], false);
    assert_eq!(
        report["broker"]["nodes"],
        serde_json::json!(["127.0.0.1:9"])
    );
    assert!(checks(&report, "problems").contains(&"broker".to_owned()));
    assert!(!report.to_string().contains("s3cretpw"), "{report:#}");
    // The database is still looked at.
    assert_eq!(report["database"]["migrationsCurrent"], true);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_missing_database_is_a_problem_and_is_not_created(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    consumer_attached(&app).await;
    let missing = format!("hoox_missing_{}", Uuid::new_v4().simple());
    let mut command = app.hoox();
    command.env("DATABASE_URL", url_of_database(&missing));

    let (code, report) = health(command, &[]).await;

    assert_eq!(code, 1, "{report:#}");
    assert_eq!(checks(&report, "problems"), ["database"], "{report:#}");
    assert_eq!(report["database"]["reachable"], false);
    assert_eq!(report["killSwitch"], Value::Null);
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&missing)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(created, 0, "health created the database");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_main_queue_without_a_consumer_is_a_problem(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    app.topology.declare(&channel).await.unwrap();

    let (code, report) = health(app.hoox(), &[]).await;

    assert_eq!(code, 1, "{report:#}");
    // The main queue and each partition: none has a consumer.
    let partitions = usize::from(app.topology.partitions());
    assert_eq!(
        checks(&report, "problems"),
        vec!["consumers"; 1 + partitions],
        "{report:#}"
    );
    assert_eq!(report["queues"][0]["consumers"], 0);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn queues_that_do_not_exist_are_reported_and_not_created(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let mut command = app.hoox();
    let queue = format!("hoox-test-absent-{}", Uuid::new_v4().simple());
    command.env("HOOX_QUEUE", &queue);

    let (code, report) = health(command, &[]).await;

    assert_eq!(code, 1, "{report:#}");
    assert!(checks(&report, "problems").contains(&"queue".to_owned()));
    assert!(report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["exists"] == false));
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await;
    assert!(declared.is_err(), "health created {queue}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_dead_letter_is_reported_with_its_age_as_a_warning_and_left_in_place(pool: PgPool) {
    let app = TestApp::start(pool).await;
    consumer_attached(&app).await;
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let id = Uuid::new_v4().to_string();
    let mut headers = signed_headers(None, Some(&id));
    headers.insert(HEADER_REASON.into(), text("fatal"));
    headers.insert(HEADER_ATTEMPTS.into(), AMQPValue::LongLongInt(1));
    publish_confirmed(&channel, &app.topology.dlq(), b"{}", headers, Some(&id))
        .await
        .unwrap();

    let (code, report) = health(app.hoox(), &[]).await;

    assert_eq!(code, 0, "a dead letter alone is not unhealthy: {report:#}");
    assert_eq!(report["deadLetters"]["count"], 1);
    assert!(report["deadLetters"]["oldestAgeSecs"].as_i64().unwrap() >= 0);
    assert!(report["deadLetters"]["oldestAt"].is_string());
    assert_eq!(report["deadLetters"]["oldestReason"], "fatal");
    assert_eq!(checks(&report, "warnings"), ["dead_letters"]);
    assert_eq!(
        dead_letters(&app, &connection).await.len(),
        1,
        "peek lost it"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_kill_switch_warns_and_routing_to_an_exchange_without_keys_is_a_problem(pool: PgPool) {
    let app = TestApp::start(pool).await;
    consumer_attached(&app).await;
    app.set_config("trade:kill_switch", "true").await;

    let (code, report) = health(app.hoox(), &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["killSwitch"], true);
    assert_eq!(checks(&report, "warnings"), ["kill_switch"]);

    app.set_config("exchanges:default_routing", "bybit").await;
    let (code, report) = health(app.hoox(), &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(checks(&report, "problems"), ["routing"]);
    assert_eq!(report["routing"][0]["exchange"], "bybit");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn exchange_keys_that_work_and_cannot_withdraw_are_healthy(pool: PgPool) {
    let app = TestApp::start(pool).await;
    consumer_attached(&app).await;
    let (command, mocks) = with_mock_exchanges(&app, SECRET).await;

    let (code, report) = health(command, &["--exchanges"]).await;

    assert_eq!(code, 0, "{report:#}");
    for exchange in ["bybit", "binance", "mexc"] {
        let check = &live(&report, exchange)["check"];
        assert_eq!(check["works"], true, "{exchange}: {report:#}");
        assert_eq!(check["canTrade"], true, "{exchange}: {report:#}");
        assert_eq!(check["canWithdraw"], false, "{exchange}: {report:#}");
    }
    assert!(checks(&report, "warnings").is_empty(), "{report:#}");
    for mock in &mocks {
        assert!(mock.refused().is_empty(), "{:?}", mock.refused());
        assert!(mock.orders().is_empty(), "a key check placed an order");
    }
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn exchange_keys_that_can_withdraw_are_a_warning(pool: PgPool) {
    let app = TestApp::start(pool).await;
    consumer_attached(&app).await;
    let (command, mocks) = with_mock_exchanges(&app, SECRET).await;
    let risky = Permissions {
        trade: true,
        withdraw: true,
    };
    for mock in &mocks {
        mock.grant(risky);
    }

    let (code, report) = health(command, &["--exchanges"]).await;

    assert_eq!(code, 0, "{report:#}");
    for exchange in ["bybit", "binance", "mexc"] {
        assert_eq!(live(&report, exchange)["check"]["canWithdraw"], true);
    }
    assert_eq!(
        checks(&report, "warnings"),
        ["exchange_keys", "exchange_keys", "exchange_keys"]
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn exchange_keys_with_a_wrong_secret_or_no_trading_are_problems(pool: PgPool) {
    let app = TestApp::start(pool).await;
    consumer_attached(&app).await;
    let wrong = "not-the-secret-Qz81";
    let (command, mocks) = with_mock_exchanges(&app, wrong).await;
    let [bybit, binance, _mexc] = &mocks;
    binance.grant(Permissions {
        trade: false,
        withdraw: false,
    });

    let (code, report) = health(command, &["--exchanges"]).await;

    assert_eq!(code, 1, "{report:#}");
    assert_eq!(live(&report, "bybit")["check"]["works"], false);
    assert_eq!(live(&report, "binance")["check"]["canTrade"], false);
    assert_eq!(live(&report, "mexc")["check"]["works"], true);
    assert_eq!(
        checks(&report, "problems"),
        ["exchange_keys", "exchange_keys"]
    );
    assert_eq!(bybit.refused(), ["bad signature"]);
    assert!(!report.to_string().contains(wrong));
    app.stop().await;
}
