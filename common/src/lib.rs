//! Types and plumbing shared by ingest, consumer, the CLI and the tests: the signal and
//! its queue message, configuration, the database, the AMQP topology, logging.

pub mod amqp;
pub mod config;
pub mod db;
pub mod dead_letter;
pub mod event;
pub mod health;
pub mod json;
pub mod kill_switch;
pub mod logs;
pub mod message;
pub mod metrics;
pub mod partitions;
pub mod retry;
pub mod risk;
pub mod runtime_config;
pub mod shutdown;
pub mod signal;
pub mod signing;
pub mod telegram;
pub mod telemetry;
