//! Connection limits: idle, dripping and stalled clients are cut off, one address
//! cannot take every connection, and shutdown drains what is in flight.

use std::net::IpAddr;
use std::time::Duration;

use hoox_ingest::server::Limits;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::raw::{connect_from, read_response, wait_for_close};
use crate::support::{eventually, signal, Options, TestApp, API_KEY};

async fn app_with(pool: PgPool, limits: Limits) -> TestApp {
    TestApp::with(
        pool,
        Options {
            consumer: false,
            limits,
            ..Options::default()
        },
    )
    .await
}

fn short_header_timeout() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// Longer than any wait in a test: a connection closed in a test was closed by
/// something else.
fn long_header_timeout() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(120),
        ..Limits::default()
    }
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_connection_that_never_sends_a_header_is_closed_by_the_server(pool: PgPool) {
    let app = app_with(pool, short_header_timeout()).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    wait_for_close(&mut silent).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_client_dripping_its_headers_a_byte_at_a_time_is_closed(pool: PgPool) {
    let app = app_with(pool, short_header_timeout()).await;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        // One byte every 50 ms, forever: each byte is progress, but the head never ends.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for byte in b"POST /webhook HTTP/1.1\r\nx-drip: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            tick.tick().await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(crate::support::DEADLINE, async {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut reader, &mut chunk).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .expect("the server closes the dripping connection");
    drip.abort();
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn an_idle_keep_alive_connection_is_closed_after_its_answer(pool: PgPool) {
    let app = app_with(pool, short_header_timeout()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: ingest\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.expect("an answer");
    assert_eq!(answer.status, 200);
    wait_for_close(&mut stream).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_body_that_stalls_is_answered_408_in_the_envelope(pool: PgPool) {
    let app = app_with(
        pool,
        Limits {
            body_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let body = signal("BTCUSDT").to_string();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    let answer = read_response(&mut stream).await.expect("an answer");
    assert_eq!(answer.status, 408);
    let envelope = answer.envelope();
    assert_eq!(envelope["success"], false);
    assert!(
        envelope["error"].as_str().unwrap().contains("300 ms"),
        "{envelope}"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn with_one_address_at_its_connection_cap_other_addresses_are_still_answered(pool: PgPool) {
    let app = app_with(
        pool,
        Limits {
            max_connections_per_ip: 4,
            ..long_header_timeout()
        },
    )
    .await;
    app.ready().await;
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(attacker, app.addr).await);
    }
    // The fifth from the same address is closed at once: the cap is reached.
    let mut fifth = connect_from(attacker, app.addr).await;
    wait_for_close(&mut fifth).await;

    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 202, "{envelope}");

    // A slot freed is a slot the address may use again.
    drop(held.pop());
    let answer = eventually("a freed slot", || async {
        let mut stream = connect_from(attacker, app.addr).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: ingest\r\n\r\n")
            .await
            .ok()?;
        read_response(&mut stream).await
    })
    .await;
    assert_eq!(answer.status, 200);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn shutdown_finishes_the_request_in_flight_and_closes_idle_connections(pool: PgPool) {
    // Long header timeout: the idle connection must be closed by the shutdown itself.
    let app = app_with(pool, long_header_timeout()).await;
    app.ready().await;
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    // A request whose body is still on its way when shutdown begins. It authenticates
    // and then fails validation, so its answer does not depend on the broker, which
    // the test app closes on the same token.
    let body =
        format!(r#"{{"apiKey":"{API_KEY}","action":"LONG","symbol":"BTCUSDT","quantity":0}}"#);
    let mut in_flight = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    // hyper sends `100 Continue` once the handler asks for the body: from here on the
    // request is in flight.
    let go_on = read_response(&mut in_flight).await.expect("100 Continue");
    assert_eq!(go_on.status, 100);

    app.begin_shutdown();
    wait_for_close(&mut idle).await;
    eventually("the listener to close", || async {
        TcpStream::connect(app.addr).await.is_err().then_some(())
    })
    .await;
    in_flight
        .write_all(body.as_bytes())
        .await
        .expect("the in-flight connection is still open");
    let answer = read_response(&mut in_flight)
        .await
        .expect("the request in flight is answered");
    assert_eq!(answer.status, 400);
    assert!(answer.envelope()["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid signal: quantity:"));
    app.stop().await;
}
