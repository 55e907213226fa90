//! The positions ledger: fills move it in the transaction that records them, once
//! each, without losing an update between consumers; `hoox positions` and `hoox report`
//! show it.

use chrono::{DateTime, Utc};
use hoox_consumer::store::{commit_batch, Fill};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{database_url, hoox_on, TestApp, API_KEY};

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// A filled market order's row, as the worker builds it.
fn fill(symbol: &str, side: &str, quantity: &str, price: Option<&str>, executed_at: &str) -> Fill {
    let request_id = Uuid::new_v4();
    let executed_at: DateTime<Utc> = executed_at.parse().unwrap();
    Fill {
        request_id,
        exchange: "bybit".to_owned(),
        market: "linear".to_owned(),
        paper: false,
        testnet: false,
        symbol: symbol.to_owned(),
        action: if side == "buy" { "LONG" } else { "SHORT" }.to_owned(),
        side: side.to_owned(),
        reduce_only: false,
        quantity: d(quantity),
        leverage: None,
        order_type: "market".to_owned(),
        requested_price: None,
        client_order_id: request_id.simple().to_string(),
        exchange_order_id: Some(format!("o-{}", request_id.simple())),
        status: "filled".to_owned(),
        fill_price: price.map(d),
        fill_quantity: Some(d(quantity)),
        fee: None,
        raw_response: json!({}),
        received_at: executed_at,
        executed_at,
    }
}

fn with_fee(fill: Fill, fee: &str) -> Fill {
    Fill {
        fee: Some(d(fee)),
        ..fill
    }
}

type PositionRow = (Decimal, Option<Decimal>, Decimal, Decimal, bool, i64);

async fn position(pool: &PgPool, exchange: &str, symbol: &str) -> Option<PositionRow> {
    sqlx::query_as(
        r#"
        SELECT quantity, avg_entry_price, realized_pnl, fees, complete, fills
        FROM positions WHERE exchange = $1 AND symbol = $2
        "#,
    )
    .bind(exchange)
    .bind(symbol)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn commit(pool: &PgPool, fills: &[Fill]) {
    commit_batch(pool, fills, &[], &[]).await.expect("commit");
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_paper_long_then_close_long_leaves_the_position_flat_with_its_realized_pnl(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let post = |action: &str| {
        json!({
            "apiKey": API_KEY,
            "action": action,
            "symbol": "ETHUSDT",
            "quantity": 0.5,
        })
    };

    app.set_config("paper:price:ETHUSDT", "3000.10").await;
    let (status, envelope) = app.post(&post("LONG")).await;
    assert_eq!(status, 202, "{envelope}");
    let long = envelope["result"]["requestId"].as_str().unwrap().to_owned();
    app.wait_for_fill(&long).await;
    assert_eq!(
        position(&pool, "paper", "ETHUSDT").await,
        Some((d("0.5"), Some(d("3000.10")), d("0"), d("0"), true, 1)),
        "the long is open at the paper price"
    );

    app.set_config("paper:price:ETHUSDT", "3100.35").await;
    let (status, envelope) = app.post(&post("CLOSE_LONG")).await;
    assert_eq!(status, 202, "{envelope}");
    let close = envelope["result"]["requestId"].as_str().unwrap().to_owned();
    app.wait_for_fill(&close).await;

    // (3100.35 − 3000.10) × 0.5 = 50.125; the paper exchange charges no fee.
    assert_eq!(
        position(&pool, "paper", "ETHUSDT").await,
        Some((d("0"), None, d("50.125"), d("0"), true, 2))
    );
    let recorded: Vec<(String, String, Option<Decimal>, Option<Decimal>)> = sqlx::query_as(
        "SELECT request_id::text, market, fee, realized_pnl FROM fills ORDER BY executed_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        vec![
            (long, "paper".to_owned(), Some(d("0")), Some(d("0"))),
            (close, "paper".to_owned(), Some(d("0")), Some(d("50.125"))),
        ]
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_duplicate_fill_does_not_move_the_ledger(pool: PgPool) {
    let open = with_fee(
        fill(
            "BTCUSDT",
            "buy",
            "0.01",
            Some("60000"),
            "2026-12-18T09:00:00Z",
        ),
        "0.33",
    );
    commit(&pool, std::slice::from_ref(&open)).await;
    let after_first = position(&pool, "bybit", "BTCUSDT").await;
    assert_eq!(
        after_first,
        Some((d("0.01"), Some(d("60000")), d("-0.33"), d("0.33"), true, 1))
    );

    // The same request id again, alone and beside a new fill: only the new one counts.
    commit(&pool, std::slice::from_ref(&open)).await;
    assert_eq!(position(&pool, "bybit", "BTCUSDT").await, after_first);
    let add = fill(
        "BTCUSDT",
        "buy",
        "0.03",
        Some("64000"),
        "2026-12-18T09:01:00Z",
    );
    commit(&pool, &[open.clone(), add]).await;
    assert_eq!(
        position(&pool, "bybit", "BTCUSDT").await,
        Some((d("0.04"), Some(d("63000")), d("-0.33"), d("0.33"), true, 2))
    );
    let fills: i64 = sqlx::query_scalar("SELECT count(*) FROM fills")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(fills, 2);
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn concurrent_batches_of_the_same_positions_lose_no_update(pool: PgPool) {
    // Sixteen batches at once, each with one buy of 1 on two symbols, half of them
    // naming the symbols in the other order: every update lands, none deadlocks.
    let batches: Vec<Vec<Fill>> = (0..16)
        .map(|i| {
            let a = fill("BTCUSDT", "buy", "1", Some("100"), "2026-12-18T10:00:00Z");
            let b = fill("ETHUSDT", "buy", "1", Some("10"), "2026-12-18T10:00:00Z");
            if i % 2 == 0 {
                vec![a, b]
            } else {
                vec![b, a]
            }
        })
        .collect();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let pool = pool.clone();
            tokio::spawn(async move { commit_batch(&pool, &batch, &[], &[]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every batch commits");
    }
    for (symbol, price) in [("BTCUSDT", "100"), ("ETHUSDT", "10")] {
        assert_eq!(
            position(&pool, "bybit", symbol).await,
            Some((d("16"), Some(d(price)), d("0"), d("0"), true, 16)),
            "{symbol}"
        );
    }
}

/// Fills on two days: a reversal with fees on BTCUSDT, and an ETHUSDT short covered
/// by a fill without a price.
async fn two_days_of_fills(pool: &PgPool) {
    commit(
        pool,
        &[
            with_fee(
                fill(
                    "BTCUSDT",
                    "buy",
                    "0.01",
                    Some("60000"),
                    "2026-12-17T23:59:59Z",
                ),
                "0.3",
            ),
            with_fee(
                fill(
                    "BTCUSDT",
                    "sell",
                    "0.03",
                    Some("61000"),
                    "2026-12-18T08:00:00Z",
                ),
                "0.9",
            ),
            fill("ETHUSDT", "sell", "2", Some("3000"), "2026-12-18T09:00:00Z"),
            fill("ETHUSDT", "buy", "1", None, "2026-12-18T10:00:00Z"),
        ],
    )
    .await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn hoox_positions_json_shows_the_ledger_field_by_field(pool: PgPool) {
    two_days_of_fills(&pool).await;
    let output = hoox_on(&database_url(&pool))
        .args(["positions", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    let fields = [
        "exchange",
        "market",
        "testnet",
        "symbol",
        "side",
        "quantity",
        "avgEntryPrice",
        "realizedPnl",
        "fees",
        "complete",
        "fills",
    ];
    let pick = |row: &Value| -> Vec<Value> { fields.iter().map(|f| row[*f].clone()).collect() };
    // BTCUSDT: +0.01 @ 60000, −0.03 @ 61000: +10 realized, a 0.02 short at 61000,
    // fees 0.3 + 0.9.
    assert_eq!(
        pick(&rows[0]),
        [
            json!("bybit"),
            json!("linear"),
            json!(false),
            json!("BTCUSDT"),
            json!("short"),
            json!("-0.02"),
            json!("61000"),
            json!("8.8"),
            json!("1.2"),
            json!(true),
            json!(2)
        ]
    );
    // ETHUSDT: short 2 @ 3000, 1 covered without a price: nothing invented.
    assert_eq!(
        pick(&rows[1]),
        [
            json!("bybit"),
            json!("linear"),
            json!(false),
            json!("ETHUSDT"),
            json!("short"),
            json!("-1"),
            json!("3000"),
            json!("0"),
            json!("0"),
            json!(false),
            json!(2)
        ]
    );
    assert!(rows[0]["updatedAt"]
        .as_str()
        .is_some_and(|t| t.parse::<DateTime<Utc>>().is_ok()));

    let table = hoox_on(&database_url(&pool))
        .arg("positions")
        .output()
        .await
        .unwrap();
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    let eth = table.lines().find(|l| l.contains("ETHUSDT")).unwrap();
    let cells: Vec<&str> = eth.split_whitespace().collect();
    assert_eq!(
        &cells[..10],
        ["bybit", "linear", "live", "ETHUSDT", "short", "-1", "3000", "0*", "0", "2"]
    );
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn hoox_report_csv_loads_as_is_and_bad_dates_are_named(pool: PgPool) {
    two_days_of_fills(&pool).await;
    let url = database_url(&pool);
    let report = |args: &[&str]| {
        let mut command = hoox_on(&url);
        command.arg("report").args(args);
        command
    };

    let output = report(&["--format", "csv"]).output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(
        lines,
        [
            "date,exchange,environment,symbol,fills,volume,realized_pnl,fees,incomplete_fills",
            // 0.01 × 60000; the open's fee.
            "2026-12-17,bybit,live,BTCUSDT,1,600,-0.3,0.3,0",
            // 0.03 × 61000; (61000 − 60000) × 0.01 − 0.9.
            "2026-12-18,bybit,live,BTCUSDT,1,1830,9.1,0.9,0",
            // 2 × 3000 priced; the unpriced cover counts as incomplete; no fee reported.
            "2026-12-18,bybit,live,ETHUSDT,2,6000,0,,1",
        ]
    );
    assert!(csv.ends_with("\r\n"), "every record ends with CRLF");

    let output = report(&[
        "--from",
        "2026-12-18",
        "--to",
        "2026-12-18",
        "--format",
        "csv",
    ])
    .output()
    .await
    .unwrap();
    let csv = String::from_utf8(output.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(!csv.contains("2026-12-17"), "{csv}");

    let output = report(&["--format", "json", "--to", "2026-12-17"])
        .output()
        .await
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        rows,
        [json!({
            "day": "2026-12-17", "exchange": "bybit", "testnet": false, "symbol": "BTCUSDT",
            "fills": 1, "volume": "600", "realizedPnl": "-0.3", "fees": "0.3", "incomplete": 0
        })]
    );

    let output = report(&["--from", "2026-02-30"]).output().await.unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("`2026-02-30` is not a date as YYYY-MM-DD"),
        "{err}"
    );
    let output = report(&["--from", "2026-12-19", "--to", "2026-12-18"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--from 2026-12-19 is after --to 2026-12-18"),
        "{err}"
    );
}
