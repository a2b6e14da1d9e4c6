//! The outbound side: how Junction behaves towards providers' APIs: the rate-limit
//! headers every provider convention uses ([`limits`]), the retry policy with the
//! catalog's error-body rules ([`policy`]), the rate limit (a pace plus the catalog's
//! windows, with a ceiling learned from 429s) and the circuit breaker every instance
//! shares through DynamoDB ([`limiter`] over [`shared_state`]), and the client that
//! applies them to every call with its logs and metrics ([`client`]); the proxy,
//! actions, connection tests and pagination are built on it.

pub mod actions;
pub mod client;
pub mod connection_test;
pub mod idempotency;
pub mod limiter;
pub mod limits;
pub mod log;
pub mod pagination;
pub mod policy;
pub mod proxy;
pub mod shared_state;

pub use client::{Answered, ApiResponse, Call, CallError, OutboundClient, RequeueReason};
pub use limiter::{Admission, CircuitBreaker, Limit, RateLimiter};
pub use shared_state::{DynamoSharedState, InMemorySharedState, SharedState, StateError};

pub use limits::RateLimitHeaders;
pub use policy::{CallFailure, Decision, RetryPolicy, class_of_status, classify_response};
