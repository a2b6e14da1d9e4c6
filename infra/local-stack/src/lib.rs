//! The local stack: Junction on one machine, built from `template.yaml`.
//!
//! [`emulator`] starts the AWS emulator (moto server, from the project's venv) on a
//! free loopback port and provisions the template into it through CloudFormation.
//! [`stack::LocalStack`] then runs the real function binaries against a Runtime API
//! emulator ([`runtime`]) and feeds them from the template's HTTP API routes
//! ([`http_api`]), SQS event source mappings ([`sqs_poller`]) and schedules
//! ([`schedule`]) and the rules on its event bus that target a function ([`bus_rules`]),
//! all read from the stack description, never listed by hand.
//! [`dev_secrets`] seeds development webhook secrets, and [`jwt_keys`] publishes the
//! development keys of the JWT providers (Gmail push, Plaid) where the ingress fetches
//! them. [`leaks`] keeps everything the functions write and scans it for secrets when a
//! run ends. [`iam`] stands in for IAM on the routes the template protects with it.

pub mod atomic_proxy;
pub mod binaries;
pub mod bus_rules;
pub mod dev_secrets;
pub mod emulator;
pub mod http_api;
pub mod iam;
pub mod jwt_keys;
pub mod leaks;
pub mod runtime;
pub mod schedule;
pub mod sqs_poller;
pub mod stack;

/// The account id the emulator answers with (moto's default), used in ARNs and events.
pub const ACCOUNT_ID: &str = "123456789012";
