//! Reading a response body from outside Junction with a size cap, enforced while it
//! streams: a provider, an issuer's discovery document or a key-set endpoint can answer
//! with any number of bytes, and a function's memory is a few hundred MiB.
//!
//! A declared `Content-Length` over the cap is refused before a byte is read; a body that
//! says nothing (or lies) is cut off as soon as it passes the cap. Every read that
//! Junction makes of a body it did not write goes through [`read_capped`] with one of the
//! caps below, so the limits are documented in one place.

use bytes::{Bytes, BytesMut};

/// OAuth token, revocation and request-token responses.
pub const TOKEN_RESPONSE_CAP: usize = 64 * 1024;
/// Issuer metadata (OpenID Connect Discovery, RFC 8414).
pub const METADATA_CAP: usize = 128 * 1024;
/// JSON Web Key sets and single verification keys.
pub const KEY_SET_CAP: usize = 256 * 1024;
/// One page of a provider API response read by a poller or the outbound client.
pub const API_RESPONSE_CAP: usize = 8 * 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the cap (declared or counted); nothing past the cap was
    /// kept.
    #[error("response body is over the {cap}-byte cap")]
    TooLarge { cap: usize },
    /// The connection broke off or timed out mid-body.
    #[error("response body broke off")]
    Interrupted(#[source] reqwest::Error),
}

impl BodyError {
    /// Whether trying again may succeed (a broken connection may; an oversized answer
    /// will be oversized again).
    pub fn is_retryable(&self) -> bool {
        matches!(self, BodyError::Interrupted(_))
    }
}

/// Reads `response`'s body, refusing it once it passes `cap` bytes.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|declared| declared > cap as u64)
    {
        return Err(BodyError::TooLarge { cap });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Interrupted)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A loopback server for tests of readers of bodies from outside (here and in the crates
/// that read provider bodies through this module).
#[doc(hidden)]
pub mod testing {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves every connection with `head`, then `body_len` bytes of `x` written in
    /// 64 KiB pieces (never held in memory whole, so an uncapped reader would take them
    /// all); returns `http://127.0.0.1:<port>`.
    pub async fn stream_answer(head: &'static str, body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let piece = vec![b'x'; 64 * 1024];
                    let mut left = body_len;
                    while left > 0 {
                        let n = left.min(piece.len());
                        if socket.write_all(&piece[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::stream_answer, *};

    async fn get(url: &str) -> reqwest::Response {
        reqwest::Client::new().get(url).send().await.expect("send")
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let url = stream_answer("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", 1000).await;
        let body = read_capped(get(&url).await, 1000).await.expect("read");
        assert_eq!(body.len(), 1000);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let url = stream_answer("HTTP/1.1 200 OK\r\ncontent-length: 300000000\r\n\r\n", 0).await;
        let err = read_capped(get(&url).await, TOKEN_RESPONSE_CAP)
            .await
            .expect_err("refused");
        assert!(matches!(err, BodyError::TooLarge { cap } if cap == TOKEN_RESPONSE_CAP));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn an_undeclared_stream_is_cut_off_past_the_cap() {
        // 300 MB promised by a body with no length: the reader stops at the cap.
        let url = stream_answer(
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            300 * 1024 * 1024,
        )
        .await;
        let err = read_capped(get(&url).await, TOKEN_RESPONSE_CAP)
            .await
            .expect_err("refused");
        assert!(matches!(err, BodyError::TooLarge { .. }));
    }
}
