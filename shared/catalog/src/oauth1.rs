//! A provider's `[oauth1]` section: how accounts are connected with OAuth 1.0a
//! (RFC 5849's three legs: temporary credentials, the user's authorization, token
//! credentials) and how the connection's API requests are authenticated afterwards.
//!
//! Only what differs between providers is data here; the one implementation of each
//! step is `junction_oauth`'s. This module must not depend on AWS or on the HTTP stack.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::endpoint::EndpointRules;
use crate::oauth::placeholders;

/// How one provider connects with OAuth 1.0a.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth1Spec {
    /// RFC 5849 §2.1: temporary credentials are requested here (`POST`, signed with the
    /// consumer key and secret, `oauth_callback` the callback URL).
    pub request_token_url: String,
    /// RFC 5849 §2.2: the user is sent here with `oauth_token` (the temporary token).
    pub authorize_url: String,
    /// Further query parameters of the authorize URL (Trello's `name`, `scope`,
    /// `expiration`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// RFC 5849 §2.3: token credentials are requested here (`POST`, signed with the
    /// temporary token's secret, carrying `oauth_verifier`).
    pub access_token_url: String,
    /// The token-credentials answer's parameter that names the provider account (X's
    /// `user_id`): recorded on the connection, and a reconnect must bring it back.
    /// Absent where the answer names none (Trello).
    #[serde(default)]
    pub account_param: Option<String>,
    /// How requests to the three endpoints (and signed API requests) are signed.
    pub signature_method: SignatureMethod,
    /// How the connection's API requests are authenticated.
    pub api_auth: ApiAuth,
    /// How a disconnect ends the grant at the provider.
    pub revocation: OAuth1Revocation,
}

/// The signature methods Junction implements (RFC 5849 §3.4). `PLAINTEXT` and
/// `RSA-SHA1` are not: no provider in the catalog needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SignatureMethod {
    /// RFC 5849 §3.4.2.
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
}

impl SignatureMethod {
    /// The `oauth_signature_method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha1 => "HMAC-SHA1",
        }
    }
}

/// How the connection's API requests are authenticated once it has token credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiAuth {
    /// Every request is signed (RFC 5849 §3, the `Authorization: OAuth …` header) with
    /// the consumer secret and the token secret (X/Twitter's v1.1 API).
    Signed,
    /// The consumer key and the access token travel as two query parameters, unsigned
    /// (Trello's `key` and `token`).
    KeyAndToken {
        key_param: String,
        token_param: String,
    },
}

/// How a disconnect ends the grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum OAuth1Revocation {
    /// `DELETE url`, `{token}` filled with the access token, authenticated as
    /// [`ApiAuth`] says (Trello's `DELETE /1/tokens/{token}`).
    DeleteToken { url: String },
    /// The provider offers no revocation: the tokens are deleted locally only.
    None { reason: String },
}

impl OAuth1Spec {
    /// Checks what the types cannot: HTTPS endpoints (loopback HTTP in tests), the only
    /// placeholder is the revocation URL's `{token}`, parameter names that are usable.
    /// Returns `(field, message)` for the first fault.
    pub(crate) fn check(&self, rules: EndpointRules) -> Result<(), (String, String)> {
        for (field, url) in [
            ("oauth1.request_token_url", self.request_token_url.as_str()),
            ("oauth1.authorize_url", self.authorize_url.as_str()),
            ("oauth1.access_token_url", self.access_token_url.as_str()),
        ] {
            if placeholders(url).next().is_some() {
                return Err((field.to_owned(), "takes no placeholders".to_owned()));
            }
            if let Err(err) = rules.check(url) {
                return Err((field.to_owned(), err.to_string()));
            }
        }
        if let OAuth1Revocation::DeleteToken { url } = &self.revocation {
            let field = "oauth1.revocation.url";
            if placeholders(url).any(|name| name != "token") {
                return Err((
                    field.to_owned(),
                    "the only placeholder is {token}".to_owned(),
                ));
            }
            if let Err(err) = rules.check(&url.replace("{token}", "probe")) {
                return Err((field.to_owned(), err.to_string()));
            }
        }
        if let Some(name) = self
            .authorize_params
            .keys()
            .find(|name| name.is_empty() || name.starts_with("oauth_"))
        {
            return Err((
                format!("oauth1.authorize_params.{name}"),
                "must be named and not an oauth_ protocol parameter".to_owned(),
            ));
        }
        if let ApiAuth::KeyAndToken {
            key_param,
            token_param,
        } = &self.api_auth
            && (key_param.is_empty() || token_param.is_empty() || key_param == token_param)
        {
            return Err((
                "oauth1.api_auth".to_owned(),
                "key_param and token_param are two different names".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Result<OAuth1Spec, toml::de::Error> {
        toml::from_str(&format!(
            "request_token_url = \"https://p.example/request\"\n\
             authorize_url = \"https://p.example/authorize\"\n\
             access_token_url = \"https://p.example/access\"\n\
             signature_method = \"HMAC-SHA1\"\n{extra}"
        ))
    }

    #[test]
    fn a_complete_section_parses_and_checks() {
        let spec = spec(
            "api_auth = { style = \"key_and_token\", key_param = \"key\", token_param = \"token\" }\n\
             revocation = { style = \"delete_token\", url = \"https://p.example/tokens/{token}\" }\n\
             [authorize_params]\nscope = \"read\"\n",
        )
        .expect("parses");
        assert_eq!(spec.signature_method.as_str(), "HMAC-SHA1");
        assert!(spec.check(EndpointRules::Public).is_ok());
    }

    /// The built-in Trello entry, as its file cites Trello's documentation.
    #[test]
    fn trello_connects_with_oauth1_and_authenticates_with_key_and_token() {
        let catalog = crate::Catalog::embedded().expect("catalog");
        let trello = catalog
            .get("trello")
            .and_then(|p| p.oauth1.as_ref())
            .expect("trello's [oauth1]");
        assert_eq!(
            trello.request_token_url,
            "https://trello.com/1/OAuthGetRequestToken"
        );
        assert_eq!(
            trello.authorize_url,
            "https://trello.com/1/OAuthAuthorizeToken"
        );
        assert_eq!(
            trello.access_token_url,
            "https://trello.com/1/OAuthGetAccessToken"
        );
        assert_eq!(trello.signature_method, SignatureMethod::HmacSha1);
        assert_eq!(
            trello
                .authorize_params
                .get("expiration")
                .map(String::as_str),
            Some("never")
        );
        assert_eq!(
            trello.api_auth,
            ApiAuth::KeyAndToken {
                key_param: "key".into(),
                token_param: "token".into()
            }
        );
        assert_eq!(
            trello.revocation,
            OAuth1Revocation::DeleteToken {
                url: "https://api.trello.com/1/tokens/{token}".into()
            }
        );
    }

    #[test]
    fn a_provider_gives_one_way_to_connect() {
        let both = "id = \"both\"\nname = \"Both\"\ndocs = \"https://p.example/docs\"\n\
             [oauth_discovery]\nissuer = \"https://p.example\"\nscopes = [\"openid\"]\n\
             [oauth1]\nrequest_token_url = \"https://p.example/r\"\n\
             authorize_url = \"https://p.example/a\"\naccess_token_url = \"https://p.example/t\"\n\
             signature_method = \"HMAC-SHA1\"\napi_auth = { style = \"signed\" }\n\
             revocation = { style = \"none\", reason = \"none\" }\n";
        let err =
            crate::Catalog::from_files_with_rules(&[("both.toml", both)], EndpointRules::Public)
                .expect_err("two ways to connect");
        assert!(err.to_string().contains("oauth1"), "{err}");
    }

    #[test]
    fn an_unknown_signature_method_or_field_is_refused() {
        let plaintext = toml::from_str::<OAuth1Spec>(
            "request_token_url = \"https://p.example/r\"\nauthorize_url = \"https://p.example/a\"\n\
             access_token_url = \"https://p.example/t\"\nsignature_method = \"PLAINTEXT\"\n\
             api_auth = { style = \"signed\" }\nrevocation = { style = \"none\", reason = \"x\" }\n",
        );
        assert!(plaintext.is_err());
        assert!(
            spec("api_auth = { style = \"signed\" }\nrevocation = { style = \"none\", reason = \"x\" }\nrealm = \"x\"\n")
                .is_err()
        );
    }

    #[test]
    fn plain_http_other_placeholders_and_protocol_parameters_are_refused() {
        let base = "api_auth = { style = \"signed\" }\n";
        let http = toml::from_str::<OAuth1Spec>(
            "request_token_url = \"http://p.example/r\"\nauthorize_url = \"https://p.example/a\"\n\
             access_token_url = \"https://p.example/t\"\nsignature_method = \"HMAC-SHA1\"\n\
             api_auth = { style = \"signed\" }\nrevocation = { style = \"none\", reason = \"x\" }\n",
        )
        .expect("parses");
        assert_eq!(
            http.check(EndpointRules::Public).map_err(|e| e.0),
            Err("oauth1.request_token_url".to_owned())
        );
        let placeholder = spec(&format!(
            "{base}revocation = {{ style = \"delete_token\", url = \"https://p.example/{{user}}/{{token}}\" }}\n"
        ))
        .expect("parses");
        assert_eq!(
            placeholder.check(EndpointRules::Public).map_err(|e| e.0),
            Err("oauth1.revocation.url".to_owned())
        );
        let protocol = spec(&format!(
            "{base}revocation = {{ style = \"none\", reason = \"x\" }}\n[authorize_params]\noauth_callback = \"x\"\n"
        ))
        .expect("parses");
        assert!(protocol.check(EndpointRules::Public).is_err());
    }
}
