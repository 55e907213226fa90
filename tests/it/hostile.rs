//! A corpus of hostile webhooks, kept as data: each is refused with a 4xx in the JSON
//! envelope whose error names the problem, and nothing reaches the queue.

use std::time::Duration;

use hoox_ingest::server::Limits;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::raw::{self, read_response};
use crate::support::{queue_depth, Options, TestApp, API_KEY};

/// The fields of a valid signal, as raw JSON text, in the order they are sent.
const VALID: [(&str, &str); 5] = [
    ("apiKey", "\"test-webhook-key\""),
    ("action", "\"LONG\""),
    ("symbol", "\"BTCUSDT\""),
    ("quantity", "0.005"),
    ("price", "68000"),
];

/// A field set to a raw JSON value (`None`: left out) that must be refused with 400
/// naming that field.
const BAD_FIELDS: &[(&str, Option<&str>)] = &[
    // Missing required fields.
    ("action", None),
    ("symbol", None),
    ("quantity", None),
    ("quantity", Some("null")),
    // Number notation: plain decimals only.
    ("quantity", Some("\"1_000\"")),
    ("quantity", Some("\"+1\"")),
    ("quantity", Some("\".5\"")),
    ("quantity", Some("\"00001\"")),
    ("quantity", Some("\"1.\"")),
    ("quantity", Some("\"0x10\"")),
    ("quantity", Some("\"1e2\"")),
    ("quantity", Some("1e2")),
    ("quantity", Some("5e-3")),
    ("quantity", Some("5E-3")),
    ("quantity", Some("\" 1\"")),
    ("quantity", Some("\"1 \"")),
    ("quantity", Some("\"\"")),
    ("quantity", Some("\"NaN\"")),
    ("quantity", Some("\"Infinity\"")),
    ("quantity", Some("\"-Infinity\"")),
    ("quantity", Some("\"1,5\"")),
    ("quantity", Some("\"１\"")),
    ("quantity", Some("\"1\\u0000\"")),
    // Range.
    ("quantity", Some("0")),
    ("quantity", Some("-1")),
    ("quantity", Some("-0.0")),
    ("quantity", Some("\"79228162514264337593543950335\"")),
    ("quantity", Some("79228162514264337593543950336")),
    ("quantity", Some("1e28")),
    ("quantity", Some("100000000000000")),
    ("quantity", Some("0.00000000000000001")),
    ("quantity", Some("1.12345678901234567")),
    (
        "quantity",
        Some("1000000000000000000000000000000000000000000000000000000000000000000000000000"),
    ),
    // Types.
    ("quantity", Some("true")),
    ("quantity", Some("[1]")),
    ("quantity", Some("{}")),
    ("price", Some("\"1e28\"")),
    ("price", Some("1e28")),
    ("price", Some("-3")),
    ("price", Some("0")),
    ("price", Some("\"68_000\"")),
    ("price", Some("\"0x10A0\"")),
    ("price", Some("100000000000000.5")),
    ("price", Some("[68000]")),
    ("stopLoss", Some("0")),
    ("stopLoss", Some("\"1e28\"")),
    ("stopLoss", Some("1e3")),
    ("stopLoss", Some("\"abc\"")),
    ("takeProfit", Some("{}")),
    ("takeProfit", Some("\"+5\"")),
    ("takeProfit", Some("79228162514264337593543950335")),
    ("leverage", Some("0")),
    ("leverage", Some("126")),
    ("leverage", Some("2.5")),
    ("leverage", Some("10.0")),
    ("leverage", Some("\"10.0\"")),
    ("leverage", Some("1e1")),
    ("leverage", Some("\"1e1\"")),
    ("leverage", Some("\"010\"")),
    ("leverage", Some("\"+10\"")),
    ("leverage", Some("-10")),
    ("leverage", Some("\"ten\"")),
    ("leverage", Some("true")),
    ("leverage", Some("99999999999999999999999")),
    ("symbol", Some("\"BTC/USDT\"")),
    ("symbol", Some("\"\"")),
    ("symbol", Some("42")),
    ("symbol", Some("\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"")),
    ("symbol", Some("\"BTC\\u0000USDT\"")),
    ("symbol", Some("\"BTC USDT\"")),
    ("symbol", Some("[\"BTCUSDT\"]")),
    ("action", Some("\"HOLD\"")),
    ("action", Some("\"\"")),
    ("action", Some("1")),
    ("action", Some("{\"side\": \"buy\"}")),
    ("exchange", Some("\"kraken\"")),
    ("exchange", Some("1")),
    ("orderType", Some("\"stop\"")),
    ("orderType", Some("false")),
    ("reduceOnly", Some("\"yes\"")),
    ("reduceOnly", Some("1")),
    ("test", Some("1")),
    ("test", Some("\"1\"")),
    ("idempotencyKey", Some("\"\"")),
    ("idempotencyKey", Some("\"has space\"")),
    ("idempotencyKey", Some("5")),
    ("idempotencyKey", Some("\"\\u0000\"")),
    ("levrage", Some("10")),
    ("__proto__", Some("{}")),
    ("nested", Some("[[[[[[[[[[1]]]]]]]]]]")),
];

/// Bodies that are not one JSON object.
const NOT_JSON: &[&[u8]] = &[
    b"",
    b" ",
    b"not json",
    b"{",
    b"{\"apiKey\": ",
    b"[1, 2]",
    b"\"LONG\"",
    b"null",
    b"true",
    b"42",
    b"{\"a\":1}}",
    b"{\"a\":1} {\"b\":2}",
    b"{'action':'LONG'}",
    b"{action: \"LONG\"}",
    b"{\"a\":1,}",
    b"{\"a\":1 /* comment */}",
    b"{\"quantity\": NaN}",
    b"{\"quantity\": Infinity}",
    b"{\"quantity\": 01}",
    b"{\"quantity\": .5}",
    b"{\"quantity\": +1}",
    b"{\"quantity\": 0x10}",
    b"\xEF\xBB\xBF{\"apiKey\": \"test-webhook-key\"}",
    b"\xFF\xFE{\x00}\x00",
    b"{\"apiKey\": \"\xff\xfe\"}",
    b"{\"apiKey\": \"test-webhook-key\", \"symbol\": \"BTC\xc3\x28\"}",
    b"{\"apiKey\": \"a\x00b\"}",
    b"\x00{\"apiKey\": \"test-webhook-key\"}",
    b"{\"apiKey\": \"test-webhook-key\"}\x00",
    b"{\"apiKey\": \"line\nbreak\"}",
    b"{\"apiKey\": \"\\ud800\"}",
    b"{\"apiKey\": \"\\x41\"}",
];

/// Bodies with a key twice, and the key's path.
const DUPLICATES: &[(&str, &str)] = &[
    (
        r#"{"apiKey":"test-webhook-key","action":"LONG","symbol":"BTCUSDT","quantity":0.001,"quantity":5}"#,
        "quantity",
    ),
    (
        r#"{"apiKey":"wrong","apiKey":"test-webhook-key","action":"LONG","symbol":"BTCUSDT","quantity":1}"#,
        "apiKey",
    ),
    (
        r#"{"apiKey":"test-webhook-key","action":"SHORT","symbol":"BTCUSDT","quantity":1,"action":"LONG"}"#,
        "action",
    ),
    (
        r#"{"apiKey":"test-webhook-key","action":"LONG","symbol":"BTCUSDT","quantity":1,"x":{"a":1,"a":2}}"#,
        "x.a",
    ),
];

/// `apiKey` values that do not authenticate.
const BAD_KEYS: &[Option<&str>] = &[
    None,
    Some("null"),
    Some("\"\""),
    Some("\"wrong\""),
    Some("\"test-webhook-keY\""),
    Some("\"test-webhook-key \""),
    Some("\" test-webhook-key\""),
    Some("\"test-webhook-key\\u0000\""),
    Some("12345"),
    Some("[\"test-webhook-key\"]"),
    Some("{\"key\": \"test-webhook-key\"}"),
    Some("true"),
];

/// A webhook body: the valid fields with `field` replaced by `value` (`None`: removed).
fn body_with(field: &str, value: Option<&str>) -> String {
    let mut fields: Vec<(&str, &str)> = VALID.to_vec();
    match (fields.iter().position(|(k, _)| *k == field), value) {
        (Some(at), Some(value)) => fields[at].1 = value,
        (Some(at), None) => {
            fields.remove(at);
        }
        (None, Some(value)) => fields.push((field, value)),
        (None, None) => {}
    }
    let members: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", members.join(","))
}

/// One hostile request: what to send, and what the refusal must say.
struct Case {
    what: String,
    body: Vec<u8>,
    status: u16,
    error_contains: String,
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for (field, value) in BAD_FIELDS {
        cases.push(Case {
            what: format!("{field} = {value:?}"),
            body: body_with(field, *value).into_bytes(),
            status: 400,
            error_contains: format!("invalid signal: {field}:"),
        });
    }
    for body in NOT_JSON {
        cases.push(Case {
            what: format!("not JSON: {:?}", String::from_utf8_lossy(body)),
            body: body.to_vec(),
            status: 400,
            error_contains: "not a JSON object".to_owned(),
        });
    }
    for depth in [129, 10_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let mut body = format!("{{\"apiKey\":\"{API_KEY}\",\"x\":");
            body.push_str(&open.repeat(depth));
            body.push_str(&close.repeat(depth));
            body.push('}');
            cases.push(Case {
                what: format!("{depth} nested {open}"),
                body: body.into_bytes(),
                status: 400,
                error_contains: "recursion limit".to_owned(),
            });
        }
    }
    let long_key = format!("\"{}\"", "k".repeat(129));
    cases.push(Case {
        what: "a 129-character idempotencyKey".to_owned(),
        body: body_with("idempotencyKey", Some(&long_key)).into_bytes(),
        status: 400,
        error_contains: "invalid signal: idempotencyKey:".to_owned(),
    });
    for (body, path) in DUPLICATES {
        cases.push(Case {
            what: format!("duplicate {path}"),
            body: body.as_bytes().to_vec(),
            status: 400,
            error_contains: format!("duplicate field: {path}"),
        });
    }
    for key in BAD_KEYS {
        cases.push(Case {
            what: format!("apiKey = {key:?}"),
            body: body_with("apiKey", *key).into_bytes(),
            status: 401,
            error_contains: "apiKey".to_owned(),
        });
    }
    let mut oversize = body_with("pad", Some("\"\""));
    oversize.insert_str(oversize.len() - 2, &"x".repeat(64 * 1024));
    cases.push(Case {
        what: "a body over 64 KiB".to_owned(),
        body: oversize.into_bytes(),
        status: 413,
        error_contains: "65536".to_owned(),
    });
    cases
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn every_hostile_webhook_is_refused_in_the_envelope_naming_the_problem(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let cases = corpus();
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    for case in cases {
        let response = raw::send(app.addr, &raw::post(&case.body)).await;
        let envelope = response.envelope();
        assert_eq!(response.status, case.status, "{}: {envelope}", case.what);
        assert_eq!(envelope["success"], false, "{}", case.what);
        assert_eq!(envelope["result"], Value::Null, "{}", case.what);
        let error = envelope["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&case.error_contains),
            "{}: expected {:?} in {error:?}",
            case.what,
            case.error_contains
        );
    }
    assert_eq!(queue_depth(&app).await, 0, "nothing was published");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn hostile_framing_is_refused_in_the_envelope_and_nothing_is_published(pool: PgPool) {
    let app = TestApp::with(
        pool,
        Options {
            consumer: false,
            limits: Limits {
                body_read_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    let valid = body_with("apiKey", Some(&format!("\"{API_KEY}\"")));

    // Content-Length says more than arrives, and the client waits: 408.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\ncontent-length: {}\r\n\r\n",
        valid.len() + 10
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(valid.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await.expect("an answer");
    assert_eq!(response.status, 408, "{:?}", response.body);
    assert!(response.envelope()["error"]
        .as_str()
        .unwrap()
        .contains("ms"));

    // Content-Length says more than arrives, and the client hangs up its side: 400.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(valid.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let response = read_response(&mut stream).await.expect("an answer");
    assert_eq!(response.status, 400);
    assert_eq!(response.envelope()["success"], false);

    // Content-Length says less than is sent: the body is cut short, so not JSON.
    let short =
        format!("POST /webhook HTTP/1.1\r\nhost: ingest\r\ncontent-length: 10\r\n\r\n{valid}");
    let response = raw::send(app.addr, short.as_bytes()).await;
    assert_eq!(response.status, 400);
    assert!(response.envelope()["error"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));

    // A declared body over the limit is refused before it is read.
    let huge = "POST /webhook HTTP/1.1\r\nhost: ingest\r\ncontent-length: 1000000000\r\n\r\n{";
    let response = raw::send(app.addr, huge.as_bytes()).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.envelope()["success"], false);

    // Chunked: over the limit, a broken chunk size, and a valid but duplicated body.
    let chunk = "x".repeat(8 * 1024);
    let mut chunked = String::from(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for _ in 0..9 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let response = raw::send(app.addr, chunked.as_bytes()).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.envelope()["success"], false);

    let broken = "POST /webhook HTTP/1.1\r\nhost: ingest\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let response = raw::send(app.addr, broken.as_bytes()).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.envelope()["success"], false);

    let duplicated = r#"{"apiKey":"test-webhook-key","action":"LONG","symbol":"BTCUSDT","quantity":0.001,"quantity":5}"#;
    let (first, second) = duplicated.split_at(40);
    let chunked = format!(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    let response = raw::send(app.addr, chunked.as_bytes()).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.envelope()["error"], "duplicate field: quantity");

    assert_eq!(queue_depth(&app).await, 0, "nothing was published");
    app.stop().await;
}
