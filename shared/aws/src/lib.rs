//! The ports several domains share, each with its AWS adapter and an in-memory fake, and
//! the plumbing under them: settings from the environment, the clock, the HTTPS client.
//!
//! One cargo feature per AWS SDK (`dynamodb`, `eventbridge`, `kms`, `s3`,
//! `secretsmanager`, `sqs`): a function compiles only the SDKs its domains call. The
//! workspace build enables them all, so tests, the local stack and the CLI share one
//! build of this crate.

pub mod clock;
pub mod config;
pub mod link_header;
pub mod response_body;
pub mod retry;
pub mod tls;

#[cfg(feature = "kms")]
pub mod crypto;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
#[cfg(feature = "eventbridge")]
pub mod events;
#[cfg(feature = "s3")]
pub mod payloads;
#[cfg(feature = "sqs")]
pub mod queue;
#[cfg(feature = "secretsmanager")]
pub mod secrets;
