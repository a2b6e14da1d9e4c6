//! The HTTPS client every outbound reqwest client starts from (provider APIs, OAuth
//! token and discovery endpoints, webhook key sets).
//!
//! One TLS stack in every binary: reqwest's rustls on the aws-lc-rs provider, the same
//! rustls and provider the AWS SDK's default HTTPS client uses. Trust is each library's
//! default, not a list of roots kept here: reqwest verifies through
//! `rustls-platform-verifier` (the platform's roots, Amazon Linux's bundle on Lambda),
//! the SDK through the platform's roots as `rustls-native-certs` loads them. Both
//! honour `SSL_CERT_FILE` (a proxy's own CA, say).

/// A reqwest client builder with the workspace's TLS defaults (see the module).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_rustls()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_builds_on_the_platform_trust() {
        http_client_builder().build().expect("reqwest client");
    }
}
