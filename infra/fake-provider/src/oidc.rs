//! A real OpenID Provider for tests: panva's `oidc-provider` (OpenID Certified, from
//! npm), run by `infra/oidc-provider/server.mjs` under Node.js on loopback. Unlike
//! [`crate::oauth`], nothing here implements the protocol: discovery, PKCE, ID tokens,
//! refresh-token rotation and revocation are the library's.
//!
//! [`OidcProvider::start`] installs the pinned package (`npm ci`) the first time, starts
//! the server and reads its issuer; dropping the value stops it. The server prints every
//! token it issues and PKCE verifier it is sent on a line of its own; those, the codes
//! and `state` values of the authorizations played here and registered client secrets
//! go to the [`crate::ledger`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, BufReader, Lines},
    process::{Child, Command},
    task::JoinHandle,
};

use crate::ledger::{self, IssuedSecret};

/// A running `oidc-provider`.
#[derive(Debug)]
pub struct OidcProvider {
    issuer: String,
    child: Child,
    http: reqwest::Client,
    /// What [`OidcProvider::issued_secrets`] lists (also in the process-wide ledger).
    issued: Arc<Mutex<Vec<IssuedSecret>>>,
    /// Reads the tokens the server prints until its output ends.
    tokens: JoinHandle<()>,
}

/// Adds `value` to `issued` and the process-wide ledger.
fn note(issued: &Mutex<Vec<IssuedSecret>>, what: &'static str, value: &str) {
    issued
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(ledger::record(what, value));
}

/// What a token the server reports is, by its token-response field.
fn token_kind(field: &str) -> &'static str {
    match field {
        "access_token" => "an access token of the OpenID provider",
        "refresh_token" => "a refresh token of the OpenID provider",
        "id_token" => "an ID token of the OpenID provider",
        "code_verifier" => "a PKCE verifier sent to the OpenID provider",
        _ => "a token of the OpenID provider",
    }
}

/// Notes each `{"issued": {"kind", "value"}}` line the server prints, until its output
/// ends; other lines are ignored.
async fn read_issued_tokens(
    mut lines: Lines<BufReader<impl AsyncRead + Unpin>>,
    issued: Arc<Mutex<Vec<IssuedSecret>>>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(document) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let entry = &document["issued"];
        if let (Some(kind), Some(value)) = (entry["kind"].as_str(), entry["value"].as_str()) {
            note(&issued, token_kind(kind), value);
        }
    }
}

/// Why the provider could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

fn failed(what: &str, detail: impl std::fmt::Display) -> OidcError {
    OidcError::Failed {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// Client credentials from dynamic registration (RFC 7591).
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
}

impl OidcProvider {
    /// The server's directory in the repository.
    pub fn directory(root: &Path) -> PathBuf {
        root.join("infra/oidc-provider")
    }

    /// Installs the locked package if needed, starts the server with an access-token
    /// lifetime of `access_token_ttl` seconds and waits for its issuer line.
    pub async fn start(root: &Path, access_token_ttl: u32) -> Result<OidcProvider, OidcError> {
        let dir = Self::directory(root);
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .await
                .map_err(|err| failed("running npm ci (is Node.js installed?)", err))?;
            if !status.success() {
                return Err(failed("npm ci in infra/oidc-provider", status));
            }
        }
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("ACCESS_TOKEN_TTL", access_token_ttl.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| failed("starting node server.mjs", err))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("reading the server's output", "no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| failed("waiting for the issuer line", "timed out"))?
            .map_err(|err| failed("reading the issuer line", err))?
            .ok_or_else(|| failed("reading the issuer line", "the server exited"))?;
        let issuer = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("issuer").and_then(|i| i.as_str()).map(str::to_owned))
            .ok_or_else(|| failed("parsing the issuer line", &line))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| failed("building an HTTP client", err))?;
        let issued = Arc::new(Mutex::new(Vec::new()));
        let tokens = tokio::spawn(read_issued_tokens(lines, issued.clone()));
        Ok(OidcProvider {
            issuer,
            child,
            http,
            issued,
            tokens,
        })
    }

    /// The secrets this provider issued (access, refresh and ID tokens; codes of the
    /// authorizations [`OidcProvider::authorize`] played) or was handed (`state` values,
    /// PKCE verifiers, registered client secrets) so far, oldest first.
    /// [`crate::issued_secrets`] has every provider's.
    pub fn issued_secrets(&self) -> Vec<IssuedSecret> {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Registers a confidential client (`client_secret_basic`) for the code and refresh
    /// grants with this redirect URI.
    pub async fn register_client(&self, redirect_uri: &str) -> Result<RegisteredClient, OidcError> {
        let response = self
            .http
            .post(format!("{}/reg", self.issuer))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "redirect_uris": [redirect_uri],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                })
                .to_string(),
            )
            .send()
            .await
            .map_err(|err| failed("registering a client", err))?;
        let status = response.status();
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap_or_default())
                .map_err(|err| failed("reading the registration", err))?;
        let field = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        match (field("client_id"), field("client_secret")) {
            (Some(client_id), Some(client_secret)) => {
                note(
                    &self.issued,
                    "a client secret of the OpenID provider",
                    &client_secret,
                );
                Ok(RegisteredClient {
                    client_id,
                    client_secret,
                })
            }
            _ => Err(failed("registering a client", format!("{status}: {body}"))),
        }
    }

    /// What the provider counted: `code_grants`, `refresh_grants`,
    /// `refresh_tokens_consumed`, `revocations`, `grants_revoked`, `discovery`, `jwks`,
    /// and `errors` (a list).
    pub async fn counters(&self) -> Result<serde_json::Value, OidcError> {
        let text = self
            .http
            .get(format!("{}/test/counters", self.issuer))
            .send()
            .await
            .map_err(|err| failed("reading the counters", err))?
            .text()
            .await
            .map_err(|err| failed("reading the counters", err))?;
        serde_json::from_str(&text).map_err(|err| failed("parsing the counters", err))
    }

    /// Plays the user's browser at the provider: follows redirects from `authorize_url`
    /// (login and consent finish at once), keeping the provider's cookies, until a
    /// redirect leaves the provider; returns that location (the callback).
    pub async fn authorize(&self, authorize_url: &str) -> Result<String, OidcError> {
        let mut cookies: BTreeMap<String, String> = BTreeMap::new();
        let mut url = authorize_url.to_owned();
        for _ in 0..10 {
            let cookie = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let response = self
                .http
                .get(&url)
                .header("cookie", cookie)
                .send()
                .await
                .map_err(|err| failed("following the authorization", err))?;
            for value in response.headers().get_all("set-cookie") {
                if let Some((name, rest)) = value.to_str().unwrap_or_default().split_once('=') {
                    let value = rest.split(';').next().unwrap_or_default();
                    if value.is_empty() {
                        cookies.remove(name);
                    } else {
                        cookies.insert(name.to_owned(), value.to_owned());
                    }
                }
            }
            let status = response.status().as_u16();
            let Some(location) = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            else {
                let body = response.text().await.unwrap_or_default();
                return Err(failed(
                    "following the authorization",
                    format!("{status} without a redirect: {body}"),
                ));
            };
            let next = reqwest::Url::parse(&url)
                .and_then(|base| base.join(&location))
                .map_err(|err| failed("following the authorization", err))?
                .to_string();
            if !next.starts_with(&self.issuer) {
                self.note_callback(&next);
                return Ok(next);
            }
            url = next;
        }
        Err(failed("following the authorization", "too many redirects"))
    }

    /// Notes the authorization code and `state` a callback URL carries.
    fn note_callback(&self, callback: &str) {
        let Ok(url) = reqwest::Url::parse(callback) else {
            return;
        };
        for (name, value) in url.query_pairs() {
            let what = match name.as_ref() {
                "code" => "an authorization code of the OpenID provider",
                "state" => "a state value sent to the OpenID provider",
                _ => continue,
            };
            note(&self.issued, what, &value);
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // Closing stdin ends the server; the kill is the fallback.
        drop(self.child.stdin.take());
        let _ = self.child.start_kill();
        self.tokens.abort();
    }
}
