//! The workspace's integration tests, one module per subject, in one test binary: each
//! binary links the AWS SDKs and the whole library again, so one binary instead of
//! seventeen saves their link time and a gigabyte of `target/` on every build. Run one
//! subject with `cargo test -p junction-tests --test integration <module>::`.

mod account_index_emulator;
mod action_status_emulator;
mod api_schemas;
mod catalog_overlay_emulator;
mod consumer_emulator;
mod contract_check;
mod dlq_redrive_emulator;
mod emulator_limits;
mod event_schemas;
mod ingress_emulator;
mod last_event_emulator;
mod log_volume;
mod microsoft_poll_emulator;
mod oauth_emulator;
mod oauth_never_decrypts;
mod outbound_emulator;
mod polling_emulator;
mod proxy_idempotency_emulator;
mod schema_drift_emulator;
mod schema_support;
mod silence_emulator;
mod silence_events;
mod silence_template;
mod subscriptions_emulator;
mod template;
mod tls_trust;
