//! What a provider's response says about its rate limit, whichever convention it uses:
//!
//! - `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date (IMF-fixdate);
//! - the IETF fields (draft-ietf-httpapi-ratelimit-headers -10): `RateLimit:
//!   "default";r=50;t=30` (remaining `r`, seconds until more quota `t`), and the older
//!   drafts' `RateLimit-Limit/-Remaining/-Reset`;
//! - the de-facto `X-RateLimit-Limit/-Remaining/-Reset`, and the provider spellings
//!   Junction's pollers meet: Linear's `X-RateLimit-Requests-*` (reset in epoch
//!   milliseconds), HubSpot's `X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds`.
//!
//! A reset value is read by size, because providers disagree on its unit: at least
//! 10^12 is epoch milliseconds (Linear), at least 10^9 epoch seconds (GitHub), anything
//! smaller seconds from now (the IETF drafts). Malformed values are ignored, as the IETF
//! draft requires; nothing here fails.

use std::time::Duration;

use http::HeaderMap;
use time::OffsetDateTime;

/// The longest wait any header can impose; a larger value is taken as this (a
/// provider bug must not park a connection for days).
pub const MAX_WAIT: Duration = Duration::from_secs(3_600);

/// What one response said about the rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Requests allowed per window.
    pub limit: Option<u64>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// Time until the window refills.
    pub reset_after: Option<Duration>,
    /// `Retry-After`, as a delay from now.
    pub retry_after: Option<Duration>,
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

fn number(value: &str) -> Option<u64> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())
        .flatten()
}

fn capped(duration: Duration) -> Duration {
    duration.min(MAX_WAIT)
}

/// `Retry-After`: delay-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(seconds) = number(value) {
        return Some(capped(Duration::from_secs(seconds)));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    let delta = at - now;
    Some(capped(Duration::try_from(delta).unwrap_or(Duration::ZERO)))
}

/// A reset value, by size: epoch milliseconds, epoch seconds, or seconds from now.
pub fn parse_reset(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = number(value.trim())?;
    let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let after = if value >= 1_000_000_000_000 {
        Duration::from_millis(value.saturating_sub(now_ms))
    } else if value >= 1_000_000_000 {
        Duration::from_millis((value * 1000).saturating_sub(now_ms))
    } else {
        Duration::from_secs(value)
    };
    Some(capped(after))
}

/// The IETF `RateLimit` field: a list of `"policy";r=<remaining>;t=<seconds>` items; the
/// most constraining item (least remaining) is returned as `(r, t)`.
pub fn parse_ietf_ratelimit(value: &str) -> Option<(u64, Option<Duration>)> {
    value
        .split(',')
        .filter_map(|item| {
            let mut remaining = None;
            let mut reset = None;
            for parameter in item.split(';').skip(1) {
                let (key, value) = parameter.trim().split_once('=')?;
                match key.trim() {
                    "r" => remaining = Some(number(value.trim())?),
                    "t" => reset = Some(capped(Duration::from_secs(number(value.trim())?))),
                    _ => {}
                }
            }
            Some((remaining?, reset))
        })
        .min_by_key(|(remaining, _)| *remaining)
}

impl RateLimitHeaders {
    /// Reads every convention above from a response's headers.
    pub fn parse(headers: &HeaderMap, now: OffsetDateTime) -> RateLimitHeaders {
        let ietf = header(headers, &["ratelimit"]).and_then(parse_ietf_ratelimit);
        let limit = header(
            headers,
            &[
                "x-ratelimit-limit",
                "ratelimit-limit",
                "x-ratelimit-requests-limit",
                "x-hubspot-ratelimit-max",
            ],
        )
        .and_then(number);
        let remaining = ietf.map(|(remaining, _)| remaining).or_else(|| {
            header(
                headers,
                &[
                    "x-ratelimit-remaining",
                    "ratelimit-remaining",
                    "x-ratelimit-requests-remaining",
                    "x-hubspot-ratelimit-remaining",
                ],
            )
            .and_then(number)
        });
        let reset_after = ietf
            .and_then(|(_, reset)| reset)
            .or_else(|| {
                header(
                    headers,
                    &[
                        "x-ratelimit-reset",
                        "ratelimit-reset",
                        "x-ratelimit-requests-reset",
                    ],
                )
                .and_then(|value| parse_reset(value, now))
            })
            .or_else(|| {
                // HubSpot states only the window's length: the reset is at most that far.
                header(headers, &["x-hubspot-ratelimit-interval-milliseconds"])
                    .and_then(number)
                    .map(|ms| capped(Duration::from_millis(ms)))
            });
        let retry_after =
            header(headers, &["retry-after"]).and_then(|value| parse_retry_after(value, now));
        RateLimitHeaders {
            limit,
            remaining,
            reset_after,
            retry_after,
        }
    }

    /// How long the next request to this provider should wait, if the headers say:
    /// `Retry-After` first (the IETF draft: it MUST take precedence), else the reset
    /// time once the window is used up.
    pub fn wait(&self) -> Option<Duration> {
        self.retry_after.or(match self.remaining {
            Some(0) => self.reset_after,
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).expect("time")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now()),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        assert_eq!(parse_retry_after("99999999", now()), Some(MAX_WAIT));
        for malformed in ["", "-5", "1.5", "soon", "Tue, 14 Nov 2023 22:13:50"] {
            assert_eq!(parse_retry_after(malformed, now()), None, "{malformed:?}");
        }
    }

    #[test]
    fn reset_units_are_told_apart_by_size() {
        assert_eq!(parse_reset("30", now()), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_reset("1700000045", now()),
            Some(Duration::from_secs(45)),
            "epoch seconds (GitHub)"
        );
        assert_eq!(
            parse_reset("1700000001500", now()),
            Some(Duration::from_millis(1_500)),
            "epoch milliseconds (Linear)"
        );
        assert_eq!(parse_reset("1699999999", now()), Some(Duration::ZERO));
    }

    #[test]
    fn each_convention_is_read() {
        let github = RateLimitHeaders::parse(
            &headers(&[
                ("X-RateLimit-Limit", "5000"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", "1700000060"),
            ]),
            now(),
        );
        assert_eq!(github.limit, Some(5000));
        assert_eq!(github.wait(), Some(Duration::from_secs(60)));

        let ietf = RateLimitHeaders::parse(
            &headers(&[("RateLimit", "\"burst\";r=0;t=7, \"daily\";r=900;t=3600")]),
            now(),
        );
        assert_eq!(ietf.remaining, Some(0));
        assert_eq!(
            ietf.wait(),
            Some(Duration::from_secs(7)),
            "the tighter policy"
        );

        let linear = RateLimitHeaders::parse(
            &headers(&[
                ("X-RateLimit-Requests-Limit", "1500"),
                ("X-RateLimit-Requests-Remaining", "0"),
                ("X-RateLimit-Requests-Reset", "1700000002000"),
            ]),
            now(),
        );
        assert_eq!(linear.wait(), Some(Duration::from_secs(2)));

        let hubspot = RateLimitHeaders::parse(
            &headers(&[
                ("X-HubSpot-RateLimit-Max", "100"),
                ("X-HubSpot-RateLimit-Remaining", "0"),
                ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
            ]),
            now(),
        );
        assert_eq!(hubspot.wait(), Some(Duration::from_secs(10)));

        let both = RateLimitHeaders::parse(
            &headers(&[("RateLimit", "\"default\";r=0;t=30"), ("Retry-After", "5")]),
            now(),
        );
        assert_eq!(
            both.wait(),
            Some(Duration::from_secs(5)),
            "Retry-After wins"
        );

        let room = RateLimitHeaders::parse(
            &headers(&[("X-RateLimit-Remaining", "3"), ("X-RateLimit-Reset", "30")]),
            now(),
        );
        assert_eq!(room.wait(), None, "quota left: no wait");
        assert_eq!(
            RateLimitHeaders::parse(&HeaderMap::new(), now()),
            RateLimitHeaders::default()
        );
    }

    #[test]
    fn malformed_fields_are_ignored() {
        let parsed = RateLimitHeaders::parse(
            &headers(&[
                ("RateLimit", "\"default\";r=ten;t=30"),
                ("X-RateLimit-Remaining", "-1"),
                ("X-RateLimit-Reset", "soon"),
                ("Retry-After", "later"),
            ]),
            now(),
        );
        assert_eq!(parsed, RateLimitHeaders::default());
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_never_exceeds_the_cap(
            value in "\\PC{0,64}",
            name in prop::sample::select(vec![
                "retry-after", "ratelimit", "x-ratelimit-reset", "x-ratelimit-remaining",
                "x-ratelimit-requests-reset", "x-hubspot-ratelimit-interval-milliseconds",
            ]),
        ) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                let mut map = HeaderMap::new();
                map.insert(HeaderName::from_static(name), value);
                map.insert(HeaderName::from_static("x-ratelimit-remaining"), HeaderValue::from_static("0"));
                let parsed = RateLimitHeaders::parse(&map, now());
                prop_assert!(parsed.wait().is_none_or(|wait| wait <= MAX_WAIT));
            }
        }

        #[test]
        fn delay_seconds_round_trip(seconds in 0u64..=3_600) {
            prop_assert_eq!(
                parse_retry_after(&seconds.to_string(), now()),
                Some(Duration::from_secs(seconds))
            );
        }
    }
}
