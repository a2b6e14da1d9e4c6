//! Every secret the fake providers issued or were handed, so an end-to-end test can look
//! for each of them in what Junction's functions logged.
//!
//! The ledger is process-wide: a test's leak scan finds every value without being told
//! which providers it started, so a test cannot forget one. Values from other tests of
//! the same binary only add needles; they are random and match nothing by accident.
//! It grows with what the fakes issue (a few values per OAuth round trip) and is never
//! emptied: a test binary issues few enough for that not to matter.

use std::sync::{Mutex, PoisonError};

/// One secret value and what it is, as a leak report names it (never the value).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    /// What the value is: "an access token of the fake authorization server".
    pub what: &'static str,
    pub value: String,
}

impl std::fmt::Debug for IssuedSecret {
    /// Names the secret, not its value: a failing assertion prints this.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("what", &self.what)
            .field("value", &format_args!("[{} bytes]", self.value.len()))
            .finish()
    }
}

static LEDGER: Mutex<Vec<IssuedSecret>> = Mutex::new(Vec::new());

/// Adds `value` to the process-wide ledger (empty values are no secret and are skipped).
pub(crate) fn record(what: &'static str, value: &str) -> Option<IssuedSecret> {
    if value.is_empty() {
        return None;
    }
    let secret = IssuedSecret {
        what,
        value: value.to_owned(),
    };
    LEDGER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(secret.clone());
    Some(secret)
}

/// Every secret any fake provider of this process issued (codes, access, refresh and ID
/// tokens) or was handed by a client (PKCE verifiers, `state` values, client secrets)
/// so far, oldest first.
pub fn issued_secrets() -> Vec<IssuedSecret> {
    LEDGER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_listed_and_debug_hides_them() {
        let value = format!("ledger-probe-{}", rand::random::<u64>());
        let secret = record("a test value", &value).expect("recorded");
        assert!(issued_secrets().contains(&secret));
        assert!(!format!("{secret:?}").contains(&value));
        assert_eq!(record("nothing", ""), None);
    }
}
