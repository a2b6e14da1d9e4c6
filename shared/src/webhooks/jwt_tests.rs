//! JWT verification (RS256 as Gmail push, ES256 with a body hash as Plaid's shape) and
//! the key-set cache. Google and Plaid publish no fixed test tokens (their tokens
//! expire), so tokens are minted here with throwaway keys and the documented claims.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use super::*;
use crate::catalog::Catalog;

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
        .and_then(|p| p.webhook.as_ref())
        .and_then(|w| w.verification.as_ref())
        .and_then(|v| v.jwt.as_ref())
        .expect("gmail's jwt rule")
}

fn rsa_key() -> rsa::RsaPrivateKey {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    let der = BASE64.decode(RSA_PRIVATE_DER).expect("base64");
    rsa::RsaPrivateKey::from_pkcs1_der(&der).expect("pkcs1")
}

fn rsa_jwk(kid: &str) -> Jwk {
    use rsa::traits::PublicKeyParts as _;
    let public = rsa_key().to_public_key();
    Jwk {
        kid: kid.to_owned(),
        kty: "RSA".to_owned(),
        alg: Some("RS256".to_owned()),
        n: Some(BASE64URL.encode(public.n().to_bytes_be())),
        e: Some(BASE64URL.encode(public.e().to_bytes_be())),
        crv: None,
        x: None,
        y: None,
    }
}

fn encode(value: &serde_json::Value) -> String {
    BASE64URL.encode(value.to_string())
}

fn rs256(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let signing = rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key());
    let input = format!("{}.{}", encode(header), encode(claims));
    let signature = signing.sign(input.as_bytes()).to_bytes();
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
