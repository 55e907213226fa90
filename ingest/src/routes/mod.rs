//! The HTTP surface of ingest.

pub mod edge;
pub mod health;
pub mod webhook;
