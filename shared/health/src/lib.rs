//! Health checks that run on a schedule, over what the other functions record:
//! [`silence`] notices webhooks that stop arriving, per provider (from the ingress's
//! `WebhooksReceived` metric) and per connection (from the consumer's `last_event_at`),
//! announces each silence once and forces a reconciliation poll. It reads and writes
//! through ports; the AWS adapters are its modules `silence::cloudwatch` and
//! `silence::dynamo`.

pub mod silence;
