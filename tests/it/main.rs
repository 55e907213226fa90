//! End-to-end tests of the pipeline against the real RabbitMQ and PostgreSQL.
//!
//! Each test gets a fresh database (`#[sqlx::test]`) and its own queue names, so tests
//! run in parallel. `DATABASE_URL` names the server's maintenance database (see the
//! README's test command); `AMQP_URL` defaults to the local broker.

#![expect(
    unreachable_pub,
    reason = "helpers are `pub` for the test modules; this binary exports nothing"
)]

mod batching;
mod browser;
mod cluster;
mod config;
mod connections;
mod crash;
mod dashboard;
mod database;
mod deployment;
mod dlq;
mod envelope;
mod exactly_once;
mod exchange_reads;
mod exchanges;
mod faults;
mod health;
mod hostile;
mod logs;
mod metrics;
mod ordering;
mod outages;
mod pipeline;
mod positions;
mod reconcile;
mod retry;
mod risk;
mod secrets;
mod sources;
mod support;
mod telegram;
mod webhook;
