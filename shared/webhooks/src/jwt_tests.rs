//! JWT verification (RS256 as Gmail push, ES256 with a body hash as Plaid's shape) and
//! the key-set cache. Google and Plaid publish no fixed test tokens (their tokens
//! expire), so tokens are minted here with throwaway keys and the documented claims.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use super::*;
use junction_catalog::Catalog;

/// A throwaway 2048-bit RSA key (PKCS#1 DER, base64), generated for these tests only.
const RSA_PRIVATE_DER: &str = "MIIEowIBAAKCAQEAw+b3OxC0UHOmT6J/1sF01Zx3gb5yJvS22kx/PACn3xlCaVloUlZd7crb45w1J/FmuB425cl4aTm/y6VexUoSRuvmxgWCrk3SL1qXOP2Ubq4NFpKOLwnlaRIM8sDTbsRooVEEExj+oQe4fugJzC4a4osa+17OOIrWmn9oBIDmsUqGbEmnEEulrhnVemmyY8dX8ZwiUGqYZxlSdoXaRpCjQmuX2z6tmYRlAHXSIRFBckhN+WeDPMLK78I25wUwyh0Fal7U5yglXwysHwu4i+u3Uz0f+TGX7NTRI+cEebsIR0MmUhlroQOaRtZ7oF7BBcRz0VVk03ZpNQwPuCrEWLwbYwIDAQABAoIBAFmKgShjKze2lKbDjJEZXZChctI/vSdnJQjEfEdtuU0023ERp6gyx73/wd/YL0exhBTV4pvHKZ1XAv5O+PFOOOpnutR6AlAvS8nPK12mMikgruTJWenQKSaMVJTEZB+18GkDgcxE2WW7BK4k2w2TaUBw+oU4wSOA+jQl1eJxFICl1Y6P0t2Y4wJ4F5WY7Y5SCi9JtkYR5W+11SWPPMQ6avbDK/U1qs2GOSBiz23/CRwGod6KS3bsJNK11EBpCnQrfq3LitjjRSJLSzLK/HSIFTPEwNwHtfAyMZtcfhSscNN+ERcqwygcVDnKt1yRr7fl3guc6OnBjnvSH7X29QLIGDECgYEA7hn6D0aotOs1mjRUI3d8jSxLQTdFKKx3h467fiKrRgN5xoSUCjac8UTs1mqJ2M5Wsc+wtyOcpG0/7u2VICVFp3kCX7FNUaXNcSYQQY1e8+FZsTzPjIpPPBPXZHaPLAOtzn45a1rb9gH8e68relTP1NEhARw+qL6yl/iVNhxeNOkCgYEA0qDoGGmFIFWt65eTcRp2QOSUIflT1ETy/aYtqdZ964MbiK0HVGayyP4IgrFNoseD3HilGR9zbUpP+GP66l9YKtWXwz3aXYi34XfOPIjDHofyR8jLsTlG5d7TZ7NLZmViYsyEnUJoUOrTrs+lzyjlUu+ZkBt1y3meEl1XKQ01TmsCgYANpzOtmJGn/izOsN16QynDNp0CGlc+49Te0xJxQy+rDhv3hDaw9zy8oQUrrmRFKF/URmKNvd8HlrQp0TnR5BFAbzHxpssWOXm0WUhpWd/uACgSf7gvCOdOPJ0HR70h+vwGcTp9q3IdgzOlLABEPYTFYVCRLbtyFa1MBZcYyTulsQKBgQDET4hCyIZ1nqWdAQdA0WMKFIEkMRe6rhCz7GB+/RUbnnTZLDu6pIVZ47rW5J3xa3cw05k9Ex0n7a0fW0APlZG9SppKNKoDp1uK33ju3qDNIfPkh/ehVDsKIGZ1LpzF8RSD9Q5c6/oCAPwO4CYwMHOcmwhLUey2GsIDZ8/GyTK3xQKBgBGFU8nJ6WSHL3F6QGLhInxt/KDf2k7ZrZmMVdIzQqccRGUfewiwVv1iV0SFE3Zr1T3uvEZRLUOo6bnHYyhFR/P/USSj/o//nCRjJY0PX8Zpa6KrDnY0nDxpjcjawBYBZOkWA5oBcHZBQ4x0NMGhc9yFnEF66LiC7x4eYiom0+oX";
const GOOGLE_CERTS: &str = "https://www.googleapis.com/oauth2/v3/certs";
const NOW: i64 = 1_700_000_000;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("time")
}

fn gmail_rule() -> &'static JwtRule {
    Catalog::embedded()
        .expect("catalog")
        .get("gmail")
        .and_then(|p| p.verification())
        .and_then(|v| v.jwt.as_ref())
        .expect("gmail's jwt rule")
}

fn rsa_key() -> aws_lc_rs::rsa::KeyPair {
    let der = BASE64.decode(RSA_PRIVATE_DER).expect("base64");
    aws_lc_rs::rsa::KeyPair::from_der(&der).expect("pkcs1")
}

fn rsa_jwk(kid: &str) -> Jwk {
    use aws_lc_rs::signature::KeyPair as _;
    let key = rsa_key();
    let public = key.public_key();
    Jwk {
        kid: kid.to_owned(),
        kty: "RSA".to_owned(),
        alg: Some("RS256".to_owned()),
        n: Some(BASE64URL.encode(public.modulus().big_endian_without_leading_zero())),
        e: Some(BASE64URL.encode(public.exponent().big_endian_without_leading_zero())),
        crv: None,
        x: None,
        y: None,
    }
}

fn encode(value: &serde_json::Value) -> String {
    BASE64URL.encode(value.to_string())
}

fn rs256(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    rs256_with(&rsa_key(), header, claims)
}

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) over `header.claims` with `key`.
fn rs256_with(
    key: &aws_lc_rs::rsa::KeyPair,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let input = format!("{}.{}", encode(header), encode(claims));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("signed");
    format!("{input}.{}", BASE64URL.encode(signature))
}

/// The claims of a Pub/Sub push token (cloud.google.com "Authenticate push
/// subscriptions").
fn google_claims() -> serde_json::Value {
    json!({
        "aud": "https://hooks.example.com/webhooks/gmail",
        "azp": "113774264463038321964",
        "email": "gmail-push@junction-dev.iam.gserviceaccount.com",
        "email_verified": true,
        "exp": NOW + 3600,
        "iat": NOW,
        "iss": "https://accounts.google.com",
        "sub": "113774264463038321964"
    })
}

fn configured() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "aud".to_owned(),
            "https://hooks.example.com/webhooks/gmail".to_owned(),
        ),
        (
            "email".to_owned(),
            "gmail-push@junction-dev.iam.gserviceaccount.com".to_owned(),
        ),
    ])
}

fn keys() -> JwkSet {
    JwkSet {
        keys: vec![rsa_jwk("other"), rsa_jwk("k1")],
    }
}

fn gmail(token: &str) -> Result<(), VerifyError> {
    verify_jwt(gmail_rule(), token, b"{}", &keys(), &configured(), now())
}

fn header() -> serde_json::Value {
    json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})
}

#[test]
fn a_google_push_token_verifies() {
    assert_eq!(gmail(&rs256(&header(), &google_claims())), Ok(()));
    let mut accounts_issuer = google_claims();
    accounts_issuer["iss"] = json!("accounts.google.com");
    assert_eq!(gmail(&rs256(&header(), &accounts_issuer)), Ok(()));
}

#[test]
fn the_algorithm_is_the_catalogs_never_the_tokens() {
    let token = rs256(&header(), &google_claims());
    let (_, rest) = token.split_once('.').expect("jwt");
    for alg in ["none", "HS256", "ES256"] {
        let forged = format!("{}.{rest}", encode(&json!({"alg": alg, "kid": "k1"})));
        assert_eq!(
            gmail(&forged),
            Err(VerifyError::MalformedSignature),
            "{alg}"
        );
    }
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({"alg": "none"})),
        encode(&google_claims())
    );
    assert_eq!(gmail(&unsigned), Err(VerifyError::MalformedSignature));
}

#[test]
fn a_changed_claim_unknown_kid_or_garbage_is_refused() {
    let token = rs256(&header(), &google_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut other = google_claims();
    other["email"] = json!("attacker@evil.iam.gserviceaccount.com");
    let swapped = format!("{}.{}.{}", parts[0], encode(&other), parts[2]);
    assert_eq!(gmail(&swapped), Err(VerifyError::SignatureMismatch));
    let unknown = rs256(&json!({"alg": "RS256", "kid": "gone"}), &google_claims());
    assert_eq!(gmail(&unknown), Err(VerifyError::SignatureMismatch));
    for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert_eq!(
            gmail(garbage),
            Err(VerifyError::MalformedSignature),
            "{garbage:?}"
        );
    }
}

/// GIVEN Gmail's published key under `k1` WHEN a token names `k1` but was signed by
/// another RSA-2048 key THEN it is refused, whatever its claims.
#[test]
fn an_rs256_token_signed_by_another_key_is_refused() {
    let stranger =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generated");
    let forged = rs256_with(&stranger, &header(), &google_claims());
    assert_eq!(gmail(&forged), Err(VerifyError::SignatureMismatch));
    // The same key's own token verifies, so the refusal is the key's doing.
    let mut strangers = keys();
    strangers.keys[1] = Jwk {
        n: Some(
            BASE64URL.encode(
                aws_lc_rs::signature::KeyPair::public_key(&stranger)
                    .modulus()
                    .big_endian_without_leading_zero(),
            ),
        ),
        ..rsa_jwk("k1")
    };
    assert_eq!(
        verify_jwt(
            gmail_rule(),
            &forged,
            b"{}",
            &strangers,
            &configured(),
            now()
        ),
        Ok(())
    );
}

/// The classic confusions: an HS256 token whose HMAC key is the RSA public key (as text
/// or as the modulus bytes), the same under a published symmetric (`oct`) key, and an
/// unsigned `alg: none` token with and without a signature part. The catalog says RS256,
/// so none of them reaches a MAC.
#[test]
fn hs256_and_none_tokens_are_refused_for_an_rs256_rule() {
    use hmac::Mac as _;
    let hs256 = |secret: &[u8]| {
        let input = format!(
            "{}.{}",
            encode(&json!({"alg": "HS256", "kid": "k1", "typ": "JWT"})),
            encode(&google_claims())
        );
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("any length");
        mac.update(input.as_bytes());
        format!("{input}.{}", BASE64URL.encode(mac.finalize().into_bytes()))
    };
    let jwk = rsa_jwk("k1");
    let n = BASE64URL.decode(jwk.n.as_deref().expect("n")).expect("b64");
    let as_text = serde_json::json!({"kty": "RSA", "n": jwk.n, "e": jwk.e}).to_string();
    for token in [hs256(&n), hs256(as_text.as_bytes())] {
        assert_eq!(gmail(&token), Err(VerifyError::MalformedSignature));
    }
    let symmetric = JwkSet {
        keys: vec![Jwk {
            kty: "oct".to_owned(),
            alg: Some("HS256".to_owned()),
            ..rsa_jwk("k1")
        }],
    };
    let rs256_token = rs256(&header(), &google_claims());
    for token in [hs256(&n), rs256_token] {
        assert_ne!(
            verify_jwt(
                gmail_rule(),
                &token,
                b"{}",
                &symmetric,
                &configured(),
                now()
            ),
            Ok(())
        );
    }
    let none = encode(&json!({"alg": "none", "kid": "k1", "typ": "JWT"}));
    let claims = encode(&google_claims());
    for token in [
        format!("{none}.{claims}"),
        format!("{none}.{claims}."),
        format!("{none}.{claims}.AAAA"),
    ] {
        assert_eq!(
            gmail(&token),
            Err(VerifyError::MalformedSignature),
            "{token}"
        );
    }
}

/// RFC 7515 §4.1.11: a header that makes an extension critical is refused unless the
/// extension is understood (none is).
#[test]
fn an_unknown_critical_header_is_refused() {
    let token = rs256(
        &json!({"alg": "RS256", "kid": "k1", "crit": ["exp-check"], "exp-check": true}),
        &google_claims(),
    );
    assert_eq!(gmail(&token), Err(VerifyError::MalformedSignature));
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let with_nbf = |nbf: i64| {
        let mut claims = google_claims();
        claims["nbf"] = json!(nbf);
        gmail(&rs256(&header(), &claims))
    };
    assert_eq!(with_nbf(NOW + 61), Err(VerifyError::FutureTimestamp));
    assert_eq!(with_nbf(NOW + 59), Ok(()), "60 s of clock leeway");
    assert_eq!(with_nbf(NOW - 300), Ok(()));
}

#[test]
fn expiry_issuer_audience_email_and_verification_are_enforced() {
    let check = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = google_claims();
        edit(&mut claims);
        gmail(&rs256(&header(), &claims))
    };
    assert_eq!(
        check(&|c| c["exp"] = json!(NOW - 61)),
        Err(VerifyError::StaleTimestamp)
    );
    assert_eq!(
        check(&|c| c["exp"] = json!(NOW - 59)),
        Ok(()),
        "60 s of clock leeway"
    );
    assert_eq!(
        check(&|c| {
            c.as_object_mut().map(|o| o.remove("exp"));
        }),
        Err(VerifyError::MissingTimestamp)
    );
    assert_eq!(
        check(&|c| c["iat"] = json!(NOW + 600)),
        Err(VerifyError::FutureTimestamp)
    );
    assert_eq!(
        check(&|c| c["iss"] = json!("https://evil.example")),
        Err(VerifyError::ClaimMismatch)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!("https://other.example")),
        Err(VerifyError::ClaimMismatch)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!([
            "https://other.example",
            "https://hooks.example.com/webhooks/gmail"
        ])),
        Ok(()),
        "an audience array matches when any element does"
    );
    assert_eq!(
        check(&|c| c["email"] = json!("someone@else.example")),
        Err(VerifyError::ClaimMismatch)
    );
    assert_eq!(
        check(&|c| c["email_verified"] = json!(false)),
        Err(VerifyError::ClaimMismatch)
    );
    assert_eq!(
        check(&|c| c["email_verified"] = json!("true")),
        Err(VerifyError::ClaimMismatch)
    );
}

#[test]
fn unconfigured_claims_are_a_configuration_error() {
    let token = rs256(&header(), &google_claims());
    let result = verify_jwt(
        gmail_rule(),
        &token,
        b"{}",
        &keys(),
        &BTreeMap::new(),
        now(),
    );
    assert_eq!(result, Err(VerifyError::NoUsableSecret));
    assert!(VerifyError::NoUsableSecret.is_configuration_error());
}

/// Plaid's documented steps (plaid.com "Webhook verification"): ES256, `kid` picks the
/// key, `iat` at most 5 minutes old, `request_body_sha256` = hex SHA-256 of the body.
#[test]
fn es256_with_a_body_hash_claim() {
    use p256::ecdsa::signature::Signer as _;
    let signing = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).expect("scalar");
    let jwk = es256_test_jwk(&signing, "6c5516e1-92dc-479e-a8ff-5a51992e0001");
    let rule: JwtRule = toml::from_str(
        r#"algorithm = "ES256"
jwks_url = "https://plaid.example/keys"
max_age_seconds = 300
body_hash_claim = "request_body_sha256""#,
    )
    .expect("rule");
    let body = br#"{"webhook_type":"TRANSACTIONS","webhook_code":"SYNC_UPDATES_AVAILABLE","item_id":"wz666MBjYWTp2PDzzggYhM6oWWmBb"}"#;
    let token = |iat: i64, body: &[u8]| {
        let input = format!(
            "{}.{}",
            encode(&json!({"alg": "ES256", "kid": jwk.kid, "typ": "JWT"})),
            encode(
                &json!({"iat": iat, "exp": iat + 3600, "request_body_sha256": hex::encode(Sha256::digest(body))})
            )
        );
        let signature: p256::ecdsa::Signature = signing.sign(input.as_bytes());
        format!("{input}.{}", BASE64URL.encode(signature.to_bytes()))
    };
    let set = JwkSet {
        keys: vec![jwk.clone()],
    };
    let verify = |token: &str, body: &[u8], at: i64| {
        verify_jwt(
            &rule,
            token,
            body,
            &set,
            &BTreeMap::new(),
            OffsetDateTime::from_unix_timestamp(at).expect("time"),
        )
    };
    assert_eq!(verify(&token(NOW, body), body, NOW + 300), Ok(()));
    assert_eq!(
        verify(&token(NOW, body), body, NOW + 301),
        Err(VerifyError::StaleTimestamp)
    );
    assert_eq!(
        verify(&token(NOW, body), b"{}", NOW),
        Err(VerifyError::BodyHashMismatch)
    );
    // An RSA key under the same kid cannot verify an ES256 token.
    let confused = JwkSet {
        keys: vec![Jwk {
            kid: jwk.kid.clone(),
            ..rsa_jwk("x")
        }],
    };
    assert_eq!(
        verify_jwt(
            &rule,
            &token(NOW, body),
            body,
            &confused,
            &BTreeMap::new(),
            now()
        ),
        Err(VerifyError::SignatureMismatch)
    );
}

#[tokio::test]
async fn key_sets_are_cached_and_unknown_kids_refetch_at_most_once_a_minute() {
    let source = Arc::new(InMemoryKeySetSource::default());
    source.put(GOOGLE_CERTS, keys());
    let cache = KeySetCache::new(source.clone());
    let at = |seconds: i64| OffsetDateTime::from_unix_timestamp(NOW + seconds).expect("time");
    cache
        .keys_for(GOOGLE_CERTS, Some("k1"), at(0))
        .await
        .expect("fetch");
    cache
        .keys_for(GOOGLE_CERTS, Some("k1"), at(3599))
        .await
        .expect("cached");
    assert_eq!(source.fetches(), 1);
    // Google rotated: a new kid re-reads, but not more than once a minute.
    cache
        .keys_for(GOOGLE_CERTS, Some("new"), at(3599))
        .await
        .expect("refetch");
    cache
        .keys_for(GOOGLE_CERTS, Some("new"), at(3620))
        .await
        .expect("rate-limited");
    assert_eq!(source.fetches(), 2);
    cache
        .keys_for(GOOGLE_CERTS, Some("new"), at(3660))
        .await
        .expect("refetch");
    assert_eq!(source.fetches(), 3);
    // Expired entries are re-read.
    cache
        .keys_for(GOOGLE_CERTS, Some("k1"), at(3660 + 3600))
        .await
        .expect("expired");
    assert_eq!(source.fetches(), 4);
    assert!(
        cache
            .keys_for("https://unknown.example/keys", None, at(0))
            .await
            .is_err()
    );
}

#[test]
fn cache_control_max_age_is_read() {
    assert_eq!(
        cache_max_age("public, max-age=19766, must-revalidate, no-transform"),
        Some(Duration::seconds(19766))
    );
    assert_eq!(cache_max_age("no-cache"), None);
}

// --- Plaid -------------------------------------------------------------------------------
//
// plaid.com/docs/api/webhooks/webhook-verification/: `Plaid-Verification` is an ES256 JWT
// (header `{"alg":"ES256","kid":…,"typ":"JWT"}`) with claims `iat` and
// `request_body_sha256`; the key comes from `POST /webhook_verification_key/get`. Plaid
// publishes no test token (its tokens are only good for 5 minutes), so tokens are minted
// here the way Plaid's are, with throwaway keys.

const PLAID_KID: &str = "bfbd5111-8e33-4643-8ced-b2e642a72f3c";
const PLAID_BODY: &[u8] = b"{\n  \"environment\": \"sandbox\",\n  \"item_id\": \"wz666MBjYWTp2PDzzggYhM6oWWmBb\",\n  \"webhook_code\": \"SYNC_UPDATES_AVAILABLE\",\n  \"webhook_type\": \"TRANSACTIONS\"\n}";

fn plaid_verification() -> &'static junction_catalog::Verification {
    Catalog::embedded()
        .expect("catalog")
        .get("plaid")
        .and_then(|p| p.verification())
        .expect("plaid's verification")
}

fn plaid_rule() -> &'static JwtRule {
    plaid_verification().jwt.as_ref().expect("plaid's jwt rule")
}

fn plaid_signing(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("scalar")
}

/// A token as Plaid signs one: ES256 over `header.claims`, claims `iat` and the body hash.
fn plaid_token(signing: &p256::ecdsa::SigningKey, kid: &str, claims: &serde_json::Value) -> String {
    use p256::ecdsa::signature::Signer as _;
    let input = format!(
        "{}.{}",
        encode(&json!({"alg": "ES256", "kid": kid, "typ": "JWT"})),
        encode(claims)
    );
    let signature: p256::ecdsa::Signature = signing.sign(input.as_bytes());
    format!("{input}.{}", BASE64URL.encode(signature.to_bytes()))
}

fn plaid_claims(iat: i64, body: &[u8]) -> serde_json::Value {
    json!({"iat": iat, "request_body_sha256": hex::encode(Sha256::digest(body))})
}

fn plaid_verify(token: &str, body: &[u8], keys: &JwkSet, at: i64) -> Result<(), VerifyError> {
    verify_jwt(
        plaid_rule(),
        token,
        body,
        keys,
        &BTreeMap::new(),
        OffsetDateTime::from_unix_timestamp(at).expect("time"),
    )
}

#[test]
fn the_plaid_entry_reads_plaids_key_endpoint() {
    let verification = plaid_verification();
    assert_eq!(
        verification.jwt_keys,
        junction_catalog::JwtKeys::PlaidVerificationKey
    );
    assert_eq!(plaid_rule().algorithm, JwtAlgorithm::ES256);
    assert_eq!(
        plaid_rule().jwks_url,
        "https://production.plaid.com/webhook_verification_key/get"
    );
    assert_eq!(plaid_rule().max_age_seconds, Some(300));
    assert_eq!(verification.coverage, junction_catalog::Coverage::Body);
}

#[test]
fn a_plaid_token_verifies_and_binds_the_body_and_its_age() {
    let signing = plaid_signing(9);
    let set = JwkSet {
        keys: vec![es256_test_jwk(&signing, PLAID_KID)],
    };
    let token = plaid_token(&signing, PLAID_KID, &plaid_claims(NOW, PLAID_BODY));
    assert_eq!(plaid_verify(&token, PLAID_BODY, &set, NOW), Ok(()));
    // No `exp` in Plaid's tokens: the age is bounded by `iat`, 5 minutes.
    assert_eq!(plaid_verify(&token, PLAID_BODY, &set, NOW + 300), Ok(()));
    assert_eq!(
        plaid_verify(&token, PLAID_BODY, &set, NOW + 301),
        Err(VerifyError::StaleTimestamp)
    );
    assert_eq!(
        plaid_verify(&token, PLAID_BODY, &set, NOW - 61),
        Err(VerifyError::FutureTimestamp),
        "iat more than the 60 s leeway ahead"
    );
    // The exact bytes are hashed: re-serialised JSON does not match.
    let compact = br#"{"environment":"sandbox","item_id":"wz666MBjYWTp2PDzzggYhM6oWWmBb","webhook_code":"SYNC_UPDATES_AVAILABLE","webhook_type":"TRANSACTIONS"}"#;
    assert_eq!(
        plaid_verify(&token, compact, &set, NOW),
        Err(VerifyError::BodyHashMismatch)
    );
    // Signed by another key under the same kid (a wrong "secret").
    let forged = plaid_token(&plaid_signing(7), PLAID_KID, &plaid_claims(NOW, PLAID_BODY));
    assert_eq!(
        plaid_verify(&forged, PLAID_BODY, &set, NOW),
        Err(VerifyError::SignatureMismatch)
    );
    // Missing claims.
    let no_iat = plaid_token(
        &signing,
        PLAID_KID,
        &json!({"request_body_sha256": hex::encode(Sha256::digest(PLAID_BODY))}),
    );
    assert_eq!(
        plaid_verify(&no_iat, PLAID_BODY, &set, NOW),
        Err(VerifyError::MissingTimestamp)
    );
    let no_hash = plaid_token(&signing, PLAID_KID, &json!({"iat": NOW}));
    assert_eq!(
        plaid_verify(&no_hash, PLAID_BODY, &set, NOW),
        Err(VerifyError::MissingBodyHash)
    );
    // An `exp` that is there is enforced.
    let mut expired = plaid_claims(NOW, PLAID_BODY);
    expired["exp"] = json!(NOW - 120);
    assert_eq!(
        plaid_verify(
            &plaid_token(&signing, PLAID_KID, &expired),
            PLAID_BODY,
            &set,
            NOW
        ),
        Err(VerifyError::StaleTimestamp)
    );
    // Another algorithm is refused whatever the key.
    let (_, rest) = token.split_once('.').expect("jwt");
    for alg in ["none", "HS256", "RS256", "ES384"] {
        let header = encode(&json!({"alg": alg, "kid": PLAID_KID}));
        assert_eq!(
            plaid_verify(&format!("{header}.{rest}"), PLAID_BODY, &set, NOW),
            Err(VerifyError::MalformedSignature),
            "{alg}"
        );
    }
}

#[test]
fn a_plaid_token_is_prechecked_before_any_key_is_fetched() {
    let signing = plaid_signing(9);
    let token = plaid_token(&signing, PLAID_KID, &plaid_claims(NOW, PLAID_BODY));
    let precheck = |token: &str, body: &[u8], at: i64| {
        precheck_jwt(
            plaid_rule(),
            token,
            body,
            OffsetDateTime::from_unix_timestamp(at).expect("time"),
        )
    };
    assert_eq!(precheck(&token, PLAID_BODY, NOW), Ok(()));
    assert_eq!(
        precheck(&token, b"{}", NOW),
        Err(VerifyError::BodyHashMismatch)
    );
    assert_eq!(
        precheck(&token, PLAID_BODY, NOW + 301),
        Err(VerifyError::StaleTimestamp)
    );
    assert_eq!(
        precheck("a.b", PLAID_BODY, NOW),
        Err(VerifyError::MalformedSignature)
    );
}

fn plaid_key(seed: u8, kid: &str, expired: bool) -> FetchedKey {
    FetchedKey {
        key: es256_test_jwk(&plaid_signing(seed), kid),
        expired,
    }
}

const PLAID_URL: &str = "https://production.plaid.com/webhook_verification_key/get";

fn credentials() -> ApiCredentials {
    ApiCredentials::parse(&SigningSecret::new("5f1a9d0c3b2e4d6f8a7b9c0d:plaid-secret"))
        .expect("credentials")
}

#[tokio::test]
async fn plaid_keys_are_cached_per_kid_and_fetches_are_bounded() {
    let source = Arc::new(InMemoryKeySetSource::default());
    let client = credentials().client_id().to_owned();
    source.put_key(PLAID_URL, client.clone(), plaid_key(9, PLAID_KID, false));
    source.put_key(PLAID_URL, client.clone(), plaid_key(8, "old-key", true));
    let cache = KeySetCache::new(source.clone());
    let at = |seconds: i64| OffsetDateTime::from_unix_timestamp(NOW + seconds).expect("time");
    let key = cache
        .key_by_id(PLAID_URL, &credentials(), PLAID_KID, at(0))
        .await
        .expect("fetched");
    assert!(!key.expired);
    cache
        .key_by_id(PLAID_URL, &credentials(), PLAID_KID, at(3599))
        .await
        .expect("cached");
    assert_eq!(source.fetches(), 1);
    cache
        .key_by_id(PLAID_URL, &credentials(), PLAID_KID, at(3600))
        .await
        .expect("re-read after an hour");
    assert_eq!(source.fetches(), 2);
    // An expired key is kept (and refused by the ingress) without another call.
    for _ in 0..3 {
        let old = cache
            .key_by_id(PLAID_URL, &credentials(), "old-key", at(3600))
            .await
            .expect("fetched");
        assert!(old.expired);
    }
    assert_eq!(source.fetches(), 3);
    // An unknown kid is asked for once a minute at most.
    for _ in 0..3 {
        assert!(
            cache
                .key_by_id(PLAID_URL, &credentials(), "unknown", at(3600))
                .await
                .is_err()
        );
    }
    assert_eq!(source.fetches(), 4);
    // A flood of made-up kids spends at most the minute's budget.
    for n in 0..50 {
        let _ = cache
            .key_by_id(PLAID_URL, &credentials(), &format!("junk-{n}"), at(3601))
            .await;
    }
    // Three fetches started at 3600 s, so seven more fit in the minute's ten.
    assert_eq!(source.fetches(), 11, "10 fetches a minute");
    // An implausible kid is never sent.
    assert!(
        cache
            .key_by_id(PLAID_URL, &credentials(), "a\"b", at(7200))
            .await
            .is_err()
    );
    assert_eq!(source.fetches(), 11);
}

#[tokio::test]
async fn an_answer_for_another_kid_is_refused() {
    #[derive(Debug)]
    struct Liar;
    #[async_trait]
    impl KeySetSource for Liar {
        async fn fetch(&self, url: &str) -> Result<FetchedKeySet, KeySetError> {
            Err(KeySetError {
                url: url.to_owned(),
                source: "unused".into(),
            })
        }
        async fn fetch_key(
            &self,
            _url: &str,
            _credentials: &ApiCredentials,
            _kid: &str,
        ) -> Result<FetchedKey, KeySetError> {
            Ok(plaid_key(9, "someone-elses", false))
        }
    }
    let cache = KeySetCache::new(Arc::new(Liar));
    assert!(
        cache
            .key_by_id(PLAID_URL, &credentials(), PLAID_KID, now())
            .await
            .is_err()
    );
}

#[test]
fn api_credentials_are_client_id_colon_secret_and_never_printed() {
    let parsed = credentials();
    assert_eq!(parsed.client_id(), "5f1a9d0c3b2e4d6f8a7b9c0d");
    assert_eq!(parsed.secret(), "plaid-secret");
    assert!(!format!("{parsed:?}").contains("plaid-secret"));
    for bad in ["", "no-colon", ":secret", "client:", " : "] {
        assert!(
            ApiCredentials::parse(&SigningSecret::new(bad)).is_none(),
            "{bad:?}"
        );
    }
}

/// A loopback stand-in for Plaid's key endpoint (127.0.0.1 only): answers each request
/// with `answer(path, body)` and records what it was sent.
struct FakeKeyEndpoint {
    url: String,
    requests: Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>,
}

impl FakeKeyEndpoint {
    async fn start(
        answer: impl Fn(&str, &serde_json::Value) -> (u16, Vec<(String, String)>, String)
        + Send
        + Sync
        + 'static,
    ) -> FakeKeyEndpoint {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let url = format!(
            "http://{}/webhook_verification_key/get",
            listener.local_addr().expect("address")
        );
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut raw = Vec::new();
                let mut buffer = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head, length) = loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buffer[..n]);
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                        let length = head
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        raw.drain(..end + 4);
                        break (head, length);
                    }
                };
                while raw.len() < length {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buffer[..n]);
                }
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                let path = request_line
                    .split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let content_type = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-type")
                            .then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body: serde_json::Value =
                    serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
                seen.lock().expect("requests").push((
                    format!("{request_line} {path}"),
                    content_type,
                    body.clone(),
                ));
                let (status, headers, text) = answer(&path, &body);
                let mut response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    text.len()
                );
                for (name, value) in headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&text);
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        FakeKeyEndpoint { url, requests }
    }

    fn requests(&self) -> Vec<(String, String, serde_json::Value)> {
        self.requests.lock().expect("requests").clone()
    }
}

/// Plaid's documented answer (plaid/plaid-openapi `2020-09-14.yml`, the example of
/// `/webhook_verification_key/get`), with a throwaway key's coordinates.
fn plaid_answer(seed: u8, kid: &str, expired_at: Option<i64>) -> String {
    let jwk = es256_test_jwk(&plaid_signing(seed), kid);
    json!({
        "key": {
            "alg": "ES256",
            "created_at": 1_560_466_150,
            "crv": "P-256",
            "expired_at": expired_at,
            "kid": kid,
            "kty": "EC",
            "use": "sig",
            "x": jwk.x,
            "y": jwk.y,
        },
        "request_id": "RZ6Omi1bzzwDaLo",
    })
    .to_string()
}

#[tokio::test]
async fn the_http_source_posts_the_credentials_and_reads_plaids_answer() {
    let endpoint = FakeKeyEndpoint::start(|path, body| match (path, body["key_id"].as_str()) {
        ("/webhook_verification_key/get", Some(PLAID_KID)) => {
            (200, Vec::new(), plaid_answer(9, PLAID_KID, None))
        }
        ("/webhook_verification_key/get", Some("old-key")) => {
            (200, Vec::new(), plaid_answer(8, "old-key", Some(1_700_000_000)))
        }
        ("/webhook_verification_key/get", Some("moved")) => (
            307,
            vec![("location".to_owned(), "/elsewhere".to_owned())],
            "{}".to_owned(),
        ),
        _ => (
            400,
            Vec::new(),
            r#"{"error_type":"INVALID_INPUT","error_code":"INVALID_FIELD","error_message":"no such key","display_message":null,"request_id":"x"}"#.to_owned(),
        ),
    })
    .await;
    let source = HttpKeySetSource::new();
    let fetched = source
        .fetch_key(&endpoint.url, &credentials(), PLAID_KID)
        .await
        .expect("the key");
    assert_eq!(fetched.key.kid, PLAID_KID);
    assert!(!fetched.expired);
    assert_eq!(
        fetched.key.x,
        es256_test_jwk(&plaid_signing(9), PLAID_KID).x
    );
    let (request_line, content_type, body) = endpoint.requests()[0].clone();
    assert!(
        request_line.starts_with("POST /webhook_verification_key/get"),
        "{request_line}"
    );
    assert_eq!(content_type, "application/json");
    assert_eq!(
        body,
        json!({"client_id": "5f1a9d0c3b2e4d6f8a7b9c0d", "secret": "plaid-secret", "key_id": PLAID_KID})
    );
    let old = source
        .fetch_key(&endpoint.url, &credentials(), "old-key")
        .await
        .expect("the old key");
    assert!(old.expired, "expired_at is set");
    // Plaid's error answer, and a redirect (never followed: the body holds the secret).
    assert!(
        source
            .fetch_key(&endpoint.url, &credentials(), "unknown")
            .await
            .is_err()
    );
    assert!(
        source
            .fetch_key(&endpoint.url, &credentials(), "moved")
            .await
            .is_err()
    );
    assert!(
        endpoint
            .requests()
            .iter()
            .all(|(line, _, _)| !line.contains("/elsewhere")),
        "the redirect was not followed"
    );
    // The error does not carry the secret.
    let err = source
        .fetch_key(&endpoint.url, &credentials(), "unknown")
        .await
        .expect_err("refused");
    assert!(!format!("{err:?} {err}").contains("plaid-secret"));
}

/// A key set or key padded with JSON whitespace to `len` bytes: valid, so only the cap
/// can refuse it.
fn padded(json: &str, len: usize) -> String {
    let (head, last) = json.split_at(json.len() - 1);
    format!("{head}{}{last}", " ".repeat(len.saturating_sub(json.len())))
}

/// GIVEN key endpoints that answer a valid key set or key of over [`KEY_SET_CAP`] bytes
/// WHEN the HTTP source fetches them THEN both are refused as too large, while the same
/// answers just under the cap are read.
#[tokio::test]
async fn a_key_set_over_the_cap_is_refused() {
    let jwks = json!({"keys": [jwk_json_of(&es256_test_jwk(&plaid_signing(9), "k1"))]}).to_string();
    let key = plaid_answer(9, PLAID_KID, None);
    let endpoint = FakeKeyEndpoint::start(move |path, _| {
        let (body, len) = match path {
            "/small/certs" => (&jwks, KEY_SET_CAP),
            "/huge/certs" => (&jwks, KEY_SET_CAP + 1),
            "/small/webhook_verification_key/get" => (&key, KEY_SET_CAP),
            _ => (&key, 4 * KEY_SET_CAP),
        };
        (200, Vec::new(), padded(body, len))
    })
    .await;
    let base = endpoint
        .url
        .trim_end_matches("/webhook_verification_key/get")
        .to_owned();
    let too_large = |err: &KeySetError| {
        matches!(
            err.source.downcast_ref::<BodyError>(),
            Some(BodyError::TooLarge { cap }) if *cap == KEY_SET_CAP
        )
    };
    let source = HttpKeySetSource::new();
    let small = source
        .fetch(&format!("{base}/small/certs"))
        .await
        .expect("a key set at the cap");
    assert_eq!(small.keys.keys.len(), 1);
    let err = source
        .fetch(&format!("{base}/huge/certs"))
        .await
        .expect_err("a key set over the cap");
    assert!(too_large(&err), "{err:?}");
    let key = source
        .fetch_key(
            &format!("{base}/small/webhook_verification_key/get"),
            &credentials(),
            PLAID_KID,
        )
        .await
        .expect("a key at the cap");
    assert_eq!(key.key.kid, PLAID_KID);
    let err = source
        .fetch_key(
            &format!("{base}/huge/webhook_verification_key/get"),
            &credentials(),
            PLAID_KID,
        )
        .await
        .expect_err("a key over the cap");
    assert!(too_large(&err), "{err:?}");
}

/// A published JWK as its JSON.
fn jwk_json_of(jwk: &Jwk) -> serde_json::Value {
    json!({"kid": jwk.kid, "kty": jwk.kty, "alg": jwk.alg, "crv": jwk.crv, "x": jwk.x, "y": jwk.y})
}

proptest::proptest! {
    /// Any changed character of a Plaid token (header, claims or signature) is refused.
    #[test]
    fn any_changed_token_character_is_refused(
        position in proptest::prelude::any::<proptest::sample::Index>(),
        replacement in proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.".to_vec()),
    ) {
        let signing = plaid_signing(9);
        let set = JwkSet { keys: vec![es256_test_jwk(&signing, PLAID_KID)] };
        let token = plaid_token(&signing, PLAID_KID, &plaid_claims(NOW, PLAID_BODY));
        let mut bytes = token.clone().into_bytes();
        let at = position.index(bytes.len());
        proptest::prop_assume!(bytes[at] != replacement);
        bytes[at] = replacement;
        let changed = String::from_utf8(bytes).expect("ascii");
        proptest::prop_assert!(plaid_verify(&changed, PLAID_BODY, &set, NOW).is_err());
    }
}

#[test]
fn plaid_keys_need_es256_and_an_https_or_loopback_endpoint() {
    let entry = |algorithm: &str, url: &str| {
        format!(
            r#"
id = "acme"
name = "Acme"
docs = "https://acme.example/webhooks"

[webhook.verification]
scheme = "jwt"
signature = {{ format = "single", header = "Acme-Verification", encoding = "text" }}
signed = []
jwt = {{ algorithm = "{algorithm}", jwks_url = "{url}", max_age_seconds = 300, body_hash_claim = "h" }}
jwt_keys = "plaid_verification_key"
"#
        )
    };
    let load = |text: String| Catalog::from_files(&[("acme.toml", &text)]).map(|_| ());
    assert!(
        load(entry(
            "ES256",
            "https://sandbox.plaid.com/webhook_verification_key/get"
        ))
        .is_ok()
    );
    let loopback = entry(
        "ES256",
        "http://127.0.0.1:8080/webhook_verification_key/get",
    );
    assert!(
        Catalog::from_files_with_rules(
            &[("acme.toml", &loopback)],
            junction_catalog::EndpointRules::LoopbackHttpForTests
        )
        .is_ok(),
        "a test provider on loopback"
    );
    let err = load(loopback).expect_err("loopback is for tests only");
    assert!(err.to_string().contains("jwt.jwks_url"), "{err}");
    let err = load(entry("RS256", "https://sandbox.plaid.com/x")).expect_err("RS256");
    assert!(err.to_string().contains("jwt_keys"), "{err}");
    let err = load(entry("ES256", "http://sandbox.plaid.com/x")).expect_err("plain http");
    assert!(err.to_string().contains("jwt.jwks_url"), "{err}");
}

/// A key server that redirects is not followed, for a key set or a credentialed key: the
/// location a redirect names never passed the endpoint rules, and Plaid's credentials
/// would go with it.
#[tokio::test]
async fn a_redirecting_key_server_is_not_followed() {
    let jwks = json!({"keys": [jwk_json_of(&es256_test_jwk(&plaid_signing(9), "k1"))]}).to_string();
    let key = plaid_answer(9, PLAID_KID, None);
    let endpoint = FakeKeyEndpoint::start(move |path, _| match path {
        "/moved/certs" => (
            302,
            vec![("location".to_owned(), "/real/certs".to_owned())],
            String::new(),
        ),
        "/moved/webhook_verification_key/get" => (
            307,
            vec![(
                "location".to_owned(),
                "/real/webhook_verification_key/get".to_owned(),
            )],
            String::new(),
        ),
        "/real/certs" => (200, Vec::new(), jwks.clone()),
        _ => (200, Vec::new(), key.clone()),
    })
    .await;
    let base = endpoint
        .url
        .trim_end_matches("/webhook_verification_key/get")
        .to_owned();
    let source = HttpKeySetSource::new();
    assert!(source.fetch(&format!("{base}/moved/certs")).await.is_err());
    assert!(
        source
            .fetch_key(
                &format!("{base}/moved/webhook_verification_key/get"),
                &credentials(),
                PLAID_KID,
            )
            .await
            .is_err()
    );
    let paths: Vec<String> = endpoint
        .requests
        .lock()
        .expect("requests")
        .iter()
        .map(|(request_line, _, _)| {
            request_line
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        paths,
        ["/moved/certs", "/moved/webhook_verification_key/get"],
        "nothing followed the redirects"
    );
}
