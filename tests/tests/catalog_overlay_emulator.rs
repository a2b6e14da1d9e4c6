//! Catalog overlays in Secrets Manager (the emulator's): what every function does at
//! init (`shared::config::load_catalog`) and what `junction status` shows for them.

use junction_cli::overlays::{overlay_statuses, overlay_table};
use junction_tests::emulator;
use shared::config::{ConfigError, Env, load_catalog};

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

    let statuses = overlay_statuses(&secrets, "acme").await.expect("listed");
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
        overlay_statuses(&secrets, "other")
            .await
            .expect("listed")
            .is_empty()
    );
}
