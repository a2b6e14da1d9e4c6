//! AWS Signature Version 4 for the requests Junction sends without the SDK's
//! orchestrator ([`crate::aws_json`]): a `POST /` with a body and a few headers.
//!
//! The SDK's signer is general (any method, path, query, presigning, chunked bodies) and
//! was a fifth of the webhook ingress's CPU per delivery (infra/bench). This one does
//! the one request shape the JSON protocol needs and keeps the derived signing key for
//! the day, so a signature costs two SHA-256 passes and one HMAC. It is checked against
//! the SigV4 test suite's vectors and, for arbitrary inputs, against the SDK's signer.

use std::{fmt::Write as _, sync::Mutex};

use aws_credential_types::Credentials;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// The headers a signature adds to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `x-amz-date`: the signing time, `YYYYMMDD'T'HHMMSS'Z'`.
    pub amz_date: String,
    /// `authorization`.
    pub authorization: String,
    /// `x-amz-security-token`, for temporary credentials (signed).
    pub security_token: Option<String>,
}

/// Signs requests for one service in one region.
#[derive(Debug)]
pub struct Signer {
    region: String,
    service: String,
    /// The signing key of the last signature: it depends only on the secret key, the
    /// day, the region and the service.
    key: Mutex<Option<DayKey>>,
}

#[derive(Debug)]
struct DayKey {
    day: String,
    secret_digest: [u8; 32],
    key: [u8; 32],
}

impl Signer {
    pub fn new(region: impl Into<String>, service: impl Into<String>) -> Signer {
        Signer {
            region: region.into(),
            service: service.into(),
            key: Mutex::new(None),
        }
    }

    /// Signs `POST /` (no query) to `host` with `headers` (names lowercase; `host`,
    /// `x-amz-date` and `x-amz-security-token` are added here) and `body`, at `time`.
    pub fn sign_post(
        &self,
        credentials: &Credentials,
        time: OffsetDateTime,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Signature {
        let time = time.to_offset(time::UtcOffset::UTC);
        let amz_date = amz_date(time);
        let day = &amz_date[..8];
        let token = credentials.session_token();

        let mut signed: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 3);
        signed.extend_from_slice(headers);
        signed.push(("host", host));
        signed.push(("x-amz-date", &amz_date));
        if let Some(token) = token {
            signed.push(("x-amz-security-token", token));
        }
        signed.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let mut names = String::with_capacity(16 * signed.len());
        let mut canonical = String::with_capacity(256 + 64 * signed.len());
        canonical.push_str("POST\n/\n\n");
        for (index, (name, value)) in signed.iter().enumerate() {
            canonical.push_str(name);
            canonical.push(':');
            push_trimmed(&mut canonical, value);
            canonical.push('\n');
            if index > 0 {
                names.push(';');
            }
            names.push_str(name);
        }
        canonical.push('\n');
        canonical.push_str(&names);
        canonical.push('\n');
        canonical.push_str(&hex::encode(Sha256::digest(body)));

        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let mut to_sign = String::with_capacity(128 + scope.len());
        to_sign.push_str("AWS4-HMAC-SHA256\n");
        to_sign.push_str(&amz_date);
        to_sign.push('\n');
        to_sign.push_str(&scope);
        to_sign.push('\n');
        to_sign.push_str(&hex::encode(Sha256::digest(canonical.as_bytes())));

        let key = self.signing_key(credentials.secret_access_key(), day);
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        let mut authorization = String::with_capacity(160 + names.len());
        let _ = write!(
            authorization,
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={signature}",
            credentials.access_key_id()
        );
        Signature {
            security_token: token.map(str::to_owned),
            amz_date,
            authorization,
        }
    }

    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service),
    /// "aws4_request")`, derived once per day and secret.
    fn signing_key(&self, secret: &str, day: &str) -> [u8; 32] {
        let secret_digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut cached = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = cached.as_ref()
            && known.day == day
            && known.secret_digest == secret_digest
        {
            return known.key;
        }
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let key = hmac(&k_service, b"aws4_request");
        *cached = Some(DayKey {
            day: day.to_owned(),
            secret_digest,
            key,
        });
        key
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `YYYYMMDD'T'HHMMSS'Z'` (UTC).
fn amz_date(time: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// A header value as SigV4 canonicalizes it: outer whitespace trimmed, runs of spaces
/// inside collapsed to one.
fn push_trimmed(out: &mut String, value: &str) {
    let mut previous_space = false;
    for c in value.trim().chars() {
        if c == ' ' {
            if !previous_space {
                out.push(' ');
            }
            previous_space = true;
        } else {
            out.push(c);
            previous_space = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_sigv4::{
        http_request::{SignableBody, SignableRequest, SigningSettings, sign},
        sign::v4,
    };
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    fn signature_of(authorization: &str) -> &str {
        authorization
            .rsplit_once("Signature=")
            .map(|(_, signature)| signature)
            .unwrap_or_default()
    }

    // The three POST cases of the SigV4 test suite (aws-c-auth v0.9.0
    // tests/aws-signing-test-suite/v4, as shipped in the aws-sigv4 1.6.4 crate):
    // `header-signed-request.txt` of each.
    const SUITE_TIME: OffsetDateTime = datetime!(2015-08-30 12:36:00 UTC);

    #[test]
    fn suite_post_x_www_form_urlencoded() {
        let body = b"Param1=value1";
        let digest = hex::encode(Sha256::digest(body));
        let signature = Signer::new("us-east-1", "service").sign_post(
            &example_credentials(None),
            SUITE_TIME,
            "example.amazonaws.com",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "13"),
                ("x-amz-content-sha256", &digest),
            ],
            body,
        );
        assert_eq!(signature.amz_date, "20150830T123600Z");
        assert_eq!(
            signature.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, \
             Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
        );
        assert_eq!(signature.security_token, None);
    }

    #[test]
    fn suite_post_sts_header_before() {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let signature = Signer::new("us-east-1", "service").sign_post(
            &example_credentials(Some(token)),
            SUITE_TIME,
            "example.amazonaws.com",
            &[],
            b"",
        );
        assert_eq!(
            signature.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        );
        assert_eq!(signature.security_token.as_deref(), Some(token));
    }

    #[test]
    fn suite_post_header_key_sort() {
        let signature = Signer::new("us-east-1", "service").sign_post(
            &example_credentials(None),
            SUITE_TIME,
            "example.amazonaws.com",
            &[("my-header1", "value1")],
            b"",
        );
        assert_eq!(
            signature_of(&signature.authorization),
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
        );
    }

    #[test]
    fn the_day_key_is_derived_again_for_a_new_day_or_secret() {
        let signer = Signer::new("us-east-1", "sqs");
        let sign = |credentials: &Credentials, time: OffsetDateTime| {
            signer
                .sign_post(credentials, time, "sqs.us-east-1.amazonaws.com", &[], b"{}")
                .authorization
        };
        let first = example_credentials(None);
        let other = Credentials::new("AKIDEXAMPLE", "another-secret", None, None, "test");
        // Each is compared with a fresh signer (no cached key).
        for (credentials, time) in [
            (&first, SUITE_TIME),
            (&first, SUITE_TIME + Duration::from_secs(86_400)),
            (&other, SUITE_TIME + Duration::from_secs(86_400)),
            (&first, SUITE_TIME),
        ] {
            let fresh = Signer::new("us-east-1", "sqs")
                .sign_post(credentials, time, "sqs.us-east-1.amazonaws.com", &[], b"{}")
                .authorization;
            assert_eq!(sign(credentials, time), fresh);
        }
    }

    /// The SDK's signer (aws-sigv4) on the same request.
    fn sdk_signature(
        credentials: &Credentials,
        seconds: u64,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("sqs")
            .time(UNIX_EPOCH + Duration::from_secs(seconds))
            .settings(SigningSettings::default())
            .build()
            .expect("signing params")
            .into();
        let mut all: Vec<(&str, &str)> = vec![("host", host)];
        all.extend_from_slice(headers);
        let request = SignableRequest::new(
            "POST",
            format!("https://{host}/"),
            all.into_iter(),
            SignableBody::Bytes(body),
        )
        .expect("signable request");
        let (instructions, _) = sign(request, &params)
            .expect("signed by the SDK")
            .into_parts();
        instructions
            .headers()
            .find(|(name, _)| *name == "authorization")
            .map(|(_, value)| value.to_owned())
            .expect("an authorization header")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn agrees_with_the_sdk_signer(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            target in "AmazonSQS\\.[A-Za-z]{1,24}",
            token in proptest::option::of("[A-Za-z0-9+/=]{16,64}"),
            secret in "[A-Za-z0-9+/]{40}",
            seconds in 1_500_000_000u64..2_500_000_000,
            port in proptest::option::of(1024u16..65535),
        ) {
            let host = match port {
                Some(port) => format!("127.0.0.1:{port}"),
                None => "sqs.eu-west-1.amazonaws.com".to_owned(),
            };
            let credentials = Credentials::new("AKIDEXAMPLE", secret, token, None, "test");
            let headers = [
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", target.as_str()),
            ];
            let time = OffsetDateTime::from_unix_timestamp(seconds as i64).expect("in range");
            let ours = Signer::new("eu-west-1", "sqs")
                .sign_post(&credentials, time, &host, &headers, &body);
            prop_assert_eq!(
                ours.authorization,
                sdk_signature(&credentials, seconds, &host, &headers, &body)
            );
        }
    }
}
