//! The connect flow and the vault against a real authorization server on loopback, through
//! the [`crate::testing`] harness. The same flows run against the emulator's DynamoDB and
//! KMS in `tests/tests/integration/oauth_emulator.rs`.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, Decision, FakeAuthServer, TokenFailure};

use super::{testing::*, vault::learned_lifetime, *};
use junction_aws::clock::Clock;
use junction_catalog::Catalog;

#[tokio::test]
async fn the_connect_flow_stores_a_sealed_connection_whose_token_works() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    let stored = h.stored(&id).await;
    assert_eq!(stored.tenant, "tenant-1");
    assert_eq!(stored.state, ConnectionState::Active);
    assert!(stored.refreshable);
    assert_eq!(stored.stated_lifetime, Some(3_600));
    assert_eq!(
        stored.refresh_at,
        Some(1_800_000_000 + 3_600 - 300),
        "stated lifetime minus the catalog's margin"
    );
    let token = h.vault.access_token(&id).await.expect("token");
    assert_eq!(h.api_status(&token).await, 200);
    let sealed = format!("{:?}", stored.tokens);
    assert!(!sealed.contains(token.value.expose()));
    assert_eq!(h.server.counters().code_exchanges, 1);
}

#[tokio::test]
async fn a_replayed_expired_or_unbound_state_is_refused() {
    let h = harness(AuthServerConfig::default()).await;
    let query = h.authorize().await;
    let mut other_browser = query.clone();
    other_browser.binding_cookie = Some("another-browser".into());
    let mut no_cookie = query.clone();
    no_cookie.binding_cookie = None;
    for stolen in [&other_browser, &no_cookie] {
        let err = h
            .flow
            .callback("fakeauth", stolen, BASE)
            .await
            .expect_err("unbound");
        assert!(err.to_string().contains("another browser"), "{err}");
        assert_eq!(err.status(), 400);
    }
    assert!(
        matches!(
            h.flow.callback("fakeauth", &query, BASE).await,
            Ok(CallbackOutcome::Connected { .. })
        ),
        "a stolen callback URL does not burn the real user's attempt"
    );
    let err = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect_err("replay");
    assert!(
        err.to_string().contains("unknown or already used state"),
        "the state was consumed by the user's callback: {err}"
    );
    assert_eq!(err.status(), 400);
    assert_eq!(h.server.counters().code_exchanges, 1);

    let query = h.authorize().await;
    h.clock.advance(time::Duration::seconds(601));
    let err = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");

    let err = h
        .flow
        .callback(
            "fakeauth",
            &CallbackQuery {
                pairs: vec![("code".into(), "x".into())],
                binding_cookie: None,
            },
            BASE,
        )
        .await
        .expect_err("missing state");
    assert!(err.to_string().contains("no state"));
    assert_eq!(
        h.server.counters().code_exchanges,
        1,
        "no other code was exchanged"
    );
}

#[tokio::test]
async fn a_denied_authorization_returns_the_user_with_the_error() {
    let h = harness(AuthServerConfig::default()).await;
    h.server.set_decision(Decision::Deny);
    let query = h.authorize().await;
    match h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("handled")
    {
        CallbackOutcome::Failed { location, error } => {
            assert_eq!(error, "access_denied");
            assert!(location.starts_with(RETURN_TO));
            assert_eq!(get(&query_of(&location), "status"), Some("error"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        h.connections
            .list_for_tenant("tenant-1")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_session_is_minted_only_for_what_start_would_accept() {
    let h = harness(AuthServerConfig::default()).await;
    let other_tenant = {
        let id = h.connect().await;
        let mut stored = h.stored(&id).await;
        stored.tenant = "tenant-2".into();
        h.connections.delete(&id).await.expect("delete");
        h.connections.insert(&stored).await.expect("insert");
        id
    };
    let request = |edit: &dyn Fn(&mut ConnectSessionRequest)| {
        let mut request = session_request("fakeauth");
        edit(&mut request);
        request
    };
    for (request, message) in [
        (
            request(&|r| r.return_to = Some("https://evil.example.net/x".into())),
            "not in the allow-list",
        ),
        (
            request(&|r| r.return_to = Some("/relative".into())),
            "not an absolute URL",
        ),
        (request(&|r| r.return_to = None), "return_to is required"),
        (
            request(&|r| r.tenant = "bad tenant!".into()),
            "tenant is required",
        ),
        (request(&|r| r.ttl_seconds = Some(9)), "ttl_seconds"),
        (request(&|r| r.ttl_seconds = Some(1_801)), "ttl_seconds"),
        (
            request(&|r| {
                r.end_user = Some(EndUser {
                    id: String::new(),
                    display_name: None,
                })
            }),
            "end_user.id is required",
        ),
        (
            request(&|r| r.connection = Some(other_tenant.clone())),
            "connection not found for this tenant",
        ),
        (
            request(&|r| r.connection = Some("conn_nope".into())),
            "connection not found for this tenant",
        ),
    ] {
        let err = h.minter.mint(&request, BASE).await.expect_err(message);
        assert!(err.to_string().contains(message), "{message}: {err}");
        assert_eq!(err.status(), 400, "{message}");
    }
    let err = h
        .minter
        .mint(&session_request("nope"), BASE)
        .await
        .expect_err("404");
    assert_eq!(err.status(), 404);
    assert!(h.sessions.is_empty(), "nothing refused was stored");

    // Shopify's shop must be a myshopify.com domain: no user input picks the host.
    let shopify = ConnectSessions::new(
        TokenVault {
            catalog: Catalog::embedded().expect("catalog"),
            ..h.vault.clone()
        },
        h.sessions.clone(),
        flow_settings(),
    );
    for shop in [
        "evil.com",
        "acme.myshopify.com.evil.com",
        "acme.myshopify.com/x",
        "",
    ] {
        let mut request = session_request("shopify");
        request.params.insert("shop".into(), shop.into());
        let err = shopify.mint(&request, BASE).await.expect_err(shop);
        assert!(
            err.to_string().contains("shop is not valid"),
            "{shop}: {err}"
        );
    }
    let mut request = session_request("shopify");
    request
        .params
        .insert("shop".into(), "Acme.myshopify.com".into());
    let minted = shopify.mint(&request, BASE).await.expect("a valid shop");
    assert_eq!(minted.session.params["shop"], "acme.myshopify.com");
}

#[tokio::test]
async fn a_session_token_is_random_stored_as_its_hash_and_short_lived() {
    let h = harness(AuthServerConfig::default()).await;
    let now = h.clock.now().unix_timestamp();
    let mut tokens = std::collections::BTreeSet::new();
    for ttl in [None, Some(10), Some(1_800)] {
        let minted = h
            .minter
            .mint(
                &ConnectSessionRequest {
                    ttl_seconds: ttl,
                    ..session_request("fakeauth")
                },
                BASE,
            )
            .await
            .expect("minted");
        let token = minted.token.expose().to_owned();
        // 32 random bytes, base64url: 256 bits, well over the 128 required.
        assert_eq!(token.len(), 43, "{token}");
        assert!(tokens.insert(token.clone()), "tokens differ");
        assert_eq!(
            minted.session.expires_at - now,
            i64::from(ttl.unwrap_or(600)),
            "ten minutes by default, thirty at most"
        );
        // The store has the hash, never the token.
        let key = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        assert_eq!(
            h.sessions.take(&key, "fakeauth", now).await.expect("store"),
            SessionTake::Taken(Box::new(minted.session.clone()))
        );
        assert_eq!(
            h.sessions
                .take(&token, "fakeauth", now)
                .await
                .expect("store"),
            SessionTake::Missing
        );
    }
}

/// Regression: `start?tenant=victim-corp&return_to=…` attached the caller's provider
/// account to any tenant, and `&connection=<id>` replaced another tenant's account. The
/// start now needs a connect session; without one, nothing is stored and the browser is
/// not sent to the provider.
#[tokio::test]
async fn start_without_a_session_is_refused_and_stores_nothing() {
    let h = harness(AuthServerConfig::default()).await;
    let victim = h.connect().await;
    let before = h.stored(&victim).await;
    let states_before = h.states.len();
    for query in [
        vec![("tenant", "victim-corp"), ("return_to", RETURN_TO)],
        vec![
            ("tenant", "tenant-1"),
            ("connection", victim.as_str()),
            ("return_to", RETURN_TO),
        ],
        vec![("tenant", "tenant-1"), ("session", "")],
        vec![("session", "forged-or-guessed-session-token-0123456789")],
    ] {
        let query: Vec<(String, String)> = query
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let reply = web::oauth_route(&h.flow, "fakeauth", "start", query.clone(), None, BASE).await;
        assert_eq!(reply.status, 401, "{query:?}: {}", reply.body);
        assert!(
            reply
                .headers
                .iter()
                .all(|(name, _)| name != "location" && name != "set-cookie"),
            "{query:?}: no redirect, no cookie: {:?}",
            reply.headers
        );
        assert!(reply.body.contains("connect"), "{}", reply.body);
    }
    assert_eq!(
        h.states.len(),
        states_before,
        "no pending authorization stored"
    );
    assert_eq!(
        h.server.counters().authorize,
        1,
        "only the victim's own connect"
    );
    assert_eq!(h.stored(&victim).await, before);
    assert_eq!(
        h.connections
            .list_for_tenant("victim-corp")
            .await
            .expect("list"),
        Vec::new()
    );
}

#[tokio::test]
async fn a_session_works_once_for_its_provider_until_it_expires() {
    let h = harness(AuthServerConfig::default()).await;
    let start = |token: &str| StartRequest {
        session: Some(token.to_owned()),
    };
    let token = h.mint(&session_request("fakeauth")).await;
    h.flow
        .start("fakeauth", &start(&token), BASE)
        .await
        .expect("first use");
    let err = h
        .flow
        .start("fakeauth", &start(&token), BASE)
        .await
        .expect_err("second use");
    assert_eq!(err.status(), 401);
    assert!(err.to_string().contains("already used"), "{err}");

    // Expired: ten minutes by default, the shortest 10 seconds.
    let token = h.mint(&session_request("fakeauth")).await;
    h.clock.advance(time::Duration::seconds(600));
    let err = h
        .flow
        .start("fakeauth", &start(&token), BASE)
        .await
        .expect_err("expired");
    assert_eq!(err.status(), 401);
    assert!(err.to_string().contains("expired"), "{err}");
    let short = h
        .mint(&ConnectSessionRequest {
            ttl_seconds: Some(10),
            ..session_request("fakeauth")
        })
        .await;
    h.clock.advance(time::Duration::seconds(9));
    h.flow
        .start("fakeauth", &start(&short), BASE)
        .await
        .expect("within its ten seconds");
    assert_eq!(h.server.counters().authorize, 0, "start only redirects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_with_one_session_let_exactly_one_through() {
    let h = harness(AuthServerConfig::default()).await;
    let token = h.mint(&session_request("fakeauth")).await;
    let states_before = h.states.len();
    let starts = (0..16).map(|_| {
        let flow = h.flow.clone();
        let request = StartRequest {
            session: Some(token.clone()),
        };
        tokio::spawn(async move { flow.start("fakeauth", &request, BASE).await })
    });
    let mut allowed = 0;
    for start in starts {
        match start.await.expect("joined") {
            Ok(_) => allowed += 1,
            Err(err) => assert_eq!(err.status(), 401, "{err}"),
        }
    }
    assert_eq!(allowed, 1);
    assert_eq!(h.states.len(), states_before + 1);
}

#[tokio::test]
async fn the_in_memory_session_store_keeps_a_session_for_its_provider() {
    let store = InMemoryConnectSessionStore::default();
    let session = ConnectSession {
        provider: "github".into(),
        tenant: "t".into(),
        connection: None,
        return_to: RETURN_TO.into(),
        end_user: None,
        params: Default::default(),
        allow_account_change: false,
        sandbox: false,
        created_at: 100,
        expires_at: 700,
    };
    store.put("k", &session).await.expect("put");
    assert!(store.put("k", &session).await.is_err(), "never overwritten");
    assert_eq!(
        store.take("k", "slack", 200).await.expect("take"),
        SessionTake::OtherProvider,
        "another provider's start leaves it"
    );
    assert_eq!(
        store.take("k", "github", 700).await.expect("take"),
        SessionTake::Expired
    );
    assert_eq!(
        store.take("k", "github", 699).await.expect("take"),
        SessionTake::Taken(Box::new(session))
    );
    assert_eq!(
        store.take("k", "github", 699).await.expect("take"),
        SessionTake::Missing
    );
}

/// The catalog entry names the account (`account_id` in the fake's token responses).
const ACCOUNT_FIELD: &str = "account_id = \"/account_id\"\n";

/// Regression: a reconnect completed with another account replaced the connection's
/// account (`test-user` → `attacker-account`) and tokens without revoking the old grant.
/// Now it is refused: nothing stored changes, and the new grant is revoked.
#[tokio::test]
async fn a_reconnect_with_another_account_is_refused_and_its_grant_revoked() {
    let h = harness_with(AuthServerConfig::default(), ACCOUNT_FIELD).await;
    let id = h.connect().await;
    let before = h.stored(&id).await;
    assert_eq!(before.account_id.as_deref(), Some("test-user"));

    h.server.sign_in_as("attacker-account");
    let query = h.authorize_as(Some(id.clone())).await;
    let err = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect_err("another account");
    assert_eq!(err.status(), 403);
    assert!(matches!(err, FlowError::AccountMismatch { .. }), "{err}");
    assert!(
        err.public_message().contains("another fakeauth account"),
        "{}",
        err.public_message()
    );
    assert!(
        !err.public_message().contains("test-user")
            && !err.public_message().contains("attacker-account"),
        "the page names no account"
    );
    assert_eq!(h.stored(&id).await, before, "account and tokens unchanged");
    let grants = h.server.grants();
    assert_eq!(grants.len(), 2);
    assert_eq!(
        (grants[0].account.as_str(), grants[0].revoked),
        ("test-user", false),
        "the connection's grant is untouched"
    );
    assert_eq!(
        (grants[1].account.as_str(), grants[1].revoked),
        ("attacker-account", true),
        "the refused grant is revoked"
    );
    let token = h.vault.access_token(&id).await.expect("token");
    assert_eq!(
        h.api_status(&token).await,
        200,
        "the stored token still works"
    );

    // The same account reconnects.
    h.server.sign_in_as("test-user");
    let query = h.authorize_as(Some(id.clone())).await;
    assert!(matches!(
        h.flow.callback("fakeauth", &query, BASE).await,
        Ok(CallbackOutcome::Connected { ref connection_id, .. }) if *connection_id == id
    ));
    let after = h.stored(&id).await;
    assert_eq!(after.account_id.as_deref(), Some("test-user"));
    assert_ne!(after.tokens, before.tokens, "new tokens stored");
}

#[tokio::test]
async fn a_session_that_allows_an_account_change_may_bring_another_account() {
    let h = harness_with(AuthServerConfig::default(), ACCOUNT_FIELD).await;
    let id = h.connect().await;
    h.server.sign_in_as("second-account");
    let query = h
        .authorize_with(ConnectSessionRequest {
            connection: Some(id.clone()),
            allow_account_change: true,
            end_user: Some(EndUser {
                id: "user-42".into(),
                display_name: Some("Ada".into()),
            }),
            ..session_request("fakeauth")
        })
        .await;
    let outcome = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("allowed");
    assert!(
        matches!(outcome, CallbackOutcome::Connected { ref connection_id, .. } if *connection_id == id)
    );
    let stored = h.stored(&id).await;
    assert_eq!(stored.account_id.as_deref(), Some("second-account"));
    assert_eq!(
        stored.end_user.as_ref().map(|u| u.id.as_str()),
        Some("user-42")
    );
    assert!(h.server.grants().iter().all(|grant| !grant.revoked));
}

/// Issue 30: a connection made from a session marked `sandbox` is marked too, in the
/// stored document the contract check scans for; a reconnect keeps the mark.
#[tokio::test]
async fn a_sandbox_session_marks_its_connection_and_a_reconnect_keeps_the_mark() {
    let h = harness(AuthServerConfig::default()).await;
    let query = h
        .authorize_with(ConnectSessionRequest {
            sandbox: true,
            ..session_request("fakeauth")
        })
        .await;
    let Ok(CallbackOutcome::Connected { connection_id, .. }) =
        h.flow.callback("fakeauth", &query, BASE).await
    else {
        panic!("connected");
    };
    let stored = h.stored(&connection_id).await;
    assert!(stored.sandbox);
    assert!(
        serde_json::to_string(&stored)
            .expect("doc")
            .contains(r#""sandbox":true"#)
    );
    let query = h.authorize_as(Some(connection_id.clone())).await;
    assert!(h.flow.callback("fakeauth", &query, BASE).await.is_ok());
    assert!(h.stored(&connection_id).await.sandbox, "kept");
    // A connection from an ordinary session is not one, and its document says nothing.
    let other = h.connect().await;
    let stored = h.stored(&other).await;
    assert!(!stored.sandbox);
    assert!(
        !serde_json::to_string(&stored)
            .expect("doc")
            .contains("sandbox")
    );
}

#[test]
fn a_reconnect_keeps_an_account_only_when_it_can_be_compared() {
    use super::flow::same_account;
    assert!(same_account(Some("a"), Some("a")));
    assert!(!same_account(Some("a"), Some("b")));
    assert!(!same_account(Some("a"), None), "cannot confirm: refused");
    assert!(same_account(None, Some("b")), "nothing recorded to compare");
    assert!(same_account(None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_callers_share_one_refresh() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    h.server.set_token_delay(Duration::from_millis(300));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let vault = h.vault.clone();
        let id = id.clone();
        calls.spawn(async move { vault.access_token(&id).await });
    }
    let tokens = calls.join_all().await;
    assert_eq!(h.server.counters().refreshes, 1, "exactly one token call");
    let first = tokens[0].as_ref().expect("token").value.clone();
    for token in &tokens {
        let token = token.as_ref().expect("every caller gets a token");
        assert_eq!(
            token.value.expose(),
            first.expose(),
            "every caller gets the new token"
        );
    }
    let token = tokens[0].as_ref().expect("token");
    assert_eq!(h.api_status(token).await, 200);
    assert_eq!(h.stored(&id).await.token_generation, 2);
    assert!(h.stored(&id).await.lease.is_none(), "the lease is released");
}

impl Harness {
    /// An API call with the connection's token; on a 401 the vault refreshes and the
    /// call is sent once more. The status of the last answer.
    async fn call_api(&self, id: &str) -> Result<u16, VaultError> {
        self.vault
            .send_authorized(id, |token| {
                self.http
                    .get(self.server.api_url())
                    .bearer_auth(token.value.expose())
            })
            .await
            .map(|response| response.status().as_u16())
    }

    /// The provider's lifetime observations.
    async fn observations(&self) -> Vec<LifetimeObservation> {
        self.connections
            .lifetime_observations("fakeauth")
            .await
            .expect("read")
    }

    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }
}

/// The provider said 3,600 s; its tokens die at 2,820 s (as observed in the wild).
const STATED: i64 = 3_600;
const REAL: i64 = 2_820;
/// The catalog's margin (`lifetime_margin_seconds`).
const MARGIN: i64 = 300;

#[tokio::test]
async fn three_connections_seeing_tokens_die_early_teach_the_real_lifetime() {
    let h = harness(AuthServerConfig::default()).await;
    let ids = [h.connect().await, h.connect().await, h.connect().await];
    h.clock.advance(time::Duration::seconds(REAL));
    h.server.expire_access_tokens_now();
    for (seen, id) in ids.iter().enumerate() {
        assert_eq!(
            h.call_api(id).await.expect("sent"),
            200,
            "refreshed, retried"
        );
        let learned = learned_lifetime(&h.observations().await, h.now());
        assert_eq!(
            learned,
            (seen == 2).then_some(2_820),
            "learned once three connections agree ({} so far)",
            seen + 1
        );
    }
    assert_eq!(h.server.counters().refreshes, 3);
    assert_eq!(h.server.counters().api_rejections, 3);

    // A new token is refreshed before the real lifetime runs out...
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + REAL - MARGIN),
    );
    // ... and so are the ones issued before it was learned, on use.
    h.clock.advance(time::Duration::seconds(REAL - MARGIN));
    let before = h.stored(&ids[0]).await.token_generation;
    let token = h.vault.access_token(&ids[0]).await.expect("token");
    assert_eq!(
        token.generation,
        before + 1,
        "refreshed ahead of the real expiry"
    );
}

#[tokio::test]
async fn one_connection_s_early_401_does_not_change_another_s_refresh_time() {
    let h = harness(AuthServerConfig::default()).await;
    let honest = h.connect().await;
    let attackers = [h.connect().await, h.connect().await];
    let honest_refresh_at = h.stored(&honest).await.refresh_at;
    // The attackers' tokens are rejected a minute after issue (they revoked them), and
    // their refreshes succeed: observations are recorded, twice.
    h.clock.advance(time::Duration::seconds(60));
    for id in &attackers {
        let token = h.vault.access_token(id).await.expect("token");
        h.vault.token_rejected(id, &token).await.expect("refreshed");
    }
    assert_eq!(h.observations().await.len(), 2);
    assert_eq!(learned_lifetime(&h.observations().await, h.now()), None);
    assert_eq!(h.stored(&honest).await.refresh_at, honest_refresh_at);
    // Past the time a 60 s lifetime (or its floor) would have made it due, the honest
    // connection's token is handed out as it is.
    h.clock.advance(time::Duration::seconds(STATED / 2));
    let token = h.vault.access_token(&honest).await.expect("token");
    assert_eq!(token.generation, 1, "not refreshed");
    assert_eq!(
        h.server.counters().refreshes,
        2,
        "the attackers' refreshes only"
    );
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + STATED - MARGIN),
        "new tokens keep the stated lifetime"
    );
}

#[tokio::test]
async fn a_learned_lifetime_never_goes_below_half_the_stated_one() {
    let h = harness(AuthServerConfig::default()).await;
    let ids = [h.connect().await, h.connect().await, h.connect().await];
    h.clock.advance(time::Duration::seconds(60));
    for id in &ids {
        let token = h.vault.access_token(id).await.expect("token");
        h.vault.token_rejected(id, &token).await.expect("refreshed");
    }
    assert_eq!(learned_lifetime(&h.observations().await, h.now()), Some(60));
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + STATED / 2 - MARGIN),
        "floored at 1,800 s, minus the margin"
    );
}

#[test]
fn the_floor_is_half_the_stated_lifetime_and_five_minutes() {
    assert_eq!(
        vault::effective_lifetime(Some(3_600), Some(60)),
        Some(1_800)
    );
    assert_eq!(
        vault::effective_lifetime(Some(3_600), Some(2_820)),
        Some(2_820)
    );
    assert_eq!(
        vault::effective_lifetime(Some(3_600), Some(5_000)),
        Some(3_600),
        "never longer than stated"
    );
    assert_eq!(vault::effective_lifetime(Some(400), Some(10)), Some(300));
    assert_eq!(
        vault::effective_lifetime(Some(120), Some(10)),
        Some(120),
        "a floor above the stated lifetime leaves the stated one"
    );
    assert_eq!(vault::effective_lifetime(Some(3_600), None), Some(3_600));
    assert_eq!(
        vault::effective_lifetime(None, Some(2_820)),
        None,
        "only a stated lifetime is shortened"
    );
}

#[test]
fn a_learned_lifetime_needs_three_recent_connections() {
    let seen = |connection: &str, seconds: u64, at: i64| LifetimeObservation {
        connection: connection.into(),
        seconds,
        at,
    };
    let now = 1_000_000_000;
    assert_eq!(learned_lifetime(&[], now), None);
    let two = [seen("a", 10, now), seen("b", 20, now)];
    assert_eq!(learned_lifetime(&two, now), None);
    let three = [
        seen("a", 10, now),
        seen("b", 20, now),
        seen("c", 2_820, now),
    ];
    assert_eq!(
        learned_lifetime(&three, now),
        Some(2_820),
        "two low observations do not pull it below the third connection's"
    );
    let repeated = [
        seen("a", 10, now),
        seen("a", 11, now - 1),
        seen("b", 20, now),
    ];
    assert_eq!(
        learned_lifetime(&repeated, now),
        None,
        "one connection counts once"
    );
    let window = OBSERVATION_WINDOW_SECONDS;
    let aging = [
        seen("a", 2_820, now - window + 1),
        seen("b", 2_820, now),
        seen("c", 2_820, now),
    ];
    assert_eq!(learned_lifetime(&aging, now), Some(2_820));
    assert_eq!(
        learned_lifetime(&aging, now + 1),
        None,
        "older than seven days"
    );
}

#[tokio::test]
async fn a_learned_lifetime_lapses_after_seven_days_without_confirmation() {
    let h = harness(AuthServerConfig::default()).await;
    let ids = [h.connect().await, h.connect().await, h.connect().await];
    h.clock.advance(time::Duration::seconds(REAL));
    h.server.expire_access_tokens_now();
    for id in &ids {
        assert_eq!(h.call_api(id).await.expect("sent"), 200);
    }
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + REAL - MARGIN)
    );
    h.clock
        .advance(time::Duration::seconds(OBSERVATION_WINDOW_SECONDS - 1));
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + REAL - MARGIN),
        "still within the week"
    );
    h.clock.advance(time::Duration::seconds(1));
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + STATED - MARGIN),
        "a week without confirmation: back to the stated lifetime"
    );
}

#[tokio::test]
async fn revoked_grants_teach_nothing() {
    let h = harness(AuthServerConfig::default()).await;
    let ids = [h.connect().await, h.connect().await, h.connect().await];
    h.clock.advance(time::Duration::seconds(REAL));
    // Every user revokes the app: each token gets a 401 before its stated expiry, and
    // each refresh is refused.
    h.server.revoke_all_grants();
    for id in &ids {
        let err = h.call_api(id).await.expect_err("revoked");
        assert!(matches!(err, VaultError::NeedsReauth(_)), "{err}");
    }
    assert_eq!(h.server.counters().api_rejections, 3);
    assert!(h.observations().await.is_empty(), "nothing learned");
    let fresh = h.connect().await;
    assert_eq!(
        h.stored(&fresh).await.refresh_at,
        Some(h.now() + STATED - MARGIN)
    );
}

#[tokio::test]
async fn a_revoked_grant_marks_the_connection_and_announces_it() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.server.revoke_all_grants();
    h.make_due();
    let err = h.vault.access_token(&id).await.expect_err("revoked");
    assert!(
        matches!(err, VaultError::NeedsReauth(ref code) if code == "invalid_grant"),
        "{err}"
    );
    let stored = h.stored(&id).await;
    assert_eq!(stored.state, ConnectionState::NeedsReauth);
    assert!(
        stored.tokens.is_some(),
        "kept until the user reconnects or disconnects"
    );
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "connection.needs_reauth");
    assert_eq!(events[0].subject.as_deref(), Some(id.as_str()));
    // Tenant and connection, never a usable link: only the product's backend can
    // mint the session a reconnect needs.
    assert_eq!(events[0].data["tenant"], "tenant-1");
    assert_eq!(events[0].data["connection_id"], id.as_str());
    let text = events[0].data.to_string();
    assert!(
        events[0].data.get("reconnect_url").is_none() && !text.contains("/oauth/"),
        "{text}"
    );
    let err = h
        .vault
        .access_token(&id)
        .await
        .expect_err("still needs reauth");
    assert!(matches!(err, VaultError::NeedsReauth(_)));
    assert_eq!(h.server.counters().refreshes, 1, "no more token calls");
}

#[tokio::test]
async fn transient_token_endpoint_failures_leave_the_tokens_alone() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    let before = h.stored(&id).await;
    for failure in [
        TokenFailure::Status(503),
        TokenFailure::TooManyRequests {
            retry_after_seconds: 30,
        },
        TokenFailure::HtmlErrorPage,
    ] {
        h.server.fail_next_token_calls(1, failure.clone());
        let err = h.vault.access_token(&id).await.expect_err("transient");
        assert!(
            matches!(err, VaultError::Unavailable { .. }),
            "{failure:?}: {err}"
        );
        let after = h.stored(&id).await;
        assert_eq!(after.tokens, before.tokens, "{failure:?}: tokens untouched");
        assert_eq!(
            after.state,
            ConnectionState::Active,
            "never a reason to disconnect"
        );
        assert!(after.lease.is_none(), "the lease is released");
        assert!(after.last_error.is_some());
    }
    let token = h.vault.access_token(&id).await.expect("recovers");
    assert_eq!(h.api_status(&token).await, 200);
}

#[tokio::test]
async fn rotated_refresh_tokens_survive_a_store_outage_after_the_token_call() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    // The lease is taken (one write), the token call succeeds (the old refresh token is
    // now dead at the provider), then the next two writes fail: the new pair must still
    // be stored.
    h.connections.fail_replaces(1, 2);
    let token = h.vault.access_token(&id).await;
    assert_eq!(
        h.connections.injected_failures_left(),
        0,
        "both failures were hit"
    );
    let token = token.expect("stored after retries");
    assert_eq!(h.api_status(&token).await, 200);
    h.make_due();
    let again = h
        .vault
        .access_token(&id)
        .await
        .expect("the stored refresh token works");
    assert_ne!(again.value.expose(), token.value.expose());
    assert_eq!(h.server.counters().refreshes, 2);
}

#[tokio::test]
async fn disconnect_revokes_at_the_provider_and_deletes_the_connection() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    let tenant = h.stored(&id).await.tenant;
    let token = h.vault.access_token(&id).await.expect("token");
    h.vault.disconnect(&id, false).await.expect("disconnect");
    assert_eq!(h.server.counters().revocations, 1);
    assert_eq!(h.api_status(&token).await, 401, "revoked at the provider");
    assert!(h.connections.get(&id).await.expect("store").is_none());
    let events = h.bus.events();
    let deleted = events.last().expect("an event");
    assert_eq!(deleted.event_type, "connection.deleted");
    // Named as every event about a connection is: tenant and connection attributes.
    assert_eq!(deleted.tenant.as_deref(), Some(tenant.as_str()));
    assert_eq!(deleted.connection.as_deref(), Some(id.as_str()));
    assert!(matches!(
        h.vault.access_token(&id).await,
        Err(VaultError::NotFound(_))
    ));
}

/// Forced, a disconnect reads nothing of the provider's entry: a connection whose
/// provider is gone from the catalog (or lost its OAuth section) is still deleted.
#[tokio::test]
async fn a_forced_disconnect_needs_no_catalog_entry() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    let mut stored = h.stored(&id).await;
    stored.provider = "retired-provider".into();
    h.connections.delete(&id).await.expect("delete");
    h.connections.insert(&stored).await.expect("insert");
    assert!(
        h.vault.disconnect(&id, false).await.is_err(),
        "revoking needs the provider's entry"
    );
    h.vault
        .disconnect(&id, true)
        .await
        .expect("forced disconnect");
    assert!(h.connections.get(&id).await.expect("store").is_none());
    assert_eq!(h.server.counters().revocations, 0, "nothing was revoked");
    assert_eq!(
        h.bus.events().last().map(|e| e.event_type.as_str()),
        Some("connection.deleted")
    );
}

#[tokio::test]
async fn reconnecting_a_needs_reauth_connection_keeps_its_id() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.server.revoke_all_grants();
    h.make_due();
    assert!(h.vault.access_token(&id).await.is_err());
    let query = h.authorize_as(Some(id.clone())).await;
    let outcome = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("callback");
    assert!(
        matches!(outcome, CallbackOutcome::Connected { ref connection_id, .. } if *connection_id == id)
    );
    let stored = h.stored(&id).await;
    assert_eq!(stored.state, ConnectionState::Active);
    let token = h.vault.access_token(&id).await.expect("token");
    assert_eq!(h.api_status(&token).await, 200);
}

#[tokio::test]
async fn the_scheduled_refresher_renews_what_is_due_and_reports_lost_grants() {
    let h = harness(AuthServerConfig::default()).await;
    let healthy = h.connect().await;
    let revoked = h.connect().await;
    let report = h
        .vault
        .refresh_due(Duration::from_secs(600), Duration::from_secs(60))
        .await
        .expect("run");
    assert_eq!(report, RefreshReport::default(), "nothing due yet");
    // Revoke the second connection's grant only: revoke its refresh token at the provider.
    let tokens = h
        .vault
        .tokens(&h.stored(&revoked).await)
        .await
        .expect("tokens");
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "token",
            tokens.refresh_token.expect("refresh token").expose(),
        )
        .append_pair("client_id", "junction-test-client")
        .append_pair("client_secret", "junction-test-secret")
        .finish();
    let response = h
        .http
        .post(h.server.revoke_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("revoked");
    assert_eq!(response.status(), 200);
    h.clock.advance(time::Duration::seconds(3_000));
    let report = h
        .vault
        .refresh_due(Duration::from_secs(600), Duration::from_secs(60))
        .await
        .expect("run");
    assert_eq!(
        report,
        RefreshReport {
            due: 2,
            refreshed: 1,
            needs_reauth: 1,
            ..RefreshReport::default()
        }
    );
    assert_eq!(h.stored(&healthy).await.token_generation, 2);
    assert_eq!(h.stored(&revoked).await.state, ConnectionState::NeedsReauth);
}

/// A catalog with two providers, `fakeauth` and `otherauth`, each its own server.
fn two_provider_catalog(fake: &FakeAuthServer, other: &FakeAuthServer) -> &'static Catalog {
    let entry = |id: &str, server: &FakeAuthServer| {
        format!(
            "id = \"{id}\"\nname = \"{id}\"\ndocs = \"https://example.com/{id}\"\n\n[oauth]\n{}",
            server.oauth_catalog_fields()
        )
    };
    let (fake, other) = (entry("fakeauth", fake), entry("otherauth", other));
    let catalog = Catalog::from_files_with_rules(
        &[
            ("fakeauth.toml", fake.as_str()),
            ("otherauth.toml", other.as_str()),
        ],
        junction_catalog::EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    Box::leak(Box::new(catalog))
}

/// Captures this thread's log lines (JSON) while the guard lives.
pub(crate) fn capture_logs() -> (
    tracing::subscriber::DefaultGuard,
    Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    (tracing::subscriber::set_default(subscriber), buffer)
}

/// The captured lines.
pub(crate) fn captured(buffer: &std::sync::Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_failing_provider_does_not_stop_the_sweep_for_the_others() {
    let fake = start_server("fakeauth", AuthServerConfig::default()).await;
    let other = start_server("otherauth", AuthServerConfig::default()).await;
    let catalog = two_provider_catalog(&fake, &other);
    let mut h = harness_over(fake, catalog, &["fakeauth", "otherauth"]);
    // One refresh at a time, so which ones run after the failures is certain.
    h.vault.settings.sweep_concurrency = 1;
    let healthy = [
        h.connect_to("fakeauth").await,
        h.connect_to("fakeauth").await,
        h.connect_to("fakeauth").await,
    ];
    let failing: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(h.connect_to("otherauth").await);
        }
        ids
    };
    // One healthy-provider item whose sealed tokens no longer open (a key-service
    // failure for that item alone).
    let mut broken = h.stored(&healthy[2]).await;
    broken.tokens = h.stored(&failing[0]).await.tokens;
    broken.version += 1;
    assert!(
        h.connections
            .replace(&broken, broken.version - 1)
            .await
            .expect("replace")
    );
    other.fail_next_token_calls(100, TokenFailure::Status(503));
    h.clock.advance(time::Duration::seconds(3_000));
    let (_guard, logs) = capture_logs();
    let report = h
        .vault
        .refresh_due(Duration::from_secs(600), Duration::from_secs(60))
        .await
        .expect("the sweep itself succeeds");
    assert_eq!(
        report,
        RefreshReport {
            due: 8,
            refreshed: 2,
            failed: 1 + PROVIDER_FAILURE_LIMIT,
            skipped: 5 - PROVIDER_FAILURE_LIMIT,
            ..RefreshReport::default()
        }
    );
    for id in &healthy[..2] {
        assert_eq!(h.stored(id).await.token_generation, 2, "refreshed");
    }
    assert_eq!(
        other.counters().failed_token_calls,
        PROVIDER_FAILURE_LIMIT,
        "the failing provider is not called again after the limit"
    );
    let logs = captured(&logs);
    assert_eq!(
        logs.lines()
            .filter(|line| line.contains("\"provider\":\"otherauth\"")
                && line.contains("scheduled refresh failed")
                && line.contains("token endpoint answered 503"))
            .count(),
        PROVIDER_FAILURE_LIMIT,
        "each failure logged with its cause: {logs}"
    );
    assert!(
        logs.lines().any(|line| line.contains(&healthy[2])
            && line.contains("scheduled refresh failed")
            && line.contains("do not open")),
        "{logs}"
    );
    for id in &failing {
        let stored = h.stored(id).await;
        assert_eq!(
            stored.state,
            ConnectionState::Active,
            "never a reason to disconnect"
        );
        assert!(stored.lease.is_none());
    }
}

#[tokio::test]
async fn a_sweep_out_of_time_defers_the_rest() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    let report = h
        .vault
        .refresh_due(Duration::from_secs(600), Duration::ZERO)
        .await
        .expect("run");
    assert_eq!(
        report,
        RefreshReport {
            due: 1,
            deferred: 1,
            ..RefreshReport::default()
        }
    );
    assert_eq!(h.stored(&id).await.token_generation, 1);
}

/// A state store whose every call fails as an unreachable DynamoDB does.
#[derive(Debug)]
struct UnreachableStates;

const SDK_TEXT: &str = "dispatch failure: io error: error trying to connect: tcp connect error: Connection refused (os error 111)";

#[async_trait::async_trait]
impl StateStore for UnreachableStates {
    async fn put(
        &self,
        _key: &str,
        _pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError> {
        Err(ConnectionStoreError(SDK_TEXT.into()))
    }

    async fn take_bound(
        &self,
        _key: &str,
        _binding: &str,
    ) -> Result<BoundTake, ConnectionStoreError> {
        Err(ConnectionStoreError(SDK_TEXT.into()))
    }
}

#[tokio::test]
async fn an_unreachable_store_gives_a_plain_503_page_and_a_log_line_with_the_cause() {
    let h = harness(AuthServerConfig::default()).await;
    let flow = ConnectFlow::new(
        h.vault.clone(),
        Arc::new(UnreachableStates),
        h.sessions.clone(),
        flow_settings(),
    );
    let token = h.mint(&session_request("fakeauth")).await;
    let (_guard, logs) = capture_logs();
    for (step, query) in [
        ("start", vec![("session".to_owned(), token)]),
        ("callback", vec![("state".to_owned(), "s".repeat(43))]),
    ] {
        let reply = web::oauth_route(&flow, "fakeauth", step, query, None, BASE).await;
        assert_eq!(reply.status, 503, "{step}");
        assert!(
            !reply.body.contains("dispatch failure") && !reply.body.contains("os error"),
            "{step}: {}",
            reply.body
        );
    }
    let logs = captured(&logs);
    assert_eq!(
        logs.lines()
            .filter(|line| line.contains("OAuth step failed") && line.contains(SDK_TEXT))
            .count(),
        2,
        "{logs}"
    );
}

/// What an AWS SDK error looks like to `Display`: "service error", the real cause
/// (the service's code and message) only in `source()`.
#[derive(Debug, thiserror::Error)]
#[error("service error")]
struct ServiceError(#[source] std::io::Error);

const SERVICE_CAUSE: &str = "AccessDeniedException: not authorized to perform dynamodb:GetItem";

fn service_error() -> ConnectionStoreError {
    ConnectionStoreError(Box::new(ServiceError(std::io::Error::other(SERVICE_CAUSE))))
}

/// A connection store whose every call fails as DynamoDB does when access is denied.
#[derive(Debug)]
struct DeniedConnections;

#[async_trait::async_trait]
impl ConnectionStore for DeniedConnections {
    async fn insert(&self, _connection: &Connection) -> Result<(), ConnectionStoreError> {
        Err(service_error())
    }

    async fn get(&self, _id: &str) -> Result<Option<Connection>, ConnectionStoreError> {
        Err(service_error())
    }

    async fn replace(
        &self,
        _next: &Connection,
        _expected: u64,
    ) -> Result<bool, ConnectionStoreError> {
        Err(service_error())
    }

    async fn delete(&self, _id: &str) -> Result<(), ConnectionStoreError> {
        Err(service_error())
    }

    async fn list_for_tenant(
        &self,
        _tenant: &str,
    ) -> Result<Vec<Connection>, ConnectionStoreError> {
        Err(service_error())
    }

    async fn list_all(&self, _limit: usize) -> Result<Vec<Connection>, ConnectionStoreError> {
        Err(service_error())
    }

    async fn due_for_refresh(
        &self,
        _before: i64,
        _limit: usize,
    ) -> Result<Vec<Result<Connection, UnreadableConnection>>, ConnectionStoreError> {
        Err(service_error())
    }

    async fn lifetime_observations(
        &self,
        _provider: &str,
    ) -> Result<Vec<LifetimeObservation>, ConnectionStoreError> {
        Err(service_error())
    }

    async fn record_lifetime(
        &self,
        _provider: &str,
        _observation: LifetimeObservation,
    ) -> Result<(), ConnectionStoreError> {
        Err(service_error())
    }

    async fn last_events(
        &self,
        _ids: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, ConnectionStoreError> {
        Err(service_error())
    }
}

/// A store failure is `Unavailable` naming the step, with the store's error as its
/// source: the service's own message, which an SDK error's `Display` leaves out,
/// reaches the log line's chain; the management API answers its fixed 503.
#[tokio::test]
async fn a_failing_store_keeps_its_cause_in_the_error_chain() {
    let h = harness(AuthServerConfig::default()).await;
    let vault = TokenVault {
        connections: Arc::new(DeniedConnections),
        ..h.vault.clone()
    };
    let (_guard, logs) = capture_logs();
    for err in [
        vault.access_token("conn-1").await.expect_err("store down"),
        vault
            .refresh_due(Duration::from_secs(600), Duration::from_secs(60))
            .await
            .expect_err("store down"),
    ] {
        assert!(
            matches!(
                err,
                VaultError::Unavailable {
                    step: "the connection store",
                    source: Some(_)
                }
            ),
            "{err:?}"
        );
        let chain = error_chain(&err);
        assert_eq!(
            chain,
            format!(
                "temporarily unavailable: the connection store: connection store unavailable: service error: {SERVICE_CAUSE}"
            )
        );
        let reply = web::vault_error_reply(&err);
        assert_eq!(reply.status, 503);
        assert!(!reply.body.contains("AccessDenied"), "{}", reply.body);
    }
    assert!(
        captured(&logs).contains(SERVICE_CAUSE),
        "logged with its cause"
    );
}

/// A provider API call that cannot connect is `Unreachable` by kind, the transport
/// error (without its URL) its source.
#[tokio::test]
async fn an_unreachable_provider_api_keeps_the_transport_error_as_its_cause() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("http://{}/v1/me", listener.local_addr().expect("address"));
    drop(listener);
    let err = h
        .vault
        .send_authorized(&id, |token| {
            h.http.get(&closed).bearer_auth(token.value.expose())
        })
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            err,
            VaultError::Unreachable {
                reason: UnreachableReason::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    let chain = error_chain(&err);
    assert!(
        chain.starts_with("provider API unreachable (connect): "),
        "{chain}"
    );
    let mut cause = std::error::Error::source(&err);
    let mut found = false;
    while let Some(current) = cause {
        found |= current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        cause = current.source();
    }
    assert!(found, "the refused connection is in the chain: {chain}");
    assert!(!chain.contains(&closed), "no URL in the chain: {chain}");
}
