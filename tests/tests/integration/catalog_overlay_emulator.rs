//! Catalog overlays in Secrets Manager (the emulator's): what every function does at
//! init (`junction_aws::config::load_catalog`) and what `junction status` shows for them.

use junction_aws::config::{ConfigError, Env, load_catalog};
use junction_catalog::{EndpointRules, LOOPBACK_TEST_SETTING};
use junction_cli::overlays::{overlay_statuses, overlay_table};
use junction_tests::emulator;

const GOOD: &str = r#"[[provider]]
id = "inhouse"
name = "In-house service"
docs = "https://wiki.example.com/inhouse"
[provider.webhook]
verification_from = "github"
"#;

/// The same entry with a typo in a scheme name: the error must name the overlay, the
/// provider and the field.
const BAD: &str = r#"[[provider]]
id = "inhouse"
name = "In-house service"
docs = "https://wiki.example.com/inhouse"
[provider.webhook.verification]
scheme = "hmac-sha384"
signature = { format = "single", header = "X-Signature", encoding = "hex" }
signed = ["body"]
"#;

#[tokio::test]
async fn a_bad_overlay_fails_init_and_status_names_the_provider_and_field() {
    let (_moto, aws) = emulator().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    for (name, text) in [("acme/catalog/good", GOOD), ("acme/catalog/bad", BAD)] {
        secrets
            .create_secret()
            .name(name)
            .secret_string(text)
            .send()
            .await
            .expect("stored");
    }

    let with_overlay = |name: &'static str| {
        Env(move |key: &str| (key == "CATALOG_OVERLAY_SECRET").then(|| name.to_owned()))
    };
    let catalog = load_catalog(&aws, &with_overlay("acme/catalog/good"))
        .await
        .expect("a valid overlay loads");
    assert!(catalog.get("inhouse").is_some() && catalog.get("github").is_some());

    let err = load_catalog(&aws, &with_overlay("acme/catalog/bad"))
        .await
        .expect_err("a bad overlay fails init");
    let ConfigError::Invalid { key, reason } = &err else {
        panic!("{err}");
    };
    assert_eq!(*key, "CATALOG_OVERLAY_SECRET");
    assert!(
        reason.contains("acme/catalog/bad")
            && reason.contains("(inhouse)")
            && reason.contains("hmac-sha384"),
        "{reason}"
    );
    let missing = load_catalog(&aws, &with_overlay("acme/catalog/none"))
        .await
        .expect_err("a missing overlay fails init");
    assert!(missing.to_string().contains("does not exist"), "{missing}");

    let statuses = overlay_statuses(&secrets, "acme", EndpointRules::Public)
        .await
        .expect("listed");
    let table = overlay_table(&statuses);
    assert_eq!(statuses.len(), 2, "{table}");
    assert_eq!(statuses[0].name, "acme/catalog/bad");
    assert!(
        statuses[0]
            .result
            .as_ref()
            .is_err_and(|err| err.contains("(inhouse)") && err.contains("hmac-sha384")),
        "{table}"
    );
    assert_eq!(statuses[1].result, Ok(vec!["inhouse".to_owned()]));
    assert!(
        table.contains("INVALID") && table.contains("valid  providers: inhouse"),
        "{table}"
    );
    assert!(
        overlay_statuses(&secrets, "other", EndpointRules::Public)
            .await
            .expect("listed")
            .is_empty()
    );
}

/// An overlay whose token endpoint is `template` (an OAuth entry, else valid).
fn oauth_overlay(token_url: &str) -> String {
    format!(
        r#"[[provider]]
id = "idp"
name = "In-house identity"
docs = "https://wiki.example.com/idp"
[provider.oauth]
authorize_url = "https://id.example.com/authorize"
token_url = "{token_url}"
pkce = false
client_auth = "client_secret_post"
lifetime_margin_seconds = 300
refresh_token_rotation = true
revocation = {{ style = "none", reason = "the in-house service offers none" }}
"#
    )
}

/// The review's reproducers: text that starts like a loopback URL but names another host
/// after `@`, and the instance metadata service. Functions refuse to start on them, and
/// `junction status` marks them INVALID naming the field, under both rule sets; plain
/// http on loopback passes only where the local stack's setting allows it.
#[tokio::test]
async fn overlays_naming_internal_or_smuggled_hosts_fail_init_and_status() {
    let (_moto, aws) = emulator().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let hostile = [
        ("acme/catalog/v6", "http://127.0.0.1:@[::1]:9/token"),
        ("acme/catalog/imds", "http://127.0.0.1:@169.254.169.254/"),
        ("acme/catalog/evil", "http://127.0.0.1:80@evil.com"),
        ("acme/catalog/private", "https://10.1.2.3/token"),
    ];
    for (name, url) in hostile
        .iter()
        .chain(&[("acme/catalog/local", "http://127.0.0.1:9/token")])
    {
        secrets
            .create_secret()
            .name(*name)
            .secret_string(oauth_overlay(url))
            .send()
            .await
            .expect("stored");
    }
    let env = |name: &'static str, loopback: bool| {
        Env(move |key: &str| match key {
            "CATALOG_OVERLAY_SECRET" => Some(name.to_owned()),
            k if k == LOOPBACK_TEST_SETTING && loopback => Some("allow".to_owned()),
            _ => None,
        })
    };
    for (name, _) in hostile {
        for loopback in [false, true] {
            let err = load_catalog(&aws, &env(name, loopback))
                .await
                .expect_err("a hostile endpoint fails init");
            assert!(err.to_string().contains("oauth.token_url"), "{name}: {err}");
        }
    }
    assert!(
        load_catalog(&aws, &env("acme/catalog/local", false))
            .await
            .is_err_and(|err| err.to_string().contains("https")),
        "plain http to loopback is refused without the test setting"
    );
    let local = load_catalog(&aws, &env("acme/catalog/local", true))
        .await
        .expect("the local stack's setting allows a loopback provider");
    assert!(local.get("idp").is_some());

    for rules in [EndpointRules::Public, EndpointRules::LoopbackHttpForTests] {
        let statuses = overlay_statuses(&secrets, "acme", rules)
            .await
            .expect("listed");
        let table = overlay_table(&statuses);
        for status in &statuses {
            let valid =
                status.name == "acme/catalog/local" && rules == EndpointRules::LoopbackHttpForTests;
            match &status.result {
                Ok(_) => assert!(valid, "{table}"),
                Err(err) => {
                    assert!(!valid, "{table}");
                    assert!(err.contains("oauth.token_url"), "{table}");
                    // The URL itself (its user-info may be a credential) is not echoed.
                    assert!(!err.contains("127.0.0.1:@"), "{table}");
                }
            }
        }
        assert!(table.contains("INVALID"), "{table}");
    }
}
