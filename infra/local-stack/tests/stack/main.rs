//! The local stack's end-to-end tests, one module per subject, in one test binary (each
//! binary links the AWS SDKs again: one saves their link time and disk). Run one subject
//! with `cargo test -p local-stack --test stack <module>::`.

mod actions;
mod common;
mod contracts;
mod credentials;
mod local_stack;
mod oauth;
mod oidc;
mod pipeline;
mod polling;
mod runtime;
mod subscriptions;
