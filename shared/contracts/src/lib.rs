//! Provider contracts (issue 30): what Junction's adapters expect each provider's API to
//! answer, and the checks that tell an operator before an adapter breaks.
//!
//! - [`recorded`]: one recorded schema per provider, pinned API version and normalized
//!   resource, kept in the repository under `contracts/<provider>/<version>/<resource>.json`
//!   and embedded at build time; recorded from the fixtures (or a sandbox response) by
//!   the `record-contracts` binary.
//! - [`check`]: the contract check: runs the catalog's contract requests (the connection
//!   test request and one read per normalized resource) for a sandbox connection,
//!   compares each record with its recorded schema, and announces
//!   `provider.contract_failed` and `provider.schema_changed` with the field diff.
//!
//! A schema is a path → type shape ([`junction_pipeline::drift::Shape`]), the same one the
//! consumer's passive drift check fingerprints, so both report the same diff.

pub mod aws;
pub mod check;
pub mod recorded;
