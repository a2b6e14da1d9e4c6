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
//!
//! The AWS SDK's client talks only to AWS endpoints, all of which chain to Amazon Trust
//! Services' roots, so it trusts just those five (fewer anchors to trust, and the SDK
//! re-parses its PEM trust store at client construction: with the whole bundle that was
//! a fifth of the ingress's init). They are embedded (`shared/certs/aws-roots.pem`), so
//! a function that makes only AWS calls at init reads and parses no bundle at all (the
//! webhook ingress: about a tenth of its init). With `SSL_CERT_FILE` set, that file is
//! used instead: its AWS roots, or all of it when it has none (a proxy's own CA).

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

/// The subjects (common names) of the roots AWS's service endpoints chain to: Amazon
/// Trust Services' four roots and the Starfield root that cross-signs them
/// (<https://www.amazontrust.com/repository/>).
const AWS_ROOT_NAMES: [&[u8]; 5] = [
    b"Amazon Root CA 1",
    b"Amazon Root CA 2",
    b"Amazon Root CA 3",
    b"Amazon Root CA 4",
    b"Starfield Services Root Certificate Authority - G2",
];

/// The roots AWS service endpoints chain to, as PEM: Amazon Root CA 1–4 and the
/// Starfield Services G2 root (<https://www.amazontrust.com/repository/>), copied from
/// Debian's ca-certificates; a test checks them against the platform bundle.
const AWS_ROOTS_PEM: &[u8] = include_bytes!("../certs/aws-roots.pem");

/// The usable roots of one bundle file.
#[derive(Debug)]
pub struct TrustRoots {
    /// The file they were read from.
    pub source: PathBuf,
    certificates: Vec<CertificateDer<'static>>,
    /// Indices of the roots that AWS endpoints chain to.
    aws: Vec<usize>,
}

impl TrustRoots {
    /// Reads `path` and keeps the certificates rustls accepts as trust anchors.
    pub fn from_bundle(path: &Path) -> std::io::Result<TrustRoots> {
        let pem = std::fs::read(path)?;
        let anchors = usable_roots(&pem);
        let aws = anchors
            .iter()
            .enumerate()
            .filter(|(_, (_, subject))| {
                AWS_ROOT_NAMES
                    .iter()
                    .any(|name| subject.windows(name.len()).any(|window| window == *name))
            })
            .map(|(index, _)| index)
            .collect();
        Ok(TrustRoots {
            source: path.to_owned(),
            certificates: anchors
                .into_iter()
                .map(|(certificate, _)| certificate)
                .collect(),
            aws,
        })
    }

    /// How many of the roots are the ones AWS endpoints chain to.
    pub fn aws_len(&self) -> usize {
        self.aws.len()
    }

    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// The roots as one PEM bundle (the AWS SDK's trust store takes PEM).
    fn pem(&self) -> Vec<u8> {
        pem_bundle(self.certificates.iter())
    }

    /// The roots AWS endpoints chain to, as PEM; every root when the bundle has none
    /// of them (an `SSL_CERT_FILE` of the operator's own).
    fn aws_pem(&self) -> Vec<u8> {
        if self.aws.is_empty() {
            return self.pem();
        }
        pem_bundle(self.aws.iter().map(|&index| &self.certificates[index]))
    }
}

/// Certificates as one PEM bundle.
fn pem_bundle<'a>(certificates: impl Iterator<Item = &'a CertificateDer<'static>>) -> Vec<u8> {
    let mut pem = String::new();
    for certificate in certificates {
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

/// The certificates of a PEM bundle that rustls accepts as trust anchors, each with its
/// subject (DER).
fn usable_roots(pem: &[u8]) -> Vec<(CertificateDer<'static>, Vec<u8>)> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .filter_map(|certificate| {
            let mut store = rustls::RootCertStore::empty();
            store.add(certificate.clone()).ok()?;
            let subject = store.roots.first()?.subject.as_ref().to_vec();
            Some((certificate, subject))
        })
        .collect()
}

/// The AWS SDK's HTTPS client (rustls with aws-lc, as the SDK's default) trusting the
/// roots AWS endpoints chain to: the embedded ones, or those of `SSL_CERT_FILE` when it
/// is set (see the module); `None` leaves the SDK its default client.
pub fn aws_http_client() -> Option<aws_smithy_runtime_api::client::http::SharedHttpClient> {
    let pem = aws_roots_pem()?;
    let trust_store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem);
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

/// The roots AWS endpoints chain to, as PEM: the embedded ones, or those of
/// `SSL_CERT_FILE` when it is set; `None` when that file has no usable root.
fn aws_roots_pem() -> Option<Vec<u8>> {
    match std::env::var_os("SSL_CERT_FILE") {
        Some(_) => Some(trust_roots()?.aws_pem()),
        None => Some(AWS_ROOTS_PEM.to_vec()),
    }
}

/// A reqwest client builder trusting what [`aws_http_client`] trusts, for the AWS calls
/// made without the SDK ([`crate::aws_json`]).
pub fn aws_client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match aws_roots_pem() {
        Some(pem) => builder.tls_certs_only(
            usable_roots(&pem)
                .into_iter()
                .filter_map(|(certificate, _)| reqwest::Certificate::from_der(&certificate).ok()),
        ),
        None => builder,
    }
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
        let again: Vec<_> = usable_roots(&roots.pem())
            .into_iter()
            .map(|(certificate, _)| certificate)
            .collect();
        assert_eq!(again, roots.certificates);
        // Debian's and Amazon Linux's bundles carry Amazon Trust Services' roots, and
        // the embedded copy is exactly those.
        assert_eq!(roots.aws_len(), 5, "the roots AWS endpoints chain to");
        let from_bundle = usable_roots(&roots.aws_pem());
        assert_eq!(from_bundle.len(), 5);
        let embedded = usable_roots(AWS_ROOTS_PEM);
        assert_eq!(embedded.len(), 5, "the embedded roots all parse");
        for (certificate, subject) in &embedded {
            assert!(
                from_bundle.iter().any(|(known, _)| known == certificate),
                "embedded root {} is the platform's",
                String::from_utf8_lossy(subject)
            );
        }

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
        aws_client_builder().build().expect("AWS reqwest client");
        http_client_builder().build().expect("reqwest client");
    }
}
