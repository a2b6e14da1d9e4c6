//! Which failures are worth retrying, and when: one policy for every provider call.
//!
//! - 429, 500, 502, 503, 504 and timeouts are transient; 400, 401 (after the vault's one
//!   refresh), 403, 404, 422 and every other status are permanent.
//! - A response body can say otherwise: the catalog's `[api] error_rules` (a JSON
//!   pointer and the values that mean an error) turn a "200 OK" carrying an error, or
//!   Linear's `RATELIMITED` inside a 400, into the failure it is.
//! - Backoff is exponential with full jitter, 1 s up to 16 s, at most 5 attempts; a
//!   provider's own wait (`Retry-After`, a spent quota's reset) replaces the drawn delay.
//! - When the next wait does not fit in the Lambda's remaining time, the job goes back
//!   on its queue with that delay instead of sleeping ([`Decision::Requeue`]).

use std::time::Duration;

use rand::Rng;

use junction_aws::retry::Backoff;
use junction_catalog::{ErrorRule, FailureClass};

/// A classified failure of one provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub class: FailureClass,
    /// The provider's error code where the rule names one (`ratelimited`,
    /// `invalid_auth`), else the status (`http_503`) or `timeout`.
    pub code: String,
}

/// The class of a status without a body rule; `None` for success.
pub fn class_of_status(status: u16) -> Option<FailureClass> {
    match status {
        200..=299 => None,
        429 => Some(FailureClass::RateLimited),
        401 => Some(FailureClass::Unauthorized),
        500 | 502 | 503 | 504 => Some(FailureClass::Transient),
        _ => Some(FailureClass::Permanent),
    }
}

/// Classifies a response: the first catalog rule whose pointer holds one of its values
/// decides (whatever the status), else the status does.
pub fn classify_response(rules: &[ErrorRule], status: u16, body: &[u8]) -> Result<(), CallFailure> {
    let json = if rules.is_empty() {
        None
    } else {
        serde_json::from_slice::<serde_json::Value>(body).ok()
    };
    if let Some(json) = &json
        && let Some(rule) = rules.iter().find(|rule| {
            json.pointer(&rule.pointer)
                .is_some_and(|found| rule.values.contains(found))
        })
    {
        let code = rule
            .code
            .as_deref()
            .and_then(|pointer| json.pointer(pointer))
            .and_then(serde_json::Value::as_str)
            .map(|code| {
                code.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "_-. ".contains(*c))
                    .take(64)
                    .collect()
            })
            .unwrap_or_else(|| format!("http_{status}"));
        return Err(CallFailure {
            class: rule.class,
            code,
        });
    }
    match class_of_status(status) {
        None => Ok(()),
        Some(class) => Err(CallFailure {
            class,
            code: format!("http_{status}"),
        }),
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long in this invocation, then try again.
    Retry(Duration),
    /// Put the job back on its queue, visible again after this delay.
    Requeue(Duration),
    /// Do not retry: the failure is permanent or the attempts are spent.
    GiveUp,
}

/// The retry policy of every outbound call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    pub max_attempts: u32,
}

/// SQS's longest message delay.
const MAX_REQUEUE_DELAY: Duration = Duration::from_secs(900);

impl Default for RetryPolicy {
    /// 1 s up to 16 s, at most 5 attempts.
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(16),
            },
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// After `attempts` attempts (1 after the first) failed with `class`: retry now,
    /// requeue, or give up. `provider_wait` is what the provider asked for
    /// (`Retry-After`, a spent quota's reset); `time_left` is the invocation's remaining
    /// time and `call_timeout` the longest the next attempt can take.
    pub fn decide(
        &self,
        class: FailureClass,
        attempts: u32,
        provider_wait: Option<Duration>,
        time_left: Duration,
        call_timeout: Duration,
        rng: &mut impl Rng,
    ) -> Decision {
        let retryable = matches!(class, FailureClass::Transient | FailureClass::RateLimited);
        if !retryable || attempts >= self.max_attempts {
            return Decision::GiveUp;
        }
        let wait = provider_wait.unwrap_or_else(|| self.backoff.delay(attempts, rng));
        if wait.saturating_add(call_timeout) > time_left {
            Decision::Requeue(wait.min(MAX_REQUEUE_DELAY))
        } else {
            Decision::Retry(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;
    use junction_catalog::Catalog;

    fn rules(provider: &str) -> &'static [ErrorRule] {
        Catalog::embedded()
            .expect("catalog")
            .get(provider)
            .and_then(|p| p.api.as_ref())
            .map(|api| api.error_rules.as_slice())
            .unwrap_or_else(|| panic!("{provider} has error rules"))
    }

    #[test]
    fn statuses_are_classified_as_the_issue_lists() {
        assert_eq!(class_of_status(429), Some(FailureClass::RateLimited));
        for status in [500, 502, 503, 504] {
            assert_eq!(
                class_of_status(status),
                Some(FailureClass::Transient),
                "{status}"
            );
        }
        for status in [400, 403, 404, 422, 501] {
            assert_eq!(
                class_of_status(status),
                Some(FailureClass::Permanent),
                "{status}"
            );
        }
        assert_eq!(class_of_status(401), Some(FailureClass::Unauthorized));
        assert_eq!(class_of_status(204), None);
    }

    /// Slack answers errors with 200 and `"ok": false` (api.slack.com/web, "Evaluating
    /// responses"); rate limiting arrives as 429 + Retry-After, or as `ratelimited`.
    #[test]
    fn slack_errors_inside_a_200_are_errors() {
        let slack = rules("slack");
        assert_eq!(
            classify_response(slack, 200, br#"{"ok":true,"messages":[]}"#),
            Ok(())
        );
        assert_eq!(
            classify_response(slack, 200, br#"{"ok":false,"error":"invalid_auth"}"#),
            Err(CallFailure {
                class: FailureClass::Unauthorized,
                code: "invalid_auth".into()
            })
        );
        assert_eq!(
            classify_response(slack, 200, br#"{"ok":false,"error":"ratelimited"}"#)
                .map_err(|f| f.class),
            Err(FailureClass::RateLimited)
        );
        assert_eq!(
            classify_response(slack, 200, br#"{"ok":false,"error":"channel_not_found"}"#),
            Err(CallFailure {
                class: FailureClass::Permanent,
                code: "channel_not_found".into()
            })
        );
        assert_eq!(
            classify_response(slack, 503, b"<html>").map_err(|f| f.class),
            Err(FailureClass::Transient),
            "no JSON: the status decides"
        );
    }

    /// Linear reports rate limiting as a GraphQL error with `extensions.code`
    /// `RATELIMITED` (linear.app/developers/rate-limiting), reportedly in a 400.
    #[test]
    fn linear_graphql_errors_are_classified_whatever_the_status() {
        let linear = rules("linear");
        for status in [200, 400] {
            assert_eq!(
                classify_response(
                    linear,
                    status,
                    br#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}"#
                )
                .map_err(|f| f.class),
                Err(FailureClass::RateLimited),
                "{status}"
            );
        }
        assert_eq!(
            classify_response(linear, 200, br#"{"data":{"issues":{"nodes":[]}}}"#),
            Ok(())
        );
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        let plenty = Duration::from_secs(600);
        let timeout = Duration::from_secs(10);
        for attempts in 1..5 {
            match policy.decide(
                FailureClass::Transient,
                attempts,
                None,
                plenty,
                timeout,
                &mut rng,
            ) {
                Decision::Retry(wait) => assert!(wait <= policy.backoff.ceiling(attempts)),
                other => panic!("attempt {attempts}: {other:?}"),
            }
        }
        assert_eq!(
            policy.decide(FailureClass::Transient, 5, None, plenty, timeout, &mut rng),
            Decision::GiveUp,
            "at most 5 attempts"
        );
        for class in [FailureClass::Permanent, FailureClass::Unauthorized] {
            assert_eq!(
                policy.decide(class, 1, None, plenty, timeout, &mut rng),
                Decision::GiveUp
            );
        }
    }

    #[test]
    fn a_provider_wait_is_honoured_and_requeued_when_it_does_not_fit() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        let timeout = Duration::from_secs(10);
        assert_eq!(
            policy.decide(
                FailureClass::RateLimited,
                1,
                Some(Duration::from_secs(30)),
                Duration::from_secs(600),
                timeout,
                &mut rng
            ),
            Decision::Retry(Duration::from_secs(30))
        );
        assert_eq!(
            policy.decide(
                FailureClass::RateLimited,
                1,
                Some(Duration::from_secs(30)),
                Duration::from_secs(35),
                timeout,
                &mut rng
            ),
            Decision::Requeue(Duration::from_secs(30)),
            "30 s + a 10 s call do not fit in 35 s"
        );
        assert_eq!(
            policy.decide(
                FailureClass::RateLimited,
                1,
                Some(Duration::from_secs(3_600)),
                Duration::from_secs(35),
                timeout,
                &mut rng
            ),
            Decision::Requeue(MAX_REQUEUE_DELAY),
            "SQS delays stop at 15 minutes"
        );
    }
}
