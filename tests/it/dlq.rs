//! `hoox dlq` output: whatever a dead letter carries reaches the operator's terminal with
//! its control characters escaped, and `--json` still parses to the original text.

use hoox_common::amqp::{publish_confirmed, signed_headers, text};
use hoox_common::message::{HEADER_ATTEMPTS, HEADER_ERROR, HEADER_REASON};
use lapin::types::AMQPValue;
use lapin::Connection;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{broker, TestApp};

/// A terminal title change, a bell and a screen clear.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";
/// [`HOSTILE`] as the operator should see it.
const HOSTILE_SHOWN: &str = "\\x1b]0;pwned\\x07\\x1b[2J";

/// Puts a dead letter straight into the app's DLQ, its error header carrying [`HOSTILE`].
async fn dead_letter(app: &TestApp, connection: &Connection, request_id: Uuid, body: &[u8]) {
    let channel = connection.create_channel().await.unwrap();
    app.topology.declare(&channel).await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let id = request_id.to_string();
    let mut headers = signed_headers(None, Some(&id));
    headers.insert(HEADER_REASON.into(), text("fatal"));
    headers.insert(
        HEADER_ERROR.into(),
        text(&format!("order rejected: {HOSTILE}")),
    );
    headers.insert(HEADER_ATTEMPTS.into(), AMQPValue::LongLongInt(1));
    publish_confirmed(&channel, &app.topology.dlq(), body, headers, Some(&id))
        .await
        .unwrap();
}

/// Runs `hoox dlq ARGS` and returns its standard output, which must carry no character
/// a terminal would act on.
async fn dlq(app: &TestApp, args: &[&str]) -> String {
    let output = app.hoox().arg("dlq").args(args).output().await.unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    assert!(
        !output.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "{args:?} printed a raw ESC or BEL: {output:?}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        !stdout
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{args:?} printed a raw control character: {stdout:?}"
    );
    stdout
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn dlq_list_and_show_escape_terminal_control_characters_from_the_broker(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let connection = broker().await;
    let symbol = format!("BTC{HOSTILE}USDT\u{7f}\u{9b}\u{202e}");
    let (as_json, raw) = (Uuid::new_v4(), Uuid::new_v4());
    let body = json!({
        "version": 1,
        "requestId": as_json,
        "receivedAt": "2026-11-24T09:29:22Z",
        "signal": {"symbol": symbol, "exchange": "bybit"},
        "attempts": 1,
        "history": [{
            "at": "2026-11-24T09:29:23Z",
            "exchange": "bybit",
            "code": "110007",
            "message": HOSTILE,
        }],
    });
    dead_letter(&app, &connection, as_json, body.to_string().as_bytes()).await;
    dead_letter(
        &app,
        &connection,
        raw,
        format!("not json {HOSTILE}").as_bytes(),
    )
    .await;

    let shown = dlq(&app, &["show", &as_json.to_string()]).await;
    assert!(
        shown.contains(&format!("order rejected: {HOSTILE_SHOWN}")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("[110007] {HOSTILE_SHOWN}")),
        "{shown}"
    );
    assert!(
        shown.contains(r#""BTC\u001b]0;pwned\u0007\u001b[2JUSDT\u007f\u009b\u202e""#),
        "{shown}"
    );

    let shown = dlq(&app, &["show", &raw.to_string()]).await;
    assert!(
        shown.contains(&format!("payload (not JSON): not json {HOSTILE_SHOWN}")),
        "{shown}"
    );

    let listed = dlq(&app, &["list"]).await;
    assert!(
        listed.contains(&format!("BTC{HOSTILE_SHOWN}USDT\\x7f\\u{{9b}}\\u{{202e}}")),
        "{listed}"
    );
    assert!(listed.contains("2 dead letter(s)"), "{listed}");

    let listed: Value = serde_json::from_str(&dlq(&app, &["list", "--json"]).await).unwrap();
    assert_eq!(listed[0]["message"]["signal"]["symbol"], symbol.as_str());
    assert_eq!(
        listed[0]["error"],
        format!("order rejected: {HOSTILE}").as_str()
    );

    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}
