//! The outbound side: how Junction behaves towards providers' APIs. Built so far: the
//! rate-limit headers every provider convention uses ([`limits`]) and the retry policy
//! with the catalog's error-body rules ([`policy`]). The client stack that applies them
//! to every call (token bucket and circuit breaker shared through DynamoDB, redacted
//! call logs) is issue 7's remaining work.

pub mod limits;
pub mod policy;

pub use limits::RateLimitHeaders;
pub use policy::{CallFailure, Decision, RetryPolicy, class_of_status, classify_response};
