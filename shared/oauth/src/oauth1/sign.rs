//! RFC 5849 §3 request signing with HMAC-SHA1: the `Authorization: OAuth …` header of a
//! request.
//!
//! The HMAC-SHA1 over the signature base string and the header's serialization are the
//! `oauth1-request` crate's. Its own parameter list sorts names and values *before*
//! encoding them, which §3.4.1.3.2 does not allow: `c@` must sort before `c2` (its
//! encoding `c%40` does, its raw form does not), and the RFC's own §3.4.1 example holds
//! exactly that pair. So the request's parameters are collected, decoded and encoded
//! here (§3.4.1.3.1, §3.6), sorted by their encoded forms, and handed to the crate as
//! already encoded; the tests hold the RFC's examples byte for byte.

use std::{fmt::Display, num::NonZeroU64};

use oauth1_request::{
    Builder, Credentials, HmacSha1,
    serializer::{Serializer, SerializerExt as _},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

use junction_aws::crypto::SecretString;

/// RFC 5849 §3.6: everything but the unreserved characters (`ALPHA`, `DIGIT`, `-`, `.`,
/// `_`, `~`) is percent-encoded, with uppercase hex digits.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` encoded per RFC 5849 §3.6 (UTF-8 first, then every octet outside the
/// unreserved set as `%XX`).
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RESERVED).to_string()
}

/// The secrets and identifiers a signature needs. `token` is absent for the
/// temporary-credentials request (§2.1).
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub consumer_key: String,
    pub consumer_secret: SecretString,
    pub token: Option<(String, SecretString)>,
}

/// The protocol parameters of one request beyond the credentials.
#[derive(Debug, Clone, Default)]
pub struct ProtocolParams<'a> {
    /// `oauth_callback` (§2.1: the temporary-credentials request only).
    pub callback: Option<&'a str>,
    /// `oauth_verifier` (§2.3: the token-credentials request only).
    pub verifier: Option<&'a str>,
}

/// The request's own parameters (§3.4.1.3.1): the URL's query and a form body's pairs,
/// decoded as `application/x-www-form-urlencoded`, then encoded per §3.6 and sorted by
/// encoded name, then encoded value (§3.4.1.3.2). `oauth_*` names are the protocol's:
/// never taken from the request.
fn normalized_parameters(url: &Url, form: &[(String, String)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .chain(form.iter().cloned())
        .filter(|(name, _)| !name.starts_with("oauth_"))
        .map(|(name, value)| (percent_encode(&name), percent_encode(&value)))
        .collect();
    pairs.sort();
    pairs
}

/// §3.4.1.2: scheme and host lowercase, the port only when not the scheme's default,
/// the path; no query, no fragment. `Url` already lowercases and drops default ports.
pub fn base_string_uri(url: &Url) -> String {
    let mut base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        base.push_str(&format!(":{port}"));
    }
    base.push_str(url.path());
    base
}

/// Already-encoded, already-sorted parameters, interleaved with the protocol
/// parameters in the order the serializer emits them.
struct Encoded<'a>(&'a [(String, String)]);

/// The protocol parameters, in byte order, each with the serializer call that emits it.
const PROTOCOL: [&str; 8] = [
    "oauth_callback",
    "oauth_consumer_key",
    "oauth_nonce",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_token",
    "oauth_verifier",
    "oauth_version",
];

fn emit_protocol<S: Serializer>(serializer: &mut S, index: usize) {
    match index {
        0 => serializer.serialize_oauth_callback(),
        1 => serializer.serialize_oauth_consumer_key(),
        2 => serializer.serialize_oauth_nonce(),
        3 => serializer.serialize_oauth_signature_method(),
        4 => serializer.serialize_oauth_timestamp(),
        5 => serializer.serialize_oauth_token(),
        6 => serializer.serialize_oauth_verifier(),
        _ => serializer.serialize_oauth_version(),
    }
}

impl oauth1_request::Request for Encoded<'_> {
    fn serialize<S: Serializer>(&self, mut serializer: S) -> S::Output {
        if self.0.is_empty() {
            serializer.serialize_oauth_parameters();
            return serializer.end();
        }
        let mut next = 0;
        for (name, value) in self.0 {
            while next < PROTOCOL.len() && PROTOCOL[next] < name.as_str() {
                emit_protocol(&mut serializer, next);
                next += 1;
            }
            // The crate writes a name into the base string as given, and a value
            // encoded once more: the name is given encoded twice (§3.4.1.3.2's
            // normalized string is itself encoded in the base string, §3.4.1.1).
            serializer.serialize_parameter_encoded(&percent_encode(name), value as &dyn Display);
        }
        while next < PROTOCOL.len() {
            emit_protocol(&mut serializer, next);
            next += 1;
        }
        serializer.end()
    }
}

/// The `Authorization` header value of a request (`OAuth oauth_consumer_key="…", …,
/// oauth_signature="…"`) signed with HMAC-SHA1, with the given nonce and timestamp
/// (tests pin them; [`authorization_header`] draws them). `form` is the body's pairs when
/// the body is `application/x-www-form-urlencoded`, else empty (§3.4.1.3.1: other bodies
/// are not signed).
pub fn authorization_header_at(
    method: &str,
    url: &Url,
    form: &[(String, String)],
    keys: &SigningKeys,
    protocol: &ProtocolParams<'_>,
    nonce: &str,
    timestamp: u64,
) -> String {
    let parameters = normalized_parameters(url, form);
    let client = Credentials::new(keys.consumer_key.as_str(), keys.consumer_secret.expose());
    let mut builder = Builder::<_, _, &str>::new(client, HmacSha1::new());
    if let Some((token, secret)) = &keys.token {
        builder.token(Credentials::new(token.as_str(), secret.expose()));
    }
    builder
        .callback(protocol.callback)
        .verifier(protocol.verifier)
        .nonce(nonce)
        .timestamp(NonZeroU64::new(timestamp));
    builder.authorize(
        &method.to_ascii_uppercase(),
        base_string_uri(url),
        &Encoded(&parameters),
    )
}

/// [`authorization_header_at`] with a fresh 128-bit nonce and the current time: what a
/// caller signing a real request uses (the outbound client for a provider whose
/// `api_auth` is `signed`).
pub fn authorization_header(
    method: &str,
    url: &Url,
    form: &[(String, String)],
    keys: &SigningKeys,
    protocol: &ProtocolParams<'_>,
) -> String {
    let nonce = super::super::random_token();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_secs().max(1));
    authorization_header_at(method, url, form, keys, protocol, &nonce, timestamp)
}

/// The `(name, value)` pairs of an `Authorization: OAuth …` header, decoded (§3.5.1);
/// `None` when it is not one.
pub fn parse_authorization(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("OAuth ")?;
    rest.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, quoted) = part.split_once('=')?;
            let value = quoted.strip_prefix('"')?.strip_suffix('"')?;
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .ok()?
                .into_owned();
            Some((name.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(consumer: (&str, &str), token: Option<(&str, &str)>) -> SigningKeys {
        SigningKeys {
            consumer_key: consumer.0.to_owned(),
            consumer_secret: SecretString::new(consumer.1),
            token: token.map(|(t, s)| (t.to_owned(), SecretString::new(s))),
        }
    }

    fn signature(header: &str) -> String {
        parse_authorization(header)
            .expect("an OAuth header")
            .into_iter()
            .find(|(name, _)| name == "oauth_signature")
            .map(|(_, value)| value)
            .expect("a signature")
    }

    /// RFC 5849 §1.2, step 1: the printer's temporary-credentials request.
    #[test]
    fn rfc5849_1_2_temporary_credentials_request() {
        let header = authorization_header_at(
            "POST",
            &Url::parse("https://photos.example.net/initiate").expect("a URL"),
            &[],
            &keys(("dpf43f3p2l4k3l03", "kd94hf93k423kf44"), None),
            &ProtocolParams {
                callback: Some("http://printer.example.com/ready"),
                verifier: None,
            },
            "wIjqoS",
            137_131_200,
        );
        assert_eq!(signature(&header), "74KNZJeDHnMBp0EMJ9ZHt/XKycU=");
        assert!(header.contains("oauth_callback=\"http%3A%2F%2Fprinter.example.com%2Fready\""));
    }

    /// RFC 5849 §1.2, step 3: the token-credentials request with the verifier.
    #[test]
    fn rfc5849_1_2_token_credentials_request() {
        let header = authorization_header_at(
            "POST",
            &Url::parse("https://photos.example.net/token").expect("a URL"),
            &[],
            &keys(
                ("dpf43f3p2l4k3l03", "kd94hf93k423kf44"),
                Some(("hh5s93j4hdidpola", "hdhd0244k9j7ao03")),
            ),
            &ProtocolParams {
                callback: None,
                verifier: Some("hfdp7dh39dks9884"),
            },
            "walatlh",
            137_131_201,
        );
        assert_eq!(signature(&header), "gKgrFCywp7rO0OXSjdot/IHF7IU=");
    }

    /// RFC 5849 §1.2, step 4: a protected resource request with query parameters.
    #[test]
    fn rfc5849_1_2_protected_resource_request() {
        let header = authorization_header_at(
            "GET",
            &Url::parse("http://photos.example.net/photos?file=vacation.jpg&size=original")
                .expect("a URL"),
            &[],
            &keys(
                ("dpf43f3p2l4k3l03", "kd94hf93k423kf44"),
                Some(("nnch734d00sl2jdk", "pfkkdhi9sl3r4s00")),
            ),
            &ProtocolParams::default(),
            "chapoH",
            137_131_202,
        );
        assert_eq!(signature(&header), "MdpQcU8iPSUjWoN/UDMsK2sui9I=");
    }

    /// RFC 5849 §3.4.1 (§3.1's request): query and form parameters, a repeated name, an
    /// empty value, `c@` sorting before `c2` by its encoding. The signature §3.1 prints
    /// (`bYT5CMsGcbgUdFHObYMEfcx6bsw=`) does not match its own base string; RFC errata
    /// 2550 corrects it to the value below, the HMAC-SHA1 of §3.4.1.1's base string.
    #[test]
    fn rfc5849_3_4_1_parameters_query_and_form() {
        let url = Url::parse("http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b")
            .expect("a URL");
        let form: Vec<(String, String)> = form_urlencoded::parse(b"c2&a3=2+q")
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let normalized: Vec<String> = normalized_parameters(&url, &form)
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        // §3.4.1.3.2's normalized parameters, without the protocol ones.
        assert_eq!(
            normalized.join("&"),
            "a2=r%20b&a3=2%20q&a3=a&b5=%3D%253D&c%40=&c2="
        );
        assert_eq!(base_string_uri(&url), "http://example.com/request");
        let header = authorization_header_at(
            "POST",
            &url,
            &form,
            &keys(
                ("9djdj82h48djs9d2", "j49sk3j29djd"),
                Some(("kkk9d7dh3k39sjv7", "dh893hdasih9")),
            ),
            &ProtocolParams::default(),
            "7d8f3e4a",
            137_131_201,
        );
        assert_eq!(signature(&header), "r6/TJjbCOr97/+UU0NsvSne7s5g=");
    }

    /// §3.4.1.2's examples: default ports go, others stay; scheme and host lowercase.
    #[test]
    fn rfc5849_3_4_1_2_base_string_uri() {
        let base = |url: &str| base_string_uri(&Url::parse(url).expect("a URL"));
        assert_eq!(
            base("HTTP://EXAMPLE.COM:80/r%20v/X?id=123"),
            "http://example.com/r%20v/X"
        );
        assert_eq!(
            base("https://www.example.net:8080/?q=1"),
            "https://www.example.net:8080/"
        );
    }

    /// RFC 5849 §3.4.1 and §3.4.2 written out from the text, independently of the
    /// signer: every parameter encoded (§3.6, byte by byte), sorted by encoded name then
    /// value, joined, the base string, HMAC-SHA1 keyed with both encoded secrets.
    fn independent_signature(
        method: &str,
        base_uri: &str,
        parameters: &[(String, String)],
        consumer_secret: &str,
        token_secret: &str,
    ) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let encode = |value: &str| {
            value
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let mut encoded: Vec<(String, String)> = parameters
            .iter()
            .map(|(n, v)| (encode(n), encode(v)))
            .collect();
        encoded.sort();
        let normalized = encoded
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let base = format!("{method}&{}&{}", encode(base_uri), encode(&normalized));
        let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
        let mut mac =
            hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(base.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    proptest! {
        /// Any query and form parameters (reserved characters, non-ASCII, repeated and
        /// empty names and values) sign to what the RFC's recipe computes on its own.
        #[test]
        fn signatures_match_an_independent_computation_of_the_recipe(
            query in proptest::collection::vec(("[a-z@{}~ %+&=é]{0,6}", "[a-zA-Z0-9@{}~ %+&=é/]{0,8}"), 0..5),
            form in proptest::collection::vec(("[a-z@{}~ é]{1,6}", "[a-z0-9 +=é]{0,8}"), 0..4),
            secret in "[ -~]{0,12}",
        ) {
            let query: Vec<(String, String)> = query
                .into_iter()
                .filter(|(name, _)| !name.starts_with("oauth_"))
                .collect();
            let form: Vec<(String, String)> = form
                .into_iter()
                .filter(|(name, _)| !name.starts_with("oauth_"))
                .collect();
            let mut url = Url::parse("https://API.example.com:443/a%20b/c").expect("a URL");
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(&query);
            }
            let header = authorization_header_at(
                "post",
                &url,
                &form,
                &keys(("consumer key", "consumer&secret"), Some(("token/1", secret.as_str()))),
                &ProtocolParams::default(),
                "nonce-1",
                1_700_000_000,
            );
            let protocol = parse_authorization(&header).expect("an OAuth header");
            let mut parameters: Vec<(String, String)> = protocol
                .iter()
                .filter(|(name, _)| name != "oauth_signature")
                .cloned()
                .collect();
            parameters.extend(query.iter().cloned());
            parameters.extend(form.iter().cloned());
            let expected = independent_signature(
                "POST",
                "https://api.example.com/a%20b/c",
                &parameters,
                "consumer&secret",
                &secret,
            );
            prop_assert_eq!(signature(&header), expected);
        }

        /// §3.6: the output holds only unreserved characters and `%XX` with uppercase
        /// hex, unreserved characters pass unchanged, and decoding gives the input back.
        #[test]
        fn percent_encoding_is_rfc5849_3_6(value in "\\PC*") {
            let encoded = percent_encode(&value);
            let bytes = encoded.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if b == b'%' {
                    prop_assert!(i + 2 < bytes.len());
                    let hex = &encoded[i + 1..i + 3];
                    prop_assert!(hex.bytes().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)));
                    i += 3;
                } else {
                    prop_assert!(b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                    i += 1;
                }
            }
            let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8().expect("UTF-8");
            prop_assert_eq!(decoded.as_ref(), value.as_str());
            let unreserved: String = value.chars().filter(|c| c.is_ascii_alphanumeric() || "-._~".contains(*c)).collect();
            prop_assert_eq!(percent_encode(&unreserved), unreserved);
        }
    }
}
