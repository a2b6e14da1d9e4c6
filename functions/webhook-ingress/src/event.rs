//! The API Gateway HTTP API (payload format 2.0) event, as `aws_lambda_events` reads it,
//! to the ingress's [`WebhookRequest`] and back. The template routes only that event
//! shape to this function.

use aws_lambda_events::{
    apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse},
    encodings::Body,
    http::{HeaderMap, HeaderName, HeaderValue, header},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use junction_webhooks::{WebhookRequest, WebhookResponse};

/// The event's body is flagged base64 but does not decode: the request is answered 400
/// before anything else (no signature can be checked over it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the request body is flagged base64-encoded but does not decode")]
pub struct MalformedBody;

/// The request as the ingress handles it.
pub fn webhook_request(event: ApiGatewayV2httpRequest) -> Result<WebhookRequest, MalformedBody> {
    let mut parameters = event.path_parameters;
    let mut headers = event.headers;
    // HTTP API moves `Cookie` headers to `cookies`; a signature may cover them.
    if let Some(cookies) = event.cookies.filter(|cookies| !cookies.is_empty())
        && let Ok(value) = HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
    let body = match (event.body, event.is_base64_encoded) {
        (None, _) => Vec::new(),
        (Some(text), false) => text.into_bytes(),
        (Some(text), true) => BASE64.decode(text).map_err(|_| MalformedBody)?,
    };
    Ok(WebhookRequest {
        method: event.request_context.http.method.as_str().to_owned(),
        provider: parameters.remove("provider").unwrap_or_default(),
        endpoint: parameters.remove("endpoint"),
        path: event.raw_path.unwrap_or_default(),
        raw_query: event.raw_query_string.unwrap_or_default(),
        headers,
        body,
    })
}

/// The ingress's answer as an HTTP API (payload format 2.0) response.
pub fn http_response(response: WebhookResponse) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::with_capacity(response.headers.len() + 1);
    let content_type = response
        .content_type
        .map(|value| (header::CONTENT_TYPE, value));
    let extra = response
        .headers
        .into_iter()
        .filter_map(|(name, value)| Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value)));
    for (name, value) in content_type.into_iter().chain(extra) {
        // The ingress's header names are its own and its values its own text or a
        // handshake's echo of a request header, so they are valid; one that is not is
        // left out rather than failing the answer.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(response.status);
    out.headers = headers;
    out.body = Some(Body::Text(response.body));
    out
}

/// A plain-text response (`400` for an event the ingress cannot read).
pub fn text_response(status: u16, body: &str) -> ApiGatewayV2httpResponse {
    http_response(WebhookResponse {
        status,
        content_type: Some("text/plain; charset=utf-8".to_owned()),
        headers: Vec::new(),
        body: body.to_owned(),
    })
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
        "x-escaped": "tab\there",
        "x-ok": "caf\u00e9"
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
        let event: ApiGatewayV2httpRequest = serde_json::from_str(EVENT).expect("event");
        let request = webhook_request(event).expect("request");
        assert_eq!(request.method, "POST");
        assert_eq!(request.provider, "github");
        assert_eq!(request.endpoint.as_deref(), Some("acme"));
        assert_eq!(request.path, "/webhooks/github/acme");
        assert_eq!(
            request.raw_query,
            "parameter1=value1&parameter1=value2&parameter2=value"
        );
        assert_eq!(request.body, br#"{"zen":"Keep it logically awesome."}"#);
        let header = |name: &str| request.headers.get(name).map(HeaderValue::as_bytes);
        // A repeated header stays one comma-joined value, as signed.
        assert_eq!(header("header2"), Some(&b"value1,value2"[..]));
        assert_eq!(header("x-hub-signature-256"), Some(&b"sha256=00ff"[..]));
        assert_eq!(header("x-escaped"), Some(&b"tab\there"[..]));
        assert_eq!(header("x-ok"), Some("café".as_bytes()));
        assert_eq!(header("cookie"), Some(&b"cookie1; cookie2"[..]));
    }

    #[test]
    fn base64_bodies_are_decoded_and_bad_ones_refused() {
        let event = |body: &str| {
            serde_json::from_value::<ApiGatewayV2httpRequest>(serde_json::json!({
                "rawPath": "/webhooks/twilio",
                "requestContext": {"http": {"method": "POST"}},
                "pathParameters": {"provider": "twilio"},
                "body": body,
                "isBase64Encoded": true,
            }))
            .expect("event")
        };
        let request = webhook_request(event("AAEC/w==")).expect("decoded");
        assert_eq!(request.body, [0, 1, 2, 255]);
        assert_eq!(request.endpoint, None);
        assert!(request.headers.is_empty());
        assert_eq!(
            webhook_request(event("not base64!")).map(|_| ()),
            Err(MalformedBody)
        );
    }

    #[test]
    fn a_get_without_body_or_headers_reads() {
        let event: ApiGatewayV2httpRequest = serde_json::from_str(
            r#"{"rawPath":"/webhooks/twitch","rawQueryString":"","headers":null,
                "requestContext":{"http":{"method":"GET"}},"pathParameters":{"provider":"twitch"}}"#,
        )
        .expect("event");
        let request = webhook_request(event).expect("request");
        assert_eq!(request.method, "GET");
        assert_eq!(request.provider, "twitch");
        assert!(request.body.is_empty());
        assert!(request.headers.is_empty());
    }

    #[test]
    fn responses_serialize_as_payload_2_0() {
        let response = http_response(WebhookResponse {
            status: 200,
            content_type: Some("application/json".to_owned()),
            headers: vec![("x-hook-secret", "s3cr3t".to_owned())],
            body: r#"{"type":1}"#.to_owned(),
        });
        let json = serde_json::to_value(&response).expect("serializes");
        assert_eq!(json["statusCode"], 200);
        assert_eq!(
            json["headers"],
            serde_json::json!({"content-type": "application/json", "x-hook-secret": "s3cr3t"})
        );
        assert_eq!(json["body"], r#"{"type":1}"#);
        assert_eq!(json["isBase64Encoded"], false);
        let text = serde_json::to_value(text_response(400, "bad event")).expect("json");
        assert_eq!(text["statusCode"], 400);
        assert_eq!(text["body"], "bad event");
        assert_eq!(text["headers"]["content-type"], "text/plain; charset=utf-8");
    }
}
