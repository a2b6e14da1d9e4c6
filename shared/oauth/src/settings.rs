//! Settings of the OAuth functions (`oauth`, `connections`, `token-refresher`), read once at cold start from the environment the template
//! sets; a missing or invalid value fails the start with a message naming the key.

use junction_aws::config::{ConfigError, Env};

/// Settings shared by the OAuth functions (`oauth`, `connections`, `token-refresher`).
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// Key `JUNCTION_PREFIX`: client credentials live at `<prefix>/oauth/<provider>`.
    pub secret_prefix: String,
    /// Key `CONNECTIONS_TABLE`.
    pub connections_table: String,
    /// Key `TOKEN_KEY_ID`: the KMS key that encrypts each token write's data key.
    pub token_key_id: String,
    /// Key `EVENT_BUS_NAME`: `connection.*` events go there.
    pub event_bus: String,
    /// Key `PUBLIC_BASE_URL`: the API's public base (redirect URIs, reconnect links);
    /// when empty, the oauth function uses the request's own domain.
    pub public_base_url: Option<String>,
}

impl OAuthSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let public_base_url = env
            .optional("PUBLIC_BASE_URL")
            .map(|url| url.trim_end_matches('/').to_owned());
        if let Some(url) = &public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://127.0.0.1"))
        {
            return Err(ConfigError::Invalid {
                key: "PUBLIC_BASE_URL",
                reason: "must start with https:// (or http://127.0.0.1 locally)".into(),
            });
        }
        Ok(OAuthSettings {
            secret_prefix: env.required("JUNCTION_PREFIX")?,
            connections_table: env.required("CONNECTIONS_TABLE")?,
            token_key_id: env.required("TOKEN_KEY_ID")?,
            event_bus: env.required("EVENT_BUS_NAME")?,
            public_base_url,
        })
    }
}

/// Settings of the connect flow (the `oauth` function) besides [`OAuthSettings`].
#[derive(Debug, Clone)]
pub struct ConnectFlowSettings {
    /// Key `OAUTH_STATE_TABLE`: pending authorizations.
    pub state_table: String,
    /// Key `OAUTH_RETURN_TO_ORIGINS`: comma-separated origins (`https://app.example.com`)
    /// that `return_to` may point at.
    pub return_to_origins: Vec<String>,
    /// Key `OAUTH_DEFAULT_RETURN_TO` (optional): where users go when `return_to` is not
    /// given; must be under an allowed origin.
    pub default_return_to: Option<String>,
    /// Key `SYNC_JOBS_TABLE`: a new connection's sync jobs are created there.
    pub sync_jobs_table: String,
    /// Key `CONNECT_SESSIONS_TABLE`: the connect sessions `start` consumes.
    pub sessions_table: String,
}

impl ConnectFlowSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let (return_to_origins, default_return_to) = return_to_settings(env)?;
        Ok(ConnectFlowSettings {
            state_table: env.required("OAUTH_STATE_TABLE")?,
            return_to_origins,
            default_return_to,
            sync_jobs_table: env.required("SYNC_JOBS_TABLE")?,
            sessions_table: env.required("CONNECT_SESSIONS_TABLE")?,
        })
    }
}

/// Settings of the management API's `POST /v1/connect-sessions` (the `connections`
/// function): where sessions are stored and what `return_to` may be, as `start` checks.
#[derive(Debug, Clone)]
pub struct ConnectSessionSettings {
    /// Key `CONNECT_SESSIONS_TABLE`.
    pub sessions_table: String,
    /// Key `OAUTH_RETURN_TO_ORIGINS`, as [`ConnectFlowSettings::return_to_origins`].
    pub return_to_origins: Vec<String>,
    /// Key `OAUTH_DEFAULT_RETURN_TO`, as [`ConnectFlowSettings::default_return_to`].
    pub default_return_to: Option<String>,
}

impl ConnectSessionSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let (return_to_origins, default_return_to) = return_to_settings(env)?;
        Ok(ConnectSessionSettings {
            sessions_table: env.required("CONNECT_SESSIONS_TABLE")?,
            return_to_origins,
            default_return_to,
        })
    }
}

/// `OAUTH_RETURN_TO_ORIGINS` (origins) and `OAUTH_DEFAULT_RETURN_TO` (under one of them).
fn return_to_settings<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<(Vec<String>, Option<String>), ConfigError> {
    let origins_text = env.required("OAUTH_RETURN_TO_ORIGINS")?;
    let mut return_to_origins = Vec::new();
    for origin in origins_text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let parsed = url::Url::parse(origin).map_err(|_| ConfigError::Invalid {
            key: "OAUTH_RETURN_TO_ORIGINS",
            reason: format!("{origin:?} is not a URL"),
        })?;
        let serialized = parsed.origin().ascii_serialization();
        if serialized != origin.trim_end_matches('/') {
            return Err(ConfigError::Invalid {
                key: "OAUTH_RETURN_TO_ORIGINS",
                reason: format!(
                    "{origin:?} is not an origin (scheme://host[:port]); use {serialized:?}"
                ),
            });
        }
        return_to_origins.push(serialized);
    }
    let default_return_to = env.optional("OAUTH_DEFAULT_RETURN_TO");
    if let Some(default) = &default_return_to {
        let origin = url::Url::parse(default)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default();
        if !return_to_origins.contains(&origin) {
            return Err(ConfigError::Invalid {
                key: "OAUTH_DEFAULT_RETURN_TO",
                reason: "must be a URL under one of OAUTH_RETURN_TO_ORIGINS".into(),
            });
        }
    }
    Ok((return_to_origins, default_return_to))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    #[test]
    fn oauth_settings_name_the_bad_key() {
        let base = [
            ("JUNCTION_PREFIX", "junction"),
            ("CONNECTIONS_TABLE", "connections"),
            ("TOKEN_KEY_ID", "alias/junction-tokens"),
            ("EVENT_BUS_NAME", "bus"),
            ("OAUTH_STATE_TABLE", "states"),
            ("SYNC_JOBS_TABLE", "jobs"),
            ("CONNECT_SESSIONS_TABLE", "sessions"),
            (
                "OAUTH_RETURN_TO_ORIGINS",
                "https://app.example.com, http://127.0.0.1:3000",
            ),
        ];
        OAuthSettings::from_env(&env(&base)).expect("valid");
        let flow = ConnectFlowSettings::from_env(&env(&base)).expect("valid");
        assert_eq!(
            flow.return_to_origins,
            ["https://app.example.com", "http://127.0.0.1:3000"]
        );
        let sessions = ConnectSessionSettings::from_env(&env(&base)).expect("valid");
        assert_eq!(sessions.return_to_origins, flow.return_to_origins);
        assert_eq!(sessions.sessions_table, "sessions");
        for (key, value, message) in [
            (
                "OAUTH_RETURN_TO_ORIGINS",
                "https://app.example.com/path",
                "not an origin",
            ),
            ("OAUTH_RETURN_TO_ORIGINS", "app.example.com", "not a URL"),
            (
                "OAUTH_DEFAULT_RETURN_TO",
                "https://evil.example.net/",
                "under one of",
            ),
        ] {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            let err = ConnectFlowSettings::from_env(&env(&pairs)).expect_err(value);
            let text = err.to_string();
            assert!(text.contains(key) && text.contains(message), "{text}");
        }
        let mut pairs = base.to_vec();
        pairs.push(("PUBLIC_BASE_URL", "http://hub.example.com"));
        let err = OAuthSettings::from_env(&env(&pairs)).expect_err("http");
        assert!(err.to_string().contains("PUBLIC_BASE_URL"));
        let err = OAuthSettings::from_env(&env(&base[1..])).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "configuration key JUNCTION_PREFIX is required but not set"
        );
    }
}
