//! A provider on loopback for Junction's tests.
//!
//! [`oidc`] runs a real OpenID Provider (panva's `oidc-provider`, from npm) for the
//! discovered-provider path.
//!
//! [`oauth`] is an OAuth 2.0 authorization server that checks what a real one
//! checks (RFC 6749, RFC 7636 PKCE, RFC 7009 revocation, refresh-token
//! rotation with reuse detection from the OAuth 2.0 Security BCP), so the
//! connect flow, refresh races, early expiry and revocation can be exercised
//! without a real provider. It also misbehaves on request (failure injection,
//! delays, tokens that die before their advertised lifetime).
//!
//! [`ledger`] keeps every secret either of them issued or was handed, so a test can
//! look for each in what Junction's functions logged.

pub mod ledger;
pub mod oauth;
pub mod oidc;

pub use ledger::{IssuedSecret, issued_secrets};

pub use oauth::{
    ApiRequest, AuthServerConfig, ClientAuth, Counters, DEFAULT_ACCOUNT, Decision, FakeAuthServer,
    GrantSummary, ScriptedResponse, TOKEN_MARKER, TokenFailure,
};
