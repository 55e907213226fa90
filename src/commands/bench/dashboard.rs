//! `hoox bench --dashboard`: how fast each dashboard page answers on a big database.
//! Seeds a database of its own with 100,000 fills and 1,000,000 `system_logs` rows
//! (`generate_series`, one statement each), serves the dashboard in this process,
//! signs in, asks each page again and again, and prints p50 and p99 per page. The
//! database and any queue a page declared are removed at the end, on error too.

use std::time::Instant;

use anyhow::Context;
use hoox_common::amqp::{self, Topology};
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::stats::Latencies;
use super::{bench_database_url, delete_topology, progress, secret, BenchArgs};
use crate::dashboard::{self, Dashboard, DashboardArgs};

/// Fills seeded.
const FILLS: i64 = 100_000;
/// `system_logs` rows seeded.
const LOG_ROWS: i64 = 1_000_000;

/// The pages timed; `{id}` is a seeded signal's request id.
const PAGES: [&str; 14] = [
    "/",
    "/signals?request_id={id}",
    "/fills",
    "/fills?symbol=SYM7USDT",
    "/fills?exchange=bybit&from=2026-01-01",
    "/fills?before_at=2026-06-01T00:00:00Z&before_id=30000",
    "/positions",
    "/dead-letters",
    "/config",
    "/logs",
    "/logs?worker=consumer",
    "/logs?severity=error",
    "/logs?request_id={id}",
    "/logs?worker=ingest&since=1d",
];

/// Seeds `pool` with [`FILLS`] fills over 40 symbols and 4 exchanges, five minutes
/// apart (a year in all), and [`LOG_ROWS`] log rows of 4 workers and 4 severities, a
/// second apart, eight per signal; ids grow with time, as they do when hoox writes.
async fn seed(pool: &PgPool) -> anyhow::Result<Uuid> {
    sqlx::query(
        r#"
        INSERT INTO fills (request_id, exchange, paper, symbol, action, side, reduce_only, quantity,
                           order_type, client_order_id, exchange_order_id, status, fill_price,
                           fill_quantity, received_at, executed_at, market, realized_pnl, fee)
        SELECT gen_random_uuid(), (ARRAY['bybit', 'binance', 'mexc', 'paper'])[1 + i % 4], i % 4 = 3,
               'SYM' || (i % 40) || 'USDT', 'LONG', 'buy', false, 0.01, 'market', 'c-' || i, 'o-' || i,
               'filled', 100 + i % 50, 0.01, now() - ($1 - i) * interval '5 minutes',
               now() - ($1 - i) * interval '5 minutes', 'linear', (i % 7) - 3, 0.01
        FROM generate_series(1, $1::bigint) AS i
        "#,
    )
    .bind(FILLS)
    .execute(pool)
    .await
    .context("seed the fills")?;
    let traced = Uuid::new_v4();
    sqlx::query(
        r#"
        INSERT INTO system_logs (created_at, request_id, worker, kind, severity, message, context)
        SELECT now() - ($1 - i) * interval '1 second',
               CASE WHEN i % 125000 = 0 THEN $2 ELSE md5((i / 8)::text)::uuid END,
               (ARRAY['ingest', 'consumer', 'consumer', 'cli'])[1 + i % 4],
               (ARRAY['accepted', 'dequeued', 'order_placed', 'filled'])[1 + i % 4],
               (ARRAY['info', 'info', 'warn', 'error'])[1 + (i / 4) % 4],
               'bench row ' || i, '{}'::jsonb
        FROM generate_series(1, $1::bigint) AS i
        "#,
    )
    .bind(LOG_ROWS)
    .bind(traced)
    .execute(pool)
    .await
    .context("seed system_logs")?;
    sqlx::query("ANALYZE fills")
        .execute(pool)
        .await
        .context("analyze fills")?;
    sqlx::query("ANALYZE system_logs")
        .execute(pool)
        .await
        .context("analyze system_logs")?;
    Ok(traced)
}

/// Runs `hoox bench --dashboard`.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let id = Uuid::new_v4().simple().to_string();
    let database_url = bench_database_url(&args.database_url, &format!("dashboard_{id}"))?;
    let topology =
        Topology::new(format!("hoox-bench-dashboard-{id}"), Default::default()).with_partitions(1);
    let measured = measure(args, &database_url, &topology).await;
    let connection = amqp::connect(&args.amqp_url, "hoox-bench").await;
    if let Ok(connection) = connection {
        if let Ok(channel) = connection.create_channel().await {
            // Only the dead-letters page declares queues; absent ones are no error.
            let _ = delete_topology(&channel, &topology).await;
        }
        let _ = connection.close(200, "done".into()).await;
    }
    let dropped = Postgres::force_drop_database(database_url.expose_secret())
        .await
        .context("drop the bench database");
    let table = measured?;
    dropped?;
    print!("{table}");
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    database_url: &SecretString,
    topology: &Topology,
) -> anyhow::Result<String> {
    progress("dashboard: creating and seeding a database (100,000 fills, 1,000,000 log rows)");
    let pool = hoox_common::db::connect_and_migrate(database_url, 8)
        .await
        .context("create the bench database")?;
    let started = Instant::now();
    let traced = seed(&pool).await?;
    // The queues exist, as in a deployment, so that the health check finds them.
    let connection = amqp::connect(&args.amqp_url, "hoox-bench")
        .await
        .context("cannot connect to the message broker")?;
    let channel = connection.create_channel().await?;
    topology
        .declare(&channel)
        .await
        .context("declare the bench queues")?;
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    progress(&format!(
        "dashboard: seeded in {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    let password = secret();
    let dashboard_args = {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: DashboardArgs,
        }
        let url = database_url.expose_secret().to_owned();
        let amqp_url = args.amqp_url.expose_secret().to_owned();
        Wrapper::try_parse_from([
            "dashboard",
            "--database-url",
            &url,
            "--amqp-url",
            &amqp_url,
            "--queue",
            topology.queue(),
            "--partitions",
            "1",
        ])
        .context("dashboard arguments")?
        .args
    };
    let dashboard = Dashboard::new(
        pool.clone(),
        &dashboard_args,
        &SecretString::from(password.clone()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let token = CancellationToken::new();
    let server = tokio::spawn(dashboard::serve(listener, dashboard, token.clone()));
    let result = time_pages(&base, &password, traced, if args.quick { 20 } else { 100 }).await;
    token.cancel();
    let _ = server.await;
    pool.close().await;
    result
}

/// Signs in, then asks each page `rounds` times; the table of p50 and p99 per page.
async fn time_pages(
    base: &str,
    password: &str,
    traced: Uuid,
    rounds: usize,
) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = http
        .post(format!("{base}/login"))
        .form(&[("password", password)])
        .send()
        .await
        .context("sign in")?;
    let cookie = signed_in
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the dashboard set no session cookie")?
        .to_owned();
    let mut table = format!(
        "{:<56}  {:>6}  {:>9}  {:>9}\n",
        "PAGE", "STATUS", "P50 MS", "P99 MS"
    );
    for page in PAGES {
        let path = page.replace("{id}", &traced.to_string());
        let mut latencies = Latencies::new();
        let mut status = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let response = http
                .get(format!("{base}{path}"))
                .header(reqwest::header::COOKIE, &cookie)
                .send()
                .await?;
            status = response.status().as_u16();
            response.bytes().await?;
            latencies.record(started.elapsed());
        }
        let percentiles = latencies.percentiles().context("no requests timed")?;
        table.push_str(&format!(
            "{path:<56}  {status:>6}  {:>9.1}  {:>9.1}\n",
            percentiles.p50_ms, percentiles.p99_ms
        ));
    }
    Ok(table)
}
