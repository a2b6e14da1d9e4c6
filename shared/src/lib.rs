//! Junction's library: the domain and its ports, with AWS adapters and in-memory fakes.
//!
//! Functions (`functions/*`) are thin: they parse the Lambda event, call into this crate
//! and map the result. Everything here that touches AWS does so through a port trait
//! (`SecretSource`, `EventQueue`, `PayloadStore`, `RetryScheduler`, `IdempotencyStore`,
//! `RecordStore`, `EventBus`, `Clock`) so the logic is tested without AWS and the
//! adapters are tested against the emulator.

pub mod catalog;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod crypto;
pub mod dead_letters;
mod dynamo;
pub mod events;
pub mod idempotency;
pub mod normalize;
pub mod oauth;
pub mod outbound;
pub mod payloads;
pub mod polling;
pub mod queue;
pub mod records;
pub mod redact;
pub mod response_body;
pub mod retry;
pub mod secrets;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
