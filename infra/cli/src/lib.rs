//! The library behind the `junction` command, shared with the local stack's tests:
//! realistic provider samples ([`samples`]), signing and posting webhooks exactly as
//! each provider does ([`webhook`], with the JWTs of Gmail push and Plaid minted by
//! [`tokens`]), and the stack's queues, their depths and DLQ
//! redrive ([`queues`]), the catalog overlays' validity ([`overlays`]), every
//! connection's health ([`connections`]), forcing a poll ([`polls`]), minting a
//! connect session through the management API ([`connect`]), the events on the bus
//! ([`events`]), the catalog the stack runs with, overlay included
//! ([`stack_catalog`]), the resources the template gives a stack ([`stack`]), and a
//! standard output a closed pipe ends quietly ([`output`]).
//!
//! Everything takes SDK clients built by [`sdk_config`], which points at the emulator
//! when an endpoint is given and at real AWS otherwise.

pub mod connect;
pub mod connections;
pub mod events;
pub mod output;
pub mod overlays;
pub mod polls;
pub mod queues;
pub mod samples;
pub mod stack;
pub mod stack_catalog;
pub mod tokens;
pub mod webhook;

/// SDK configuration: the emulator at `endpoint` (with its test credentials and
/// region unless the environment sets them), or real AWS with the usual credential
/// chain when `endpoint` is `None`.
pub async fn sdk_config(endpoint: Option<&str>, region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
        let has_credentials = std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
            || std::env::var_os("AWS_PROFILE").is_some();
        if !has_credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "emulator",
            ));
        }
        let has_region = region.is_some()
            || std::env::var_os("AWS_REGION").is_some()
            || std::env::var_os("AWS_DEFAULT_REGION").is_some();
        if !has_region {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}
