//! The HTTP side of the OAuth and management routes, independent of Lambda: the
//! functions translate API Gateway requests into these calls and the replies back, and
//! tests call them directly.
//!
//! - `GET /oauth/{provider}/start?session=…` → 302 to the provider, with the binding
//!   cookie; without a usable connect session, a 401 page and nothing stored;
//! - `GET /oauth/{provider}/callback` → 302 back to `return_to`, or a 400 page that says
//!   what went wrong (never a secret); an infrastructure failure is a 503 page with a
//!   fixed sentence, its cause only in the log line;
//! - the management API, JSON behind IAM auth in the template, every route under
//!   `/v1/tenants/{tenant}` so that an IAM policy can grant a backend one tenant:
//!   `POST …/connect-sessions`, `GET …/connections`, `GET …/connections/{id}` and
//!   `DELETE …/connections/{id}` (`?force=true` deletes without revoking). Another
//!   tenant's connection answers exactly as a nonexistent one. `POST
//!   …/connections/{id}/test`, `…/proxy` and `…/actions` are dispatched here too; their
//!   provider calls need the outbound client, which depends on this crate, so they run
//!   in `junction_outbound` (`connection_test`, `proxy`, `actions`) and use
//!   [`tenant_connection_or_reply`].

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    CallbackOutcome, CallbackQuery, ConnectFlow, ConnectSessionRequest, ConnectSessions,
    Connection, FlowError, StartRequest, TokenVault, VaultError, with_last_events,
};

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// As an `http` response (what `lambda_http` sends).
    pub fn into_http(self) -> http::Response<String> {
        let mut response = http::Response::new(self.body);
        *response.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(name),
                http::HeaderValue::try_from(value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }

    fn redirect(location: &str) -> Self {
        HttpReply {
            status: 302,
            headers: vec![
                ("location".into(), location.to_owned()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: String::new(),
        }
    }

    fn page(status: u16, title: &str, message: &str) -> Self {
        let escape = |text: &str| {
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        HttpReply {
            status,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title></head><body><h1>{0}</h1><p>{1}</p></body></html>\n",
                escape(title),
                escape(message)
            ),
        }
    }

    /// A JSON reply, never cached: what every management route answers.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        HttpReply {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: body.to_string(),
        }
    }
}

/// The page for a refused or failed OAuth step, and its log line: the page says what a
/// user can act on, the log line has the cause (SDK and transport text included).
pub(crate) fn flow_error_page(provider: &str, step: &str, err: &FlowError) -> HttpReply {
    let title = match err.status() {
        404 => "Unknown provider",
        400 | 401 => "This connection link cannot be used",
        403 => "This is another account",
        _ => "Connecting is unavailable right now",
    };
    if err.status() >= 500 {
        tracing::error!(provider, step, status = err.status(), error = %err.log_detail(), outcome = "oauth_unavailable", "OAuth step failed");
    } else {
        tracing::info!(provider, step, status = err.status(), error = %err, outcome = "oauth_refused", "OAuth request refused");
    }
    HttpReply::page(err.status(), title, &err.public_message())
}

/// A query string's decoded pairs, in order.
pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET /oauth/{provider}/start` or `/callback`.
pub async fn oauth_route(
    flow: &ConnectFlow,
    provider: &str,
    step: &str,
    query: Vec<(String, String)>,
    cookie_header: Option<&str>,
    base_url: &str,
) -> HttpReply {
    // A provider with `[oauth1]` connects with the OAuth 1.0a legs (`crate::oauth1`).
    let oauth1 = flow
        .vault
        .catalog
        .get(provider)
        .is_some_and(|p| p.oauth1.is_some());
    match step {
        "start" => {
            // What to connect is the session's: any other parameter (`tenant`,
            // `connection`, `return_to`) is ignored.
            let request = StartRequest {
                session: query
                    .into_iter()
                    .find(|(key, _)| key == "session")
                    .map(|(_, value)| value),
            };
            let started = if oauth1 {
                flow.start_oauth1(provider, &request, base_url).await
            } else {
                flow.start(provider, &request, base_url).await
            };
            match started {
                Ok(redirect) => {
                    let mut reply = HttpReply::redirect(&redirect.location);
                    reply
                        .headers
                        .push(("set-cookie".into(), redirect.set_cookie));
                    reply
                }
                Err(err) => flow_error_page(provider, step, &err),
            }
        }
        "callback" => {
            let name = ConnectFlow::binding_cookie_name(provider);
            let binding_cookie = cookie_header.and_then(|header| {
                header.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    (key == name).then(|| value.to_owned())
                })
            });
            let callback = CallbackQuery {
                pairs: query,
                binding_cookie,
            };
            let called_back = if oauth1 {
                flow.callback_oauth1(provider, &callback, base_url).await
            } else {
                flow.callback(provider, &callback, base_url).await
            };
            match called_back {
                Ok(CallbackOutcome::Connected { location, .. })
                | Ok(CallbackOutcome::Failed { location, .. }) => {
                    let mut reply = HttpReply::redirect(&location);
                    reply.headers.push((
                        "set-cookie".into(),
                        format!(
                            "{name}=; Path=/oauth/{provider}/callback; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
                        ),
                    ));
                    reply
                }
                Err(err) => flow_error_page(provider, step, &err),
            }
        }
        _ => HttpReply::page(404, "Not found", "no such OAuth route"),
    }
}

/// What the management API shows of a connection: never tokens.
pub fn connection_view(connection: &Connection) -> serde_json::Value {
    let expires_at = connection
        .token_issued_at
        .zip(connection.stated_lifetime)
        .map(|(issued, lifetime)| issued + i64::try_from(lifetime).unwrap_or(i64::MAX / 2));
    let time = |at: Option<i64>| {
        at.and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
            .map(junction_aws::clock::rfc3339_millis)
    };
    json!({
        "id": connection.id,
        "tenant": connection.tenant,
        "provider": connection.provider,
        "state": connection.state.as_str(),
        "account_id": connection.account_id,
        "end_user": connection.end_user,
        "scopes": connection.scopes,
        "params": connection.params,
        "token": {
            "connected": connection.tokens.is_some(),
            "refreshable": connection.refreshable,
            "issued_at": time(connection.token_issued_at),
            "expires_at": time(expires_at),
            "refresh_at": time(connection.refresh_at),
        },
        "last_successful_sync": time(connection.last_successful_sync),
        "last_event_at": time(connection.last_event_at),
        "last_error": connection.last_error,
        "last_error_at": time(connection.last_error_at),
        "last_verified_at": time(connection.last_verified_at),
        "created_at": time(Some(connection.created_at)),
    })
}

/// The management API's answer for a vault error. An infrastructure failure's text
/// (SDK and transport detail) goes to the log line, not to the caller.
fn vault_error(err: &VaultError) -> HttpReply {
    let (status, code) = match err {
        VaultError::NotFound(_) => (404, "not_found"),
        VaultError::NeedsReauth(_) => (409, "needs_reauth"),
        VaultError::Unavailable { .. } | VaultError::Unreachable { .. } => (503, "unavailable"),
        VaultError::Rejected(_) => (502, "provider_refused"),
    };
    let message = if status == 503 {
        tracing::error!(error = %super::error_chain(err), outcome = "management_unavailable", "management API request failed");
        "temporarily unavailable; try again".to_owned()
    } else {
        err.to_string()
    };
    HttpReply::json(status, json!({ "error": code, "message": message }))
}

/// The management API's routes, the paths of the template's `ConnectionsFunction`
/// events. The tenant is a path segment so that an IAM policy can grant a backend
/// `execute-api:Invoke` on one tenant's routes (`…/*/*/v1/tenants/<tenant>/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagementRoute {
    /// `POST /v1/tenants/{tenant}/connect-sessions`.
    ConnectSessions,
    /// `GET /v1/tenants/{tenant}/connections`.
    Connections,
    /// `GET` and `DELETE /v1/tenants/{tenant}/connections/{id}`.
    Connection,
    /// `POST /v1/tenants/{tenant}/connections/{id}/test`.
    ConnectionTest,
    /// `POST /v1/tenants/{tenant}/connections/{id}/proxy`.
    ConnectionProxy,
    /// `POST /v1/tenants/{tenant}/connections/{id}/actions`.
    ConnectionActions,
    /// `GET /v1/tenants/{tenant}/connections/{id}/actions/{action}`.
    ConnectionAction,
}

impl ManagementRoute {
    pub const ALL: [ManagementRoute; 7] = [
        ManagementRoute::ConnectSessions,
        ManagementRoute::Connections,
        ManagementRoute::Connection,
        ManagementRoute::ConnectionTest,
        ManagementRoute::ConnectionProxy,
        ManagementRoute::ConnectionActions,
        ManagementRoute::ConnectionAction,
    ];

    /// The route's path, as the template and API Gateway's route keys spell it.
    pub fn path(self) -> &'static str {
        match self {
            ManagementRoute::ConnectSessions => "/v1/tenants/{tenant}/connect-sessions",
            ManagementRoute::Connections => "/v1/tenants/{tenant}/connections",
            ManagementRoute::Connection => "/v1/tenants/{tenant}/connections/{id}",
            ManagementRoute::ConnectionTest => "/v1/tenants/{tenant}/connections/{id}/test",
            ManagementRoute::ConnectionProxy => "/v1/tenants/{tenant}/connections/{id}/proxy",
            ManagementRoute::ConnectionActions => "/v1/tenants/{tenant}/connections/{id}/actions",
            ManagementRoute::ConnectionAction => {
                "/v1/tenants/{tenant}/connections/{id}/actions/{action}"
            }
        }
    }

    /// The route an API Gateway route key (`GET /v1/tenants/{tenant}/connections`)
    /// names, whatever its method.
    pub fn from_route_key(route_key: &str) -> Option<ManagementRoute> {
        let path = route_key
            .split_once(' ')
            .map_or(route_key, |(_, path)| path);
        ManagementRoute::ALL
            .into_iter()
            .find(|route| route.path() == path)
    }
}

/// The `{tenant}` of a management path, or the 400 that refuses it. A tenant id is 1-128
/// characters of letters, digits and `-_.:@`, as connect sessions require, and not `.`
/// or `..` (clients resolve those segments away: no path could name such a tenant).
fn path_tenant(tenant: &str) -> Result<&str, HttpReply> {
    if super::flow::valid_tenant(tenant) && tenant != "." && tenant != ".." {
        Ok(tenant)
    } else {
        Err(HttpReply::json(
            400,
            json!({
                "error": "bad_request",
                "message": "the tenant in the path must be 1-128 characters of letters, digits and -_.:@",
            }),
        ))
    }
}

/// `Ok` for a tenant a path can name, else the 400 that refuses it: for routes outside
/// this crate that check the tenant without reading a connection (an action's status).
pub fn check_path_tenant(tenant: &str) -> Result<(), HttpReply> {
    path_tenant(tenant).map(|_| ())
}

/// The connection `id` if it belongs to `tenant`. Another tenant's connection is
/// `NotFound`, the same answer (status, body, and the one read it took) as an id that
/// does not exist: a tenant-scoped caller learns nothing about other tenants' ids.
async fn tenant_connection(
    vault: &TokenVault,
    tenant: &str,
    id: &str,
) -> Result<Connection, VaultError> {
    match vault.connections.get(id).await {
        Ok(Some(connection)) if connection.tenant == tenant => Ok(connection),
        Ok(_) => Err(VaultError::NotFound(id.to_owned())),
        Err(err) => Err(VaultError::store(err)),
    }
}

/// The connection `id` if the path's `tenant` is valid and owns it, else the reply that
/// says why not: 400 for a tenant no path could name, 404 for another tenant's
/// connection exactly as for a nonexistent one, 503 when the store is unavailable.
/// For routes that live outside this crate (the connection test).
pub async fn tenant_connection_or_reply(
    vault: &TokenVault,
    tenant: &str,
    id: &str,
) -> Result<Connection, HttpReply> {
    let tenant = path_tenant(tenant)?;
    tenant_connection(vault, tenant, id)
        .await
        .map_err(|err| vault_error(&err))
}

/// The management API's answer for a vault error (503 with its cause only in the log).
pub fn vault_error_reply(err: &VaultError) -> HttpReply {
    vault_error(err)
}

/// What a connection test (`POST …/connections/{id}/test`) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// The provider answered the test call: the connection works.
    Verified,
    /// It did not; a short reason (a code, never the provider's body).
    Failed(String),
    /// The provider refused the token even after one refresh: the grant works for
    /// nothing, so the connection needs its user to reconnect, as when a refresh token is
    /// refused (`connection.needs_reauth` is announced once, when it changes state).
    NeedsReauth(String),
}

/// How often a conflicting write of a test's outcome is retried (the refresher or a
/// poll worker updated the connection meanwhile).
const RECORD_ATTEMPTS: usize = 3;

/// Records a connection test's outcome on connection `id`, through the store port with
/// an optimistic replace: `last_verified_at` (and no `last_error`: the connection works
/// now), or `last_error` and `last_error_at`. The stored connection.
pub async fn record_connection_test(
    vault: &TokenVault,
    id: &str,
    outcome: &TestOutcome,
) -> Result<Connection, VaultError> {
    let unavailable = VaultError::store;
    for _ in 0..RECORD_ATTEMPTS {
        let current = vault
            .connections
            .get(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| VaultError::NotFound(id.to_owned()))?;
        let now = vault.clock.now().unix_timestamp();
        let mut next = current.clone();
        match outcome {
            TestOutcome::Verified => {
                next.last_verified_at = Some(now);
                next.last_error = None;
            }
            TestOutcome::Failed(reason) => {
                next.last_error = Some(format!("connection_test: {reason}"));
                next.last_error_at = Some(now);
            }
            TestOutcome::NeedsReauth(code) => {
                next.state = super::ConnectionState::NeedsReauth;
                next.lease = None;
                next.refresh_at = None;
                next.last_error = Some(format!("needs_reauth: {code}"));
                next.last_error_at = Some(now);
                next.updated_at = now;
            }
        }
        next.version = current.version + 1;
        if vault
            .connections
            .replace(&next, current.version)
            .await
            .map_err(unavailable)?
        {
            if let TestOutcome::NeedsReauth(code) = outcome
                && current.state != super::ConnectionState::NeedsReauth
            {
                tracing::warn!(provider = %next.provider, connection = %next.id, tenant = %next.tenant, reason = %code, outcome = "needs_reauth", "connection needs the user to reconnect");
                vault.announce(&next, "needs_reauth", code).await?;
            }
            return Ok(next);
        }
    }
    Err(VaultError::busy(
        "storing the test's outcome: the connection kept changing",
    ))
}

/// `GET /v1/tenants/{tenant}/connections` (`id` absent), `GET` and `DELETE
/// /v1/tenants/{tenant}/connections/{id}`: only `tenant`'s connections are listed,
/// shown or deleted.
pub async fn connections_route(
    vault: &TokenVault,
    tenant: &str,
    method: &str,
    id: Option<&str>,
    query: &BTreeMap<String, String>,
) -> HttpReply {
    let tenant = match path_tenant(tenant) {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    match (method, id) {
        ("GET", None) => {
            let listed = match vault.connections.list_for_tenant(tenant).await {
                Ok(list) => with_last_events(vault.connections.as_ref(), list).await,
                Err(err) => Err(err),
            };
            match listed {
                Ok(list) => HttpReply::json(
                    200,
                    json!({ "connections": list.iter().map(connection_view).collect::<Vec<_>>() }),
                ),
                Err(err) => vault_error(&VaultError::store(err)),
            }
        }
        ("GET", Some(id)) => match tenant_connection(vault, tenant, id).await {
            Ok(connection) => {
                match with_last_events(vault.connections.as_ref(), vec![connection]).await {
                    Ok(shown) => HttpReply::json(200, connection_view(&shown[0])),
                    Err(err) => vault_error(&VaultError::store(err)),
                }
            }
            Err(err) => vault_error(&err),
        },
        ("DELETE", Some(id)) => {
            // The tenant check reads the connection once more than `disconnect` alone;
            // a connection's tenant never changes, so the check cannot go stale.
            if let Err(err) = tenant_connection(vault, tenant, id).await {
                return vault_error(&err);
            }
            // `force=true`: deleted without revoking the grant (the way out when
            // revocation cannot work: the provider lost its OAuth section, or refuses);
            // its push subscription is still torn down while the tokens exist.
            let force = query.get("force").is_some_and(|v| v == "true");
            match vault.disconnect(id, force).await {
                Ok(()) => HttpReply::json(200, json!({ "deleted": id, "revoked": !force })),
                Err(err) => vault_error(&err),
            }
        }
        (_, None) => HttpReply::json(
            405,
            json!({ "error": "method_not_allowed", "message": "GET" }),
        ),
        (_, Some(_)) => HttpReply::json(
            405,
            json!({ "error": "method_not_allowed", "message": "GET or DELETE" }),
        ),
    }
}

/// The largest `POST /v1/tenants/{tenant}/connect-sessions` body read.
const MAX_SESSION_REQUEST_BYTES: usize = 16 * 1024;

/// `POST /v1/tenants/{tenant}/connect-sessions`: 201 with the session's token, connect
/// URL and expiry; 400 for a request the flow would refuse (its message says why), 404
/// for a provider that cannot be connected, 503 for an infrastructure failure (its
/// cause only in the log). `base_url` is the API's public base URL.
///
/// The session is for the path's tenant, the one IAM authorized. The body may leave
/// `tenant` out; one that names another tenant is refused with 400 `tenant_mismatch`
/// (a request that contradicts itself, not one to guess about) and nothing is stored.
pub async fn connect_sessions_route(
    sessions: &ConnectSessions,
    tenant: &str,
    method: &str,
    body: &[u8],
    base_url: &str,
) -> HttpReply {
    if method != "POST" {
        return HttpReply::json(
            405,
            json!({ "error": "method_not_allowed", "message": "POST" }),
        );
    }
    if body.len() > MAX_SESSION_REQUEST_BYTES {
        return HttpReply::json(
            413,
            json!({ "error": "too_large", "message": "the request body is over 16 KiB" }),
        );
    }
    let tenant = match path_tenant(tenant) {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    // serde's messages name the field and the expected type, never the value.
    let invalid = |err: serde_json::Error| {
        HttpReply::json(
            400,
            json!({ "error": "bad_request", "message": format!("invalid request: {err}") }),
        )
    };
    let mut fields = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => {
            return HttpReply::json(
                400,
                json!({ "error": "bad_request", "message": "invalid request: expected a JSON object" }),
            );
        }
        Err(err) => return invalid(err),
    };
    match fields.get("tenant") {
        None => {
            fields.insert("tenant".into(), tenant.into());
        }
        Some(serde_json::Value::String(named)) if named == tenant => {}
        Some(_) => {
            return HttpReply::json(
                400,
                json!({
                    "error": "tenant_mismatch",
                    "message": "the body's tenant is not the path's: the session is for the tenant in /v1/tenants/{tenant}/; leave tenant out of the body",
                }),
            );
        }
    }
    let request: ConnectSessionRequest =
        match serde_json::from_value(serde_json::Value::Object(fields)) {
            Ok(request) => request,
            Err(err) => return invalid(err),
        };
    match sessions.mint(&request, base_url).await {
        Ok(minted) => {
            let expires_at = time::OffsetDateTime::from_unix_timestamp(minted.session.expires_at)
                .ok()
                .map(junction_aws::clock::rfc3339_millis);
            HttpReply::json(
                201,
                json!({
                    "token": minted.token.expose(),
                    "connect_url": minted.connect_url,
                    "expires_at": expires_at,
                    "tenant": minted.session.tenant,
                    "provider": minted.session.provider,
                    "connection": minted.session.connection,
                }),
            )
        }
        Err(err) => {
            let code = match err.status() {
                404 => "unknown_provider",
                503 => "unavailable",
                _ => "bad_request",
            };
            if err.status() >= 500 {
                tracing::error!(provider = %request.provider, error = %err.log_detail(), outcome = "session_unavailable", "connect session not created");
            } else {
                tracing::info!(provider = %request.provider, error = %err, outcome = "session_refused", "connect session refused");
            }
            HttpReply::json(
                err.status(),
                json!({ "error": code, "message": err.public_message() }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{capture_logs, captured};

    const SDK_TEXT: &str = "dispatch failure: io error: error trying to connect: tcp connect error: Connection refused (os error 111) at dynamodb.eu-west-1.amazonaws.com";

    #[test]
    fn the_view_shows_the_last_event_beside_the_last_sync() {
        let mut connection = crate::sample_connection("conn_1", "acme", 1_790_000_000);
        let shown = connection_view(&connection);
        assert_eq!(
            (&shown["last_successful_sync"], &shown["last_event_at"]),
            (&serde_json::Value::Null, &serde_json::Value::Null),
            "null until a webhook arrives"
        );
        connection.last_event_at = Some(1_790_000_123);
        assert_eq!(
            connection_view(&connection)["last_event_at"],
            "2026-09-21T14:15:23.000Z"
        );
    }

    #[test]
    fn an_unavailable_page_shows_a_fixed_sentence_and_logs_the_cause() {
        let (_guard, logs) = capture_logs();
        let err = FlowError::Unavailable {
            step: "storing the pending authorization",
            source: SDK_TEXT.into(),
        };
        let reply = flow_error_page("fakeauth", "start", &err);
        assert_eq!(reply.status, 503);
        assert!(
            reply.body.contains("temporarily unavailable"),
            "{}",
            reply.body
        );
        for detail in [
            "dispatch failure",
            "amazonaws",
            "os error",
            "storing the pending",
        ] {
            assert!(
                !reply.body.contains(detail),
                "{detail} shown: {}",
                reply.body
            );
        }
        let logs = captured(&logs);
        assert!(
            logs.contains("storing the pending authorization") && logs.contains(SDK_TEXT),
            "the log line has the step and the cause: {logs}"
        );
    }

    #[test]
    fn a_refused_request_page_says_what_is_wrong() {
        let reply = flow_error_page(
            "fakeauth",
            "callback",
            &FlowError::BadRequest("the callback has no state".into()),
        );
        assert_eq!(reply.status, 400);
        assert!(reply.body.contains("the callback has no state"));
    }

    #[tokio::test]
    async fn the_connect_sessions_route_answers_201_with_the_url_or_says_what_is_wrong() {
        let h = crate::testing::harness_with(fake_provider::AuthServerConfig::default(), "").await;
        let base = "https://hub.example.com";
        let body = br#"{"tenant":"acme","provider":"fakeauth","return_to":"https://app.example.com/done"}"#;
        let reply = connect_sessions_route(&h.minter, "acme", "POST", body, base).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let created: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        let token = created["token"].as_str().expect("a token");
        assert_eq!(
            created["connect_url"],
            format!("{base}/oauth/fakeauth/start?session={token}")
        );
        assert!(created["expires_at"].is_string(), "{created}");
        assert_eq!(created["tenant"], "acme");
        for (method, body, status, says) in [
            ("GET", &b""[..], 405, "POST"),
            ("POST", &b"not json"[..], 400, "invalid request"),
            (
                "POST",
                &br#"{"tenant":"acme","provider":"fakeauth","return_to":"https://app.example.com/","scope":"admin"}"#[..],
                400,
                "unknown field `scope`",
            ),
            (
                "POST",
                &br#"{"tenant":"acme","provider":"fakeauth","return_to":"https://evil.example.net/"}"#[..],
                400,
                "allow-list",
            ),
            (
                "POST",
                &br#"{"tenant":"acme","provider":"nope","return_to":"https://app.example.com/"}"#[..],
                404,
                "unknown_provider",
            ),
            ("POST", &[b' '; 16 * 1024 + 1][..], 413, "16 KiB"),
            ("POST", &b"[]"[..], 400, "a JSON object"),
        ] {
            let reply = connect_sessions_route(&h.minter, "acme", method, body, base).await;
            assert_eq!(reply.status, status, "{says}: {}", reply.body);
            assert!(reply.body.contains(says), "{says}: {}", reply.body);
        }
        assert_eq!(
            h.sessions.len(),
            1,
            "only the valid request stored a session"
        );
    }

    #[tokio::test]
    async fn a_session_is_for_the_path_tenant_and_a_body_naming_another_is_refused() {
        let h = crate::testing::harness_with(fake_provider::AuthServerConfig::default(), "").await;
        let base = "https://hub.example.com";
        // GIVEN a body without a tenant, THEN the session is the path's tenant's
        let body = br#"{"provider":"fakeauth","return_to":"https://app.example.com/done"}"#;
        let reply = connect_sessions_route(&h.minter, "acme", "POST", body, base).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let created: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(created["tenant"], "acme");
        // GIVEN a body naming another tenant (or not a string), THEN 400, nothing stored
        for tenant in [r#""beta""#, r#""""#, "null", "7"] {
            let body = format!(
                r#"{{"tenant":{tenant},"provider":"fakeauth","return_to":"https://app.example.com/done"}}"#
            );
            let reply =
                connect_sessions_route(&h.minter, "acme", "POST", body.as_bytes(), base).await;
            assert_eq!(reply.status, 400, "{tenant}: {}", reply.body);
            assert!(reply.body.contains("tenant_mismatch"), "{}", reply.body);
        }
        // GIVEN a path tenant no session could have, THEN 400
        for tenant in ["", ".", "..", "a/b", "acme%2Fbeta", &"x".repeat(129)] {
            let reply = connect_sessions_route(&h.minter, tenant, "POST", body, base).await;
            assert_eq!(reply.status, 400, "{tenant}: {}", reply.body);
        }
        assert_eq!(
            h.sessions.len(),
            1,
            "only the first request stored a session"
        );
    }

    /// The reply for `id` with the id itself replaced: what a caller can compare.
    fn without_id(reply: &HttpReply, id: &str) -> HttpReply {
        HttpReply {
            body: reply.body.replace(id, "<id>"),
            ..reply.clone()
        }
    }

    #[tokio::test]
    async fn another_tenants_connection_answers_like_a_nonexistent_one() {
        let h = crate::testing::harness_with(fake_provider::AuthServerConfig::default(), "").await;
        // GIVEN a connection of tenant-1 (the harness's sessions are for tenant-1)
        let id = h.connect().await;
        let none = BTreeMap::new();
        let own = connections_route(&h.vault, "tenant-1", "GET", Some(&id), &none).await;
        assert_eq!(own.status, 200, "{}", own.body);
        let missing = "conn_does_not_exist";
        for method in ["GET", "DELETE"] {
            // WHEN another tenant's path names it
            let other = connections_route(&h.vault, "tenant-2", method, Some(&id), &none).await;
            let nonexistent =
                connections_route(&h.vault, "tenant-2", method, Some(missing), &none).await;
            // THEN the answer is a nonexistent id's, byte for byte but for the id
            assert_eq!(other.status, 404, "{method}: {}", other.body);
            assert_eq!(
                without_id(&other, &id),
                without_id(&nonexistent, missing),
                "{method}"
            );
        }
        let listed = connections_route(&h.vault, "tenant-2", "GET", None, &none).await;
        assert_eq!(listed.body, r#"{"connections":[]}"#);
        assert_eq!(
            h.server.counters().revocations,
            0,
            "nothing revoked through another tenant's path"
        );
        assert_eq!(h.stored(&id).await.tenant, "tenant-1", "still stored");
        let listed = connections_route(&h.vault, "tenant-1", "GET", None, &none).await;
        let listed: serde_json::Value = serde_json::from_str(&listed.body).expect("JSON");
        assert_eq!(listed["connections"][0]["id"], id.as_str());

        // The tenant's own path deletes it.
        let deleted = connections_route(&h.vault, "tenant-1", "DELETE", Some(&id), &none).await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        assert_eq!(h.server.counters().revocations, 1);
        let gone = connections_route(&h.vault, "tenant-1", "GET", Some(&id), &none).await;
        assert_eq!(gone.status, 404);
        let refused = connections_route(&h.vault, "a/b", "GET", None, &none).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
    }

    #[test]
    fn route_keys_name_the_management_routes() {
        for (key, route) in [
            (
                "POST /v1/tenants/{tenant}/connect-sessions",
                Some(ManagementRoute::ConnectSessions),
            ),
            (
                "GET /v1/tenants/{tenant}/connections",
                Some(ManagementRoute::Connections),
            ),
            (
                "DELETE /v1/tenants/{tenant}/connections/{id}",
                Some(ManagementRoute::Connection),
            ),
            (
                "POST /v1/tenants/{tenant}/connections/{id}/test",
                Some(ManagementRoute::ConnectionTest),
            ),
            ("GET /connections/{id}", None),
            ("POST /v1/connect-sessions", None),
        ] {
            assert_eq!(ManagementRoute::from_route_key(key), route, "{key}");
        }
    }

    #[test]
    fn the_management_api_keeps_infrastructure_detail_in_the_log() {
        let (_guard, logs) = capture_logs();
        let reply = vault_error(&VaultError::unavailable("the connection store", SDK_TEXT));
        assert_eq!(reply.status, 503);
        assert!(!reply.body.contains("dispatch failure"), "{}", reply.body);
        assert!(captured(&logs).contains(SDK_TEXT));
        let reply = vault_error(&VaultError::NeedsReauth("invalid_grant".into()));
        assert!(reply.body.contains("invalid_grant"), "{}", reply.body);
    }
}
