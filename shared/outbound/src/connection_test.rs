//! `POST /v1/tenants/{tenant}/connections/{id}/test`: one cheap authenticated call (the
//! catalog's `[api] test_request`, GitHub `GET /user`) through the outbound client, so
//! it gets the breaker, the token bucket, one refresh on a 401, the error-body rules and
//! Retry-After like any other call, and its outcome recorded on the connection
//! (`last_verified_at`, or `last_error`).
//!
//! It lives here and not in `junction_oauth::web` with the other management routes
//! because the outbound client depends on `junction_oauth`. The provider's body is never
//! in the answer: a failure is its class and a short code (`http_503`, `timeout`).

use std::time::Instant;

use serde_json::json;

use super::{Call, CallError, OutboundClient};
use junction_aws::clock::rfc3339_millis;
use junction_catalog::{ACCOUNT_PLACEHOLDER, Catalog, FailureClass};
use junction_oauth::web::{self, HttpReply, TestOutcome};
use junction_oauth::{Connection, TokenVault};

/// Runs the connection test for `tenant`'s connection `id`. `deadline` is when the
/// invocation must be done. Answers:
///
/// - 200 `{ok: true, status, verified_at}` (`status`: the connection's state);
/// - 404 for another tenant's connection as for a missing one, 400 for a bad tenant;
/// - 409 `needs_reauth` when the grant is gone or the provider refuses the token even
///   after one refresh;
/// - 422 `not_testable` when the catalog declares no `test_request` for the provider;
/// - 502 `provider_error` with the reason (`http_503`, `timeout`, `circuit open`) when
///   the provider fails, `Retry-After` when it is known when to try again;
/// - 503 `unavailable` when Junction's own stores are.
pub async fn connection_test_route(
    client: &OutboundClient,
    vault: &TokenVault,
    tenant: &str,
    method: &str,
    id: &str,
    deadline: Instant,
) -> HttpReply {
    if method != "POST" {
        return HttpReply::json(
            405,
            json!({ "error": "method_not_allowed", "message": "POST" }),
        );
    }
    let connection = match web::tenant_connection_or_reply(vault, tenant, id).await {
        Ok(connection) => connection,
        Err(reply) => return reply,
    };
    let provider = connection.provider.as_str();
    let catalog = vault.catalog();
    let Some(test) = catalog
        .get(provider)
        .and_then(|p| p.api.as_ref())
        .and_then(|api| api.test_request.as_ref())
    else {
        return HttpReply::json(
            422,
            json!({
                "error": "not_testable",
                "message": format!("the catalog declares no test_request for {provider}"),
            }),
        );
    };
    let url = match base_url(catalog, provider, &connection)
        .and_then(|base| Ok(format!("{base}{}", fill_account(&test.path, &connection)?)))
    {
        Ok(url) => url,
        // The connection lacks what its API's host is made of: the test cannot be made,
        // and a retry will not change that.
        Err(reason) => return failed(vault, &connection, 502, "provider_error", &reason).await,
    };
    let method = match test.method.as_str() {
        "POST" => reqwest::Method::POST,
        _ => reqwest::Method::GET,
    };
    let call = Call {
        provider,
        connection: id,
        operation: "connection.test",
        deadline,
        accept: &[],
    };
    let outcome = client
        .send(call, |http, token| {
            http.request(method.clone(), &url)
                .bearer_auth(token.value.expose())
        })
        .await;
    match outcome {
        Ok(_) => match web::record_connection_test(vault, id, &TestOutcome::Verified).await {
            Ok(connection) => {
                let verified_at = connection
                    .last_verified_at
                    .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
                    .map(rfc3339_millis);
                HttpReply::json(
                    200,
                    json!({
                        "ok": true,
                        "status": connection.state.as_str(),
                        "verified_at": verified_at,
                    }),
                )
            }
            Err(err) => web::vault_error_reply(&err),
        },
        // The vault found the grant gone and recorded why on the connection already.
        Err(CallError::NeedsReauth(reason)) => HttpReply::json(
            409,
            json!({ "error": "needs_reauth", "message": short(&reason) }),
        ),
        Err(CallError::Failed(failure)) if failure.class == FailureClass::Unauthorized => {
            // Refused again after the one refresh: the token works for nothing, and the
            // connection needs its user to reconnect, as when its refresh token is refused.
            let code = short(&failure.code);
            tracing::info!(provider, connection = id, error = %code, outcome = "connection_test_failed", "connection test failed");
            match web::record_connection_test(vault, id, &TestOutcome::NeedsReauth(code.clone()))
                .await
            {
                Ok(_) => HttpReply::json(
                    409,
                    json!({ "error": "needs_reauth", "message": format!("needs_reauth: {code}") }),
                ),
                Err(err) => web::vault_error_reply(&err),
            }
        }
        Err(CallError::Failed(failure)) => {
            let reason = short(&failure.code);
            failed(vault, &connection, 502, "provider_error", &reason).await
        }
        Err(CallError::Requeue { after, reason }) => {
            let mut reply = failed(
                vault,
                &connection,
                502,
                "provider_error",
                &short(&reason.to_string()),
            )
            .await;
            if reply.status == 502 {
                reply
                    .headers
                    .push(("retry-after".into(), after.as_secs().max(1).to_string()));
            }
            reply
        }
        Err(CallError::Unavailable(reason)) => {
            tracing::error!(provider, connection = id, error = %reason, outcome = "management_unavailable", "connection test failed");
            HttpReply::json(
                503,
                json!({ "error": "unavailable", "message": "temporarily unavailable; try again" }),
            )
        }
    }
}

/// Records `reason` as the connection's last error and answers `status` with it.
async fn failed(
    vault: &TokenVault,
    connection: &Connection,
    status: u16,
    code: &str,
    reason: &str,
) -> HttpReply {
    tracing::info!(provider = %connection.provider, connection = %connection.id, error = %reason, outcome = "connection_test_failed", "connection test failed");
    match web::record_connection_test(
        vault,
        &connection.id,
        &TestOutcome::Failed(reason.to_owned()),
    )
    .await
    {
        Ok(_) => HttpReply::json(status, json!({ "error": code, "message": reason })),
        Err(err) => web::vault_error_reply(&err),
    }
}

/// A failure code safe to show and store: the client's codes (`http_503`, `timeout`)
/// and an error rule's provider code (`invalid_auth`) are short words; anything else
/// (a code pointer that found free text) is replaced, so no provider text is echoed.
fn short(code: &str) -> String {
    let plain = code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-.:".contains(c));
    if plain {
        code.to_owned()
    } else {
        "provider_error".to_owned()
    }
}

/// The provider API's base URL for this connection: the catalog's `base_url` with each
/// `{name}` filled from the connection's kept values (Salesforce `{instance_url}`,
/// Shopify `{shop}`) and `{account}` from its provider account (QuickBooks' realm),
/// checked as an endpoint a token may be sent to. A connection without the account
/// its `[api] headers` need (Xero's tenant) has no usable base either.
pub(crate) fn base_url(
    catalog: &Catalog,
    provider: &str,
    connection: &Connection,
) -> Result<String, String> {
    let api = catalog
        .get(provider)
        .and_then(|p| p.api.as_ref())
        .ok_or_else(|| format!("provider {provider} has no [api] base_url"))?;
    let template = api
        .base_url
        .as_deref()
        .ok_or_else(|| format!("provider {provider} has no [api] base_url"))?;
    if api
        .headers
        .values()
        .any(|value| junction_catalog::placeholders(value).any(|name| name == ACCOUNT_PLACEHOLDER))
    {
        account_segment(connection)?;
    }
    let mut url = fill_account(template, connection)?;
    for name in junction_catalog::placeholders(template).filter(|name| *name != ACCOUNT_PLACEHOLDER)
    {
        let value = connection
            .params
            .get(name)
            .ok_or_else(|| format!("connection has no `{name}` for the API base URL"))?;
        url = url.replace(&format!("{{{name}}}"), value.trim_end_matches('/'));
    }
    catalog
        .endpoint_rules()
        .check_filled(template, &url)
        .map_err(|err| format!("API base URL of {provider} {err}"))?;
    Ok(url)
}

/// `text` with `{account}` replaced by the connection's provider account.
pub(crate) fn fill_account(text: &str, connection: &Connection) -> Result<String, String> {
    let placeholder = format!("{{{ACCOUNT_PLACEHOLDER}}}");
    if !text.contains(&placeholder) {
        return Ok(text.to_owned());
    }
    Ok(text.replace(&placeholder, account_segment(connection)?))
}

/// The connection's provider account, when it can stand as one path segment: letters,
/// digits, `-`, `_`, `.` (not `.` or `..`). The account came from the connect (a
/// callback parameter checked and confirmed there, a provider's answer); checked again
/// here because it chooses the path a token is sent to.
fn account_segment(connection: &Connection) -> Result<&str, String> {
    let account = connection
        .account_id
        .as_deref()
        .filter(|account| !account.is_empty())
        .ok_or("connection has no provider account for the API; reconnect it")?;
    let plain = account != "."
        && account != ".."
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        Ok(account)
    } else {
        Err("connection's provider account cannot stand in a URL path".to_owned())
    }
}

#[cfg(test)]
#[path = "connection_test_tests.rs"]
mod tests;
