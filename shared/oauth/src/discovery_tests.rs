//! Discovery: metadata locations, metadata → spec, and ID token validation with tokens
//! minted here (ES256, a throwaway key). The end-to-end test against a real OpenID
//! provider (panva's `oidc-provider`) is `infra/local-stack/tests/stack/oidc.rs`.

use p256::ecdsa::signature::Signer as _;
use serde_json::json;

use super::*;
use junction_webhooks::jwt::{JwkSet, es256_test_jwk};

const ISSUER: &str = "https://id.example.com";
const NOW: i64 = 1_700_000_000;

fn entry(scopes: &[&str]) -> DiscoverySpec {
    DiscoverySpec {
        issuer: ISSUER.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        authorize_params: Default::default(),
        lifetime_margin_seconds: 300,
        default_lifetime_seconds: None,
        reauth_errors: Vec::new(),
        notes: None,
    }
}

/// The members `oidc-provider` publishes for a confidential-client setup.
fn metadata(extra: serde_json::Value) -> IssuerMetadata {
    let mut document = json!({
        "issuer": ISSUER,
        "authorization_endpoint": "https://id.example.com/auth",
        "token_endpoint": "https://id.example.com/token",
        "jwks_uri": "https://id.example.com/jwks",
        "revocation_endpoint": "https://id.example.com/token/revocation",
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_jwt", "client_secret_post", "private_key_jwt", "none"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "PS256", "RS256"],
    });
    if let (Some(document), Some(extra)) = (document.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            if value.is_null() {
                document.remove(key);
            } else {
                document.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(document).expect("metadata")
}

#[test]
fn metadata_locations_follow_both_specifications() {
    assert_eq!(
        metadata_urls("https://id.example.com", true),
        [
            "https://id.example.com/.well-known/openid-configuration",
            "https://id.example.com/.well-known/oauth-authorization-server",
        ]
    );
    assert_eq!(
        metadata_urls("https://host.example.com/realms/main/", false),
        [
            "https://host.example.com/.well-known/oauth-authorization-server/realms/main",
            "https://host.example.com/realms/main/.well-known/openid-configuration",
        ],
        "RFC 8414 §3.1 inserts the well-known segment before the issuer's path"
    );
}

#[test]
fn metadata_becomes_a_spec() {
    let spec = resolve(
        &entry(&["openid", "offline_access"]),
        &metadata(json!({})),
        EndpointRules::Public,
    )
    .expect("usable metadata");
    assert_eq!(spec.authorize_url, "https://id.example.com/auth");
    assert_eq!(spec.token_url, "https://id.example.com/token");
    assert!(spec.pkce, "S256 is listed");
    assert_eq!(spec.client_auth, ClientAuth::ClientSecretBasic);
    assert!(matches!(
        spec.revocation,
        Revocation::Rfc7009 { ref url } if url == "https://id.example.com/token/revocation"
    ));
    let rule = spec.openid.expect("openid rule");
    assert_eq!(rule.issuer, ISSUER);
    assert_eq!(
        rule.algorithms,
        [JwtAlgorithm::ES256, JwtAlgorithm::RS256],
        "only what both sides support"
    );

    let plain = resolve(
        &entry(&["read"]),
        &metadata(json!({
            "code_challenge_methods_supported": ["plain"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "revocation_endpoint": null,
            "jwks_uri": null,
        })),
        EndpointRules::Public,
    )
    .expect("an OAuth-only server");
    assert!(!plain.pkce, "plain is never used");
    assert_eq!(plain.client_auth, ClientAuth::ClientSecretPost);
    assert!(matches!(plain.revocation, Revocation::None { .. }));
    assert_eq!(plain.callback_issuer, None);
    let rfc9207 = resolve(
        &entry(&["read"]),
        &metadata(json!({ "authorization_response_iss_parameter_supported": true })),
        EndpointRules::Public,
    )
    .expect("usable");
    assert_eq!(rfc9207.callback_issuer.as_deref(), Some(ISSUER));
    assert!(plain.openid.is_none());

    let default_auth = resolve(
        &entry(&["read"]),
        &metadata(json!({ "token_endpoint_auth_methods_supported": null })),
        EndpointRules::Public,
    )
    .expect("usable");
    assert_eq!(
        default_auth.client_auth,
        ClientAuth::ClientSecretBasic,
        "RFC 8414 §2 default"
    );
}

#[test]
fn unusable_metadata_is_refused_with_the_reason() {
    let refuse = |extra: serde_json::Value, scopes: &[&str]| {
        resolve(&entry(scopes), &metadata(extra), EndpointRules::Public).expect_err("refused")
    };
    assert!(
        refuse(json!({ "issuer": "https://evil.example.com" }), &["openid"]).contains("issuer")
    );
    assert!(
        refuse(
            json!({ "token_endpoint": "http://id.example.com/token" }),
            &["read"]
        )
        .contains("token_endpoint")
    );
    assert!(
        refuse(json!({ "authorization_endpoint": null }), &["read"])
            .contains("authorization_endpoint")
    );
    // The review's reproducer: a loopback-looking prefix with the real host after `@`
    // (it received the code, the PKCE verifier and a refresh token over plain http).
    for (member, hostile) in [
        ("token_endpoint", "http://127.0.0.1:@[::1]:8080/token"),
        (
            "token_endpoint",
            "https://id.example.com@evil.example/token",
        ),
        ("authorization_endpoint", "https://169.254.169.254/auth"),
        ("revocation_endpoint", "https://10.0.0.7/revoke"),
        ("token_endpoint", "https://id.example.com/{client_id}/token"),
    ] {
        let reason = refuse(json!({ member: hostile }), &["read"]);
        assert!(reason.contains(member), "{hostile}: {reason}");
    }
    assert!(
        refuse(
            json!({ "jwks_uri": "http://127.0.0.1:@169.254.169.254/jwks" }),
            &["openid"]
        )
        .contains("jwks_uri")
    );
    // Even the test rules take loopback only, and never through user-info.
    let local = resolve(
        &entry(&["read"]),
        &metadata(json!({ "token_endpoint": "http://127.0.0.1:8080/token" })),
        EndpointRules::LoopbackHttpForTests,
    );
    assert!(local.is_ok());
    let smuggled = resolve(
        &entry(&["read"]),
        &metadata(json!({ "token_endpoint": "http://127.0.0.1:@[::1]:8080/token" })),
        EndpointRules::LoopbackHttpForTests,
    );
    assert!(smuggled.is_err());
    assert!(refuse(json!({ "jwks_uri": null }), &["openid"]).contains("jwks_uri"));
    assert!(
        refuse(
            json!({ "id_token_signing_alg_values_supported": ["HS256", "none"] }),
            &["openid"]
        )
        .contains("RS256, ES256")
    );
    assert!(
        refuse(
            json!({ "token_endpoint_auth_methods_supported": ["private_key_jwt"] }),
            &["read"]
        )
        .contains("private_key_jwt")
    );
}

struct Minter {
    key: p256::ecdsa::SigningKey,
    keys: JwkSet,
}

fn minter() -> Minter {
    let key = p256::ecdsa::SigningKey::from_slice(&[11u8; 32]).expect("scalar");
    let jwk = es256_test_jwk(&key, "k1");
    Minter {
        key,
        keys: JwkSet { keys: vec![jwk] },
    }
}

impl Minter {
    fn token(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            BASE64URL.encode(header.to_string()),
            BASE64URL.encode(claims.to_string())
        );
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", BASE64URL.encode(signature.to_bytes()))
    }
}

fn claims() -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "sub": "user-42",
        "aud": "junction-client",
        "exp": NOW + 600,
        "iat": NOW,
        "nonce": "n-0S6_WzA2Mj",
    })
}

fn rule() -> OpenIdRule {
    OpenIdRule {
        issuer: ISSUER.to_owned(),
        jwks_uri: "https://id.example.com/jwks".to_owned(),
        algorithms: vec![JwtAlgorithm::ES256, JwtAlgorithm::RS256],
    }
}

fn check(
    minter: &Minter,
    header: serde_json::Value,
    claims: serde_json::Value,
) -> Result<String, IdTokenError> {
    check_id_token(
        &rule(),
        &minter.token(header, claims),
        &minter.keys,
        "junction-client",
        "n-0S6_WzA2Mj",
        OffsetDateTime::from_unix_timestamp(NOW + 5).expect("time"),
    )
}

#[test]
fn a_valid_id_token_yields_its_subject() {
    let minter = minter();
    let header = json!({ "alg": "ES256", "kid": "k1" });
    assert!(
        matches!(check(&minter, header.clone(), claims()), Ok(subject) if subject == "user-42")
    );
    let mut several = claims();
    several["aud"] = json!(["other-api", "junction-client"]);
    several["azp"] = json!("junction-client");
    assert!(matches!(check(&minter, header, several), Ok(subject) if subject == "user-42"));
}

#[test]
fn every_id_token_rule_is_enforced() {
    let minter = minter();
    let header = json!({ "alg": "ES256", "kid": "k1" });
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = claims();
        if value.is_null() {
            claims.as_object_mut().map(|c| c.remove(name));
        } else {
            claims[name] = value;
        }
        check(&minter, header.clone(), claims)
    };
    assert!(matches!(
        with("iss", json!("https://evil.example.com")),
        Err(IdTokenError::Invalid(VerifyError::ClaimMismatch))
    ));
    assert!(matches!(
        with("aud", json!("another-client")),
        Err(IdTokenError::Invalid(VerifyError::ClaimMismatch))
    ));
    assert!(matches!(
        with("nonce", json!("replayed")),
        Err(IdTokenError::Invalid(VerifyError::ClaimMismatch))
    ));
    assert!(matches!(
        with("nonce", json!(null)),
        Err(IdTokenError::Invalid(VerifyError::ClaimMismatch))
    ));
    assert!(matches!(
        with("exp", json!(NOW - 120)),
        Err(IdTokenError::Invalid(VerifyError::StaleTimestamp))
    ));
    assert!(matches!(
        with("exp", json!(null)),
        Err(IdTokenError::Invalid(VerifyError::MissingTimestamp))
    ));
    assert!(matches!(
        with("sub", json!(null)),
        Err(IdTokenError::Subject)
    ));
    assert!(
        matches!(
            with("aud", json!(["other-api", "junction-client"])),
            Err(IdTokenError::AuthorizedParty)
        ),
        "several audiences without azp"
    );

    // Signature, key and algorithm.
    let token = minter.token(header.clone(), claims());
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    let mut bytes = BASE64URL.decode(signature).expect("base64url");
    bytes[0] ^= 1;
    let tampered = format!("{signed}.{}", BASE64URL.encode(bytes));
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    assert!(matches!(
        check_id_token(
            &rule(),
            &tampered,
            &minter.keys,
            "junction-client",
            "n-0S6_WzA2Mj",
            now
        ),
        Err(IdTokenError::Invalid(VerifyError::SignatureMismatch))
    ));
    assert!(matches!(
        check(
            &minter,
            json!({ "alg": "ES256", "kid": "unknown" }),
            claims()
        ),
        Err(IdTokenError::Invalid(VerifyError::SignatureMismatch))
    ));
    for alg in ["none", "HS256", "EdDSA"] {
        assert!(
            matches!(
                check(&minter, json!({ "alg": alg, "kid": "k1" }), claims()),
                Err(IdTokenError::Algorithm)
            ),
            "{alg}"
        );
    }
    let rs256_only = OpenIdRule {
        algorithms: vec![JwtAlgorithm::RS256],
        ..rule()
    };
    assert!(
        matches!(
            check_id_token(
                &rs256_only,
                &token,
                &minter.keys,
                "junction-client",
                "n-0S6_WzA2Mj",
                now
            ),
            Err(IdTokenError::Algorithm)
        ),
        "an alg the issuer does not publish"
    );
}

/// Whether `err`'s chain holds an [`std::io::Error`] of `kind`.
fn has_io_cause(err: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Metadata that cannot be fetched is `Unavailable` with the transport error (its URL
/// removed) as the cause; metadata that is not JSON is `Invalid` with the parser's.
#[tokio::test]
async fn a_metadata_failure_keeps_its_cause() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let discovery = Discovery::new(EndpointRules::LoopbackHttpForTests);
    let err = discovery
        .spec(&DiscoverySpec {
            issuer: closed.clone(),
            ..entry(&[])
        })
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            err,
            DiscoveryError::Unavailable {
                source: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        has_io_cause(&err, std::io::ErrorKind::ConnectionRefused),
        "{}",
        crate::error_chain(&err)
    );

    let not_json = junction_aws::response_body::testing::stream_answer(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3\r\n\r\n",
        3,
    )
    .await;
    let err = discovery
        .spec(&DiscoverySpec {
            issuer: not_json,
            ..entry(&[])
        })
        .await
        .expect_err("xxx is not metadata");
    let DiscoveryError::Invalid {
        source: Some(source),
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(source.is::<serde_json::Error>(), "{source:?}");
    assert!(
        crate::error_chain(&err).ends_with(&source.to_string()),
        "{}",
        crate::error_chain(&err)
    );
}

/// An issuer whose keys cannot be fetched refuses the ID token as `KeysUnavailable`,
/// the key set's fetch error (and what caused it) its source.
#[tokio::test]
async fn unreachable_keys_keep_their_cause() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("http://{}/jwks", listener.local_addr().expect("address"));
    drop(listener);
    let minter = minter();
    let token = minter.token(json!({ "alg": "ES256", "kid": "k1" }), claims());
    let rule = OpenIdRule {
        jwks_uri: closed,
        ..rule()
    };
    let err = Discovery::new(EndpointRules::LoopbackHttpForTests)
        .validate_id_token(
            &rule,
            &token,
            "junction-client",
            "n-0S6_WzA2Mj",
            OffsetDateTime::from_unix_timestamp(NOW).expect("time"),
        )
        .await
        .expect_err("no keys");
    assert!(matches!(err, IdTokenError::KeysUnavailable(_)), "{err:?}");
    assert!(
        has_io_cause(&err, std::io::ErrorKind::ConnectionRefused),
        "{}",
        crate::error_chain(&err)
    );
}
