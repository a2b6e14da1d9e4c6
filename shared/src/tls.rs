//! Trust roots, read once per process and shared by every HTTPS client.
//!
//! Left to themselves, the AWS SDK and reqwest each load the platform's roots at client
//! construction (`rustls-native-certs` reads the bundle file and then every file of the
//! certificate directory): two loads per cold start, measured at about 15 ms of CPU on
//! the bench machine, three quarters of the webhook ingress's init. Here the bundle file
//! is read once (`SSL_CERT_FILE`, else the platform's bundle: Amazon Linux's on Lambda),
//! the certificates rustls cannot use as anchors are dropped (one would otherwise fail
//! the whole client), and both kinds of client get the same roots. Where no bundle is
//! found, the clients keep their own platform loading.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aws_smithy_http_client::{
    Builder,
    tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// Where platforms keep their bundle of trusted roots, most likely first: Amazon Linux
/// (Lambda's `provided.al2023`), Debian and Ubuntu, Alpine.
const BUNDLES: [&str; 3] = [
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/cert.pem",
];

/// The usable roots of one bundle file.
#[derive(Debug)]
pub struct TrustRoots {
    /// The file they were read from.
    pub source: PathBuf,
    certificates: Vec<CertificateDer<'static>>,
}

impl TrustRoots {
    /// Reads `path` and keeps the certificates rustls accepts as trust anchors.
    pub fn from_bundle(path: &Path) -> std::io::Result<TrustRoots> {
        let pem = std::fs::read(path)?;
        Ok(TrustRoots {
            source: path.to_owned(),
            certificates: usable_roots(&pem),
        })
    }

    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// The roots as one PEM bundle (the AWS SDK's trust store takes PEM).
    fn pem(&self) -> Vec<u8> {
        let mut pem = String::new();
        for certificate in &self.certificates {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let encoded = BASE64.encode(certificate);
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }
}

/// The process's trust roots, read on first use; `None` when no bundle file exists or
/// none of its certificates is usable.
pub fn trust_roots() -> Option<&'static TrustRoots> {
    static ROOTS: OnceLock<Option<TrustRoots>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let path = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .into_iter()
                .chain(BUNDLES.iter().map(PathBuf::from))
                .find(|path| path.is_file())?;
            TrustRoots::from_bundle(&path)
                .ok()
                .filter(|roots| !roots.is_empty())
        })
        .as_ref()
}

/// The certificates of a PEM bundle that rustls accepts as trust anchors.
fn usable_roots(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .filter(|certificate| {
            rustls::RootCertStore::empty()
                .add(certificate.clone())
                .is_ok()
        })
        .collect()
}

/// The AWS SDK's HTTPS client (rustls with aws-lc, as the SDK's default) on
/// [`trust_roots`]; `None` leaves the SDK its default client.
pub fn aws_http_client() -> Option<aws_sdk_sqs::config::SharedHttpClient> {
    let roots = trust_roots()?;
    let trust_store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(roots.pem());
    let context = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .ok()?;
    Some(
        Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https(),
    )
}

/// A reqwest client builder on [`trust_roots`] (every outbound client starts here).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match trust_roots() {
        Some(roots) => builder.tls_certs_only(
            roots
                .certificates
                .iter()
                .filter_map(|certificate| reqwest::Certificate::from_der(certificate).ok()),
        ),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_certificates_are_dropped_and_the_rest_round_trip_through_pem() {
        let Some(path) = BUNDLES.iter().map(Path::new).find(|path| path.is_file()) else {
            return; // no platform bundle on this machine
        };
        let roots = TrustRoots::from_bundle(path).expect("readable bundle");
        assert!(
            roots.len() > 10,
            "{} roots in {}",
            roots.len(),
            path.display()
        );
        let again = usable_roots(&roots.pem());
        assert_eq!(again, roots.certificates);

        let mut garbled =
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        garbled.extend_from_slice(&roots.pem());
        assert_eq!(usable_roots(&garbled).len(), roots.len());
    }

    #[tokio::test]
    async fn both_clients_build_on_the_shared_roots() {
        if trust_roots().is_none() {
            return;
        }
        assert!(aws_http_client().is_some());
        http_client_builder().build().expect("reqwest client");
    }
}
