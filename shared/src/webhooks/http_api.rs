//! The API Gateway HTTP API (payload format 2.0) event the webhook ingress receives and
//! the response it returns, read straight into [`WebhookRequest`].
//!
//! `lambda_http` reads every kind of API Gateway and ALB event (an untagged enum, which
//! serde buffers and tries variant by variant), builds an `http::Request` with a parsed
//! URI and then the ingress copies it again: a tenth of the ingress's CPU per delivery
//! (infra/bench). The template routes only an HTTP API with payload 2.0 to the ingress,
//! so that one shape is read here, headers going straight into a `HeaderMap`.

use std::{collections::HashMap, fmt};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{MapAccess, Visitor},
};

use super::{WebhookRequest, WebhookResponse, json_pointers::Text};

/// An HTTP API (payload format 2.0) request event: the fields the ingress reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpApiRequest {
    raw_path: String,
    #[serde(default)]
    raw_query_string: String,
    /// HTTP API moves `Cookie` headers here; they go back into a `cookie` header.
    #[serde(default)]
    cookies: Vec<String>,
    /// Lowercase names; repeated headers arrive joined with commas.
    #[serde(default, deserialize_with = "header_map")]
    headers: HeaderMap,
    #[serde(default)]
    path_parameters: HashMap<String, String>,
    request_context: RequestContext,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

#[derive(Debug, Deserialize)]
struct RequestContext {
    http: RequestContextHttp,
}

#[derive(Debug, Deserialize)]
struct RequestContextHttp {
    method: String,
}

/// The event's body was flagged base64 but is not.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the request body is flagged base64-encoded but does not decode")]
pub struct MalformedBody;

impl HttpApiRequest {
    /// The request as the ingress handles it.
    pub fn into_webhook_request(self) -> Result<WebhookRequest, MalformedBody> {
        let mut parameters = self.path_parameters;
        let mut headers = self.headers;
        if !self.cookies.is_empty()
            && let Ok(value) = HeaderValue::from_str(&self.cookies.join("; "))
        {
            headers.insert(http::header::COOKIE, value);
        }
        let body = match (self.body, self.is_base64_encoded) {
            (None, _) => Vec::new(),
            (Some(text), false) => text.into_bytes(),
            (Some(text), true) => BASE64.decode(text).map_err(|_| MalformedBody)?,
        };
        Ok(WebhookRequest {
            method: self.request_context.http.method,
            provider: parameters.remove("provider").unwrap_or_default(),
            endpoint: parameters.remove("endpoint"),
            path: self.raw_path,
            raw_query: self.raw_query_string,
            headers,
            body,
        })
    }
}

/// An HTTP API (payload format 2.0) response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpApiResponse {
    status_code: u16,
    headers: HashMap<&'static str, String>,
    body: String,
    is_base64_encoded: bool,
}

impl From<WebhookResponse> for HttpApiResponse {
    fn from(response: WebhookResponse) -> Self {
        let mut headers = HashMap::with_capacity(response.headers.len() + 1);
        if let Some(content_type) = response.content_type {
            headers.insert("content-type", content_type);
        }
        for (name, value) in response.headers {
            headers.insert(name, value);
        }
        HttpApiResponse {
            status_code: response.status,
            headers,
            body: response.body,
            is_base64_encoded: false,
        }
    }
}

impl HttpApiResponse {
    /// A plain-text response (`400` for an event the ingress cannot read).
    pub fn text(status: u16, body: &str) -> Self {
        HttpApiResponse::from(WebhookResponse {
            status,
            content_type: Some("text/plain; charset=utf-8".to_owned()),
            headers: Vec::new(),
            body: body.to_owned(),
        })
    }
}

/// Reads the `headers` object into a `HeaderMap`. A header whose name or value HTTP
/// does not allow is left out (a signature over it then fails, as it should).
fn header_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<HeaderMap, D::Error> {
    struct HeaderMapVisitor;

    impl<'de> Visitor<'de> for HeaderMapVisitor {
        type Value = HeaderMap;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an object of header names to string values")
        }

        fn visit_unit<E>(self) -> Result<HeaderMap, E> {
            Ok(HeaderMap::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderMap, A::Error> {
            let mut headers = HeaderMap::with_capacity(map.size_hint().unwrap_or(16));
            while let Some((name, value)) = map.next_entry::<Text<'de>, Text<'de>>()? {
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.0.as_bytes()),
                    HeaderValue::from_bytes(value.0.as_bytes()),
                ) else {
                    continue;
                };
                headers.append(name, value);
            }
            Ok(headers)
        }
    }

    deserializer.deserialize_any(HeaderMapVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// API Gateway's own example of a payload 2.0 event ("Working with AWS Lambda
    /// proxy integrations for HTTP APIs", format 2.0), with a webhook route's path
    /// parameters and a body.
    const EVENT: &str = r#"{
      "version": "2.0",
      "routeKey": "POST /webhooks/{provider}/{endpoint}",
      "rawPath": "/webhooks/github/acme",
      "rawQueryString": "parameter1=value1&parameter1=value2&parameter2=value",
      "cookies": ["cookie1", "cookie2"],
      "headers": {
        "header1": "value1",
        "header2": "value1,value2",
        "x-hub-signature-256": "sha256=00ff",
        "x-escaped": "tab\there"
      },
      "queryStringParameters": {"parameter1": "value1,value2", "parameter2": "value"},
      "requestContext": {
        "accountId": "123456789012",
        "apiId": "api-id",
        "domainName": "id.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "id",
        "http": {
          "method": "POST",
          "path": "/webhooks/github/acme",
          "protocol": "HTTP/1.1",
          "sourceIp": "192.0.2.1",
          "userAgent": "agent"
        },
        "requestId": "id",
        "routeKey": "POST /webhooks/{provider}/{endpoint}",
        "stage": "$default",
        "time": "12/Mar/2020:19:03:58 +0000",
        "timeEpoch": 1583348638390
      },
      "body": "{\"zen\":\"Keep it logically awesome.\"}",
      "pathParameters": {"provider": "github", "endpoint": "acme"},
      "isBase64Encoded": false,
      "stageVariables": {"stageVariable1": "value1"}
    }"#;

    #[test]
    fn the_documented_event_becomes_a_webhook_request() {
        let event: HttpApiRequest = serde_json::from_str(EVENT).expect("event");
        let request = event.into_webhook_request().expect("request");
        assert_eq!(request.method, "POST");
        assert_eq!(request.provider, "github");
        assert_eq!(request.endpoint.as_deref(), Some("acme"));
        assert_eq!(request.path, "/webhooks/github/acme");
        assert_eq!(
            request.raw_query,
            "parameter1=value1&parameter1=value2&parameter2=value"
        );
        assert_eq!(request.body, br#"{"zen":"Keep it logically awesome."}"#);
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("header2"), Some("value1,value2"));
        assert_eq!(header("x-hub-signature-256"), Some("sha256=00ff"));
        assert_eq!(header("x-escaped"), Some("tab\there"));
        assert_eq!(header("cookie"), Some("cookie1; cookie2"));
    }

    #[test]
    fn base64_bodies_are_decoded_and_bad_ones_refused() {
        let event = |body: &str| {
            serde_json::from_value::<HttpApiRequest>(serde_json::json!({
                "rawPath": "/webhooks/twilio",
                "requestContext": {"http": {"method": "POST"}},
                "pathParameters": {"provider": "twilio"},
                "body": body,
                "isBase64Encoded": true,
            }))
            .expect("event")
        };
        let request = event("AAEC/w==").into_webhook_request().expect("decoded");
        assert_eq!(request.body, [0, 1, 2, 255]);
        assert_eq!(request.endpoint, None);
        assert!(request.headers.is_empty());
        assert_eq!(
            event("not base64!").into_webhook_request().map(|_| ()),
            Err(MalformedBody)
        );
    }

    #[test]
    fn a_get_without_body_or_headers_reads() {
        let event: HttpApiRequest = serde_json::from_str(
            r#"{"rawPath":"/webhooks/twitch","rawQueryString":"","headers":null,
                "requestContext":{"http":{"method":"GET"}},"pathParameters":{"provider":"twitch"}}"#,
        )
        .expect("event");
        let request = event.into_webhook_request().expect("request");
        assert_eq!(request.method, "GET");
        assert!(request.body.is_empty());
    }

    #[test]
    fn unusable_headers_are_left_out() {
        let event: HttpApiRequest = serde_json::from_str(
            r#"{"rawPath":"/","requestContext":{"http":{"method":"POST"}},
                "headers":{"bad name":"x","x-control":"a\u0001b","x-ok":"caf\u00e9"}}"#,
        )
        .expect("event");
        let request = event.into_webhook_request().expect("request");
        assert_eq!(request.headers.len(), 1);
        assert_eq!(
            request.headers.get("x-ok").map(HeaderValue::as_bytes),
            Some("café".as_bytes())
        );
    }

    #[test]
    fn responses_serialize_as_payload_2_0() {
        let response = HttpApiResponse::from(WebhookResponse {
            status: 200,
            content_type: Some("application/json".to_owned()),
            headers: vec![("x-hook-secret", "s3cr3t".to_owned())],
            body: r#"{"type":1}"#.to_owned(),
        });
        let json = serde_json::to_value(&response).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "statusCode": 200,
                "headers": {"content-type": "application/json", "x-hook-secret": "s3cr3t"},
                "body": "{\"type\":1}",
                "isBase64Encoded": false,
            })
        );
        let text = serde_json::to_value(HttpApiResponse::text(400, "bad event")).expect("json");
        assert_eq!(text["statusCode"], 400);
        assert_eq!(text["body"], "bad event");
    }
}
