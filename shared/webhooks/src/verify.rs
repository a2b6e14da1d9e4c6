//! Signature verification driven by a catalog [`Verification`]: one algorithm for every
//! provider, so each scheme's quirks live in data and its tests.
//!
//! Runs on the raw request bytes before anything parses or logs the body; compares in
//! constant time; fails closed on anything missing or malformed. Time is an argument so
//! replay windows are tested without sleeping.

use std::borrow::Cow;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::SigningSecret;
use junction_catalog::{
    HeaderNames, Scheme, SchemeFromHeader, SecretEncoding, SignatureEncoding, SignatureFormat,
    SignedPart, TimestampRule, TimestampSource, TimestampUnit, Verification,
};

/// DocuSign numbers its signature headers `-1` to `-N`; it allows up to 100 keys.
const MAX_NUMBERED_HEADERS: usize = 100;

/// The parts of a request a signature can cover.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// HTTP method as received.
    pub method: &'a str,
    /// The public URL the provider called, with its query string.
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

/// Why a request was not accepted as authentic. [`VerifyError::reason`] is the only
/// detail that leaves the process (in the 401 body, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is missing")]
    MissingSignature,
    #[error("the signature header is malformed or empty")]
    MalformedSignature,
    #[error("a signed header is missing")]
    MissingSignedHeader,
    #[error("the timestamp is missing")]
    MissingTimestamp,
    #[error("the timestamp is malformed")]
    MalformedTimestamp,
    #[error("the timestamp is older than the replay window")]
    StaleTimestamp,
    #[error("the timestamp is further in the future than the replay window")]
    FutureTimestamp,
    #[error("the body hash query parameter is missing")]
    MissingBodyHash,
    #[error("the body does not match its hash query parameter")]
    BodyHashMismatch,
    #[error("no signature matched any signing secret")]
    SignatureMismatch,
    #[error("a required header is missing or has another value")]
    UnexpectedHeader,
    #[error("the body is not the JSON or XML the scheme reads its signature from")]
    MalformedBody,
    #[error("a token claim is missing or does not have the expected value")]
    ClaimMismatch,
    #[error("the token names a key its provider has expired")]
    ExpiredKey,
    /// Not the caller's fault: no configured secret could be decoded for this scheme.
    #[error("no configured signing secret is usable for this scheme")]
    NoUsableSecret,
}

impl VerifyError {
    /// A stable, non-secret reason code for responses, logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            VerifyError::MissingSignature => "missing_signature",
            VerifyError::MalformedSignature => "malformed_signature",
            VerifyError::MissingSignedHeader => "missing_signed_header",
            VerifyError::MissingTimestamp => "missing_timestamp",
            VerifyError::MalformedTimestamp => "malformed_timestamp",
            VerifyError::StaleTimestamp => "stale_timestamp",
            VerifyError::FutureTimestamp => "future_timestamp",
            VerifyError::MissingBodyHash => "missing_body_hash",
            VerifyError::BodyHashMismatch => "body_hash_mismatch",
            VerifyError::SignatureMismatch => "signature_mismatch",
            VerifyError::UnexpectedHeader => "unexpected_header",
            VerifyError::MalformedBody => "malformed_body",
            VerifyError::ClaimMismatch => "claim_mismatch",
            VerifyError::ExpiredKey => "expired_key",
            VerifyError::NoUsableSecret => "secret_unusable",
        }
    }

    /// True when the request may be genuine and the fault is ours (configuration).
    pub fn is_configuration_error(self) -> bool {
        self == VerifyError::NoUsableSecret
    }
}

/// Verifies `request` against `secrets` (any one verifying is enough) at time `now`.
pub fn verify(
    spec: &Verification,
    secrets: &[SigningSecret],
    request: &SignedRequest<'_>,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    verify_matching(spec, secrets, request, now).map(|_| ())
}

/// [`verify`], returning the index of the secret that verified (a handshake that
/// answers with an HMAC, such as Zoom's, uses that one).
pub fn verify_matching(
    spec: &Verification,
    secrets: &[SigningSecret],
    request: &SignedRequest<'_>,
    now: OffsetDateTime,
) -> Result<usize, VerifyError> {
    for (name, expected) in &spec.required_headers {
        let value = request.headers.get(name.as_str()).map(|v| v.as_bytes());
        if value != Some(expected.as_bytes()) {
            return Err(VerifyError::UnexpectedHeader);
        }
    }
    if let SignatureFormat::PerItem {
        items,
        signature,
        encoding,
    } = &spec.signature
    {
        return verify_per_item(spec, secrets, request, (items, signature, *encoding));
    }
    let scheme = request_scheme(spec, request.headers)?;
    let signatures = parse_signatures(&spec.signature, spec.scheme, request)?;
    let timestamp = match &spec.timestamp {
        Some(rule) => read_timestamp(rule, &signatures.params, request.headers)?,
        None => None,
    };
    if let (Some(rule), Some(raw)) = (&spec.timestamp, timestamp) {
        check_window(rule, parse_timestamp(rule.unit, raw)?, now)?;
    }
    if let Some(param) = &spec.body_hash_query_param
        && !is_form(request.headers)
    {
        check_body_hash(param, request)?;
    }
    check_raw_members(spec, request.body)?;
    let json = parse_json_if(spec.signed.iter().any(is_json_part), request)?;
    // Box's SDKs also accept a signature over the body with its non-ASCII characters
    // escaped (see [`box_escaped_body`]), Twilio's over the URL with its port written
    // the other way (see [`other_port_forms`]); only for entries that say so.
    let escaped = spec
        .escaped_body_retry
        .then(|| box_escaped_body(request.body))
        .flatten()
        .filter(|escaped| escaped.as_slice() != request.body);
    let other_urls = if spec.url_port_retry {
        other_port_forms(request.url)
    } else {
        Vec::new()
    };
    let mut candidates = vec![resolve_parts(
        spec,
        request,
        timestamp,
        json.as_ref(),
        &signatures.params,
    )?];
    if let Some(body) = &escaped {
        candidates.push(resolve_parts(
            spec,
            &SignedRequest { body, ..*request },
            timestamp,
            json.as_ref(),
            &signatures.params,
        )?);
    }
    for url in &other_urls {
        candidates.push(resolve_parts(
            spec,
            &SignedRequest { url, ..*request },
            timestamp,
            json.as_ref(),
            &signatures.params,
        )?);
    }
    let mut usable_secret = false;
    for (index, secret) in secrets.iter().enumerate() {
        let Some(key) = decode_secret(spec, secret) else {
            continue;
        };
        usable_secret = true;
        if candidates
            .iter()
            .any(|pieces| matches_any(scheme, &key, pieces, &signatures.values))
        {
            if let Some(rule) = &spec.timestamp
                && let TimestampSource::JsonPointer(pointer) = &rule.from
            {
                let raw = body_timestamp(request, pointer)?;
                check_window(rule, parse_timestamp(rule.unit, &raw)?, now)?;
            }
            return Ok(index);
        }
    }
    if usable_secret {
        Err(VerifyError::SignatureMismatch)
    } else {
        Err(VerifyError::NoUsableSecret)
    }
}

/// The scheme this request is verified (or signed) with: the entry's, unless its
/// `scheme_from` header names another, as Twilio's SharedKey deliveries do
/// (`X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256`; twilio-python
/// 9.13.0 `request_validator.py` `get_signature_algorithm`: the first `algorithm=` pair
/// with a value, trimmed, matched ignoring case; none means the default). A value the
/// entry does not list fails closed.
fn request_scheme(spec: &Verification, headers: &HeaderMap) -> Result<Scheme, VerifyError> {
    let Some(SchemeFromHeader {
        header,
        pair_separator,
        param,
        values,
    }) = &spec.scheme_from
    else {
        return Ok(spec.scheme);
    };
    let Some(raw) = header_value(headers, header) else {
        return Ok(spec.scheme);
    };
    let raw = std::str::from_utf8(raw).map_err(|_| VerifyError::UnexpectedHeader)?;
    let named = raw.split(pair_separator.as_str()).find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name.trim() == param && !value.trim().is_empty()).then(|| value.trim())
    });
    match named {
        None => Ok(spec.scheme),
        Some(named) => values
            .iter()
            .find(|(value, _)| value.eq_ignore_ascii_case(named))
            .map(|(_, scheme)| *scheme)
            .ok_or(VerifyError::UnexpectedHeader),
    }
}

/// `url` with its port written the other way, as Twilio's SDKs also try it because
/// Twilio signs either form: twilio-python 9.11.0 `twilio/request_validator.py`
/// (`RequestValidator.validate` checks `add_port(uri)` and `remove_port(uri)`: the
/// port 443 for https, else 80, added when the URL has none; any port removed when it
/// has one) and twilio-node 6.0.2 `src/webhooks/webhooks.ts` (`validateRequest`, the
/// same two forms). One of those two is the URL as received, which the caller tries
/// anyway, so this returns the other: with the default port when `url` has none,
/// without its port when it has one. The form is built from `url`'s parse (scheme and
/// host, then path, query and fragment as it serializes them). Empty for a URL that is
/// not absolute http(s) with a host, or that carries credentials.
pub(crate) fn other_port_forms(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let default_port = match parsed.scheme() {
        "https" => 443,
        "http" => 80,
        _ => return Vec::new(),
    };
    if parsed.host_str().is_none() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Vec::new();
    }
    let before_port = &parsed[..url::Position::AfterHost];
    let after_port = &parsed[url::Position::AfterPort..];
    // `url` leaves a default port out of its parse, so `port()` is `None` for both
    // `https://h/` and `https://h:443/`: the forms are built whole and the one equal to
    // the URL as received dropped.
    let with_port = format!(
        "{before_port}:{}{after_port}",
        parsed.port().unwrap_or(default_port)
    );
    let without_port = format!("{before_port}{after_port}");
    let mut forms = Vec::with_capacity(1);
    for form in [with_port, without_port] {
        if form != url && !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// The body as Box's SDKs re-encode it before their second signature check
/// (`box/box-python-sdk-gen` `box_sdk_gen/internal/utils.py` `escape_unicode`, used by
/// `WebhooksManager.validate_message` with `escape_body=True`): every backslash not
/// followed by `/` doubled, then `\n`, `\r`, `\t` written as those escapes and every
/// other character outside printable ASCII as `\uXXXX` (lowercase hex; a UTF-16
/// surrogate pair beyond the BMP). `None` for a body that is not UTF-8.
pub(crate) fn box_escaped_body(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() != Some(&'/') => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    Some(out.into_bytes())
}

/// Where members are signed as sent (`json_raw_member`), the body may hold only those
/// members and the in-body signature: a member beside them would be unsigned input.
fn check_raw_members(spec: &Verification, body: &[u8]) -> Result<(), VerifyError> {
    let mut names: Vec<&str> = spec
        .signed
        .iter()
        .filter_map(|part| match part {
            SignedPart::JsonRawMember(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    if let SignatureFormat::JsonPointer { pointer, .. } = &spec.signature {
        names.push(&pointer[1..]);
    }
    if super::raw_json::only_members(body, &names) {
        Ok(())
    } else {
        Err(VerifyError::MalformedBody)
    }
}

fn is_json_part(part: &SignedPart) -> bool {
    matches!(part, SignedPart::JsonPointer(_))
}

fn parse_json_if(
    needed: bool,
    request: &SignedRequest<'_>,
) -> Result<Option<serde_json::Value>, VerifyError> {
    if !needed {
        return Ok(None);
    }
    body_document(request.headers, request.body)
        .map(Some)
        .ok_or(VerifyError::MalformedBody)
}

/// The body as a document JSON pointers read: the parsed JSON, or for a
/// `application/x-www-form-urlencoded` body an object of its fields (Mailgun's legacy
/// webhooks post `timestamp`, `token` and `signature` as form fields). A form repeating
/// a field name is refused: which value was signed would be ambiguous.
pub(crate) fn body_document(headers: &HeaderMap, body: &[u8]) -> Option<serde_json::Value> {
    if !is_form(headers) {
        return serde_json::from_slice(body).ok();
    }
    let mut fields = serde_json::Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let previous = fields.insert(
            name.into_owned(),
            serde_json::Value::String(value.into_owned()),
        );
        if previous.is_some() {
            return None;
        }
    }
    Some(serde_json::Value::Object(fields))
}

/// The values at `pointers` in the body as [`body_document`] reads it, each `None`
/// where the body has nothing there or is unreadable. A JSON body is walked once for
/// just those values ([`super::json_pointers`]) instead of being parsed whole.
pub(crate) fn body_values(
    headers: &HeaderMap,
    body: &[u8],
    pointers: &[&str],
) -> Vec<Option<serde_json::Value>> {
    if is_form(headers) {
        let document = body_document(headers, body);
        return pointers
            .iter()
            .map(|pointer| document.as_ref()?.pointer(pointer).cloned())
            .collect();
    }
    super::json_pointers::values_at(body, pointers).unwrap_or_else(|| vec![None; pointers.len()])
}

/// Every element of the array at `items` must carry a signature (at `signature`,
/// relative to the element) that verifies over the element's signed parts with one
/// secret. No elements is not a verified delivery.
fn verify_per_item(
    spec: &Verification,
    secrets: &[SigningSecret],
    request: &SignedRequest<'_>,
    (items, signature, encoding): (&str, &str, SignatureEncoding),
) -> Result<usize, VerifyError> {
    let json: serde_json::Value =
        serde_json::from_slice(request.body).map_err(|_| VerifyError::MalformedBody)?;
    let elements = json
        .pointer(items)
        .and_then(serde_json::Value::as_array)
        .filter(|elements| !elements.is_empty())
        .ok_or(VerifyError::MalformedBody)?;
    let keys: Vec<_> = secrets
        .iter()
        .map(|secret| decode_secret(spec, secret))
        .collect();
    if keys.iter().all(Option::is_none) {
        return Err(VerifyError::NoUsableSecret);
    }
    let mut matched = None;
    for element in elements {
        let candidate = match element.pointer(signature) {
            Some(serde_json::Value::String(text)) => decode_signature(encoding, text.trim()),
            Some(_) => None,
            None => return Err(VerifyError::MissingSignature),
        }
        .ok_or(VerifyError::MalformedSignature)?;
        let pieces = resolve_parts(spec, request, None, Some(element), &[])?;
        let found = keys.iter().enumerate().find_map(|(index, key)| {
            let key = key.as_ref()?;
            matches_any(spec.scheme, key, &pieces, std::slice::from_ref(&candidate))
                .then_some(index)
        });
        match found {
            Some(index) => matched = Some(matched.map_or(index, |m: usize| m.max(index))),
            None => return Err(VerifyError::SignatureMismatch),
        }
    }
    matched.ok_or(VerifyError::SignatureMismatch)
}

/// Candidate signatures (decoded) and the other `key=value` parameters of the header.
struct Signatures<'h> {
    values: Vec<Vec<u8>>,
    params: Vec<(&'h str, &'h str)>,
}

fn header_value<'h>(headers: &'h HeaderMap, names: &HeaderNames) -> Option<&'h [u8]> {
    names
        .names()
        .iter()
        .find_map(|name| headers.get(name.as_str()))
        .map(|value| value.as_bytes())
}

fn parse_signatures<'h>(
    format: &SignatureFormat,
    scheme: Scheme,
    request: &SignedRequest<'h>,
) -> Result<Signatures<'h>, VerifyError> {
    let headers = request.headers;
    let mut signatures = Signatures {
        values: Vec::new(),
        params: Vec::new(),
    };
    let text =
        |raw: &'h [u8]| std::str::from_utf8(raw).map_err(|_| VerifyError::MalformedSignature);
    match format {
        SignatureFormat::Single {
            header,
            prefix,
            encoding,
        } => {
            let raw = text(header_value(headers, header).ok_or(VerifyError::MissingSignature)?)?;
            // HTTP authentication scheme names are case-insensitive (RFC 7617 §2, RFC 9110
            // §11.1): `basic` is `Basic`. Every other prefix is matched byte for byte.
            let value = if scheme == Scheme::BasicAuth {
                raw.get(..prefix.len())
                    .filter(|head| head.eq_ignore_ascii_case(prefix))
                    .and_then(|_| raw.get(prefix.len()..))
            } else {
                raw.strip_prefix(prefix.as_str())
            };
            if let Some(value) = value {
                signatures.push(*encoding, value);
            }
        }
        SignatureFormat::KeyValueList {
            header,
            pair_separator,
            key,
            encoding,
        } => {
            let raw = text(header_value(headers, header).ok_or(VerifyError::MissingSignature)?)?;
            for pair in raw.split(pair_separator.as_str()) {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name == key {
                    signatures.push(*encoding, value);
                } else {
                    signatures.params.push((name, value));
                }
            }
        }
        SignatureFormat::VersionedList {
            header,
            entry_separator,
            version,
            version_separator,
            encoding,
        } => {
            let raw = text(header_value(headers, header).ok_or(VerifyError::MissingSignature)?)?;
            for entry in raw.split(entry_separator.as_str()) {
                if let Some((entry_version, value)) = entry.split_once(version_separator.as_str())
                    && entry_version == version
                {
                    signatures.push(*encoding, value);
                }
            }
        }
        SignatureFormat::EachHeader {
            header,
            numbered,
            encoding,
        } => {
            let mut present = false;
            let mut each = |raw: &'h [u8]| -> Result<(), VerifyError> {
                present = true;
                signatures.push(*encoding, text(raw)?);
                Ok(())
            };
            if *numbered {
                for base in header.names() {
                    for n in 1..=MAX_NUMBERED_HEADERS {
                        if let Some(value) = headers.get(format!("{base}{n}").as_str()) {
                            each(value.as_bytes())?;
                        }
                    }
                }
            } else {
                for name in header.names() {
                    for value in headers.get_all(name.as_str()) {
                        each(value.as_bytes())?;
                    }
                }
            }
            if !present {
                return Err(VerifyError::MissingSignature);
            }
        }
        SignatureFormat::JsonPointer { pointer, encoding } => {
            let json =
                body_document(request.headers, request.body).ok_or(VerifyError::MalformedBody)?;
            match json.pointer(pointer) {
                Some(serde_json::Value::String(value)) => {
                    if let Some(bytes) = decode_signature(*encoding, value.trim()) {
                        signatures.values.push(bytes);
                    }
                }
                Some(_) => return Err(VerifyError::MalformedSignature),
                None => return Err(VerifyError::MissingSignature),
            }
        }
        SignatureFormat::XmlElement { element } => {
            let value =
                xml_element_text(request.body, element).ok_or(VerifyError::MissingSignature)?;
            if !value.is_empty() {
                signatures.values.push(value.to_vec());
            }
        }
        // Handled by `verify_per_item` before signatures are parsed.
        SignatureFormat::PerItem { .. } => return Err(VerifyError::MalformedSignature),
    }
    if signatures.values.is_empty() {
        return Err(VerifyError::MalformedSignature);
    }
    Ok(signatures)
}

impl Signatures<'_> {
    fn push(&mut self, encoding: SignatureEncoding, text: &str) {
        if let Some(bytes) = decode_signature(encoding, text.trim()) {
            self.values.push(bytes);
        }
    }
}

/// The text of the first element named `local_name` (any namespace prefix), as raw
/// bytes; `None` when there is none. Enough for a token in a SOAP envelope; the text
/// must be plain (no nested markup or CDATA).
pub(crate) fn xml_element_text<'b>(body: &'b [u8], local_name: &str) -> Option<&'b [u8]> {
    let name = local_name.as_bytes();
    let mut at = 0;
    while let Some(offset) = body.get(at..)?.iter().position(|&b| b == b'<') {
        let start = at + offset + 1;
        let tag_end = start + body.get(start..)?.iter().position(|&b| b == b'>')?;
        let tag = &body[start..tag_end];
        let tag_name = tag
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or_default();
        let local = tag_name.rsplit(|&b| b == b':').next().unwrap_or_default();
        if local == name && !tag.ends_with(b"/") {
            let text_start = tag_end + 1;
            let text_end = text_start + body.get(text_start..)?.iter().position(|&b| b == b'<')?;
            return Some(&body[text_start..text_end]);
        }
        at = tag_end + 1;
    }
    None
}

/// Decodes one signature; `None` for empty or undecodable text (never a match).
fn decode_signature(encoding: SignatureEncoding, text: &str) -> Option<Vec<u8>> {
    let bytes = match encoding {
        // Providers send lowercase hex, and their SDKs compare the hex text: an
        // uppercase variant is not what was sent, so it is not accepted either.
        SignatureEncoding::Hex if text.bytes().any(|b| b.is_ascii_uppercase()) => return None,
        SignatureEncoding::Hex => hex::decode(text).ok()?,
        // Exact Online's uppercase hex, compared as text by its clients: lowercase is
        // not what was sent.
        SignatureEncoding::HexUpper if text.bytes().any(|b| b.is_ascii_lowercase()) => {
            return None;
        }
        SignatureEncoding::HexUpper => hex::decode(text).ok()?,
        SignatureEncoding::Base64 => BASE64.decode(text).ok()?,
        SignatureEncoding::Text => text.as_bytes().to_vec(),
    };
    (!bytes.is_empty()).then_some(bytes)
}

fn read_timestamp<'h>(
    rule: &TimestampRule,
    params: &[(&'h str, &'h str)],
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, VerifyError> {
    let raw = match &rule.from {
        TimestampSource::Header(names) => header_value(headers, names)
            .map(|bytes| std::str::from_utf8(bytes).map_err(|_| VerifyError::MalformedTimestamp))
            .transpose()?,
        TimestampSource::SignatureParam(name) => params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value),
        // Read from the body only once the signature has verified.
        TimestampSource::JsonPointer(_) => return Ok(None),
    };
    raw.map(Some).ok_or(VerifyError::MissingTimestamp)
}

/// Parses a timestamp into Unix milliseconds.
fn parse_timestamp(unit: TimestampUnit, raw: &str) -> Result<i128, VerifyError> {
    let integer = || {
        if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifyError::MalformedTimestamp);
        }
        raw.parse::<i128>()
            .map_err(|_| VerifyError::MalformedTimestamp)
    };
    match unit {
        TimestampUnit::Seconds => Ok(integer()? * 1000),
        TimestampUnit::Milliseconds => integer(),
        TimestampUnit::Rfc3339 => {
            OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                .map(|at| at.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| VerifyError::MalformedTimestamp)
        }
    }
}

fn check_window(rule: &TimestampRule, at_ms: i128, now: OffsetDateTime) -> Result<(), VerifyError> {
    let age_ms = now.unix_timestamp_nanos() / 1_000_000 - at_ms;
    if let Some(max_age) = rule.max_age_seconds
        && age_ms > i128::from(max_age) * 1000
    {
        return Err(VerifyError::StaleTimestamp);
    }
    if let Some(max_future) = rule.max_future_seconds
        && -age_ms > i128::from(max_future) * 1000
    {
        return Err(VerifyError::FutureTimestamp);
    }
    Ok(())
}

fn body_timestamp(request: &SignedRequest<'_>, pointer: &str) -> Result<String, VerifyError> {
    let json = body_document(request.headers, request.body).ok_or(VerifyError::MissingTimestamp)?;
    match json.pointer(pointer) {
        Some(serde_json::Value::Number(number)) => Ok(number.to_string()),
        Some(serde_json::Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(VerifyError::MalformedTimestamp),
        None => Err(VerifyError::MissingTimestamp),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn check_body_hash(param: &str, request: &SignedRequest<'_>) -> Result<(), VerifyError> {
    let query = request.url.split_once('?').map_or("", |(_, query)| query);
    let expected = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == param)
        .map(|(_, value)| value.into_owned())
        .ok_or(VerifyError::MissingBodyHash)?;
    let actual = hex::encode(Sha256::digest(request.body));
    if bool::from(
        actual
            .as_bytes()
            .ct_eq(expected.to_ascii_lowercase().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(VerifyError::BodyHashMismatch)
    }
}

/// A resolved piece of the signed bytes; the secret is filled in per candidate key.
enum Piece<'a> {
    Bytes(Cow<'a, [u8]>),
    Secret,
}

fn resolve_parts<'a>(
    spec: &Verification,
    request: &SignedRequest<'a>,
    timestamp: Option<&'a str>,
    json: Option<&serde_json::Value>,
    params: &[(&str, &str)],
) -> Result<Vec<Piece<'a>>, VerifyError> {
    // A parameter the signed parts name must be in the header (it may be empty):
    // "no list" and "an empty list" sign the same bytes, so an absent one fails closed.
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
            .ok_or(VerifyError::MalformedSignature)
    };
    spec.signed
        .iter()
        .map(|part| {
            let bytes: Cow<'a, [u8]> = match part {
                SignedPart::Body => Cow::Borrowed(request.body),
                SignedPart::Method => Cow::Owned(request.method.to_ascii_uppercase().into_bytes()),
                SignedPart::Url => match decode_escapes(request.url, &spec.url_decoded_escapes) {
                    Cow::Borrowed(url) => Cow::Borrowed(url.as_bytes()),
                    Cow::Owned(url) => Cow::Owned(url.into_bytes()),
                },
                // The catalog guarantees a header/param rule exists for a signed timestamp.
                SignedPart::Timestamp => {
                    Cow::Borrowed(timestamp.ok_or(VerifyError::MissingTimestamp)?.as_bytes())
                }
                SignedPart::SortedFormParams => Cow::Owned(sorted_form_params(request)),
                SignedPart::Secret => return Ok(Piece::Secret),
                SignedPart::Literal(text) => Cow::Owned(text.clone().into_bytes()),
                SignedPart::Header(names) => Cow::Borrowed(
                    header_value(request.headers, names).ok_or(VerifyError::MissingSignedHeader)?,
                ),
                SignedPart::JsonPointer(pointer) => {
                    let json = json.ok_or(VerifyError::MalformedBody)?;
                    Cow::Owned(json_text(json, pointer)?.into_bytes())
                }
                SignedPart::JsonRawMember(name) => Cow::Borrowed(
                    super::raw_json::member_value(request.body, name)
                        .ok_or(VerifyError::MalformedBody)?,
                ),
                SignedPart::SignatureParam(name) => Cow::Owned(param(name)?.as_bytes().to_vec()),
                SignedPart::HeadersNamedIn {
                    param: name,
                    separator,
                } => {
                    let mut values = Vec::new();
                    for header in param(name)?.split(' ').filter(|h| !h.is_empty()) {
                        let value = request
                            .headers
                            .get(header)
                            .ok_or(VerifyError::MissingSignedHeader)?;
                        values.push(value.as_bytes());
                    }
                    Cow::Owned(values.join(separator.as_bytes()))
                }
            };
            Ok(Piece::Bytes(bytes))
        })
        .collect()
}

/// A string or number at `pointer` as text; missing or null is empty (Adyen: "missing
/// fields count as empty"); objects, arrays and booleans are not signable text.
fn json_text(json: &serde_json::Value, pointer: &str) -> Result<String, VerifyError> {
    match json.pointer(pointer) {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(text)) => Ok(text.clone()),
        Some(serde_json::Value::Number(number)) => Ok(number.to_string()),
        Some(serde_json::Value::Bool(value)) => Ok(value.to_string()),
        Some(_) => Err(VerifyError::MalformedBody),
    }
}

/// Decodes the listed percent-escapes (case-insensitively), leaving every other byte.
fn decode_escapes<'u>(url: &'u str, escapes: &[String]) -> Cow<'u, str> {
    if escapes.is_empty() || !url.contains('%') {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + 3);
        match candidate.filter(|c| escapes.iter().any(|e| e.eq_ignore_ascii_case(c))) {
            Some(escape) => {
                let byte = u8::from_str_radix(&escape[1..], 16).unwrap_or(b'%');
                out.push(char::from(byte));
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Twilio's form parameters: unique (name, value) pairs sorted by name then value, each
/// written as name followed by value. Empty for bodies that are not forms.
fn sorted_form_params(request: &SignedRequest<'_>) -> Vec<u8> {
    if !is_form(request.headers) {
        return Vec::new();
    }
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(request.body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut out = Vec::with_capacity(request.body.len());
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The key bytes for one configured secret, or `None` if it cannot be decoded.
fn decode_secret(
    spec: &Verification,
    secret: &SigningSecret,
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let text = secret.expose();
    let text = match &spec.secret_prefix {
        Some(prefix) => text.strip_prefix(prefix.as_str()).unwrap_or(text),
        None => text,
    };
    let bytes = match spec.secret_encoding {
        SecretEncoding::Utf8 => text.as_bytes().to_vec(),
        SecretEncoding::Base64 => BASE64.decode(text.trim()).ok()?,
        SecretEncoding::Hex => hex::decode(text.trim()).ok()?,
    };
    (!bytes.is_empty()).then(|| zeroize::Zeroizing::new(bytes))
}

/// The tag a symmetric scheme produces over `pieces`; `None` for Ed25519 (asymmetric).
fn symmetric_tag(scheme: Scheme, key: &[u8], pieces: &[Piece<'_>]) -> Option<Vec<u8>> {
    fn feed(pieces: &[Piece<'_>], key: &[u8], update: &mut dyn FnMut(&[u8])) {
        for piece in pieces {
            match piece {
                Piece::Bytes(bytes) => update(bytes),
                Piece::Secret => update(key),
            }
        }
    }
    match scheme {
        Scheme::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
            feed(pieces, key, &mut |bytes| mac.update(bytes));
            Some(mac.finalize().into_bytes().to_vec())
        }
        Scheme::HmacSha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).ok()?;
            feed(pieces, key, &mut |bytes| mac.update(bytes));
            Some(mac.finalize().into_bytes().to_vec())
        }
        Scheme::HmacSha512 => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).ok()?;
            feed(pieces, key, &mut |bytes| mac.update(bytes));
            Some(mac.finalize().into_bytes().to_vec())
        }
        Scheme::Sha256 => {
            let mut digest = Sha256::new();
            feed(pieces, key, &mut |bytes| digest.update(bytes));
            Some(digest.finalize().to_vec())
        }
        Scheme::Ed25519 | Scheme::EcdsaP256 | Scheme::Token | Scheme::BasicAuth | Scheme::Jwt => {
            None
        }
    }
}

/// The signed message as one buffer (Ed25519 needs it whole).
fn message(pieces: &[Piece<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        if let Piece::Bytes(bytes) = piece {
            out.extend_from_slice(bytes);
        }
    }
    out
}

fn matches_any(scheme: Scheme, key: &[u8], pieces: &[Piece<'_>], candidates: &[Vec<u8>]) -> bool {
    if let Some(tag) = symmetric_tag(scheme, key, pieces) {
        return candidates
            .iter()
            .any(|c| bool::from(tag.as_slice().ct_eq(c)));
    }
    match scheme {
        // The shared secret itself, or HTTP Basic's decoded `user:password`: the whole
        // value is compared in constant time (only its length can show).
        Scheme::Token | Scheme::BasicAuth => candidates.iter().any(|c| bool::from(key.ct_eq(c))),
        Scheme::Ed25519 => {
            let Ok(key) = <[u8; 32]>::try_from(key) else {
                return false;
            };
            let Ok(public) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
                return false;
            };
            let message = message(pieces);
            candidates.iter().any(|candidate| {
                ed25519_dalek::Signature::from_slice(candidate)
                    .is_ok_and(|signature| public.verify_strict(&message, &signature).is_ok())
            })
        }
        Scheme::EcdsaP256 => {
            use p256::ecdsa::signature::Verifier as _;
            use p256::pkcs8::DecodePublicKey as _;
            let Ok(public) = p256::ecdsa::VerifyingKey::from_public_key_der(key) else {
                return false;
            };
            let message = message(pieces);
            candidates.iter().any(|candidate| {
                p256::ecdsa::DerSignature::try_from(candidate.as_slice())
                    .is_ok_and(|signature| public.verify(&message, &signature).is_ok())
            })
        }
        // Verified by `super::jwt` with fetched keys, never here.
        Scheme::Jwt
        | Scheme::HmacSha256
        | Scheme::HmacSha1
        | Scheme::HmacSha512
        | Scheme::Sha256 => false,
    }
}

/// Why a request could not be signed (signing is for tests, the CLI and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the signing key cannot be decoded for this scheme")]
    UnusableKey,
    #[error("a header the provider signs is missing from the request: {0}")]
    Request(VerifyError),
    #[error("the catalog names a header that is not a valid HTTP header")]
    InvalidHeader,
    #[error("the signature goes into the body, which is not the JSON or XML it needs")]
    Body,
}

/// What signing adds to a request: headers, and for schemes whose signature lives in
/// the body (Mailgun, Adyen, Microsoft Graph, Salesforce), the body to send instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// Signs `request` exactly as the provider would, returning the headers to add: the
/// signature header and, where the scheme signs a header timestamp, that header. For
/// schemes whose signature is in the body, use [`sign_request`].
///
/// For Ed25519 `secret` is the hex (or base64, per the catalog) 32-byte private seed,
/// for ECDSA P-256 the 32-byte private scalar; for every other scheme it is the
/// signing secret as configured. Where the catalog sets `body_hash_query_param`, pass a
/// URL made by [`url_with_body_hash`].
pub fn sign(
    spec: &Verification,
    secret: &SigningSecret,
    request: &SignedRequest<'_>,
    now: OffsetDateTime,
) -> Result<Vec<(String, String)>, SignError> {
    let signed = sign_request(spec, secret, request, now)?;
    match signed.body {
        None => Ok(signed.headers),
        Some(_) => Err(SignError::Body),
    }
}

/// Signs `request` as the provider would: headers to add and, for in-body signatures,
/// the new body. See [`sign`] for what `secret` is.
pub fn sign_request(
    spec: &Verification,
    secret: &SigningSecret,
    request: &SignedRequest<'_>,
    now: OffsetDateTime,
) -> Result<Signed, SignError> {
    let key = decode_secret(spec, secret).ok_or(SignError::UnusableKey)?;
    match &spec.signature {
        SignatureFormat::PerItem {
            items,
            signature,
            encoding,
        } => {
            let mut json: serde_json::Value =
                serde_json::from_slice(request.body).map_err(|_| SignError::Body)?;
            let elements = json
                .pointer_mut(items)
                .and_then(serde_json::Value::as_array_mut)
                .ok_or(SignError::Body)?;
            for element in elements {
                let pieces = resolve_parts(spec, request, None, Some(element), &[])
                    .map_err(SignError::Request)?;
                let value = encode_signature(*encoding, &tag_for(spec.scheme, &key, &pieces)?);
                set_pointer(element, signature, serde_json::Value::String(value))?;
            }
            let body = serde_json::to_vec(&json).map_err(|_| SignError::Body)?;
            return Ok(Signed {
                headers: Vec::new(),
                body: Some(body),
            });
        }
        SignatureFormat::JsonPointer { pointer, encoding } => {
            let mut json = body_document(request.headers, request.body).ok_or(SignError::Body)?;
            let pieces =
                resolve_parts(spec, request, None, Some(&json), &[]).map_err(SignError::Request)?;
            let value = encode_signature(*encoding, &tag_for(spec.scheme, &key, &pieces)?);
            // A member signed as sent (Exact Online's `Content`) must keep its bytes: the
            // signature is spliced into the body rather than the body re-serialized.
            if spec
                .signed
                .iter()
                .any(|part| matches!(part, SignedPart::JsonRawMember(_)))
            {
                let body = super::raw_json::with_string_member(request.body, &pointer[1..], &value)
                    .ok_or(SignError::Body)?;
                return Ok(Signed {
                    headers: Vec::new(),
                    body: Some(body),
                });
            }
            if is_form(request.headers) {
                // A form field: the body is the form again, with the signature set.
                let name = pointer.trim_start_matches('/');
                let mut form = form_urlencoded::Serializer::new(String::new());
                let mut set = false;
                for (field, existing) in form_urlencoded::parse(request.body) {
                    if field == name {
                        form.append_pair(&field, &value);
                        set = true;
                    } else {
                        form.append_pair(&field, &existing);
                    }
                }
                if !set {
                    form.append_pair(name, &value);
                }
                return Ok(Signed {
                    headers: Vec::new(),
                    body: Some(form.finish().into_bytes()),
                });
            }
            set_pointer(&mut json, pointer, serde_json::Value::String(value))?;
            let body = serde_json::to_vec(&json).map_err(|_| SignError::Body)?;
            return Ok(Signed {
                headers: Vec::new(),
                body: Some(body),
            });
        }
        SignatureFormat::XmlElement { element } => {
            let text = xml_element_text(request.body, element).ok_or(SignError::Body)?;
            let start = text.as_ptr() as usize - request.body.as_ptr() as usize;
            let mut body = request.body[..start].to_vec();
            body.extend_from_slice(&key);
            body.extend_from_slice(&request.body[start + text.len()..]);
            return Ok(Signed {
                headers: Vec::new(),
                body: Some(body),
            });
        }
        SignatureFormat::Single { .. }
        | SignatureFormat::KeyValueList { .. }
        | SignatureFormat::VersionedList { .. }
        | SignatureFormat::EachHeader { .. } => {}
    }
    let mut added = Vec::new();
    for (name, value) in &spec.required_headers {
        if request.headers.get(name.as_str()).is_none() {
            added.push((name.clone(), value.clone()));
        }
    }
    let formatted_now = spec
        .timestamp
        .as_ref()
        .map(|rule| format_timestamp(rule.unit, now));
    let mut timestamp_param = None;
    let timestamp: Option<&str> = match spec.timestamp.as_ref().map(|rule| &rule.from) {
        Some(TimestampSource::Header(names)) => {
            match header_value(request.headers, names).and_then(|v| std::str::from_utf8(v).ok()) {
                Some(existing) => Some(existing),
                None => {
                    let value = formatted_now.as_deref().unwrap_or_default();
                    added.push((names.names()[0].clone(), value.to_owned()));
                    Some(value)
                }
            }
        }
        Some(TimestampSource::SignatureParam(name)) => {
            timestamp_param = Some(name.as_str());
            formatted_now.as_deref()
        }
        Some(TimestampSource::JsonPointer(_)) | None => None,
    };
    let json = parse_json_if(spec.signed.iter().any(is_json_part), request)
        .map_err(|_| SignError::Body)?;
    // A signed header list (Hook0's `h`): every header of the request but the
    // signature's own, by name.
    let signature_header = spec
        .signature
        .header()
        .map(|names| names.names()[0].to_ascii_lowercase());
    let header_list_param = spec.signed.iter().find_map(|part| match part {
        SignedPart::HeadersNamedIn { param, .. } => Some(param.as_str()),
        _ => None,
    });
    let header_list = header_list_param.map(|_| {
        let mut names: Vec<&str> = request
            .headers
            .keys()
            .map(|name| name.as_str())
            .filter(|name| Some(*name) != signature_header.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(" ")
    });
    let params: Vec<(&str, &str)> = header_list_param
        .zip(header_list.as_deref())
        .into_iter()
        .collect();
    let pieces = resolve_parts(spec, request, timestamp, json.as_ref(), &params)
        .map_err(SignError::Request)?;
    let scheme = request_scheme(spec, request.headers).map_err(SignError::Request)?;
    let tag = tag_for(scheme, &key, &pieces)?;
    let (header, value) = match &spec.signature {
        SignatureFormat::Single {
            header,
            prefix,
            encoding,
        } => (
            header.names()[0].clone(),
            format!("{prefix}{}", encode_signature(*encoding, &tag)),
        ),
        SignatureFormat::KeyValueList {
            header,
            pair_separator,
            key,
            encoding,
        } => {
            let signature = encode_signature(*encoding, &tag);
            let mut pairs = Vec::new();
            if let (Some(param), Some(ts)) = (timestamp_param, timestamp) {
                pairs.push(format!("{param}={ts}"));
            }
            for (param, value) in &params {
                pairs.push(format!("{param}={value}"));
            }
            pairs.push(format!("{key}={signature}"));
            (header.names()[0].clone(), pairs.join(pair_separator))
        }
        SignatureFormat::VersionedList {
            header,
            version,
            version_separator,
            encoding,
            ..
        } => (
            header.names()[0].clone(),
            format!(
                "{version}{version_separator}{}",
                encode_signature(*encoding, &tag)
            ),
        ),
        SignatureFormat::EachHeader {
            header,
            numbered,
            encoding,
        } => {
            let name = if *numbered {
                format!("{}1", header.names()[0])
            } else {
                header.names()[0].clone()
            };
            (name, encode_signature(*encoding, &tag))
        }
        SignatureFormat::PerItem { .. }
        | SignatureFormat::JsonPointer { .. }
        | SignatureFormat::XmlElement { .. } => return Err(SignError::Body),
    };
    added.push((header, value));
    Ok(Signed {
        headers: added,
        body: None,
    })
}

/// The signature bytes `scheme` makes over `pieces` with `key` (for asymmetric schemes
/// `key` is the private key; for the token scheme, the token itself).
fn tag_for(scheme: Scheme, key: &[u8], pieces: &[Piece<'_>]) -> Result<Vec<u8>, SignError> {
    if let Some(tag) = symmetric_tag(scheme, key, pieces) {
        return Ok(tag);
    }
    match scheme {
        Scheme::Token | Scheme::BasicAuth => Ok(key.to_vec()),
        Scheme::Ed25519 => {
            use ed25519_dalek::Signer as _;
            let seed = <[u8; 32]>::try_from(key).map_err(|_| SignError::UnusableKey)?;
            let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
            Ok(signing.sign(&message(pieces)).to_bytes().to_vec())
        }
        Scheme::EcdsaP256 => {
            use p256::ecdsa::signature::Signer as _;
            let signing =
                p256::ecdsa::SigningKey::from_slice(key).map_err(|_| SignError::UnusableKey)?;
            let signature: p256::ecdsa::Signature = signing.sign(&message(pieces));
            Ok(signature.to_der().as_bytes().to_vec())
        }
        Scheme::Jwt
        | Scheme::HmacSha256
        | Scheme::HmacSha1
        | Scheme::HmacSha512
        | Scheme::Sha256 => Err(SignError::UnusableKey),
    }
}

fn encode_signature(encoding: SignatureEncoding, tag: &[u8]) -> String {
    match encoding {
        SignatureEncoding::Hex => hex::encode(tag),
        SignatureEncoding::HexUpper => hex::encode_upper(tag),
        SignatureEncoding::Base64 => BASE64.encode(tag),
        SignatureEncoding::Text => String::from_utf8_lossy(tag).into_owned(),
    }
}

/// Sets the value at a JSON pointer, creating objects on the way.
fn set_pointer(
    json: &mut serde_json::Value,
    pointer: &str,
    value: serde_json::Value,
) -> Result<(), SignError> {
    let mut at = json;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = tokens.split_last() else {
        return Err(SignError::Body);
    };
    for token in path {
        let object = at.as_object_mut().ok_or(SignError::Body)?;
        at = object
            .entry(token.clone())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
    at.as_object_mut()
        .ok_or(SignError::Body)?
        .insert(last.clone(), value);
    Ok(())
}

/// Signs a request as the provider would and adds the resulting headers to `headers`:
/// what a sender (the CLI, tests, benchmarks) needs in one call. Returns the body to
/// send instead of `body` when the scheme puts its signature in the body. See [`sign`].
pub fn sign_into(
    spec: &Verification,
    secret: &SigningSecret,
    method: &str,
    url: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Option<Vec<u8>>, SignError> {
    let request = SignedRequest {
        method,
        url,
        headers,
        body,
    };
    let signed = sign_request(spec, secret, &request, now)?;
    for (name, value) in signed.headers {
        let name =
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| SignError::InvalidHeader)?;
        let value = http::HeaderValue::from_str(&value).map_err(|_| SignError::InvalidHeader)?;
        headers.insert(name, value);
    }
    Ok(signed.body)
}

/// `url` with the body-hash query parameter the catalog asks for (Twilio's
/// `bodySHA256`) when the body is not a form; unchanged otherwise.
pub fn url_with_body_hash(
    spec: &Verification,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> String {
    match &spec.body_hash_query_param {
        Some(param) if !is_form(headers) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{separator}{param}={}",
                hex::encode(Sha256::digest(body))
            )
        }
        _ => url.to_owned(),
    }
}

/// The public key for an Ed25519 private seed, encoded like the seed: what a provider
/// publishes for the key a test or the local stack signs with.
pub fn ed25519_public_key(encoding: SecretEncoding, seed: &[u8; 32]) -> String {
    let public = ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes();
    match encoding {
        SecretEncoding::Base64 => BASE64.encode(public),
        SecretEncoding::Hex | SecretEncoding::Utf8 => hex::encode(public),
    }
}

/// Keys shaped like the provider's real ones, made from 32 random bytes, for tests, the
/// local stack and the CLI: `(what to sign with, what to configure)`. They differ only
/// for asymmetric schemes (the private key, and the public key the provider would
/// publish). `None` when the bytes are not a valid key for the scheme (an ECDSA scalar
/// of zero or above the group order).
pub fn development_keys(spec: &Verification, random: &[u8; 32]) -> Option<(String, String)> {
    let encode = |bytes: &[u8]| match spec.secret_encoding {
        SecretEncoding::Base64 => BASE64.encode(bytes),
        SecretEncoding::Hex => hex::encode(bytes),
        SecretEncoding::Utf8 => format!("localdev_{}", hex::encode(&bytes[..16])),
    };
    match spec.scheme {
        Scheme::Ed25519 => Some((
            encode(random),
            ed25519_public_key(spec.secret_encoding, random),
        )),
        Scheme::EcdsaP256 => {
            let public = ecdsa_p256_public_key(random)?;
            let public = match spec.secret_encoding {
                SecretEncoding::Hex => hex::encode(BASE64.decode(public).ok()?),
                SecretEncoding::Base64 | SecretEncoding::Utf8 => public,
            };
            Some((encode(random), public))
        }
        // Tokens are minted by the provider (Google) with keys only it holds.
        Scheme::Jwt => None,
        // HTTP Basic credentials are `user:password`; the password is random.
        Scheme::BasicAuth => {
            let credentials = format!("junction:{}", encode(random));
            Some((credentials.clone(), credentials))
        }
        Scheme::HmacSha256
        | Scheme::HmacSha1
        | Scheme::HmacSha512
        | Scheme::Sha256
        | Scheme::Token => {
            let prefix = spec.secret_prefix.as_deref().unwrap_or_default();
            let secret = format!("{prefix}{}", encode(random));
            Some((secret.clone(), secret))
        }
    }
}

/// The public key for an ECDSA P-256 private scalar as SendGrid publishes its
/// verification key: base64 SubjectPublicKeyInfo DER. `None` for an invalid scalar.
pub fn ecdsa_p256_public_key(scalar: &[u8; 32]) -> Option<String> {
    // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, then the uncompressed point.
    const SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let signing = p256::ecdsa::SigningKey::from_slice(scalar).ok()?;
    let point = signing.verifying_key().to_encoded_point(false);
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(point.as_bytes());
    Some(BASE64.encode(der))
}

fn format_timestamp(unit: TimestampUnit, now: OffsetDateTime) -> String {
    match unit {
        TimestampUnit::Seconds => now.unix_timestamp().to_string(),
        TimestampUnit::Milliseconds => (now.unix_timestamp_nanos() / 1_000_000).to_string(),
        TimestampUnit::Rfc3339 => now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
