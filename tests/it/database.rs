//! Only `hoox migrate` and the services create or migrate a database: every other
//! command refuses one that is missing or not migrated, and leaves it as it was, so a
//! mistyped `DATABASE_URL` cannot look like a working kill switch.

use std::process::Output;

use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{count, database_url, hoox_on, unique_queue, url_of_database, INTERNAL_KEY};

/// A database name nobody has created.
fn missing_database() -> String {
    format!("hoox_missing_{}", Uuid::new_v4().simple())
}

/// The answer of a yes-or-no query about `name`.
async fn holds(pool: &PgPool, sql: &str, name: &str) -> bool {
    sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(pool)
        .await
        .expect(sql)
}

async fn database_exists(pool: &PgPool, name: &str) -> bool {
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
    holds(pool, sql, name).await
}

async fn table_exists(pool: &PgPool, table: &str) -> bool {
    holds(pool, "SELECT to_regclass($1) IS NOT NULL", table).await
}

async fn hoox(database_url: &str, args: &[&str]) -> Output {
    hoox_on(database_url)
        .env("HOOX_QUEUE", unique_queue())
        .env("HOOX_INTERNAL_KEY", INTERNAL_KEY)
        .args(args)
        .output()
        .await
        .expect("hoox runs")
}

/// Asserts that `output` is a failure whose message names `database` and says what to do.
fn assert_refused(output: &Output, args: &[&str], database: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded: {stderr}");
    assert!(
        stderr.contains(database) && stderr.contains("hoox migrate"),
        "{args:?}: {stderr}"
    );
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn operator_commands_refuse_a_missing_database_and_do_not_create_it(pool: PgPool) {
    let name = missing_database();
    let url = url_of_database(&name);
    let request_id = Uuid::new_v4().to_string();
    for args in [
        vec!["kill-switch", "on"],
        vec!["kill-switch", "show"],
        vec!["config", "set", "exchanges:default_routing", "paper"],
        vec!["config", "list"],
        vec!["trace", &request_id],
        vec!["dlq", "purge", "--yes"],
        vec!["dlq", "replay", "--all"],
        vec!["logs", "tail"],
        vec!["logs", "tail", "--follow"],
    ] {
        let output = hoox(&url, &args).await;
        assert_refused(&output, &args, &name);
        assert!(
            !database_exists(&pool, &name).await,
            "{args:?} created the database"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn an_unmigrated_database_is_refused_untouched_until_hoox_migrate_runs(pool: PgPool) {
    let url = database_url(&pool);
    let name = pool.connect_options().get_database().unwrap().to_owned();
    for args in [
        vec!["kill-switch", "on"],
        vec!["config", "set", "trade:kill_switch", "on"],
    ] {
        let output = hoox(&url, &args).await;
        assert_refused(&output, &args, &name);
    }
    assert!(!table_exists(&pool, "_sqlx_migrations").await);
    assert!(!table_exists(&pool, "config").await);

    let migrated = hoox(&url, &["migrate"]).await;
    assert!(migrated.status.success(), "{migrated:?}");
    let output = hoox(&url, &["kill-switch", "on"]).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config WHERE key = 'trade:kill_switch' AND value = 'true'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_database_behind_this_build_is_refused_and_not_migrated(pool: PgPool) {
    let all = count(&pool, "SELECT count(*) FROM _sqlx_migrations").await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let url = database_url(&pool);
    let name = pool.connect_options().get_database().unwrap().to_owned();

    let args = ["kill-switch", "on"];
    let output = hoox(&url, &args).await;
    assert_refused(&output, &args, &name);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM _sqlx_migrations").await,
        all - 1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM config").await, 0);
}
