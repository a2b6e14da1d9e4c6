//! `junction connect`: mints a connect session through the management API
//! (`POST /v1/tenants/{tenant}/connect-sessions`), as the product's backend does, and
//! returns the URL to send a user to. The route is IAM-authorized: against a deployed stack the request is
//! signed with SigV4 (`execute-api`) with your AWS credentials; against the local stack
//! it carries the stack's stand-in credential in [`LOCAL_IAM_HEADER`].

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use aws_credential_types::{Credentials, provider::ProvideCredentials as _};
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use junction_oauth::ConnectSessionRequest;
use serde::Deserialize;

/// The header the local stack checks on IAM-authorized routes (its stand-in for SigV4).
pub const LOCAL_IAM_HEADER: &str = "x-junction-local-iam";

/// The largest answer read (a session is a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where the management API's tenants are under the API's base URL (the stack's
/// `ManagementApiUrl` output ends here).
pub const TENANTS_PATH: &str = "/v1/tenants";

/// How a management API request proves it may be made.
#[derive(Clone)]
pub enum ApiAuth {
    /// The local stack's credential (printed at start), in [`LOCAL_IAM_HEADER`].
    LocalIam(String),
    /// SigV4 for `execute-api` in `region`.
    SigV4 {
        credentials: Credentials,
        region: String,
    },
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiAuth::LocalIam(_) => f.write_str("LocalIam(<redacted>)"),
            ApiAuth::SigV4 { region, .. } => write!(f, "SigV4 {{ region: {region} }}"),
        }
    }
}

impl ApiAuth {
    /// SigV4 with the credentials and region of `aws` (the usual AWS configuration).
    pub async fn from_sdk_config(aws: &aws_config::SdkConfig) -> anyhow::Result<ApiAuth> {
        let provider = aws
            .credentials_provider()
            .context("no AWS credentials configured (needed to sign the request)")?;
        let credentials = provider
            .provide_credentials()
            .await
            .context("loading AWS credentials")?;
        let region = aws
            .region()
            .context("no AWS region configured (set AWS_REGION or pass --region)")?
            .to_string();
        Ok(ApiAuth::SigV4 {
            credentials,
            region,
        })
    }
}

/// A minted session, as the API answered.
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedSession {
    /// The single-use token (also in `connect_url`).
    pub token: String,
    /// Where to send the user: `<api>/oauth/<provider>/start?session=<token>`.
    pub connect_url: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

impl std::fmt::Display for CreatedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.connect_url)
    }
}

/// The management API's URL of `tenant`'s `resource` (`connect-sessions`,
/// `connections`, `connections/<id>`) under `api_url`: the API's base URL
/// (`JUNCTION_API_URL`), or the stack's `ManagementApiUrl` output (`<base>/v1/tenants/`).
/// The tenant is one path segment, escaped as one.
pub fn tenant_url(api_url: &str, tenant: &str, resource: &[&str]) -> anyhow::Result<reqwest::Url> {
    // `url` drops a `.` or `..` segment (it would name the parent path, not a tenant).
    if tenant.is_empty() || tenant == "." || tenant == ".." {
        bail!("--tenant {tenant:?}: a tenant id must be a path segment, not empty, . or ..");
    }
    let mut url =
        reqwest::Url::parse(api_url).with_context(|| format!("{api_url} is not a URL"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        bail!("{api_url} is not an http(s) URL");
    }
    let base = url.path().trim_end_matches('/');
    let base = base.strip_suffix(TENANTS_PATH).unwrap_or(base).to_owned();
    url.set_path(&base);
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{api_url} cannot be a base URL"))?
        .pop_if_empty()
        .extend(["v1", "tenants", tenant])
        .extend(resource);
    Ok(url)
}

/// The connect-sessions URL of `tenant` under `api_url` (see [`tenant_url`]).
pub fn sessions_url(api_url: &str, tenant: &str) -> anyhow::Result<reqwest::Url> {
    tenant_url(api_url, tenant, &["connect-sessions"])
}

/// `POST /v1/tenants/{tenant}/connect-sessions` for `request.tenant`; the session, or
/// the API's refusal.
pub async fn create_session(
    http: &reqwest::Client,
    api_url: &str,
    auth: &ApiAuth,
    request: &ConnectSessionRequest,
) -> anyhow::Result<CreatedSession> {
    let url = sessions_url(api_url, &request.tenant)?;
    let body = serde_json::to_vec(request).context("encoding the request")?;
    let mut builder = http
        .post(url.clone())
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/json");
    match auth {
        ApiAuth::LocalIam(key) => builder = builder.header(LOCAL_IAM_HEADER, key),
        ApiAuth::SigV4 {
            credentials,
            region,
        } => {
            for (name, value) in sigv4_headers(&url, &body, credentials, region)? {
                builder = builder.header(name, value);
            }
        }
    }
    let response = builder
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    // The answer is small; a cap keeps a misdirected URL from streaming a page.
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading the answer")? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            bail!("POST {url} → {status}: an answer over {MAX_ANSWER_BYTES} bytes");
        }
        bytes.extend_from_slice(&chunk);
    }
    if status.as_u16() != 201 {
        bail!(
            "POST {url} → {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        );
    }
    serde_json::from_slice(&bytes).with_context(|| format!("POST {url} → {status}: not a session"))
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token` for
/// temporary credentials) of a JSON `POST` to `url`: the management API's IAM
/// authorization, for every CLI command that calls it.
pub fn sigv4_headers(
    url: &reqwest::Url,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .context("SigV4 signing parameters")?
        .into();
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let request = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .context("a signable request")?;
    let (instructions, _) = sign(request, &params)
        .context("signing the request")?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// `name=value` pairs (`--param shop=acme.myshopify.com`) as the request's params.
pub fn parse_params(
    pairs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("--param {pair}: expected NAME=VALUE"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sessions_url_is_under_the_tenant_of_the_api_or_of_the_management_url() {
        for (given, tenant, expected) in [
            (
                "http://127.0.0.1:3000",
                "acme",
                "http://127.0.0.1:3000/v1/tenants/acme/connect-sessions",
            ),
            (
                "https://abc.execute-api.eu-west-1.amazonaws.com/",
                "acme",
                "https://abc.execute-api.eu-west-1.amazonaws.com/v1/tenants/acme/connect-sessions",
            ),
            (
                "https://abc.execute-api.eu-west-1.amazonaws.com/v1/tenants/",
                "acme",
                "https://abc.execute-api.eu-west-1.amazonaws.com/v1/tenants/acme/connect-sessions",
            ),
            (
                "https://hub.example.com/junction/v1/tenants",
                "org:1@eu",
                "https://hub.example.com/junction/v1/tenants/org:1@eu/connect-sessions",
            ),
            (
                "http://127.0.0.1:3000",
                "a/b",
                "http://127.0.0.1:3000/v1/tenants/a%2Fb/connect-sessions",
            ),
        ] {
            assert_eq!(sessions_url(given, tenant).expect(given).as_str(), expected);
        }
        for bad in ["127.0.0.1:3000", "ftp://example.com", "not a url"] {
            assert!(sessions_url(bad, "acme").is_err(), "{bad}");
        }
        for tenant in ["", ".", ".."] {
            assert!(
                sessions_url("http://127.0.0.1:3000", tenant).is_err(),
                "{tenant:?}"
            );
        }
        assert_eq!(
            tenant_url("http://127.0.0.1:3000", "acme", &["connections", "conn_1"])
                .expect("url")
                .as_str(),
            "http://127.0.0.1:3000/v1/tenants/acme/connections/conn_1"
        );
    }

    #[test]
    fn a_signed_request_names_execute_api_and_carries_the_session_token() {
        let url =
            sessions_url("https://abc.execute-api.eu-west-1.amazonaws.com", "acme").expect("url");
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        );
        let headers = sigv4_headers(&url, b"{}", &credentials, "eu-west-1").expect("signed");
        let get = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let authorization = get("authorization").expect("authorization");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && authorization.contains("/eu-west-1/execute-api/aws4_request"),
            "{authorization}"
        );
        assert!(
            authorization
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{authorization}"
        );
        assert_eq!(get("x-amz-security-token"), Some("session-token"));
        assert!(get("x-amz-date").is_some());
    }

    #[test]
    fn params_are_name_value_pairs() {
        let params = parse_params(&["shop=acme.myshopify.com".into()]).expect("parsed");
        assert_eq!(params["shop"], "acme.myshopify.com");
        assert!(parse_params(&["shop".into()]).is_err());
    }

    #[test]
    fn the_local_credential_is_not_in_debug_output() {
        let auth = ApiAuth::LocalIam("very-secret-local-key".into());
        assert!(!format!("{auth:?}").contains("very-secret"));
    }
}
