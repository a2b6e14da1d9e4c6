//! Connections made with a pasted credential: providers whose catalog entry has
//! `[pasted_credential]` (Telegram's bot token) instead of an OAuth section.
//!
//! The flow is the OAuth connect flow with a form in place of the provider's consent
//! page, over the same connect session, pending state and browser binding:
//!
//! - `GET /oauth/{provider}/start?session=…` consumes the connect session, stores a
//!   pending authorization under a fresh single-use `state` (ten minutes), sets the
//!   binding cookie (path `/oauth/{provider}/callback`) and answers an HTML form (every
//!   text escaped, a CSP that allows no script, style or third-party asset, and posts
//!   only to this origin).
//! - `POST /oauth/{provider}/callback` (the form, `state` and `credential`, at most
//!   [`MAX_FORM_BYTES`]) consumes the state with the same conditional delete on the
//!   binding cookie as an OAuth callback ([`ConnectFlow::take_pending`]: a replay finds
//!   nothing, another browser is refused and leaves the state). The value must match the
//!   catalog's pattern, then the provider's `[api] test_request` is sent with it (placed
//!   as `[api] credential` says); only a value the provider accepts is sealed in the vault
//!   exactly as OAuth tokens are (KMS envelope, context `tenant`/`provider`/
//!   `connection_id`) and the user goes back to `return_to?status=connected&…`.
//! - A refused value stores nothing and the form comes back saying why, with a new state
//!   bound to the same cookie and the first one's expiry: a typo in a pasted token should
//!   not send the user back to the application for a new link, and retries end with the
//!   ten minutes the session's start allowed. The state is still single use (each answer
//!   consumes one), so a replayed form post finds nothing.
//!
//! The connection has no expiry and no refresh token (`refreshable = false`, no
//! `refresh_at`): the token refresher never selects it, and the catalog refuses
//! `[polling]` and `[subscription]` without OAuth. A 401 on an API call is the caller's
//! to classify (nothing to refresh). A disconnect deletes it without revocation (the
//! providers offer none; the user revokes the credential where it was issued).
//!
//! The value is a [`SecretString`] from the form's parsing on: it is in no log line,
//! error, event or page; transport errors of the test request lose their URL (which holds
//! the value for a path credential).

use std::{sync::OnceLock, time::Duration};

use sha2::{Digest, Sha256};

use crate::flow::{
    STATE_TTL_SECONDS, checked_params, checked_return_to, reconnect_target, same_account,
    unavailable,
};
use crate::vault::TokenSet;
use crate::web::HttpReply;
use crate::{
    CallbackQuery, ConnectFlow, FlowError, PendingAuthorization, StartRequest, TokenVault,
    random_token, state_key,
};
use junction_aws::crypto::SecretString;
use junction_catalog::{ApiSpec, Credential, EndpointRules, PastedCredentialSpec};

/// The largest form body read: a state and a credential of at most
/// [`junction_catalog::MAX_PASTED_CREDENTIAL_BYTES`], percent-encoded.
pub const MAX_FORM_BYTES: usize = 4 * 1024;

/// The test request's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The test request's total timeout: the user is waiting on the form's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the start answers: the form's state and the binding cookie to set.
#[derive(Debug, Clone)]
pub struct PastedStart {
    pub state: String,
    pub set_cookie: String,
}

/// The form as posted: its single-use state, the value, and the binding cookie.
#[derive(Clone, Default)]
pub struct PastedSubmission {
    pub state: Option<String>,
    pub credential: Option<SecretString>,
    pub binding_cookie: Option<String>,
}

impl std::fmt::Debug for PastedSubmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PastedSubmission")
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

/// What a submitted form came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PastedOutcome {
    /// Verified, sealed and stored: `return_to?status=connected&connection_id=…`.
    Connected {
        location: String,
        connection_id: String,
    },
    /// Refused (the pattern, the provider) or not verifiable now (the provider did not
    /// answer): nothing stored; the form again with `state`, a new single-use state bound
    /// to the same browser, and `message` saying why. `status` is the page's.
    Retry {
        state: String,
        message: String,
        status: u16,
    },
}

/// Why the test request did not prove the value works. Never carries the value: the
/// transport error's URL (which holds it for a path credential) is removed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialCheckError {
    /// The provider answered a 4xx other than 429: the value is not one it accepts.
    #[error("the provider refused the credential with HTTP {0}")]
    Refused(u16),
    /// A 429 or a 5xx: the provider's trouble; the value may be fine.
    #[error("the provider could not check the credential now (HTTP {0})")]
    ProviderFailed(u16),
    /// No answer (connect, timeout, transport).
    #[error("the provider did not answer the test request")]
    Unreachable(#[source] reqwest::Error),
    /// The catalog's test request is not one Junction sends (its URL is refused).
    #[error("the test request's URL is refused")]
    Endpoint(#[source] junction_catalog::EndpointError),
    /// The value cannot be a header value (a header credential).
    #[error("the credential is not a valid header value")]
    NotAHeaderValue,
}

/// One client for test requests: short timeouts, no redirects (the credential must not
/// follow one).
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        junction_aws::tls::http_client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("junction-oauth/1")
            .build()
            .unwrap_or_default()
    })
}

/// The characters a path credential keeps as they are (a bot token's `123456:ABC-DEF…`);
/// every other byte is percent-encoded.
const PATH_CREDENTIAL_KEEPS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b':')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'-');

/// `secret` as path text, for `[api] credential = { style = "path_prefix" }`: no value
/// can add a segment, a query or a fragment. The test request here and the outbound
/// client's later calls both place it with this, so they send the same path.
pub fn path_safe(secret: &str) -> String {
    percent_encoding::utf8_percent_encode(secret, PATH_CREDENTIAL_KEEPS).to_string()
}

/// Sends the catalog's `test_request` with `value` placed as `[api] credential` says.
pub(crate) async fn check_credential(
    api: &ApiSpec,
    rules: EndpointRules,
    value: &SecretString,
    account: Option<&str>,
) -> Result<(), CredentialCheckError> {
    let (Some(base), Some(test)) = (&api.base_url, &api.test_request) else {
        // The catalog check requires both for a pasted credential.
        return Err(CredentialCheckError::Endpoint(
            junction_catalog::EndpointError::NoHost,
        ));
    };
    let mut url = rules
        .check(&format!("{}{}", base.trim_end_matches('/'), test.path))
        .map_err(CredentialCheckError::Endpoint)?;
    let method = reqwest::Method::from_bytes(test.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut request = match &api.credential {
        Credential::PathPrefix { prefix } => {
            let path = format!("{prefix}{}{}", path_safe(value.expose()), url.path());
            url.set_path(&path);
            http().request(method, url)
        }
        Credential::Bearer => http().request(method, url).bearer_auth(value.expose()),
        Credential::Header { name } => {
            let mut header = reqwest::header::HeaderValue::from_str(value.expose())
                .map_err(|_| CredentialCheckError::NotAHeaderValue)?;
            header.set_sensitive(true);
            http().request(method, url).header(name.as_str(), header)
        }
    };
    for (name, template) in &api.headers {
        let value = match account {
            Some(account) => template.replace("{account}", account),
            None => template.clone(),
        };
        if junction_catalog::placeholders(&value).next().is_none() {
            request = request.header(name.as_str(), value);
        }
    }
    let response = request
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await
        .map_err(|err| CredentialCheckError::Unreachable(err.without_url()))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(CredentialCheckError::ProviderFailed(status)),
        _ => Err(CredentialCheckError::Refused(status)),
    }
}

impl TokenVault {
    /// Whether `provider` is connected with a pasted credential.
    pub(crate) fn is_pasted(&self, provider: &str) -> bool {
        self.catalog
            .get(provider)
            .is_some_and(|entry| entry.pasted_credential.is_some())
    }
}

impl ConnectFlow {
    /// Whether `provider` is connected with a pasted credential (its start answers a
    /// form, its callback takes the form's `POST`).
    pub fn connects_with_pasted_credential(&self, provider: &str) -> bool {
        self.vault.is_pasted(provider)
    }

    /// The provider's form and API, if it is connected with a pasted credential.
    fn pasted_spec(
        &self,
        provider: &str,
    ) -> Result<(&'static PastedCredentialSpec, &'static ApiSpec), FlowError> {
        let entry = self
            .vault
            .catalog
            .get(provider)
            .ok_or_else(|| FlowError::UnknownProvider(provider.to_owned()))?;
        match (&entry.pasted_credential, &entry.api) {
            (Some(pasted), Some(api)) => Ok((pasted, api)),
            _ => Err(FlowError::UnknownProvider(provider.to_owned())),
        }
    }

    /// `GET /oauth/{provider}/start?session=…` for a provider with `[pasted_credential]`:
    /// consumes the connect session and stores the pending state the form posts back.
    pub async fn start_pasted(
        &self,
        provider: &str,
        request: &StartRequest,
        base_url: &str,
    ) -> Result<PastedStart, FlowError> {
        let Some(token) = request.session.as_deref().filter(|t| !t.is_empty()) else {
            return Err(FlowError::Unauthorized(
                "This link has no connect session. Connections are started from the \
                 application: go back to it and connect again."
                    .into(),
            ));
        };
        self.pasted_spec(provider)?;
        let now = self.vault.clock.now().unix_timestamp();
        let session = self.take_session(token, provider, now).await?;
        let return_to = checked_return_to(&self.settings, Some(&session.return_to))?;
        // A pasted credential takes no URL parameters: any the session carries are dropped.
        let no_parameters = std::collections::BTreeMap::new();
        let params = checked_params(&no_parameters, &session.params)?;
        if let Some(id) = &session.connection {
            reconnect_target(
                &self.vault,
                &no_parameters,
                id,
                &session.tenant,
                provider,
                &params,
            )
            .await?;
        }
        let state = random_token();
        let binding = random_token();
        let pending = PendingAuthorization {
            provider: provider.to_owned(),
            tenant: session.tenant.clone(),
            return_to,
            redirect_uri: Self::redirect_uri(base_url, provider),
            scopes: Vec::new(),
            pkce_verifier: None,
            params,
            reconnect: session.connection.clone(),
            browser_binding: hex::encode(Sha256::digest(binding.as_bytes())),
            expires_at: now + STATE_TTL_SECONDS,
            nonce: None,
            allow_account_change: session.allow_account_change,
            sandbox: session.sandbox,
            end_user: session.end_user.clone(),
            oauth1: None,
        };
        self.states
            .put(&state_key(&state), &pending)
            .await
            .map_err(unavailable("storing the pending authorization"))?;
        let set_cookie = format!(
            "{}={binding}; Path=/oauth/{provider}/callback; Max-Age={STATE_TTL_SECONDS}; HttpOnly; Secure; SameSite=Lax",
            Self::binding_cookie_name(provider)
        );
        Ok(PastedStart { state, set_cookie })
    }

    /// `POST /oauth/{provider}/callback`: the form. Every refusal before the state is
    /// consumed is a [`FlowError`] (an error page); after it, a refused value is
    /// [`PastedOutcome::Retry`] and nothing is stored.
    pub async fn submit_pasted(
        &self,
        provider: &str,
        submission: &PastedSubmission,
        base_url: &str,
    ) -> Result<PastedOutcome, FlowError> {
        let (spec, api) = self.pasted_spec(provider)?;
        let query = CallbackQuery {
            pairs: submission
                .state
                .iter()
                .map(|state| ("state".to_owned(), state.clone()))
                .collect(),
            binding_cookie: submission.binding_cookie.clone(),
        };
        let pending = self.take_pending(provider, &query, base_url).await?;
        if pending.oauth1.is_some() || pending.pkce_verifier.is_some() {
            return Err(FlowError::BadRequest(
                "this state was not issued for a pasted credential".into(),
            ));
        }
        let value = submission
            .credential
            .as_ref()
            .map(|value| value.expose().trim())
            .unwrap_or_default();
        if !spec.accepts(value) {
            tracing::info!(provider, tenant = %pending.tenant, outcome = "credential_malformed", "pasted credential refused: it does not match the catalog's pattern; nothing stored");
            let message = format!(
                "That is not a {} in the form this provider issues. Check it and paste it again.",
                spec.label.to_lowercase()
            );
            return self.retry(&pending, message, 400).await;
        }
        let value = SecretString::new(value);
        let account = spec.account_of(value.expose());
        if let Err(err) = check_credential(
            api,
            self.vault.catalog.endpoint_rules(),
            &value,
            account.as_deref(),
        )
        .await
        {
            let (outcome, message, status) = match &err {
                CredentialCheckError::Refused(_) | CredentialCheckError::NotAHeaderValue => (
                    "credential_refused",
                    format!(
                        "The provider did not accept this {}: nothing was saved. Check that it is current and paste it again.",
                        spec.label.to_lowercase()
                    ),
                    400,
                ),
                _ => (
                    "credential_unverified",
                    format!(
                        "The provider could not check this {} right now: nothing was saved. Please try again in a moment.",
                        spec.label.to_lowercase()
                    ),
                    503,
                ),
            };
            tracing::warn!(provider, tenant = %pending.tenant, error = %crate::error_chain(&err), outcome, "pasted credential not verified; nothing stored");
            return self.retry(&pending, message, status).await;
        }
        let tokens = TokenSet {
            access_token: value,
            refresh_token: None,
            token_secret: None,
        };
        let now = self.vault.clock.now().unix_timestamp();
        let existing = self.reconnect_of(&pending).await?;
        let connection_id = match existing {
            Some(existing) => {
                if existing.tenant != pending.tenant || existing.provider != provider {
                    return Err(FlowError::BadRequest(
                        "connection not found for this tenant and provider".into(),
                    ));
                }
                // The reconnect rule of OAuth: a connection that recorded an account
                // (the bot) needs it back, unless the session allowed a change. There is
                // no grant to end (the value was only checked), and the user may have
                // pasted another bot's token by mistake: the form comes back.
                let changed = !same_account(existing.account_id.as_deref(), account.as_deref());
                if changed && !pending.allow_account_change {
                    tracing::warn!(provider, tenant = %pending.tenant, connection = %existing.id, outcome = "reconnect_account_mismatch", "reconnect refused: another provider account; connection unchanged");
                    let message = format!(
                        "This {} is for another account than the one this connection uses: nothing was changed. Paste the same account's, or connect the other one as a new connection.",
                        spec.label.to_lowercase()
                    );
                    return self.retry(&pending, message, 403).await;
                }
                let mut next =
                    crate::flow::sealed_without_refresh(&self.vault, &existing, &tokens, now)
                        .await?;
                next.last_verified_at = Some(now);
                if changed {
                    next.account_id = account.clone();
                }
                if pending.end_user.is_some() {
                    next.end_user = pending.end_user.clone();
                }
                crate::flow::replace_reconnected(&self.vault, &next, existing.version).await?;
                next.id
            }
            None => {
                let base = crate::flow::new_connection(
                    &pending,
                    provider,
                    Vec::new(),
                    account.clone(),
                    now,
                );
                let mut connection =
                    crate::flow::sealed_without_refresh(&self.vault, &base, &tokens, now).await?;
                // The test request has just proved it.
                connection.last_verified_at = Some(now);
                crate::flow::insert_new(&self.vault, &connection).await?;
                connection.id
            }
        };
        let location = self
            .connected(&pending, provider, &connection_id, now)
            .await?;
        Ok(PastedOutcome::Connected {
            location,
            connection_id,
        })
    }

    /// The form again: a new single-use state for the same browser binding, expiring
    /// when the first did.
    async fn retry(
        &self,
        pending: &PendingAuthorization,
        message: String,
        status: u16,
    ) -> Result<PastedOutcome, FlowError> {
        let state = random_token();
        self.states
            .put(&state_key(&state), pending)
            .await
            .map_err(unavailable("storing the pending authorization"))?;
        Ok(PastedOutcome::Retry {
            state,
            message,
            status,
        })
    }
}

/// Text for HTML, attribute values included.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The form page: no script, no style, no asset; it posts only to this origin
/// (`callback`, relative to `/oauth/{provider}/start` and to the callback itself).
fn form_page(
    status: u16,
    provider_name: &str,
    spec: &PastedCredentialSpec,
    state: &str,
    error: Option<&str>,
) -> HttpReply {
    let error = error
        .map(|message| format!("<p role=\"alert\"><strong>{}</strong></p>", escape(message)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Connect {name}</title></head><body><h1>Connect {name}</h1>{error}\
         <form method=\"post\" action=\"callback\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"state\" value=\"{state}\">\
         <p><label for=\"credential\">{label}</label><br>\
         <input id=\"credential\" name=\"credential\" type=\"password\" required \
         maxlength=\"{max}\" autocomplete=\"off\" spellcheck=\"false\"></p>\
         <p>{help}</p><p><button type=\"submit\">Connect</button></p></form></body></html>\n",
        name = escape(provider_name),
        state = escape(state),
        label = escape(&spec.label),
        help = escape(&spec.help),
        max = junction_catalog::MAX_PASTED_CREDENTIAL_BYTES,
    );
    HttpReply {
        status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
            (
                "content-security-policy".into(),
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                    .into(),
            ),
            ("x-frame-options".into(), "DENY".into()),
            ("referrer-policy".into(), "no-referrer".into()),
            ("x-content-type-options".into(), "nosniff".into()),
        ],
        body,
    }
}

/// `reply` with another status (the page's text stays).
fn with_status(status: u16, mut reply: HttpReply) -> HttpReply {
    reply.status = status;
    reply
}

/// The form's fields from an `application/x-www-form-urlencoded` body: the value goes
/// straight into a [`SecretString`].
pub fn parse_submission(body: &[u8], binding_cookie: Option<String>) -> PastedSubmission {
    let mut submission = PastedSubmission {
        binding_cookie,
        ..PastedSubmission::default()
    };
    for (name, value) in form_urlencoded::parse(body) {
        match name.as_ref() {
            "state" if submission.state.is_none() => submission.state = Some(value.into_owned()),
            "credential" if submission.credential.is_none() => {
                submission.credential = Some(SecretString::new(value.into_owned()));
            }
            _ => {}
        }
    }
    submission
}

/// `GET /oauth/{provider}/start` (the form) and `POST /oauth/{provider}/callback` (its
/// submission) for a provider with `[pasted_credential]`; any other step or method is
/// refused. `body` is the request's, read only for the `POST` and only up to
/// [`MAX_FORM_BYTES`].
#[allow(clippy::too_many_arguments)]
pub async fn pasted_route(
    flow: &ConnectFlow,
    provider: &str,
    step: &str,
    method: &str,
    query: Vec<(String, String)>,
    cookie_header: Option<&str>,
    body: &[u8],
    base_url: &str,
) -> HttpReply {
    let Ok((spec, _)) = flow.pasted_spec(provider) else {
        return crate::web::flow_error_page(
            provider,
            step,
            &FlowError::UnknownProvider(provider.to_owned()),
        );
    };
    let name = flow
        .vault
        .catalog
        .get(provider)
        .map_or(provider, |entry| entry.name.as_str());
    match (step, method) {
        ("start", "GET") => {
            let request = StartRequest {
                session: query
                    .into_iter()
                    .find(|(key, _)| key == "session")
                    .map(|(_, value)| value),
            };
            match flow.start_pasted(provider, &request, base_url).await {
                Ok(started) => {
                    let mut reply = form_page(200, name, spec, &started.state, None);
                    reply
                        .headers
                        .push(("set-cookie".into(), started.set_cookie));
                    reply
                }
                Err(err) => crate::web::flow_error_page(provider, step, &err),
            }
        }
        ("callback", "POST") => {
            if body.len() > MAX_FORM_BYTES {
                tracing::info!(
                    provider,
                    bytes = body.len(),
                    outcome = "form_too_large",
                    "pasted credential form refused: over the size cap"
                );
                return with_status(
                    413,
                    crate::web::flow_error_page(
                        provider,
                        step,
                        &FlowError::BadRequest("the form is too large".into()),
                    ),
                );
            }
            let cookie_name = ConnectFlow::binding_cookie_name(provider);
            let binding_cookie = cookie_header.and_then(|header| {
                header.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    (key == cookie_name).then(|| value.to_owned())
                })
            });
            let submission = parse_submission(body, binding_cookie);
            match flow.submit_pasted(provider, &submission, base_url).await {
                Ok(PastedOutcome::Connected { location, .. }) => HttpReply {
                    status: 303,
                    headers: vec![
                        ("location".into(), location),
                        ("cache-control".into(), "no-store".into()),
                        (
                            "set-cookie".into(),
                            format!(
                                "{cookie_name}=; Path=/oauth/{provider}/callback; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
                            ),
                        ),
                    ],
                    body: String::new(),
                },
                Ok(PastedOutcome::Retry {
                    state,
                    message,
                    status,
                }) => form_page(status, name, spec, &state, Some(&message)),
                Err(err) => crate::web::flow_error_page(provider, step, &err),
            }
        }
        ("start" | "callback", _) => with_status(
            405,
            crate::web::flow_error_page(
                provider,
                step,
                &FlowError::BadRequest(format!(
                    "{method} is not how this connection is made: open the connect link, then submit its form"
                )),
            ),
        ),
        _ => with_status(
            404,
            crate::web::flow_error_page(
                provider,
                step,
                &FlowError::BadRequest("no such connect route".into()),
            ),
        ),
    }
}

#[cfg(test)]
#[path = "pasted_tests.rs"]
mod tests;
