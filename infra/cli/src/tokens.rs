//! Minting the tokens of providers that authenticate a delivery with a JWT instead of a
//! signature over it: Gmail's Pub/Sub push (an RS256 OIDC token in `Authorization:
//! Bearer`, <https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>) and
//! Plaid (an ES256 token in `Plaid-Verification` carrying the body's SHA-256,
//! <https://plaid.com/docs/api/webhooks/webhook-verification/>).
//!
//! The claims follow the catalog's `jwt` rule, the very rule the ingress verifies with:
//! the first accepted issuer, the configured claims (`aud`, `email`) with the values of
//! the webhook secret's `jwt_claims`, the claims that must be `true`, `iat`, `exp` unless
//! the rule bounds the age by `iat` alone, and the body-hash claim. The key is a private
//! JSON Web Key (RFC 7517, members per RFC 7518 §6), as the local stack stores it in a
//! development secret's `development_signing_key`; the ingress verifies with its public
//! half, which the local stack publishes where the provider would.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL};
use junction_catalog::{JwtAlgorithm, JwtRule};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// How long a minted token is valid when the rule needs an `exp` (Google's push tokens
/// live an hour).
const LIFETIME_SECONDS: i64 = 3600;

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the signing key is not a usable private JSON Web Key: {0}")]
    MalformedKey(&'static str),
    #[error("the signing key is an {key} key, but the provider's tokens are {rule}")]
    WrongAlgorithm {
        key: &'static str,
        rule: &'static str,
    },
    #[error("no value for the {0} claim: set it in the webhook secret's jwt_claims")]
    MissingClaim(String),
    #[error("the signing key could not sign the token")]
    Signing,
}

/// The members of a private JWK that matter here; others are ignored.
#[derive(Deserialize)]
struct PrivateJwk {
    kty: String,
    kid: String,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    p: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    dp: Option<String>,
    #[serde(default)]
    dq: Option<String>,
    #[serde(default)]
    qi: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

enum Key {
    Rs256(aws_lc_rs::rsa::KeyPair),
    Es256(p256::ecdsa::SigningKey),
}

impl Key {
    fn algorithm(&self) -> JwtAlgorithm {
        match self {
            Key::Rs256(_) => JwtAlgorithm::RS256,
            Key::Es256(_) => JwtAlgorithm::ES256,
        }
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, TokenError> {
        match self {
            Key::Rs256(key) => {
                // RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    input,
                    &mut signature,
                )
                .map_err(|_| TokenError::Signing)?;
                Ok(signature)
            }
            Key::Es256(key) => {
                use p256::ecdsa::signature::Signer as _;
                // JWS wants the fixed-size r || s, not DER (RFC 7518 §3.4).
                let signature: p256::ecdsa::Signature = key.sign(input);
                Ok(signature.to_bytes().to_vec())
            }
        }
    }
}

/// A private key and the claim values a provider's tokens carry: what `send-webhook`
/// mints with. Written `{"key": <private JWK>, "claims": {"aud": …, "email": …}}`
/// ([`TokenSigner::document`]); a bare private JWK is read as a signer without claims.
/// The key never appears in `Debug`.
pub struct TokenSigner {
    key: Key,
    kid: String,
    claims: BTreeMap<String, String>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("algorithm", &self.key.algorithm().name())
            .field("kid", &self.kid)
            .field("claims", &self.claims)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn decode(value: Option<&String>, what: &'static str) -> Result<Vec<u8>, TokenError> {
    value
        .and_then(|value| BASE64URL.decode(value).ok())
        .filter(|bytes| !bytes.is_empty())
        .ok_or(TokenError::MalformedKey(what))
}

impl TokenSigner {
    /// The signer document for a private JWK (its JSON text) and the claim values.
    pub fn document(jwk: &str, claims: &BTreeMap<String, String>) -> Result<String, TokenError> {
        let key: Value =
            serde_json::from_str(jwk).map_err(|_| TokenError::MalformedKey("not JSON"))?;
        Ok(json!({ "key": key, "claims": claims }).to_string())
    }

    /// Reads a signer document, or a bare private JWK.
    pub fn parse(text: &str) -> Result<TokenSigner, TokenError> {
        #[derive(Deserialize)]
        struct Document {
            key: Value,
            #[serde(default)]
            claims: BTreeMap<String, String>,
        }
        let value: Value =
            serde_json::from_str(text).map_err(|_| TokenError::MalformedKey("not JSON"))?;
        let (jwk, claims) = if value.get("key").is_some_and(Value::is_object) {
            let document: Document = serde_json::from_value(value)
                .map_err(|_| TokenError::MalformedKey("claims must be strings"))?;
            (document.key, document.claims)
        } else {
            (value, BTreeMap::new())
        };
        let jwk: PrivateJwk = serde_json::from_value(jwk)
            .map_err(|_| TokenError::MalformedKey("kty and kid are required"))?;
        let key = match jwk.kty.as_str() {
            "RSA" => {
                // RFC 7518 §6.3.2 makes p, q, dp, dq and qi optional (a key of d alone);
                // aws-lc-rs signs with all of them, and every key the local stack and
                // `test_keys` make has them.
                if [&jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi]
                    .iter()
                    .any(|member| member.is_none())
                {
                    return Err(TokenError::MalformedKey(
                        "an RSA key needs p, q, dp, dq and qi besides n, e and d",
                    ));
                }
                // The public members without the leading zero octet some encoders add.
                let public = |value: Option<&String>, what| {
                    decode(value, what).map(|bytes| {
                        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                        bytes[start..].to_vec()
                    })
                };
                let components = aws_lc_rs::rsa::KeyPairComponents {
                    public_key: aws_lc_rs::rsa::PublicKeyComponents {
                        n: public(jwk.n.as_ref(), "n")?,
                        e: public(jwk.e.as_ref(), "e")?,
                    },
                    d: decode(jwk.d.as_ref(), "d")?,
                    p: decode(jwk.p.as_ref(), "p")?,
                    q: decode(jwk.q.as_ref(), "q")?,
                    dP: decode(jwk.dp.as_ref(), "dp")?,
                    dQ: decode(jwk.dq.as_ref(), "dq")?,
                    qInv: decode(jwk.qi.as_ref(), "qi")?,
                };
                // Checks n = p·q and the CRT members against d, and 2048 to 8192 bits.
                let pair = aws_lc_rs::rsa::KeyPair::from_components(&components).map_err(|_| {
                    TokenError::MalformedKey(
                        "inconsistent RSA components, or not 2048 to 8192 bits",
                    )
                })?;
                Key::Rs256(pair)
            }
            "EC" => {
                if jwk.crv.as_deref() != Some("P-256") {
                    return Err(TokenError::MalformedKey("only P-256 EC keys"));
                }
                let signing = p256::ecdsa::SigningKey::from_slice(&decode(jwk.d.as_ref(), "d")?)
                    .map_err(|_| TokenError::MalformedKey("d is not a P-256 scalar"))?;
                // A key whose public members disagree with `d` would mint tokens its
                // published half cannot verify.
                let point = signing.verifying_key().to_encoded_point(false);
                let published = (decode(jwk.x.as_ref(), "x"), decode(jwk.y.as_ref(), "y"));
                if let (Ok(x), Ok(y)) = published
                    && (point.x().map(|v| v.as_slice()) != Some(x.as_slice())
                        || point.y().map(|v| v.as_slice()) != Some(y.as_slice()))
                {
                    return Err(TokenError::MalformedKey("x and y are not d's public key"));
                }
                Key::Es256(signing)
            }
            _ => return Err(TokenError::MalformedKey("kty must be RSA or EC")),
        };
        if jwk
            .alg
            .as_deref()
            .is_some_and(|alg| alg != key.algorithm().name())
        {
            return Err(TokenError::MalformedKey("alg does not match the key type"));
        }
        if jwk.kid.is_empty() {
            return Err(TokenError::MalformedKey("kid is empty"));
        }
        Ok(TokenSigner {
            key,
            kid: jwk.kid,
            claims,
        })
    }

    /// The `kid` the token's header names.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm of the key.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.key.algorithm()
    }

    /// A token for a delivery of `body` at `now` that `rule` accepts.
    pub fn mint(
        &self,
        rule: &JwtRule,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<String, TokenError> {
        if rule.algorithm != self.key.algorithm() {
            return Err(TokenError::WrongAlgorithm {
                key: self.key.algorithm().name(),
                rule: rule.algorithm.name(),
            });
        }
        let iat = now.unix_timestamp();
        let mut claims = serde_json::Map::new();
        if let Some(issuer) = rule.issuers.first() {
            claims.insert("iss".into(), json!(issuer));
        }
        for name in &rule.configured_claims {
            let value = self
                .claims
                .get(name)
                .ok_or_else(|| TokenError::MissingClaim(name.clone()))?;
            claims.insert(name.clone(), json!(value));
        }
        if !rule.issuers.is_empty()
            && let Some(email) = self.claims.get("email")
        {
            // Google's OIDC tokens name the service account by its numeric id too.
            let digest = Sha256::digest(email.as_bytes());
            let id = u128::from_be_bytes(digest[..16].try_into().unwrap_or_default());
            let id = format!("1{:020}", id % 10u128.pow(20));
            claims.insert("azp".into(), json!(id));
            claims.insert("sub".into(), json!(id));
        }
        for name in &rule.true_claims {
            claims.insert(name.clone(), json!(true));
        }
        claims.insert("iat".into(), json!(iat));
        if rule.max_age_seconds.is_none() {
            claims.insert("exp".into(), json!(iat + LIFETIME_SECONDS));
        }
        if let Some(name) = &rule.body_hash_claim {
            claims.insert(name.clone(), json!(hex::encode(Sha256::digest(body))));
        }
        let header = json!({ "alg": rule.algorithm.name(), "kid": self.kid, "typ": "JWT" });
        let signing_input = format!(
            "{}.{}",
            BASE64URL.encode(header.to_string()),
            BASE64URL.encode(Value::Object(claims).to_string())
        );
        let signature = BASE64URL.encode(self.key.sign(signing_input.as_bytes())?);
        Ok(format!("{signing_input}.{signature}"))
    }
}

/// Development keys for tests and benchmarks (`benches/jwt.rs`), made as the local stack
/// makes them.
pub mod test_keys {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL};
    use junction_webhooks::jwt::Jwk;
    use serde_json::json;

    /// A P-256 private JWK and its public half (what the local stack seeds and serves).
    pub fn es256_keys(kid: &str) -> (String, Jwk) {
        let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = signing.verifying_key().to_encoded_point(false);
        let x = BASE64URL.encode(point.x().expect("x"));
        let y = BASE64URL.encode(point.y().expect("y"));
        let private = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": x, "y": y, "d": BASE64URL.encode(signing.to_bytes()),
        });
        let public = Jwk {
            kid: kid.to_owned(),
            kty: "EC".into(),
            alg: Some("ES256".into()),
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(x),
            y: Some(y),
        };
        (private.to_string(), public)
    }

    /// An RSA-2048 private JWK (as Google's keys; the least that aws-lc-rs makes and
    /// verifies) and its public half, with every member of RFC 7518 §6.3.2: aws-lc-rs
    /// generates the key, and its PKCS#8 export (which wraps a PKCS#1 `RSAPrivateKey`)
    /// gives the private members.
    pub fn rs256_keys(kid: &str) -> (String, Jwk) {
        use aws_lc_rs::encoding::AsDer as _;
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let pkcs8 = pair.as_der().expect("PKCS#8");
        let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref()).expect("PKCS#8");
        let private = pkcs1::RsaPrivateKey::try_from(info.private_key).expect("PKCS#1");
        let b64 = |n: pkcs1::UintRef<'_>| BASE64URL.encode(n.as_bytes());
        let (n, e) = (b64(private.modulus), b64(private.public_exponent));
        let jwk = json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
            "n": n, "e": e, "d": b64(private.private_exponent),
            "p": b64(private.prime1), "q": b64(private.prime2),
            "dp": b64(private.exponent1), "dq": b64(private.exponent2),
            "qi": b64(private.coefficient),
        });
        let public = Jwk {
            kid: kid.to_owned(),
            kty: "RSA".into(),
            alg: Some("RS256".into()),
            n: Some(n),
            e: Some(e),
            crv: None,
            x: None,
            y: None,
        };
        (jwk.to_string(), public)
    }
}

#[cfg(test)]
mod tests {
    use junction_catalog::{Catalog, Provider};
    use junction_webhooks::VerifyError;
    use junction_webhooks::jwt::{JwkSet, verify_jwt};

    use super::{test_keys::*, *};

    fn rule(provider: &Provider) -> &JwtRule {
        provider
            .verification()
            .and_then(|v| v.jwt.as_ref())
            .expect("a jwt rule")
    }

    fn claims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// GIVEN Gmail's rule and a signer with the configured audience and service account
    /// WHEN a token is minted THEN shared's verifier accepts it with the public key, and
    /// refuses it for another audience, another key or after an hour.
    #[test]
    fn a_gmail_push_token_verifies_with_the_published_key() {
        let catalog = Catalog::embedded().expect("catalog");
        let rule = rule(catalog.get("gmail").expect("gmail"));
        let configured = claims(&[
            ("aud", "junction-local-gmail"),
            ("email", "gmail-push@junction-dev.iam.gserviceaccount.com"),
        ]);
        let (private, public) = rs256_keys("4f1c0e3d");
        let signer =
            TokenSigner::parse(&TokenSigner::document(&private, &configured).expect("doc"))
                .expect("signer");
        let now = OffsetDateTime::now_utc();
        let token = signer.mint(rule, b"{}", now).expect("minted");
        let keys = JwkSet {
            keys: vec![public.clone()],
        };
        assert_eq!(
            verify_jwt(rule, &token, b"{}", &keys, &configured, now),
            Ok(())
        );
        let claims_part = token.split('.').nth(1).expect("claims");
        let minted: Value =
            serde_json::from_slice(&BASE64URL.decode(claims_part).expect("b64")).expect("json");
        assert_eq!(minted["iss"], "https://accounts.google.com");
        assert_eq!(minted["email_verified"], true);
        assert_eq!(minted["exp"], now.unix_timestamp() + LIFETIME_SECONDS);

        let other_audience = claims(&[
            ("aud", "someone-else"),
            ("email", "gmail-push@junction-dev.iam.gserviceaccount.com"),
        ]);
        assert_eq!(
            verify_jwt(rule, &token, b"{}", &keys, &other_audience, now),
            Err(VerifyError::ClaimMismatch)
        );
        let (_, stranger) = rs256_keys("4f1c0e3d");
        let strangers = JwkSet {
            keys: vec![stranger],
        };
        assert_eq!(
            verify_jwt(rule, &token, b"{}", &strangers, &configured, now),
            Err(VerifyError::SignatureMismatch)
        );
        let later = now + time::Duration::hours(2);
        assert_eq!(
            verify_jwt(rule, &token, b"{}", &keys, &configured, later),
            Err(VerifyError::StaleTimestamp)
        );
    }

    /// GIVEN Plaid's rule WHEN a token is minted for a body THEN it verifies for exactly
    /// those bytes, carries no `exp`, and is stale after five minutes.
    #[test]
    fn a_plaid_token_covers_the_exact_body() {
        let catalog = Catalog::embedded().expect("catalog");
        let rule = rule(catalog.get("plaid").expect("plaid"));
        let (private, public) = es256_keys("bfbd5111-8e33-4643-8ced-b2e642a72f3c");
        let signer = TokenSigner::parse(&private).expect("a bare JWK is a signer");
        let now = OffsetDateTime::now_utc();
        let body = br#"{"webhook_type":"TRANSACTIONS","webhook_code":"SYNC_UPDATES_AVAILABLE"}"#;
        let token = signer.mint(rule, body, now).expect("minted");
        let keys = JwkSet { keys: vec![public] };
        let none = BTreeMap::new();
        assert_eq!(verify_jwt(rule, &token, body, &keys, &none, now), Ok(()));
        assert_eq!(
            verify_jwt(rule, &token, b"{}", &keys, &none, now),
            Err(VerifyError::BodyHashMismatch)
        );
        let header = token.split('.').next().expect("header");
        let header: Value =
            serde_json::from_slice(&BASE64URL.decode(header).expect("b64")).expect("json");
        assert_eq!(
            header,
            json!({"alg": "ES256", "kid": "bfbd5111-8e33-4643-8ced-b2e642a72f3c", "typ": "JWT"})
        );
        let claims_part = token.split('.').nth(1).expect("claims");
        let minted: Value =
            serde_json::from_slice(&BASE64URL.decode(claims_part).expect("b64")).expect("json");
        assert!(minted.get("exp").is_none(), "{minted}");
        assert_eq!(
            verify_jwt(
                rule,
                &token,
                body,
                &keys,
                &none,
                now + time::Duration::minutes(6)
            ),
            Err(VerifyError::StaleTimestamp)
        );
    }

    /// GIVEN an RSA private JWK WHEN it lacks the CRT members, or one member disagrees
    /// with the rest THEN it is refused before it signs anything.
    #[test]
    fn rsa_keys_need_every_member_and_consistent_ones() {
        let (rsa, _) = rs256_keys("k3");
        assert!(TokenSigner::parse(&rsa).is_ok());
        let full: Value = serde_json::from_str(&rsa).expect("json");
        for member in ["p", "q", "dp", "dq", "qi"] {
            let mut partial = full.clone();
            partial.as_object_mut().map(|o| o.remove(member));
            assert!(
                matches!(
                    TokenSigner::parse(&partial.to_string()),
                    Err(TokenError::MalformedKey(_))
                ),
                "without {member}"
            );
        }
        let (other, _) = rs256_keys("k4");
        let other: Value = serde_json::from_str(&other).expect("json");
        for member in ["d", "p", "dq", "qi"] {
            let mut mixed = full.clone();
            mixed[member] = other[member].clone();
            assert!(
                matches!(
                    TokenSigner::parse(&mixed.to_string()),
                    Err(TokenError::MalformedKey(_))
                ),
                "{member} of another key"
            );
        }
    }

    #[test]
    fn keys_that_cannot_mint_the_providers_tokens_are_refused() {
        let catalog = Catalog::embedded().expect("catalog");
        let gmail = rule(catalog.get("gmail").expect("gmail"));
        let (ec, _) = es256_keys("k1");
        let signer = TokenSigner::parse(&ec).expect("signer");
        assert_eq!(
            signer
                .mint(gmail, b"", OffsetDateTime::now_utc())
                .expect_err("ES256 key for an RS256 rule"),
            TokenError::WrongAlgorithm {
                key: "ES256",
                rule: "RS256"
            }
        );
        let (rsa, _) = rs256_keys("k2");
        let signer = TokenSigner::parse(&rsa).expect("signer");
        assert_eq!(
            signer.mint(gmail, b"", OffsetDateTime::now_utc()),
            Err(TokenError::MissingClaim("aud".into()))
        );
        let mut tampered: Value = serde_json::from_str(&ec).expect("json");
        tampered["x"] = json!(BASE64URL.encode([7u8; 32]));
        assert!(matches!(
            TokenSigner::parse(&tampered.to_string()),
            Err(TokenError::MalformedKey(_))
        ));
        for text in ["", "not json", r#"{"kty":"oct","kid":"k","k":"AAAA"}"#] {
            assert!(TokenSigner::parse(text).is_err(), "{text}");
        }
        let d: Value = serde_json::from_str(&rsa).expect("json");
        let d = d["d"].as_str().expect("d");
        assert!(!format!("{signer:?}").contains(d), "the key is redacted");
    }
}
