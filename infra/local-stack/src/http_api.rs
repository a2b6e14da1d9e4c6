//! The template's HTTP API, served on loopback the way API Gateway (HTTP API, payload
//! format 2.0) calls Lambda.
//!
//! Routes come from the stack description (the OpenAPI body SAM generates), never from
//! a list kept here. Matching follows API Gateway: the route with the most literal
//! segments wins, `{proxy+}` is greedy and last, `$default` catches the rest; no match
//! is `404 {"message":"Not Found"}`. The request becomes a [format 2.0
//! event](https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
//! and the function's answer becomes the HTTP response.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::emulator::Route;

/// The header carrying the local stack's stand-in for IAM (SigV4) authorization on
/// routes the template protects with `AWS_IAM` ([`crate::iam`]).
pub use crate::iam::LOCAL_IAM_HEADER;

/// One route, compiled for matching.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// `POST /webhooks/{provider}`, as API Gateway names it in `routeKey`.
    pub route_key: String,
    /// Uppercase method, or `ANY`.
    pub method: String,
    /// The function's logical id.
    pub function: String,
    /// Behind IAM authorization in the template: locally, the caller must present a
    /// local credential ([`LOCAL_IAM_HEADER`]) whose policy allows the request
    /// ([`crate::iam`]).
    pub iam: bool,
    segments: Vec<Segment>,
    is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Parameter(String),
    Greedy(String),
}

/// The routes of one HTTP API.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
}

/// A request matched to a route.
#[derive(Debug, Clone)]
pub struct RouteMatch<'a> {
    pub route: &'a CompiledRoute,
    /// Decoded path parameters.
    pub path_parameters: BTreeMap<String, String>,
}

impl RouteTable {
    /// Compiles the description's routes; routes without a function are skipped.
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut compiled: Vec<CompiledRoute> = routes
            .iter()
            .filter_map(|route| {
                let function = route.function.clone()?;
                let is_default = route.path.trim_start_matches('/') == "$default";
                let segments = if is_default {
                    Vec::new()
                } else {
                    route
                        .path
                        .trim_start_matches('/')
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(|segment| {
                            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                                Some(name) => match name.strip_suffix('+') {
                                    Some(greedy) => Segment::Greedy(greedy.to_owned()),
                                    None => Segment::Parameter(name.to_owned()),
                                },
                                None => Segment::Literal(segment.to_owned()),
                            }
                        })
                        .collect()
                };
                let method = route.method.to_ascii_uppercase();
                let route_key = if is_default {
                    "$default".to_owned()
                } else {
                    format!("{method} {}", route.path)
                };
                Some(CompiledRoute {
                    route_key,
                    method,
                    function,
                    iam: route.auth.as_deref() == Some("AWS_IAM"),
                    segments,
                    is_default,
                })
            })
            .collect();
        // Most specific first: more literal segments, then no greedy segment, then an
        // exact method before ANY; `$default` last.
        compiled.sort_by_key(|route| {
            let literals = route
                .segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count();
            let greedy = route
                .segments
                .iter()
                .any(|s| matches!(s, Segment::Greedy(_)));
            (
                route.is_default,
                std::cmp::Reverse(literals),
                greedy,
                route.method == "ANY",
            )
        });
        RouteTable { routes: compiled }
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// The route serving `method` `raw_path`, if any.
    pub fn find(&self, method: &str, raw_path: &str) -> Option<RouteMatch<'_>> {
        let parts: Vec<&str> = raw_path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        self.routes.iter().find_map(|route| {
            if route.method != "ANY" && !route.method.eq_ignore_ascii_case(method) {
                return None;
            }
            if route.is_default {
                return Some(RouteMatch {
                    route,
                    path_parameters: BTreeMap::new(),
                });
            }
            match_segments(&route.segments, &parts).map(|path_parameters| RouteMatch {
                route,
                path_parameters,
            })
        })
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut parameters = BTreeMap::new();
    for (index, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Greedy(name) => {
                let rest = parts.get(index..).filter(|rest| !rest.is_empty())?;
                parameters.insert(name.clone(), decode(&rest.join("/")));
                return Some(parameters);
            }
            Segment::Literal(literal) => {
                if parts.get(index) != Some(&literal.as_str()) {
                    return None;
                }
            }
            Segment::Parameter(name) => {
                parameters.insert(name.clone(), decode(parts.get(index)?));
            }
        }
    }
    (parts.len() == segments.len()).then_some(parameters)
}

/// The parts of an HTTP request the event is made from.
#[derive(Debug, Clone)]
pub struct IncomingRequest<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    /// Header name/value pairs as received (names in any case, repeats allowed).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    pub source_ip: &'a str,
    /// The port the API listens on, for `x-forwarded-port`.
    pub port: u16,
}

/// True for content types API Gateway passes as text; everything else is base64.
pub fn is_text_content_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/xml"
        || essence.ends_with("+xml")
        || essence == "application/javascript"
        || essence == "application/graphql"
}

/// Builds the payload format 2.0 event for a matched request.
pub fn build_event(
    request: &IncomingRequest<'_>,
    matched: &RouteMatch<'_>,
    request_id: &str,
    now: OffsetDateTime,
) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in request.headers {
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        headers
            .entry(name)
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    // What API Gateway adds in front of the function. The Host header is kept as sent,
    // so URL-signing providers (Twilio, Square, HubSpot) verify against the local URL.
    headers.insert("x-forwarded-proto".into(), "http".into());
    headers.insert("x-forwarded-port".into(), request.port.to_string());
    headers
        .entry("x-forwarded-for".into())
        .and_modify(|chain| {
            chain.push_str(", ");
            chain.push_str(request.source_ip);
        })
        .or_insert_with(|| request.source_ip.to_owned());
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(request.raw_query.as_bytes()) {
        query
            .entry(name.into_owned())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let time_epoch = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    let host = headers.get("host").cloned().unwrap_or_default();
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();
    let mut event = Map::new();
    event.insert("version".into(), json!("2.0"));
    event.insert("routeKey".into(), json!(matched.route.route_key));
    event.insert("rawPath".into(), json!(request.raw_path));
    event.insert("rawQueryString".into(), json!(request.raw_query));
    if !cookies.is_empty() {
        event.insert("cookies".into(), json!(cookies));
    }
    event.insert("headers".into(), json!(headers));
    if !query.is_empty() {
        event.insert("queryStringParameters".into(), json!(query));
    }
    if !matched.path_parameters.is_empty() {
        event.insert("pathParameters".into(), json!(matched.path_parameters));
    }
    event.insert(
        "requestContext".into(),
        json!({
            "accountId": crate::ACCOUNT_ID,
            "apiId": crate::iam::API_ID,
            "domainName": host,
            "domainPrefix": host.split(['.', ':']).next().unwrap_or_default(),
            "http": {
                "method": request.method.to_ascii_uppercase(),
                "path": request.raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": matched.route.route_key,
            "stage": crate::iam::STAGE,
            "time": format_request_time(now),
            "timeEpoch": time_epoch,
        }),
    );
    if !request.body.is_empty() {
        let text = is_text_content_type(headers.get("content-type").map(String::as_str))
            .then(|| std::str::from_utf8(request.body).ok())
            .flatten();
        match text {
            Some(text) => {
                event.insert("body".into(), json!(text));
                event.insert("isBase64Encoded".into(), json!(false));
            }
            None => {
                event.insert("body".into(), json!(BASE64.encode(request.body)));
                event.insert("isBase64Encoded".into(), json!(true));
            }
        }
    } else {
        event.insert("isBase64Encoded".into(), json!(false));
    }
    Value::Object(event)
}

/// `12/Mar/2020:19:03:58 +0000`, API Gateway's `requestContext.time`.
fn format_request_time(now: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .get(usize::from(u8::from(now.month())) - 1)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{:02}/{month}/{}:{:02}:{:02}:{:02} +0000",
        now.day(),
        now.year(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The HTTP response API Gateway makes from a function's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    /// Header pairs; `set-cookie` appears once per cookie.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    fn message(status: u16, message: &str) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({ "message": message }).to_string().into_bytes(),
        }
    }

    /// An IAM-authorized route called without the local credential (API Gateway
    /// answers unsigned requests to IAM routes with 403 `Forbidden`).
    pub fn forbidden() -> ApiResponse {
        ApiResponse::message(403, "Forbidden")
    }

    /// No route matched.
    pub fn not_found() -> ApiResponse {
        ApiResponse::message(404, "Not Found")
    }

    /// The function failed or answered something unusable.
    pub fn internal_error() -> ApiResponse {
        ApiResponse::message(500, "Internal Server Error")
    }

    /// The body exceeds the HTTP API's 10 MB limit.
    pub fn payload_too_large() -> ApiResponse {
        ApiResponse::message(413, "Request Entity Too Large")
    }

    /// The function timed out.
    pub fn service_unavailable() -> ApiResponse {
        ApiResponse::message(503, "Service Unavailable")
    }

    /// Interprets a payload format 2.0 function response. A JSON value without
    /// `statusCode` is, as in API Gateway, a 200 whose body is that JSON.
    pub fn from_payload(payload: &[u8]) -> ApiResponse {
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            return ApiResponse::internal_error();
        };
        let Some(object) = value.as_object().filter(|o| o.contains_key("statusCode")) else {
            return ApiResponse {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: payload.to_vec(),
            };
        };
        let status = match &object["statusCode"] {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        };
        let Some(status) = status
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (100..=599).contains(s))
        else {
            return ApiResponse::internal_error();
        };
        let mut headers = Vec::new();
        for field in ["headers", "multiValueHeaders"] {
            if let Some(map) = object.get(field).and_then(Value::as_object) {
                for (name, value) in map {
                    let values = match value {
                        Value::Array(items) => items.iter().map(scalar_text).collect(),
                        other => vec![scalar_text(other)],
                    };
                    headers.extend(values.into_iter().map(|v| (name.to_ascii_lowercase(), v)));
                }
            }
        }
        if let Some(cookies) = object.get("cookies").and_then(Value::as_array) {
            headers.extend(
                cookies
                    .iter()
                    .map(|cookie| ("set-cookie".to_owned(), scalar_text(cookie))),
            );
        }
        let text = object.get("body").map(scalar_text).unwrap_or_default();
        let body = if object.get("isBase64Encoded") == Some(&Value::Bool(true)) {
            match BASE64.decode(text.as_bytes()) {
                Ok(bytes) => bytes,
                Err(_) => return ApiResponse::internal_error(),
            }
        } else {
            text.into_bytes()
        };
        ApiResponse {
            status,
            headers,
            body,
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, function: &str) -> Route {
        Route {
            method: method.into(),
            path: path.into(),
            function: Some(function.into()),
            auth: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("POST", "/webhooks/{provider}", "Ingress"),
            route("POST", "/webhooks/{provider}/{endpoint}", "Ingress"),
            route("GET", "/webhooks/health", "Health"),
            route("ANY", "/files/{proxy+}", "Files"),
        ])
    }

    #[test]
    fn parameters_are_matched_and_decoded() {
        let table = table();
        let found = table
            .find("POST", "/webhooks/stripe/eu%20west")
            .expect("match");
        assert_eq!(
            found.route.route_key,
            "POST /webhooks/{provider}/{endpoint}"
        );
        assert_eq!(found.path_parameters["provider"], "stripe");
        assert_eq!(found.path_parameters["endpoint"], "eu west");
    }

    #[test]
    fn literal_segments_win_over_parameters_and_methods_must_match() {
        let table = table();
        assert_eq!(
            table
                .find("GET", "/webhooks/health")
                .expect("match")
                .route
                .function,
            "Health"
        );
        assert!(table.find("GET", "/webhooks/stripe").is_none());
        assert!(table.find("POST", "/webhooks").is_none());
        assert!(table.find("POST", "/webhooks/a/b/c").is_none());
    }

    #[test]
    fn greedy_parameters_take_the_rest_of_the_path() {
        let table = table();
        let found = table.find("DELETE", "/files/a/b/c.txt").expect("match");
        assert_eq!(found.path_parameters["proxy"], "a/b/c.txt");
        assert!(table.find("GET", "/files").is_none());
    }

    #[test]
    fn default_route_catches_the_rest() {
        let mut routes = vec![route("ANY", "/$default", "Fallback")];
        routes.push(route("POST", "/webhooks/{provider}", "Ingress"));
        let table = RouteTable::new(&routes);
        assert_eq!(
            table
                .find("POST", "/webhooks/x")
                .expect("match")
                .route
                .function,
            "Ingress"
        );
        let fallback = table.find("GET", "/anything/else").expect("match");
        assert_eq!(fallback.route.route_key, "$default");
    }

    #[test]
    fn event_has_the_format_2_0_shape() {
        let table = table();
        let matched = table.find("POST", "/webhooks/github").expect("match");
        let headers = vec![
            ("Host".to_owned(), "127.0.0.1:3000".to_owned()),
            ("X-Multi".to_owned(), "a".to_owned()),
            ("x-multi".to_owned(), "b".to_owned()),
            ("Cookie".to_owned(), "a=1; b=2".to_owned()),
            (
                "Content-Type".to_owned(),
                "application/octet-stream".to_owned(),
            ),
        ];
        let request = IncomingRequest {
            method: "post",
            raw_path: "/webhooks/github",
            raw_query: "x=1&x=2&y=%20z",
            headers: &headers,
            body: &[0, 159, 146, 150],
            source_ip: "127.0.0.1",
            port: 3000,
        };
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let event = build_event(&request, &matched, "req-1", now);
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "POST /webhooks/{provider}");
        assert_eq!(event["rawQueryString"], "x=1&x=2&y=%20z");
        assert_eq!(event["queryStringParameters"]["x"], "1,2");
        assert_eq!(event["queryStringParameters"]["y"], " z");
        assert_eq!(event["headers"]["x-multi"], "a,b");
        assert_eq!(event["headers"]["host"], "127.0.0.1:3000");
        assert_eq!(event["headers"]["x-forwarded-proto"], "http");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event["pathParameters"]["provider"], "github");
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["requestContext"]["stage"], "$default");
        assert_eq!(event["requestContext"]["timeEpoch"], 1_700_000_000_000_i64);
        assert_eq!(
            event["requestContext"]["time"],
            "14/Nov/2023:22:13:20 +0000"
        );
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["body"], BASE64.encode([0, 159, 146, 150]));
    }

    #[test]
    fn text_bodies_are_passed_as_text() {
        assert!(is_text_content_type(Some(
            "application/json; charset=utf-8"
        )));
        assert!(is_text_content_type(Some("text/plain")));
        assert!(!is_text_content_type(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!is_text_content_type(Some("image/png")));
    }

    #[test]
    fn responses_are_read_like_api_gateway() {
        let response = ApiResponse::from_payload(
            br#"{"statusCode":201,"headers":{"Content-Type":"text/plain"},"cookies":["a=1"],"body":"aGk=","isBase64Encoded":true}"#,
        );
        assert_eq!(response.status, 201);
        assert_eq!(response.body, b"hi");
        assert!(
            response
                .headers
                .contains(&("set-cookie".to_owned(), "a=1".to_owned()))
        );
        let bare = ApiResponse::from_payload(br#"{"ok":true}"#);
        assert_eq!(
            (bare.status, bare.body.as_slice()),
            (200, &br#"{"ok":true}"#[..])
        );
        assert_eq!(ApiResponse::from_payload(b"not json").status, 500);
        assert_eq!(
            ApiResponse::from_payload(br#"{"statusCode":"abc"}"#).status,
            500
        );
    }
}
