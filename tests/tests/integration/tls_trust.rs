//! Every HTTPS client Junction builds, the AWS SDK's (`load_aws_config`) and reqwest's
//! (`junction_aws::tls::http_client_builder`: provider APIs, OAuth, key sets), trusts
//! the platform's root store and nothing else. A server whose chain ends at the root
//! named in `SSL_CERT_FILE` is reached; one for the same names, issued by another
//! root, is refused in the handshake, so no request reaches it.
//!
//! The roots are read once per process, so the check runs in a child process whose
//! environment names them. The certificates are in
//! `tests/fixtures/tls` (its README says how they were made).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_sqs::error::SdkError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The check runs in a child process of this test binary, with the environment set
/// by `Command` (the workspace forbids `unsafe`, so not by `set_var`).
#[test]
fn https_clients_trust_the_platform_roots_and_nothing_else() {
    let fixtures = fixtures();
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "tls_trust::child_process_check",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("SSL_CERT_FILE", fixtures.join("trusted-ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .status()
        .expect("run the check");
    assert!(status.success(), "the check failed (its output is above)");
}

/// Set in the child process only.
const CHILD: &str = "JUNCTION_TLS_TRUST_CHECK";

#[test]
#[ignore = "run by https_clients_trust_the_platform_roots_and_nothing_else, in a child process"]
fn child_process_check() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(check(&fixtures()));
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls")
}

async fn check(fixtures: &Path) {
    let trusted = TlsServer::start(fixtures, "trusted-localhost").await;
    let rogue = TlsServer::start(fixtures, "rogue-localhost").await;

    let http = junction_aws::tls::http_client_builder()
        .build()
        .expect("reqwest client");
    let answer = http
        .get(format!("{}/", trusted.url))
        .send()
        .await
        .expect("the trusted server is reached");
    assert_eq!(answer.status(), 200);
    let refused = http
        .get(format!("{}/", rogue.url))
        .send()
        .await
        .expect_err("a chain from another root is refused");
    assert!(
        error_chain(&refused).contains("UnknownIssuer"),
        "refused for the issuer: {}",
        error_chain(&refused)
    );

    let aws = junction_aws::config::load_aws_config().await;
    let sqs = |url: &str| {
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&aws)
                .endpoint_url(url)
                .build(),
        )
    };
    let queue = |url: &str| format!("{url}/123456789012/ingest");
    sqs(&trusted.url)
        .get_queue_attributes()
        .queue_url(queue(&trusted.url))
        .send()
        .await
        .expect("the SDK reaches the trusted server");
    let refused = sqs(&rogue.url)
        .get_queue_attributes()
        .queue_url(queue(&rogue.url))
        .send()
        .await
        .expect_err("the SDK refuses a chain from another root");
    assert!(
        matches!(refused, SdkError::DispatchFailure(_)),
        "a connection failure, not an answer: {refused:?}"
    );
    assert!(
        error_chain(&refused).contains("UnknownIssuer"),
        "refused for the issuer: {}",
        error_chain(&refused)
    );

    assert_eq!(trusted.requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        rogue.requests.load(Ordering::SeqCst),
        0,
        "no request went over a connection to the rogue server"
    );
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(" <- {cause:?}"));
        source = cause.source();
    }
    text
}

/// An HTTPS server on loopback answering every request `200 {}` (an empty AWS JSON
/// answer), counting the requests that reached it over TLS.
struct TlsServer {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    async fn start(fixtures: &Path, name: &str) -> TlsServer {
        let file = |ext: &str| -> PathBuf { fixtures.join(format!("{name}.{ext}")) };
        let chain = CertificateDer::pem_file_iter(file("pem"))
            .expect("certificate file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(file("key")).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    // A refused handshake ends here: nothing was sent over it.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    while read_request(&mut tls).await {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\n\r\n{}";
                        if tls.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsServer {
            url,
            requests,
            task,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and `content-length` body); false at the end of the stream.
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let length = String::from_utf8_lossy(&head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.is_ok()
}
