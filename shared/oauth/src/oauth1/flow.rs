//! The OAuth 1.0a legs of the connect flow: `start` (connect session → temporary
//! credentials → the authorize URL) and the callback (state → `oauth_token` and
//! `oauth_verifier` → token credentials → a sealed connection). The parent module says
//! what is shared with OAuth 2.0 and what differs.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use url::Url;

use super::{OAuth1Error, ProtocolParams, TemporaryCredentials, credentials_request, token_pair};
use crate::flow::{
    STATE_TTL_SECONDS, checked_params, checked_return_to, reconnect_target, same_account,
    unavailable, with_query,
};
use crate::vault::TokenSet;
use crate::{
    CallbackOutcome, CallbackQuery, ConnectFlow, FlowError, PendingAuthorization, StartRedirect,
    StartRequest, TokenVault, random_token, state_key,
};
use junction_aws::crypto::SecretString;
use junction_catalog::OAuth1Spec;

impl ConnectFlow {
    /// `GET /oauth/{provider}/start?session=…` for a provider with `[oauth1]`. The
    /// connect session is consumed before the provider is asked for temporary
    /// credentials, so no one without a session makes Junction call the provider; if
    /// that call fails, the user starts again from the application.
    pub async fn start_oauth1(
        &self,
        provider: &str,
        request: &StartRequest,
        base_url: &str,
    ) -> Result<StartRedirect, FlowError> {
        let Some(token) = request.session.as_deref().filter(|t| !t.is_empty()) else {
            return Err(FlowError::Unauthorized(
                "This link has no connect session. Connections are started from the \
                 application: go back to it and connect again."
                    .into(),
            ));
        };
        let spec = oauth1_spec(&self.vault, provider)?;
        let consumer = self
            .vault
            .consumer_keys(provider)
            .await
            .map_err(unavailable("reading the client credentials"))?;
        let now = self.vault.clock.now().unix_timestamp();
        let session = self.take_session(token, provider, now).await?;
        let return_to = checked_return_to(&self.settings, Some(&session.return_to))?;
        // `[oauth1]` declares no URL parameters: any the session carries are dropped.
        let no_parameters = BTreeMap::new();
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
        let redirect_uri = Self::redirect_uri(base_url, provider);
        // RFC 5849 §2.2: the provider appends `oauth_token` and `oauth_verifier` to this
        // URL, keeping its query: Junction's own `state` comes back with them.
        let callback = with_query(&redirect_uri, &[("state", &state)]);
        let answer = credentials_request(
            &spec.request_token_url,
            &consumer,
            &ProtocolParams {
                callback: Some(&callback),
                verifier: None,
            },
        )
        .await;
        let pairs = match answer {
            Ok(pairs) => pairs,
            Err(err) => {
                tracing::warn!(provider, tenant = %session.tenant, error = %crate::error_chain(&err), outcome = "request_token_failed", "temporary credentials refused or unavailable");
                return Err(FlowError::Unavailable {
                    step: "asking the provider to start the authorization",
                    source: Box::new(err),
                });
            }
        };
        // §2.1: "MUST be present and set to true": a provider that did not take the
        // callback would send the user elsewhere.
        if !pairs
            .iter()
            .any(|(name, value)| name == "oauth_callback_confirmed" && value == "true")
        {
            return Err(FlowError::Unavailable {
                step: "asking the provider to start the authorization",
                source: Box::new(OAuth1Error::Malformed(
                    "oauth_callback_confirmed is not true",
                )),
            });
        }
        let (temporary, secret) = token_pair(&pairs).map_err(|err| FlowError::Unavailable {
            step: "asking the provider to start the authorization",
            source: Box::new(err),
        })?;
        let key = state_key(&state);
        let pending = PendingAuthorization {
            provider: provider.to_owned(),
            tenant: session.tenant.clone(),
            return_to,
            redirect_uri,
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
            oauth1: Some(TemporaryCredentials {
                token: temporary.clone(),
                secret,
            }),
        };
        self.states
            .put(&key, &pending)
            .await
            .map_err(unavailable("storing the pending authorization"))?;
        let mut url = Url::parse(&spec.authorize_url)
            .map_err(unavailable("the catalog's authorize_url is not a URL"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("oauth_token", &temporary);
            for (name, value) in &spec.authorize_params {
                query.append_pair(name, value);
            }
        }
        let set_cookie = format!(
            "{}={binding}; Path=/oauth/{provider}/callback; Max-Age={STATE_TTL_SECONDS}; HttpOnly; Secure; SameSite=Lax",
            Self::binding_cookie_name(provider)
        );
        Ok(StartRedirect {
            location: url.to_string(),
            set_cookie,
        })
    }

    /// `GET /oauth/{provider}/callback?state=…&oauth_token=…&oauth_verifier=…` for a
    /// provider with `[oauth1]`.
    pub async fn callback_oauth1(
        &self,
        provider: &str,
        query: &CallbackQuery,
        base_url: &str,
    ) -> Result<CallbackOutcome, FlowError> {
        let spec = oauth1_spec(&self.vault, provider)?;
        let pending = self.take_pending(provider, query, base_url).await?;
        let Some(temporary) = &pending.oauth1 else {
            return Err(FlowError::BadRequest(
                "this state was not issued for an OAuth 1.0a connection".into(),
            ));
        };
        let fail = |code: &str| {
            Ok(CallbackOutcome::Failed {
                location: with_query(&pending.return_to, &[("status", "error"), ("error", code)]),
                error: code.to_owned(),
            })
        };
        // X/Twitter sends `denied=<token>` when the user cancels; RFC 5849 names no error.
        if query.get("denied").is_some() {
            tracing::info!(provider, tenant = %pending.tenant, outcome = "authorization_refused", "the user denied the authorization");
            return fail("access_denied");
        }
        let Some(returned) = query.get("oauth_token").filter(|t| !t.is_empty()) else {
            return Err(FlowError::BadRequest(
                "the callback has no oauth_token".into(),
            ));
        };
        let token_matches: bool =
            subtle::ConstantTimeEq::ct_eq(returned.as_bytes(), temporary.token.as_bytes()).into();
        if !token_matches {
            tracing::warn!(provider, tenant = %pending.tenant, outcome = "oauth_token_mismatch", "the callback's oauth_token is not the one this state was started with");
            return Err(FlowError::BadRequest(
                "the callback's oauth_token does not belong to this connection attempt: start again"
                    .into(),
            ));
        }
        let Some(verifier) = query.get("oauth_verifier").filter(|v| !v.is_empty()) else {
            return Err(FlowError::BadRequest(
                "the callback has no oauth_verifier".into(),
            ));
        };
        let mut keys = self
            .vault
            .consumer_keys(provider)
            .await
            .map_err(unavailable("reading the client credentials"))?;
        keys.token = Some((temporary.token.clone(), temporary.secret.clone()));
        let pairs = match credentials_request(
            &spec.access_token_url,
            &keys,
            &ProtocolParams {
                callback: None,
                verifier: Some(verifier),
            },
        )
        .await
        .and_then(|pairs| token_pair(&pairs).map(|pair| (pair, pairs)))
        {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(provider, tenant = %pending.tenant, error = %crate::error_chain(&err), outcome = "exchange_failed", transient = err.is_transient(), "token credentials refused or unavailable");
                return fail(err.code());
            }
        };
        let ((access_token, token_secret), answer) = pairs;
        let account = spec.account_param.as_deref().and_then(|name| {
            answer
                .iter()
                .find(|(key, value)| key == name && !value.is_empty())
                .map(|(_, value)| value.clone())
        });
        let tokens = TokenSet {
            access_token: SecretString::new(access_token),
            refresh_token: None,
            token_secret: Some(token_secret),
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
                // The reconnect rule of OAuth 2.0: a connection that recorded an account
                // needs it back (the catalog's `account_param`), unless the session
                // allowed a change; a refused grant is ended at the provider.
                let changed = !same_account(existing.account_id.as_deref(), account.as_deref());
                if changed && !pending.allow_account_change {
                    tracing::warn!(provider, tenant = %pending.tenant, connection = %existing.id, outcome = "reconnect_account_mismatch", "reconnect refused: another provider account; connection unchanged, new grant revoked");
                    let mut refused = keys.clone();
                    refused.token = Some((
                        tokens.access_token.expose().to_owned(),
                        tokens
                            .token_secret
                            .clone()
                            .unwrap_or_else(|| SecretString::new("")),
                    ));
                    let grant = super::OAuth1Grant {
                        keys: refused,
                        api_auth: spec.api_auth.clone(),
                        params: existing.params.clone(),
                    };
                    if let Err(err) = self.vault.revoke_oauth1_grant(provider, &grant).await {
                        tracing::warn!(provider, error = %crate::error_chain(&err), outcome = "revoke_failed", "revoking the refused grant failed");
                    }
                    return Err(FlowError::AccountMismatch {
                        provider: provider.to_owned(),
                    });
                }
                let mut next =
                    crate::flow::sealed_without_refresh(&self.vault, &existing, &tokens, now)
                        .await?;
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
                let connection =
                    crate::flow::sealed_without_refresh(&self.vault, &base, &tokens, now).await?;
                crate::flow::insert_new(&self.vault, &connection).await?;
                connection.id
            }
        };
        let location = self
            .connected(&pending, provider, &connection_id, now)
            .await?;
        Ok(CallbackOutcome::Connected {
            location,
            connection_id,
        })
    }
}

/// The provider's `[oauth1]` section (404 otherwise).
fn oauth1_spec(vault: &TokenVault, provider: &str) -> Result<&'static OAuth1Spec, FlowError> {
    vault
        .oauth1_spec(provider)
        .map_err(|_| FlowError::UnknownProvider(provider.to_owned()))
}
