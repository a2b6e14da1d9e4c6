//! A provider's `[pasted_credential]` section: the provider is connected with a
//! credential the user pastes into a form (Telegram's bot token, an API key), not granted
//! through OAuth. The section says what the form asks for and what a value must look
//! like; the provider's `[api]` says where the value goes on each request and which
//! request proves it works (`test_request`, made before anything is stored).
//!
//! Such a credential has no expiry and no refresh token, and the providers that issue
//! them offer no revocation endpoint: a disconnect deletes Junction's copy only (the user
//! revokes it where it was issued). This module must not depend on AWS or on the HTTP
//! stack; the flow is `junction_oauth`'s.

use serde::Deserialize;

use crate::api::ApiSpec;
use crate::oauth::placeholders;

/// The longest value a form may submit: a bound on what is matched, sent and sealed.
/// Bot tokens and API keys are well under 200 bytes.
pub const MAX_PASTED_CREDENTIAL_BYTES: usize = 1024;

/// How one provider is connected with a pasted credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastedCredentialSpec {
    /// The form field's label ("Bot token").
    pub label: String,
    /// A sentence under the field: where the user finds the value.
    pub help: String,
    /// A regular expression every value must match as a whole: compiled as
    /// `^(?:pattern)$`, like a URL parameter's. Written anchored in the catalog. It keeps
    /// what is sent to the provider to the documented form (and a typo from costing a
    /// provider call).
    pub pattern: String,
    /// A named capture group of `pattern` whose match is the connection's provider
    /// account (Telegram: the bot id before the token's `:`). Absent: the connection
    /// records no account.
    #[serde(default)]
    pub account_group: Option<String>,
}

impl PastedCredentialSpec {
    /// The pattern, compiled to match whole values only.
    pub fn regex(&self) -> Result<regex_lite::Regex, regex_lite::Error> {
        regex_lite::Regex::new(&format!("^(?:{})$", self.pattern))
    }

    /// Whether `value` is one the form accepts (not over
    /// [`MAX_PASTED_CREDENTIAL_BYTES`], matching `pattern`). A pattern that does not
    /// compile matches nothing; the catalog check refuses such an entry at load.
    pub fn accepts(&self, value: &str) -> bool {
        value.len() <= MAX_PASTED_CREDENTIAL_BYTES
            && self.regex().is_ok_and(|re| re.is_match(value))
    }

    /// The provider account `value` names (`account_group`'s match), for a value the
    /// pattern accepts; `None` without an `account_group` or a match.
    pub fn account_of(&self, value: &str) -> Option<String> {
        let group = self.account_group.as_deref()?;
        let re = self.regex().ok()?;
        re.captures(value)?
            .name(group)
            .map(|found| found.as_str().to_owned())
            .filter(|account| !account.is_empty())
    }

    /// The rules an entry meets: a pattern that compiles, has the named account group
    /// and refuses the empty value; a form with a label and help; and an `[api]` that
    /// can prove a value works before it is stored (a `base_url` without placeholders:
    /// nothing of the form picks a host, and a `test_request`).
    pub(crate) fn check(&self, api: Option<&ApiSpec>) -> Result<(), (String, String)> {
        let field = |name: &str| format!("pasted_credential.{name}");
        let re = self
            .regex()
            .map_err(|err| (field("pattern"), format!("does not compile: {err}")))?;
        if re.is_match("") {
            return Err((field("pattern"), "must not match an empty value".to_owned()));
        }
        if let Some(group) = &self.account_group
            && !re.capture_names().flatten().any(|name| name == group)
        {
            return Err((
                field("account_group"),
                format!("the pattern has no capture group named {group}"),
            ));
        }
        for (name, text) in [("label", &self.label), ("help", &self.help)] {
            if text.trim().is_empty() || text.chars().count() > 500 {
                return Err((field(name), "must be 1-500 characters".to_owned()));
            }
        }
        let Some(api) = api else {
            return Err((
                field("pattern"),
                "needs [api]: it says where the credential goes on each request".to_owned(),
            ));
        };
        match &api.base_url {
            Some(base) if placeholders(base).next().is_none() => {}
            _ => {
                return Err((
                    "api.base_url".to_owned(),
                    "a pasted credential needs a base_url without placeholders".to_owned(),
                ));
            }
        }
        // The connect form reads the test request's HTTP status only: a provider that
        // refuses with a 2xx and an error body (Slack's `ok: false`) would pass a bad value.
        if !api.error_rules.is_empty() {
            return Err((
                "api.error_rules".to_owned(),
                "the pasted-credential check reads the test request's status only; error_rules are not applied to it".to_owned(),
            ));
        }
        if api.test_request.is_none() {
            return Err((
                "api.test_request".to_owned(),
                "a pasted credential is verified with the test request before it is stored"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: &str, account_group: Option<&str>) -> PastedCredentialSpec {
        PastedCredentialSpec {
            label: "Bot token".into(),
            help: "From @BotFather".into(),
            pattern: pattern.into(),
            account_group: account_group.map(Into::into),
        }
    }

    #[test]
    fn the_pattern_matches_whole_values_and_names_the_account() {
        let telegram = spec("^(?P<bot_id>[0-9]+):[A-Za-z0-9_-]+$", Some("bot_id"));
        // core.telegram.org/bots/api#authorizing-your-bot's example token.
        let example = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
        assert!(telegram.accepts(example));
        assert_eq!(telegram.account_of(example).as_deref(), Some("123456"));
        for refused in [
            "",
            "123456",
            ":ABC",
            "abc:DEF",
            "123456:ABC/../x",
            "123456:ABC DEF",
            "123456:ABC\n",
            " 123456:ABC",
        ] {
            assert!(!telegram.accepts(refused), "{refused:?}");
        }
        let long = format!("1:{}", "a".repeat(MAX_PASTED_CREDENTIAL_BYTES));
        assert!(!telegram.accepts(&long), "over the size cap");
        // An alternation cannot match a part of a longer value.
        let alternation = spec("^a|b$", None);
        assert!(!alternation.accepts("xb"));
        assert_eq!(alternation.account_of("a"), None, "no account group");
    }

    #[test]
    fn the_check_refuses_what_the_flow_could_not_use() {
        for (pattern, group, says) in [
            ("(", None, "does not compile"),
            ("^.*$", None, "empty value"),
            (
                "^(?P<id>[0-9]+):x$",
                Some("bot"),
                "no capture group named bot",
            ),
        ] {
            let err = spec(pattern, group).check(None).expect_err(pattern);
            assert!(err.1.contains(says), "{pattern}: {err:?}");
        }
        let err = spec("^[0-9]+$", None).check(None).expect_err("no api");
        assert!(err.1.contains("needs [api]"), "{err:?}");
        let mut blank = spec("^[0-9]+$", None);
        blank.label = " ".into();
        assert_eq!(
            blank.check(None).expect_err("label").0,
            "pasted_credential.label"
        );
    }

    #[test]
    fn telegram_connects_with_its_bot_token_and_a_provider_has_one_way_to_connect() {
        let catalog = crate::Catalog::embedded().expect("catalog");
        let telegram = catalog.get("telegram").expect("telegram");
        let pasted = telegram
            .pasted_credential
            .as_ref()
            .expect("a pasted credential");
        assert_eq!(
            pasted
                .account_of("110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw")
                .as_deref(),
            Some("110201543")
        );
        assert!(telegram.oauth.is_none() && telegram.oauth1.is_none());

        let entry = |extra: &str| {
            format!(
                "id = \"pasted\"\nname = \"Pasted\"\ndocs = \"https://example.com/docs\"\n{extra}\n[pasted_credential]\nlabel = \"Key\"\nhelp = \"Your key\"\npattern = \"^k_[a-z0-9]+$\"\n\n[api]\nbase_url = \"https://api.example.com\"\nrate_limit = {{ requests_per_second = 1.0, burst = 1, scope = \"connection\" }}\ntest_request = {{ method = \"GET\", path = \"/me\" }}\n"
            )
        };
        crate::Catalog::from_files(&[("pasted.toml", &entry(""))]).expect("a valid entry");
        let both = entry(
            "[oauth1]\nrequest_token_url = \"https://example.com/r\"\nauthorize_url = \"https://example.com/a\"\naccess_token_url = \"https://example.com/t\"\nsignature_method = \"HMAC-SHA1\"\napi_auth = { style = \"signed\" }\nrevocation = { style = \"none\", reason = \"none\" }\n",
        );
        let err = crate::Catalog::from_files(&[("pasted.toml", &both)])
            .expect_err("two ways to connect")
            .to_string();
        assert!(err.contains("pasted_credential"), "{err}");
        let untested =
            entry("").replace("test_request = { method = \"GET\", path = \"/me\" }\n", "");
        let err = crate::Catalog::from_files(&[("pasted.toml", &untested)])
            .expect_err("no test request")
            .to_string();
        assert!(err.contains("test_request"), "{err}");
    }
}
