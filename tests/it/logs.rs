//! `hoox logs tail`: filters, JSONL, and `--follow` printing rows written after it
//! started, even when ids commit out of order or the listening connection is lost.

use std::process::Stdio;

use chrono::{Duration, Utc};
use hoox_common::logs::{Severity, Worker};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use uuid::Uuid;

use crate::support::{database_url, eventually, hoox_on, DEADLINE};

/// A terminal title change and a screen clear.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";

/// A `system_logs` row as a test writes it: any severity and message, so the reader
/// is tested on what it may meet (rows of every kind, and rows from before kinds).
#[derive(Debug, Clone)]
struct Row {
    created_at: chrono::DateTime<Utc>,
    request_id: Option<Uuid>,
    worker: Worker,
    severity: Severity,
    message: String,
}

fn entry(worker: Worker, severity: Severity, request_id: Option<Uuid>, message: &str) -> Row {
    Row {
        created_at: Utc::now(),
        request_id,
        worker,
        severity,
        message: message.to_owned(),
    }
}

/// Writes `rows` in one statement, as the services write a batch's rows.
async fn write_rows<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    rows: &[Row],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        INSERT INTO system_logs (created_at, request_id, worker, severity, message, context)
        SELECT *, '{"test": true}'::jsonb FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[])
        "#,
    )
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.request_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.worker.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.severity.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.message.clone()).collect::<Vec<_>>())
    .execute(executor)
    .await
    .map(drop)
}

async fn insert(pool: &PgPool, rows: &[Row]) {
    write_rows(pool, rows).await.expect("insert logs");
}

/// Writes one row without a request id.
async fn log(pool: &PgPool, worker: Worker, severity: Severity, message: &str) {
    insert(pool, &[entry(worker, severity, None, message)]).await;
}

/// Runs `hoox logs tail ARGS`; returns its standard output, failing the test if it fails.
async fn tail(pool: &PgPool, args: &[&str]) -> String {
    let output = hoox_on(&database_url(pool))
        .args(["logs", "tail"])
        .args(args)
        .output()
        .await
        .expect("hoox runs");
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The messages `hoox logs tail --json ARGS` prints, in order.
async fn messages(pool: &PgPool, args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.push("--json");
    tail(pool, &args)
        .await
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("each line is JSON");
            row["message"].as_str().expect("a message").to_owned()
        })
        .collect()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn tail_prints_the_newest_rows_oldest_first_one_line_each_with_text_escaped(pool: PgPool) {
    let signal = Uuid::new_v4();
    insert(
        &pool,
        &[
            entry(Worker::Ingest, Severity::Info, None, "first"),
            entry(Worker::Ingest, Severity::Info, Some(signal), "second"),
            entry(Worker::Consumer, Severity::Error, Some(signal), HOSTILE),
        ],
    )
    .await;

    let text = tail(&pool, &["--limit", "2"]).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with(&format!("  ingest    info   {signal}  second")),
        "{text}"
    );
    assert!(
        lines[1].ends_with(&format!(
            "  consumer  error  {signal}  \\x1b]0;pwned\\x07\\x1b[2J"
        )),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text:?}");

    let everything = tail(&pool, &[]).await;
    assert!(
        everything.lines().next().unwrap().ends_with("  first"),
        "{everything}"
    );
    assert!(
        everything.contains(&format!("info   {:<36}  first", "-")),
        "{everything}"
    );
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn filters_select_by_worker_severity_and_above_request_id_and_since(pool: PgPool) {
    let signal = Uuid::new_v4();
    let mut old = entry(Worker::Consumer, Severity::Error, None, "old error");
    old.created_at = Utc::now() - Duration::hours(3);
    insert(
        &pool,
        &[
            old,
            entry(
                Worker::Ingest,
                Severity::Debug,
                Some(signal),
                "ingest debug",
            ),
            entry(Worker::Ingest, Severity::Warn, None, "ingest warn"),
            entry(
                Worker::Consumer,
                Severity::Info,
                Some(signal),
                "consumer info",
            ),
            entry(Worker::Cli, Severity::Error, None, "cli error"),
        ],
    )
    .await;

    assert_eq!(
        messages(&pool, &["--worker", "ingest"]).await,
        ["ingest debug", "ingest warn"]
    );
    assert_eq!(
        messages(&pool, &["--severity", "warn"]).await,
        ["old error", "ingest warn", "cli error"]
    );
    assert_eq!(
        messages(&pool, &["--severity", "info", "--worker", "consumer"]).await,
        ["old error", "consumer info"]
    );
    assert_eq!(
        messages(&pool, &["--request-id", &signal.to_string()]).await,
        ["ingest debug", "consumer info"]
    );
    assert_eq!(
        messages(&pool, &["--since", "2h", "--severity", "error"]).await,
        ["cli error"]
    );

    let refused = hoox_on(&database_url(&pool))
        .args(["logs", "tail", "--worker", "exchange"])
        .output()
        .await
        .expect("hoox runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ingest, consumer, cli"),
        "{refused:?}"
    );
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn json_lines_parse_to_the_rows_with_control_characters_escaped(pool: PgPool) {
    let signal = Uuid::new_v4();
    let message = format!("{HOSTILE} del\x7f c1\u{9b} bidi\u{202e}");
    insert(
        &pool,
        &[
            entry(Worker::Ingest, Severity::Info, None, "plain"),
            entry(Worker::Consumer, Severity::Warn, Some(signal), &message),
        ],
    )
    .await;

    let text = tail(&pool, &["--json"]).await;
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{text:?}"
    );
    let rows: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0]["requestId"], Value::Null);
    let row = &rows[1];
    assert!(row["id"].as_i64().unwrap() > rows[0]["id"].as_i64().unwrap());
    assert!(row["createdAt"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<Utc>>()
        .is_ok());
    assert_eq!(row["requestId"], signal.to_string());
    assert_eq!(row["worker"], "consumer");
    assert_eq!(row["severity"], "warn");
    assert_eq!(row["message"], message);
    assert_eq!(row["context"], json!({"test": true}));
}

/// A running `hoox logs tail --follow --json`.
struct Following {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Following {
    fn start(pool: &PgPool, args: &[&str]) -> Self {
        let mut child = hoox_on(&database_url(pool))
            .args(["logs", "tail", "--follow", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("hoox starts");
        let stdout = child.stdout.take().expect("piped");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Starts following with `args` once a row written by `worker` at `severity` exists,
    /// and returns when that row is printed: the follow is listening from then on.
    async fn ready(pool: &PgPool, args: &[&str], worker: Worker, severity: Severity) -> Self {
        log(pool, worker, severity, "ready").await;
        let mut following = Self::start(pool, args);
        assert_eq!(following.until("ready").await, ["ready"]);
        following
    }

    /// Reads rows until one carries `message`; returns the messages read, that one last.
    async fn until(&mut self, message: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let reading = async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                let row: Value = serde_json::from_str(&line).expect("each line is JSON");
                let text = row["message"].as_str().expect("a message").to_owned();
                seen.push(text.clone());
                if text == message {
                    return;
                }
            }
            panic!("hoox ended before printing {message:?}; printed {seen:?}");
        };
        if tokio::time::timeout(DEADLINE, reading).await.is_err() {
            panic!("timed out waiting for {message:?}");
        }
        seen
    }

    /// Sends Ctrl-C and asserts that it exits with status 0.
    async fn interrupt(mut self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("hoox exits after Ctrl-C")
            .expect("wait");
        assert_eq!(exit.code(), Some(0), "{exit:?}");
    }
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn follow_prints_a_row_written_after_it_started_and_ctrl_c_ends_it_with_status_0(
    pool: PgPool,
) {
    log(&pool, Worker::Ingest, Severity::Info, "before").await;
    let mut following = Following::start(&pool, &[]);
    assert_eq!(following.until("before").await, ["before"]);

    log(&pool, Worker::Consumer, Severity::Info, "after").await;
    assert_eq!(following.until("after").await, ["after"]);
    following.interrupt().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn follow_with_filters_prints_only_the_new_rows_that_match(pool: PgPool) {
    let mut following = Following::ready(
        &pool,
        &["--worker", "consumer", "--severity", "warn"],
        Worker::Consumer,
        Severity::Error,
    )
    .await;

    log(&pool, Worker::Consumer, Severity::Info, "too low").await;
    log(&pool, Worker::Ingest, Severity::Error, "other worker").await;
    log(&pool, Worker::Consumer, Severity::Warn, "matches").await;
    assert_eq!(following.until("matches").await, ["matches"]);
    following.interrupt().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn follow_prints_a_row_whose_transaction_commits_after_one_with_a_higher_id(pool: PgPool) {
    let mut following = Following::ready(&pool, &[], Worker::Ingest, Severity::Info).await;

    // The lower id is drawn first and committed last, as with two consumers' batches.
    let mut slow = pool.begin().await.unwrap();
    write_rows(
        &mut *slow,
        &[entry(Worker::Consumer, Severity::Info, None, "lower id")],
    )
    .await
    .unwrap();
    log(&pool, Worker::Consumer, Severity::Info, "higher id").await;
    assert_eq!(following.until("higher id").await, ["higher id"]);
    slow.commit().await.unwrap();
    assert_eq!(following.until("lower id").await, ["lower id"]);
    following.interrupt().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn follow_reconnects_after_losing_its_listener_and_prints_what_was_written_meanwhile(
    pool: PgPool,
) {
    let mut following = Following::ready(&pool, &[], Worker::Ingest, Severity::Info).await;

    // With connections refused, the row below is written while nothing listens: no
    // notification can reach the follow, only its catch-up read after reconnecting.
    let mut writer = pool.acquire().await.unwrap();
    let server = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let allow = |on: bool| format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {on}");
    sqlx::query(&allow(false)).execute(&server).await.unwrap();
    let listeners = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{database}' AND query LIKE 'LISTEN%'"
    );
    let killed: Vec<bool> = sqlx::query_scalar(&format!(
        "SELECT pg_terminate_backend(pid) FROM ({listeners}) l"
    ))
    .fetch_all(&server)
    .await
    .unwrap();
    assert_eq!(killed, [true], "the follow had one listening connection");
    eventually("the listener gone", || async {
        let left: Vec<i32> = sqlx::query_scalar(&listeners)
            .fetch_all(&server)
            .await
            .ok()?;
        left.is_empty().then_some(())
    })
    .await;
    write_rows(
        &mut *writer,
        &[entry(Worker::Consumer, Severity::Info, None, "meanwhile")],
    )
    .await
    .unwrap();
    sqlx::query(&allow(true)).execute(&server).await.unwrap();

    assert_eq!(following.until("meanwhile").await, ["meanwhile"]);
    log(&pool, Worker::Consumer, Severity::Info, "after").await;
    assert_eq!(following.until("after").await, ["after"]);
    following.interrupt().await;
}
