//! The TLS trust of every HTTPS client in a process: the AWS SDK's, and reqwest's
//! (provider APIs, OAuth token and discovery endpoints, webhook key sets).
//!
//! One TLS stack (rustls on aws-lc-rs, the SDK's default) and one set of roots, the
//! platform's, read once per process. No roots are kept in the repository: a chain
//! change at a provider or at AWS is the platform's business, as it is for any
//! program on it.
//!
//! Why not each library's own loading: the SDK's client and every reqwest client
//! (through `rustls-platform-verifier`) each load the platform's store, and where the
//! store is a bundle file plus a directory of the same certificates (Debian; Amazon
//! Linux, the Lambda OS) they read and parse both. That was most of a cold start:
//! infra/bench measured half of the ingress's init and two thirds of the connections
//! function's (four reqwest clients) in loading roots. Here the bundle file that
//! `openssl-probe` finds (the OS's `ca-bundle.crt`/`ca-certificates.crt`) is read once;
//! where there is no bundle file, or where `SSL_CERT_FILE`/`SSL_CERT_DIR` name the
//! trust (a proxy's own CA, say), the store is loaded the way `rustls-native-certs`
//! loads it.

use std::sync::{Arc, LazyLock};

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use base64::Engine as _;
use rustls::pki_types::CertificateDer;

/// The platform's root certificates, read on first use: as the store reqwest's
/// verifier takes, and as the PEM bundle the SDK's trust store takes. Only certificates
/// that make a trust anchor are kept, so neither library meets one it cannot parse (the
/// SDK panics on a custom certificate it cannot add).
struct PlatformRoots {
    store: Arc<rustls::RootCertStore>,
    pem: Vec<u8>,
}

static PLATFORM_ROOTS: LazyLock<PlatformRoots> = LazyLock::new(|| {
    let mut store = rustls::RootCertStore::empty();
    let mut pem = String::new();
    for cert in load_platform_roots() {
        match store.add(cert.clone()) {
            Ok(()) => append_pem(&mut pem, &cert),
            Err(err) => tracing::warn!(error = %err, "a platform root certificate was not added"),
        }
    }
    PlatformRoots {
        store: Arc::new(store),
        pem: pem.into_bytes(),
    }
});

/// The rustls configuration every reqwest client shares (cloning it shares its
/// verifier and root store).
static CLIENT_CONFIG: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
    .with_root_certificates(PLATFORM_ROOTS.store.clone())
    .with_no_client_auth()
});

fn load_platform_roots() -> Vec<CertificateDer<'static>> {
    let bundle = (!openssl_probe::has_ssl_cert_env_vars())
        .then(|| openssl_probe::probe().cert_file)
        .flatten();
    let loaded = match &bundle {
        Some(file) => rustls_native_certs::load_certs_from_paths(Some(file), None),
        None => rustls_native_certs::load_native_certs(),
    };
    for error in &loaded.errors {
        tracing::warn!(error = %error, "a platform root certificate was not loaded");
    }
    if loaded.certs.is_empty() {
        tracing::error!(
            bundle = ?bundle,
            "no platform root certificates: every HTTPS call will fail verification"
        );
    }
    loaded.certs
}

/// A reqwest client builder on the process's TLS configuration (see the module).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(CLIENT_CONFIG.clone())
}

/// The AWS SDK's default HTTPS client (rustls on aws-lc-rs), trusting the platform's
/// roots as read here, once, rather than as it would read them itself.
pub fn aws_http_client() -> SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(PLATFORM_ROOTS.pem.clone());
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(context) => {
            SharedHttpClient::new(OneConnector(builder.tls_context(context).build_https()))
        }
        Err(err) => {
            tracing::warn!(
                error = %err,
                "the platform's roots did not make a TLS context; the SDK loads its own"
            );
            builder.build_https()
        }
    }
}

/// The SDK's HTTPS client, whose connector (TLS configuration and root store) is built
/// on first use only. The SDK's client builds one for every service client at
/// construction (`validate_base_client_config`), each parsing every root certificate
/// again: 2 ms of the ingress's cold start with its three clients (infra/bench). Connectors are still cached per timeout settings by the client.
#[derive(Debug)]
struct OneConnector(SharedHttpClient);

impl HttpClient for OneConnector {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// One certificate in PEM, appended to a bundle: the form the SDK's trust store takes.
fn append_pem(pem: &mut String, cert: &CertificateDer<'_>) {
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    for line in encoded.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every 64-byte chunk is a str.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[tokio::test]
    async fn the_clients_build_on_the_platform_roots() {
        assert!(
            !PLATFORM_ROOTS.store.is_empty(),
            "this machine has a root store"
        );
        http_client_builder().build().expect("reqwest client");
        let _ = aws_http_client();
    }

    #[test]
    fn the_pem_bundle_holds_every_root_in_the_store() {
        let read: Vec<_> = CertificateDer::pem_slice_iter(&PLATFORM_ROOTS.pem)
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(read.len(), PLATFORM_ROOTS.store.len());
        let mut again = rustls::RootCertStore::empty();
        assert_eq!(
            again.add_parsable_certificates(read),
            (PLATFORM_ROOTS.store.len(), 0)
        );
    }
}
