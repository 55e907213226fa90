//! The HTTP surface of ingest.

pub mod health;
pub mod webhook;
