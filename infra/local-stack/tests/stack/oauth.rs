//! The OAuth connect flow end to end through the local stack: a connect session minted
//! through the IAM-protected management API (the `connections` binary, as `junction
//! connect` calls it), a browser's requests over HTTP to the real `oauth` binary (start →
//! the authorization server on loopback → callback), the connection visible through the
//! management API, and a disconnect that revokes at the provider. The provider is not
//! built in: it comes from a catalog overlay file, as an operator would add one.
//!
//! The attacks connect sessions stop are played as an attacker would: a start naming a
//! tenant (or a connection) without a session, a session used twice or after it
//! expired, and a reconnect completed with another provider account. So is the reach
//! of a backend's credential: one limited to a tenant's paths by its IAM policy reads
//! that tenant's connections only, and a path's tenant hides other tenants' ids.
//!
//! GitHub and Gmail connections record the account their account request verified, and
//! their deliveries are stamped with the tenant and connection; a spoofed
//! `installation_id` records nothing (issue 24, part 4).

use crate::common;
use common::{
    browser, connect_url, first_cookie, location, session_for, start_with_overlay,
    stop_and_check_processes_are_gone,
};

use std::time::Duration;

use fake_provider::{AuthServerConfig, FakeAuthServer, GrantSummary};
use junction_oauth::ConnectSessionRequest;
use local_stack::{http_api::LOCAL_IAM_HEADER, runtime::FunctionSummary, stack::LocalStack};
use serde_json::Value;

const RETURN_TO: &str = "https://app.example.com/integrations";

#[tokio::test]
async fn a_user_connects_an_overlay_provider_and_an_operator_disconnects_it() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let (stack, prefix, dir) = start_with_overlay(
        "oauth",
        &format!(
            "[[provider]]\nid = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[provider.oauth]\n{}",
            server.oauth_catalog_fields()
        ),
    )
    .await;
    let api = stack.api_url().to_owned();
    server.set_redirect_uris(vec![format!("{api}/oauth/fakeauth/callback")]);
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/fakeauth"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
    let http = browser();

    // The product's backend mints a connect session; the browser: start → provider →
    // callback.
    let start_url = connect_url(&stack, &session_for("fakeauth", "acme", RETURN_TO)).await;
    let start = http.get(&start_url).send().await.expect("start");
    assert_eq!(start.status(), 302);
    let cookie = first_cookie(&start);
    assert!(cookie.starts_with("junction_oauth_fakeauth="));
    let authorize = http.get(location(&start)).send().await.expect("authorize");
    assert_eq!(authorize.status(), 302);
    let callback_url = location(&authorize);
    assert!(callback_url.starts_with(&format!("{api}/oauth/fakeauth/callback?")));
    let callback = http
        .get(&callback_url)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 302);
    let back = url::Url::parse(&location(&callback)).expect("return_to");
    assert!(back.as_str().starts_with(RETURN_TO));
    let id = back
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("connection id");
    assert_eq!(server.counters().code_exchanges, 1);

    let replay = http
        .get(&callback_url)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), 400, "a state works once");
    assert!(
        replay
            .text()
            .await
            .unwrap_or_default()
            .contains("already used")
    );

    // The management API: IAM-protected (locally, the stack's credential).
    let show = format!("{api}/v1/tenants/acme/connections/{id}");
    let anonymous = http.get(&show).send().await.expect("anonymous");
    assert_eq!(anonymous.status(), 403, "no unauthenticated access");
    let shown = http
        .get(&show)
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("show");
    assert_eq!(shown.status(), 200);
    let view: serde_json::Value =
        serde_json::from_str(&shown.text().await.expect("body")).expect("json");
    assert_eq!(view["state"], "active");
    assert_eq!(view["tenant"], "acme");
    assert_eq!(view["token"]["refreshable"], true);
    assert!(view.get("access_token").is_none() && !view.to_string().contains("refresh_token\""));
    let listed = http
        .get(format!("{api}/v1/tenants/acme/connections"))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["connections"][0]["id"], id.as_str());

    let deleted = http
        .delete(&show)
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert_eq!(server.counters().revocations, 1, "revoked at the provider");
    let gone = http
        .get(&show)
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("show");
    assert_eq!(gone.status(), 404);

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The overlay entry of `fakeauth`, the fake server's account in `account_id`.
fn fakeauth_overlay(server: &FakeAuthServer) -> String {
    format!(
        "[[provider]]\nid = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[provider.oauth]\n{}account_id = \"/account_id\"\n",
        server.oauth_catalog_fields()
    )
}

/// Points the fake server at the stack's callback and stores the client credentials.
async fn set_up_fakeauth(stack: &LocalStack, prefix: &str, server: &FakeAuthServer) {
    server.set_redirect_uris(vec![format!("{}/oauth/fakeauth/callback", stack.api_url())]);
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/fakeauth"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
}

/// The browser from a start URL through the provider to the callback's answer.
async fn through_the_provider(http: &reqwest::Client, start_url: &str) -> reqwest::Response {
    let start = http.get(start_url).send().await.expect("start");
    assert_eq!(start.status(), 302, "start redirects to the provider");
    let cookie = first_cookie(&start);
    let authorize = http.get(location(&start)).send().await.expect("authorize");
    assert_eq!(authorize.status(), 302);
    http.get(location(&authorize))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback")
}

/// The connection id the callback sent the user back with.
fn connected_id(callback: &reqwest::Response) -> String {
    assert_eq!(callback.status(), 302, "connected");
    url::Url::parse(&location(callback))
        .expect("return_to")
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("connection id")
}

/// The management API's view of `tenant`'s connection `id`.
async fn view(http: &reqwest::Client, stack: &LocalStack, tenant: &str, id: &str) -> Value {
    let shown = http
        .get(format!(
            "{}/v1/tenants/{tenant}/connections/{id}",
            stack.api_url()
        ))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("show");
    assert_eq!(shown.status(), 200);
    serde_json::from_str(&shown.text().await.expect("body")).expect("json")
}

/// A tenant's connections, through the management API.
async fn listed(http: &reqwest::Client, stack: &LocalStack, tenant: &str) -> Value {
    let listed = http
        .get(format!(
            "{}/v1/tenants/{tenant}/connections",
            stack.api_url()
        ))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
    serde_json::from_str::<Value>(&listed).expect("json")["connections"].clone()
}

/// How many pending authorizations the stack's state table holds.
async fn pending_authorizations(stack: &LocalStack) -> i32 {
    aws_sdk_dynamodb::Client::new(stack.sdk_config())
        .scan()
        .table_name(&stack.description().resources["OAuthStateTable"])
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("scan")
        .count()
}

/// Asserts `response` is the 401 page of a start without a usable session: no redirect
/// to the provider, no binding cookie, and the page says `says`.
async fn refused_start(response: reqwest::Response, says: &str) {
    assert_eq!(response.status(), 401);
    assert!(
        response.headers().get("location").is_none()
            && response.headers().get("set-cookie").is_none(),
        "no redirect, no cookie: {:?}",
        response.headers()
    );
    let page = response.text().await.expect("page");
    assert!(page.contains(says), "{says}: {page}");
}

/// Regressions: `GET /oauth/{provider}/start?tenant=victim-corp&return_to=…` attached
/// the caller's provider account to any tenant, and `start?tenant=…&connection=<id>`
/// replaced a connection's account and tokens with the caller's. Tenant and connection
/// ids are not secrets. Now a start needs a connect session the product's backend
/// minted, used once, before it expires; a reconnect must bring back the same account.
#[tokio::test]
async fn connect_sessions_refuse_the_takeover_attacks() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let (stack, prefix, dir) =
        start_with_overlay("oauth-attacks", &fakeauth_overlay(&server)).await;
    set_up_fakeauth(&stack, &prefix, &server).await;
    let api = stack.api_url().to_owned();
    let http = browser();

    // GIVEN the victim's connection, made through a session (account test-user)
    let victim_url = connect_url(&stack, &session_for("fakeauth", "victim-corp", RETURN_TO)).await;
    let id = connected_id(&through_the_provider(&http, &victim_url).await);
    let before = view(&http, &stack, "victim-corp", &id).await;
    assert_eq!(before["account_id"], "test-user");
    let authorizations = server.counters().authorize;
    let pending = pending_authorizations(&stack).await;

    // WHEN an attacker starts with the tenant in the query, or with the connection
    let return_to: String = form_urlencoded::byte_serialize(RETURN_TO.as_bytes()).collect();
    for attack in [
        format!("{api}/oauth/fakeauth/start?tenant=victim-corp&return_to={return_to}"),
        format!(
            "{api}/oauth/fakeauth/start?tenant=victim-corp&connection={id}&return_to={return_to}"
        ),
        format!(
            "{api}/oauth/fakeauth/start?session=guessed-{}",
            "x".repeat(40)
        ),
    ] {
        // THEN a 401 page, no redirect to the provider, nothing stored
        refused_start(http.get(&attack).send().await.expect("start"), "connect").await;
    }
    assert_eq!(
        server.counters().authorize,
        authorizations,
        "never sent to the provider"
    );
    assert_eq!(
        pending_authorizations(&stack).await,
        pending,
        "no pending authorization"
    );
    assert_eq!(
        listed(&http, &stack, "victim-corp")
            .await
            .as_array()
            .map(Vec::len),
        Some(1),
        "no connection added to the tenant"
    );
    assert_eq!(
        view(&http, &stack, "victim-corp", &id).await,
        before,
        "the connection unchanged"
    );

    // A session works once.
    let once = connect_url(&stack, &session_for("fakeauth", "acme", RETURN_TO)).await;
    let first = http.get(&once).send().await.expect("start");
    assert_eq!(first.status(), 302);
    refused_start(http.get(&once).send().await.expect("again"), "already used").await;

    // A reconnect session completed with another account is refused: the connection
    // keeps its account and tokens, and the new grant is revoked at the provider.
    let reconnect = ConnectSessionRequest {
        connection: Some(id.clone()),
        ..session_for("fakeauth", "victim-corp", RETURN_TO)
    };
    server.sign_in_as("attacker-account");
    let revocations = server.counters().revocations;
    let refused = through_the_provider(&http, &connect_url(&stack, &reconnect).await).await;
    assert_eq!(refused.status(), 403);
    assert!(
        refused.headers().get("location").is_none(),
        "not sent back as connected"
    );
    let page = refused.text().await.expect("page");
    assert!(page.contains("another fakeauth account"), "{page}");
    assert!(
        !page.contains("test-user") && !page.contains("attacker-account"),
        "the page names no account: {page}"
    );
    assert_eq!(
        view(&http, &stack, "victim-corp", &id).await,
        before,
        "stored account and tokens unchanged"
    );
    assert_eq!(server.counters().revocations, revocations + 1);
    let grants = server.grants();
    let of = |account: &str| -> Vec<GrantSummary> {
        grants
            .iter()
            .filter(|g| g.account == account)
            .cloned()
            .collect()
    };
    assert!(
        of("test-user").iter().all(|grant| !grant.revoked),
        "the victim's grant is untouched: {grants:?}"
    );
    assert_eq!(
        of("attacker-account")
            .iter()
            .map(|g| g.revoked)
            .collect::<Vec<_>>(),
        [true],
        "the refused grant is revoked: {grants:?}"
    );

    // ... unless the product's backend allowed an account change.
    let allowed = ConnectSessionRequest {
        allow_account_change: true,
        ..reconnect.clone()
    };
    let changed = through_the_provider(&http, &connect_url(&stack, &allowed).await).await;
    assert_eq!(connected_id(&changed), id, "the same connection");
    assert_eq!(
        view(&http, &stack, "victim-corp", &id).await["account_id"],
        "attacker-account"
    );

    // An expired session is refused (the shortest lifetime, waited out).
    let short = connect_url(
        &stack,
        &ConnectSessionRequest {
            ttl_seconds: Some(10),
            ..session_for("fakeauth", "acme", RETURN_TO)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    refused_start(http.get(&short).send().await.expect("start"), "expired").await;

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// How many requests the management API's function has answered.
fn management_invocations(stack: &LocalStack) -> usize {
    stack
        .summary()
        .iter()
        .find(|summary: &&FunctionSummary| summary.function == "ConnectionsFunction")
        .map_or(0, |summary| summary.invocations)
}

/// `method` `path` on the stack's API with the local credential `key`: status and body.
async fn call(stack: &LocalStack, method: reqwest::Method, path: &str, key: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", stack.api_url()))
        .header(LOCAL_IAM_HEADER, key)
        .send()
        .await
        .expect("the API answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Issue 24: every management route is under `/v1/tenants/{tenant}/`, so an IAM policy
/// can limit a product's backend to one tenant. A credential whose policy is the
/// README's example for `acme` reads acme's connection (200) and is refused beta's at
/// the IAM layer (403, the function never called); with the stack's unscoped
/// credential, beta's connection id under acme's path answers 404, exactly as an id
/// that does not exist.
#[tokio::test]
async fn a_tenant_scoped_credential_reads_only_its_own_tenants_connections() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let (stack, prefix, dir) =
        start_with_overlay("oauth-tenants", &fakeauth_overlay(&server)).await;
    set_up_fakeauth(&stack, &prefix, &server).await;
    let http = browser();
    let unscoped = stack.local_iam_key().to_owned();

    // GIVEN a connection in tenant acme and one in tenant beta
    let acme_url = connect_url(&stack, &session_for("fakeauth", "acme", RETURN_TO)).await;
    let acme = connected_id(&through_the_provider(&http, &acme_url).await);
    let beta_url = connect_url(&stack, &session_for("fakeauth", "beta", RETURN_TO)).await;
    let beta = connected_id(&through_the_provider(&http, &beta_url).await);

    // AND a credential whose policy is the README's example for acme, on the local API,
    // issued through the control API as `junction-local credential --policy` does
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "execute-api:Invoke",
            "Resource": format!(
                "arn:aws:execute-api:{}:{}:local/*/*/v1/tenants/acme/*",
                stack.iam().region(),
                local_stack::ACCOUNT_ID
            ),
        }],
    });
    let issued = reqwest::Client::new()
        .post(format!("{}/iam/credentials", stack.control_url()))
        .body(policy.to_string())
        .send()
        .await
        .expect("the control API answers");
    assert_eq!(issued.status(), 201);
    let issued: Value = serde_json::from_str(&issued.text().await.expect("body")).expect("json");
    let scoped = issued["key"].as_str().expect("a key").to_owned();
    assert_ne!(scoped, unscoped);

    // THEN it reads and lists its own tenant's connections, and mints its sessions
    let (status, body) = call(
        &stack,
        reqwest::Method::GET,
        &format!("/v1/tenants/acme/connections/{acme}"),
        &scoped,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["id"],
        acme.as_str()
    );
    let (status, body) = call(
        &stack,
        reqwest::Method::GET,
        "/v1/tenants/acme/connections",
        &scoped,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let scoped_auth = junction_cli::connect::ApiAuth::LocalIam(scoped.clone());
    let session = junction_cli::connect::create_session(
        &reqwest::Client::new(),
        stack.api_url(),
        &scoped_auth,
        &session_for("fakeauth", "acme", RETURN_TO),
    )
    .await
    .expect("a session for its own tenant");
    common::watch("a connect session token", &session.token);

    // AND every route of another tenant is refused before the function runs
    let invocations = management_invocations(&stack);
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/v1/tenants/beta/connections/{beta}"),
        ),
        (
            reqwest::Method::GET,
            "/v1/tenants/beta/connections".to_owned(),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/tenants/beta/connections/{beta}"),
        ),
        (
            reqwest::Method::POST,
            "/v1/tenants/beta/connect-sessions".to_owned(),
        ),
        // A tenant whose id starts like acme's is another tenant.
        (
            reqwest::Method::GET,
            "/v1/tenants/acme2/connections".to_owned(),
        ),
        // An escaped slash does not move a request under acme's prefix.
        (
            reqwest::Method::GET,
            "/v1/tenants/acme%2F..%2Fbeta/connections".to_owned(),
        ),
    ] {
        let (status, body) = call(&stack, method.clone(), &path, &scoped).await;
        assert_eq!(
            (status, body.as_str()),
            (403, r#"{"message":"Forbidden"}"#),
            "{method} {path}"
        );
    }
    let refused = junction_cli::connect::create_session(
        &reqwest::Client::new(),
        stack.api_url(),
        &scoped_auth,
        &session_for("fakeauth", "beta", RETURN_TO),
    )
    .await
    .expect_err("no session for another tenant");
    assert!(refused.to_string().contains("403"), "{refused:#}");
    assert_eq!(
        management_invocations(&stack),
        invocations,
        "refused at the IAM layer: the function never ran"
    );

    // WHEN the unscoped credential asks for beta's connection under acme's path
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (status, other) = call(
            &stack,
            method.clone(),
            &format!("/v1/tenants/acme/connections/{beta}"),
            &unscoped,
        )
        .await;
        let missing = "conn_nonexistent";
        let (_, nonexistent) = call(
            &stack,
            method.clone(),
            &format!("/v1/tenants/acme/connections/{missing}"),
            &unscoped,
        )
        .await;
        // THEN 404, the answer an id that does not exist gets
        assert_eq!(status, 404, "{method}: {other}");
        assert_eq!(
            other.replace(&beta, "<id>"),
            nonexistent.replace(missing, "<id>"),
            "{method}: no oracle"
        );
    }
    // AND beta's connection is untouched (the DELETE revoked and deleted nothing)
    assert_eq!(server.counters().revocations, 0);
    let (status, body) = call(
        &stack,
        reqwest::Method::GET,
        &format!("/v1/tenants/beta/connections/{beta}"),
        &unscoped,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["state"],
        "active"
    );
    let (status, body) = call(
        &stack,
        reqwest::Method::GET,
        "/v1/tenants/acme/connections",
        &unscoped,
    )
    .await;
    let listed: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status, 200);
    assert_eq!(
        listed["connections"]
            .as_array()
            .map(|list| list.iter().map(|c| c["id"].clone()).collect::<Vec<_>>()),
        Some(vec![Value::from(acme.as_str())]),
        "acme's list has acme's connection only"
    );

    // The unscoped paths are gone (v1, before any release).
    for (method, path) in [
        (reqwest::Method::GET, format!("/connections/{acme}")),
        (reqwest::Method::GET, "/connections".to_owned()),
        (reqwest::Method::POST, "/v1/connect-sessions".to_owned()),
    ] {
        let (status, body) = call(&stack, method.clone(), &path, &unscoped).await;
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"message":"Not Found"}"#),
            "{method} {path}"
        );
    }

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 24, part 4, through the real binaries: a GitHub connect records the App
/// installation the user can access (the callback's `installation_id`, checked against
/// `GET /user/installations` with the user's token), a Gmail connect the profile's
/// mailbox, lowercased; a GitHub delivery for that installation reaches the bus stamped
/// with the tenant and connection, and a Gmail push for that mailbox (its address inside
/// base64 `message.data`, in other capitals) is matched to its connection, whose
/// `last_event_at` it sets (a push publishes no event until the fetch stage exists). A
/// callback whose `installation_id` was edited to someone else's installation records
/// nothing: that installation's deliveries go out unstamped.
///
/// The overlay replaces `github` and `gmail` so their OAuth endpoints and account
/// requests are the loopback server's; Gmail's push is verified like GitHub's (an HMAC
/// of the body) because a Google-signed token cannot be made here, and keeps the built-in
/// entry's `account` line, copied from gmail.toml.
#[tokio::test]
async fn github_and_gmail_deliveries_are_stamped_with_the_tenant_that_connected_them() {
    use common::BusObserver;
    use junction_cli::{
        samples::Sample,
        webhook::{post, sign_webhook, webhook_url},
    };

    const INSTALLATION: u64 = 79_929_171;
    const OTHERS_INSTALLATION: u64 = 424_242;

    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    server.serve_provider_api(|request| match request.path.as_str() {
        "/user/installations" => fake_provider::ScriptedResponse::json(&serde_json::json!({
            "total_count": 2,
            "installations": [
                {"id": INSTALLATION, "account": {"login": "acme-org"}},
                {"id": 5, "account": {"login": "ada"}}
            ]
        })),
        _ => fake_provider::ScriptedResponse::json(&serde_json::json!({
            "emailAddress": "Ada.Lovelace@Example.com",
            "messagesTotal": 10,
            "threadsTotal": 4,
            "historyId": "1234"
        })),
    });
    let gmail_toml = std::fs::read_to_string(
        local_stack::emulator::repo_root().join("shared/catalog/providers/gmail.toml"),
    )
    .expect("gmail.toml");
    let gmail_account = gmail_toml
        .lines()
        .find(|line| line.starts_with("account = "))
        .expect("gmail's [webhook] account");
    let oauth = server.oauth_catalog_fields();
    let api_base = server.provider_api_base();
    let overlay = format!(
        r#"[[provider]]
id = "github"
name = "GitHub (loopback)"
docs = "https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries"
[provider.webhook]
event_id = {{ header = "X-GitHub-Delivery" }}
event_type = {{ header = "X-GitHub-Event" }}
account = {{ json_pointer = "/installation/id" }}
forward_headers = ["X-GitHub-Event", "X-GitHub-Delivery"]
[provider.webhook.verification]
scheme = "hmac-sha256"
signature = {{ format = "single", header = "X-Hub-Signature-256", prefix = "sha256=", encoding = "hex" }}
signed = ["body"]
replay_window = "none"
[provider.oauth]
{oauth}
[provider.account_request]
url = "{api_base}/user/installations?per_page=100"
headers = {{ Accept = "application/vnd.github+json" }}
list = "/installations"
account = "/id"
chosen_by = "installation_id"
pagination = "link_header"

[[provider]]
id = "gmail"
name = "Gmail (loopback)"
docs = "https://developers.google.com/workspace/gmail/api/guides/push"
[provider.webhook]
verification_from = "github"
event_id = {{ json_pointer = "/message/messageId" }}
{gmail_account}
[provider.oauth]
{oauth}
[provider.account_request]
url = "{api_base}/gmail/v1/users/me/profile"
account = "/emailAddress"
lowercase = true
"#
    );
    let (stack, prefix, dir) = start_with_overlay("accounts", &overlay).await;
    let api = stack.api_url().to_owned();
    server.set_redirect_uris(vec![
        format!("{api}/oauth/github/callback"),
        format!("{api}/oauth/gmail/callback"),
    ]);
    let secrets = aws_sdk_secretsmanager::Client::new(stack.sdk_config());
    let put = |name: String, value: String| {
        let secrets = secrets.clone();
        async move {
            if secrets
                .create_secret()
                .name(&name)
                .secret_string(&value)
                .send()
                .await
                .is_err()
            {
                secrets
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(&value)
                    .send()
                    .await
                    .expect("secret stored");
            }
        }
    };
    for provider in ["github", "gmail"] {
        put(
            format!("{prefix}/oauth/{provider}"),
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#
                .to_owned(),
        )
        .await;
    }
    let http = browser();

    // A browser connects, with `extra` appended to the callback URL.
    let connect = |provider: &'static str, tenant: &'static str, extra: String| {
        let (http, stack, api) = (&http, &stack, api.clone());
        async move {
            let start_url = connect_url(stack, &session_for(provider, tenant, RETURN_TO)).await;
            let start = http.get(&start_url).send().await.expect("start");
            assert_eq!(start.status(), 302);
            let cookie = first_cookie(&start);
            let authorize = http.get(location(&start)).send().await.expect("authorize");
            let callback_url = format!("{}{extra}", location(&authorize));
            assert!(callback_url.starts_with(&format!("{api}/oauth/{provider}/callback?")));
            let callback = http
                .get(&callback_url)
                .header("cookie", &cookie)
                .send()
                .await
                .expect("callback");
            assert_eq!(callback.status(), 302);
            url::Url::parse(&location(&callback))
                .expect("return_to")
                .query_pairs()
                .find(|(k, _)| k == "connection_id")
                .map(|(_, v)| v.into_owned())
                .expect("connected")
        }
    };
    let github = connect(
        "github",
        "acme",
        format!("&installation_id={INSTALLATION}&setup_action=install"),
    )
    .await;
    let spoofed = connect(
        "github",
        "mallory",
        format!("&installation_id={OTHERS_INSTALLATION}&setup_action=install"),
    )
    .await;
    let gmail = connect("gmail", "acme", String::new()).await;
    let show = |tenant: &'static str, id: String| {
        let (http, api, key) = (&http, api.clone(), stack.local_iam_key().to_owned());
        async move {
            let shown = http
                .get(format!("{api}/v1/tenants/{tenant}/connections/{id}"))
                .header(LOCAL_IAM_HEADER, key)
                .send()
                .await
                .expect("show");
            assert_eq!(shown.status(), 200);
            serde_json::from_str::<Value>(&shown.text().await.expect("body")).expect("json")
        }
    };
    assert_eq!(
        show("acme", github.clone()).await["account_id"],
        INSTALLATION.to_string()
    );
    assert_eq!(
        show("mallory", spoofed.clone()).await["account_id"],
        Value::Null,
        "a spoofed installation_id is not recorded"
    );
    assert_eq!(
        show("acme", gmail.clone()).await["account_id"],
        "ada.lovelace@example.com"
    );

    let observer = BusObserver::subscribe(&stack).await;
    let catalog = junction_catalog::Catalog::embedded().expect("catalog");
    let github_spec = catalog.get("github").expect("github");
    let github_key = junction_cli::webhook::signing_key(&secrets, &prefix, github_spec, None)
        .await
        .expect("github's seeded secret");
    let now = time::OffsetDateTime::now_utc();
    let issue = |installation: u64, delivery: &str| Sample {
        content_type: "application/json".into(),
        headers: vec![
            ("X-GitHub-Event".into(), "issues".into()),
            ("X-GitHub-Delivery".into(), delivery.into()),
        ],
        body: serde_json::json!({
            "action": "opened",
            "issue": {"id": 1, "number": 7, "title": "Broken build"},
            "repository": {"id": 1296269, "full_name": "acme-org/app"},
            "installation": {"id": installation}
        })
        .to_string()
        .into_bytes(),
    };
    let client = reqwest::Client::new();
    for sample in [
        issue(INSTALLATION, "gh-matched"),
        issue(OTHERS_INSTALLATION, "gh-spoofed"),
    ] {
        let signed = sign_webhook(
            github_spec,
            &github_key,
            &webhook_url(&api, "github", None),
            &sample,
            now,
        )
        .expect("signed");
        assert_eq!(post(&client, &signed).await.expect("posted").status, 200);
    }
    // Pub/Sub's base64 of {"emailAddress":"ADA.LOVELACE@example.com","historyId":"1234"}.
    let push = Sample {
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: serde_json::json!({
            "message": {
                "data": "eyJlbWFpbEFkZHJlc3MiOiJBREEuTE9WRUxBQ0VAZXhhbXBsZS5jb20iLCJoaXN0b3J5SWQiOiIxMjM0In0=",
                "messageId": "gm-matched",
                "publishTime": "2026-12-07T10:00:00.000Z"
            },
            "subscription": "projects/acme/subscriptions/gmail-push"
        })
        .to_string()
        .into_bytes(),
    };
    // The stand-in Gmail entry's own secret, as the stack seeded it for the overlay.
    let overlaid = junction_catalog::Catalog::embedded()
        .expect("catalog")
        .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
        .with_overlay("test", &overlay)
        .expect("overlay");
    let gmail_spec = overlaid.get("gmail").expect("gmail");
    let gmail_key = junction_cli::webhook::signing_key(&secrets, &prefix, gmail_spec, None)
        .await
        .expect("the stand-in's seeded secret");
    let signed = sign_webhook(
        gmail_spec,
        &gmail_key,
        &webhook_url(&api, "gmail", None),
        &push,
        now,
    )
    .expect("signed");
    assert_eq!(post(&client, &signed).await.expect("posted").status, 200);

    let mut events = Vec::new();
    let started = std::time::Instant::now();
    while events.len() < 2 && started.elapsed() < Duration::from_secs(60) {
        observer.drain(&mut events).await;
    }
    let mut stamps: Vec<(String, Option<String>, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e.providereventid.clone(),
                e.tenant.clone(),
                e.connection.clone(),
            )
        })
        .collect();
    stamps.sort();
    assert_eq!(
        stamps,
        [
            (
                "gh-matched".to_owned(),
                Some("acme".to_owned()),
                Some(github.clone())
            ),
            ("gh-spoofed".to_owned(), None, None),
        ]
    );
    let last_event = common::eventually(Duration::from_secs(30), || {
        let show = &show;
        let gmail = gmail.clone();
        async move {
            let view = show("acme", gmail).await;
            (!view["last_event_at"].is_null()).then_some(view["last_event_at"].clone())
        }
    })
    .await;
    assert!(
        last_event.is_some(),
        "the Gmail push was matched to its connection"
    );

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}
