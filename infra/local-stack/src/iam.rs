//! The local stack's stand-in for IAM on the routes the template protects with
//! `AWS_IAM`.
//!
//! In AWS, API Gateway lets such a request through when its SigV4 signature names a
//! principal whose policies allow `execute-api:Invoke` on the request's resource,
//! `arn:aws:execute-api:<region>:<account>:<api-id>/<stage>/<METHOD>/<path>`, and answers
//! 403 otherwise ([IAM authorization for HTTP
//! APIs](https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-access-control-iam.html)).
//! Here a principal is a random key sent in [`LOCAL_IAM_HEADER`], and its policy the part
//! of an IAM policy document that decides `execute-api:Invoke`: `Allow` and `Deny`
//! statements with `Action` and `Resource` patterns (`*` and `?` wildcards), an explicit
//! deny winning. Anything else a document could say (`Condition`, `NotResource`,
//! `NotAction`, `Principal`) is refused rather than ignored, so a policy never grants
//! more here than it would in AWS.
//!
//! The stack's own key (printed at start) may call every route. Keys limited by a
//! policy are issued while the stack runs ([`LocalIam::issue`]; `junction-local
//! credential --tenant acme` through the control API), e.g. one whose policy grants
//! only `…/*/*/v1/tenants/acme/*`, the README's example.

use std::sync::{PoisonError, RwLock};

use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// The header carrying a local credential on routes the template protects with
/// `AWS_IAM`, in place of a SigV4 signature.
pub const LOCAL_IAM_HEADER: &str = "x-junction-local-iam";

/// The local HTTP API's id in resource ARNs (and in events' `requestContext.apiId`).
pub const API_ID: &str = "local";

/// The stage of an HTTP API's default stage, as resource ARNs name it.
pub const STAGE: &str = "$default";

/// The action API Gateway authorizes.
const INVOKE: &str = "execute-api:Invoke";

/// Why a policy document is refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON, or not the subset of IAM's grammar the stand-in evaluates (serde's
    /// message names the field).
    #[error("not a policy this stand-in can evaluate: {0}")]
    Unsupported(#[source] serde_json::Error),
    #[error("statement {index} is not one this stand-in can evaluate: {source}")]
    Statement {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("statement {index} has no Resource")]
    NoResource { index: usize },
    /// A tenant id outside `[A-Za-z0-9-_.:@]{1,128}`: a `*` or `?` in it would grant
    /// more than one tenant.
    #[error("{0:?} is not a tenant id (1-128 letters, digits and -_.:@)")]
    Tenant(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Effect {
    Allow,
    Deny,
}

/// IAM lets `Action` and `Resource` be one value or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// A policy document's top level; each statement is read on its own, so that an error
/// names the field it is about (an untagged one-or-many would only say "no variant").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    #[serde(default, rename = "Version")]
    _version: Option<String>,
    #[serde(default, rename = "Id")]
    _id: Option<String>,
    #[serde(rename = "Statement")]
    statement: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StatementDocument {
    #[serde(default, rename = "Sid")]
    _sid: Option<String>,
    effect: Effect,
    action: OneOrMany<String>,
    resource: OneOrMany<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// What a credential may invoke: the `execute-api:Invoke` part of an IAM policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteApiPolicy {
    statements: Vec<Statement>,
}

impl ExecuteApiPolicy {
    /// Reads an IAM policy document (JSON).
    pub fn parse(document: &str) -> Result<ExecuteApiPolicy, PolicyError> {
        let document: PolicyDocument =
            serde_json::from_str(document).map_err(PolicyError::Unsupported)?;
        let statements = match document.statement {
            serde_json::Value::Array(statements) => statements,
            statement => vec![statement],
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(index, statement)| {
                let statement: StatementDocument = serde_json::from_value(statement)
                    .map_err(|source| PolicyError::Statement { index, source })?;
                let resources = statement.resource.into_vec();
                if resources.is_empty() {
                    return Err(PolicyError::NoResource { index });
                }
                Ok(Statement {
                    effect: statement.effect,
                    actions: statement.action.into_vec(),
                    resources,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ExecuteApiPolicy { statements })
    }

    /// A policy allowing `execute-api:Invoke` on `resources`.
    pub fn allow(resources: Vec<String>) -> ExecuteApiPolicy {
        ExecuteApiPolicy {
            statements: vec![Statement {
                effect: Effect::Allow,
                actions: vec![INVOKE.to_owned()],
                resources,
            }],
        }
    }

    /// The policy document, as IAM writes it.
    pub fn document(&self) -> serde_json::Value {
        let statements: Vec<serde_json::Value> = self
            .statements
            .iter()
            .map(|statement| {
                serde_json::json!({
                    "Effect": match statement.effect {
                        Effect::Allow => "Allow",
                        Effect::Deny => "Deny",
                    },
                    "Action": statement.actions,
                    "Resource": statement.resources,
                })
            })
            .collect();
        serde_json::json!({ "Version": "2012-10-17", "Statement": statements })
    }

    /// True when the policy allows invoking `resource`: some `Allow` statement matches
    /// it and no `Deny` statement does. Actions match without regard to case, resources
    /// with it, as in IAM.
    pub fn allows(&self, resource: &str) -> bool {
        let applies = |statement: &&Statement| {
            statement.actions.iter().any(|action| {
                wildcard_match(&action.to_ascii_lowercase(), &INVOKE.to_ascii_lowercase())
            }) && statement
                .resources
                .iter()
                .any(|pattern| wildcard_match(pattern, resource))
        };
        let mut allowed = false;
        for statement in self.statements.iter().filter(applies) {
            match statement.effect {
                Effect::Deny => return false,
                Effect::Allow => allowed = true,
            }
        }
        allowed
    }
}

/// IAM's `*` (any run of characters, `/` included) and `?` (one character) wildcards;
/// every other character matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again.
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The resource a request to the local HTTP API invokes, in `region`: the path as sent
/// (still percent-encoded, so an escaped `/` cannot move a request under another
/// tenant's prefix), without its query.
pub fn execute_api_resource(region: &str, method: &str, raw_path: &str) -> String {
    format!(
        "arn:aws:execute-api:{region}:{}:{API_ID}/{STAGE}/{}{raw_path}",
        crate::ACCOUNT_ID,
        method.to_ascii_uppercase()
    )
}

/// The resource pattern that grants one tenant's management routes, every method, on
/// the local HTTP API in `region`.
pub fn tenant_resource(region: &str, tenant: &str) -> String {
    format!(
        "arn:aws:execute-api:{region}:{}:{API_ID}/*/*/v1/tenants/{tenant}/*",
        crate::ACCOUNT_ID
    )
}

/// The policy of a backend that may manage `tenant` only (the README's example).
pub fn tenant_policy(region: &str, tenant: &str) -> Result<ExecuteApiPolicy, PolicyError> {
    let valid = (1..=128).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if !valid {
        return Err(PolicyError::Tenant(tenant.to_owned()));
    }
    Ok(ExecuteApiPolicy::allow(vec![tenant_resource(
        region, tenant,
    )]))
}

/// A random credential.
fn new_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

struct Credential {
    key: String,
    policy: ExecuteApiPolicy,
}

/// The credentials of one running stack.
pub struct LocalIam {
    region: String,
    /// The stack's own credential: every route.
    stack_key: String,
    /// Issued while the stack runs, each with its policy.
    issued: RwLock<Vec<Credential>>,
}

impl std::fmt::Debug for LocalIam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issued = self
            .issued
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("LocalIam")
            .field("region", &self.region)
            .field("issued", &issued)
            .finish_non_exhaustive()
    }
}

/// What the stand-in decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No credential, or one the stack never issued (API Gateway: no valid signature).
    Unauthenticated,
    /// A known credential whose policy does not allow this resource.
    Denied {
        resource: String,
    },
}

impl LocalIam {
    /// A new stack's credentials: its own key, nothing issued.
    pub fn new(region: impl Into<String>) -> LocalIam {
        LocalIam {
            region: region.into(),
            stack_key: new_key(),
            issued: RwLock::new(Vec::new()),
        }
    }

    /// The region resource ARNs name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The stack's own credential, which may call every route.
    pub fn stack_key(&self) -> &str {
        &self.stack_key
    }

    /// A new credential limited to what `policy` allows.
    pub fn issue(&self, policy: ExecuteApiPolicy) -> String {
        let key = new_key();
        self.issued
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Credential {
                key: key.clone(),
                policy,
            });
        key
    }

    /// Every credential's key (for the leak scan).
    pub fn keys(&self) -> Vec<String> {
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        std::iter::once(self.stack_key.clone())
            .chain(issued.iter().map(|credential| credential.key.clone()))
            .collect()
    }

    /// Whether the credential `presented` (the header's value) may send `method`
    /// `raw_path`.
    pub fn decide(&self, presented: Option<&[u8]>, method: &str, raw_path: &str) -> Decision {
        let Some(presented) = presented else {
            return Decision::Unauthenticated;
        };
        if bool::from(presented.ct_eq(self.stack_key.as_bytes())) {
            return Decision::Allowed;
        }
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        let Some(credential) = issued
            .iter()
            .find(|credential| bool::from(presented.ct_eq(credential.key.as_bytes())))
        else {
            return Decision::Unauthenticated;
        };
        let resource = execute_api_resource(&self.region, method, raw_path);
        if credential.policy.allows(&resource) {
            Decision::Allowed
        } else {
            Decision::Denied { resource }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = "us-east-1";

    fn acme_only() -> ExecuteApiPolicy {
        // The README's example, for the local API.
        ExecuteApiPolicy::parse(
            r#"{
              "Version": "2012-10-17",
              "Statement": [{
                "Effect": "Allow",
                "Action": "execute-api:Invoke",
                "Resource": "arn:aws:execute-api:us-east-1:123456789012:local/*/*/v1/tenants/acme/*"
              }]
            }"#,
        )
        .expect("a policy")
    }

    /// The README's example policy, as a user would paste it: it must parse and grant
    /// acme's routes on that API only.
    #[test]
    fn the_readmes_example_policy_grants_one_tenant() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("the README");
        let section = readme
            .split_once("## Your product's backend")
            .map(|(_, rest)| rest)
            .expect("the README's section on the backend");
        let document = section
            .split_once("```json\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(json, _)| json)
            .expect("a JSON block");
        let policy = ExecuteApiPolicy::parse(document).expect("the README's policy parses");
        let api = "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5/$default";
        assert!(policy.allows(&format!("{api}/GET/v1/tenants/acme/connections/conn_1")));
        assert!(policy.allows(&format!("{api}/POST/v1/tenants/acme/connect-sessions")));
        for refused in [
            format!("{api}/GET/v1/tenants/beta/connections"),
            format!("{api}/GET/v1/tenants/acme2/connections"),
            "arn:aws:execute-api:eu-west-1:123456789012:other/$default/GET/v1/tenants/acme/connections".to_owned(),
        ] {
            assert!(!policy.allows(&refused), "{refused}");
        }
    }

    #[test]
    fn wildcards_match_as_in_iam() {
        for (pattern, text, matches) in [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            (
                "*/v1/tenants/acme/*",
                "local/$default/GET/v1/tenants/acme/connections",
                true,
            ),
            (
                "*/v1/tenants/acme/*",
                "local/$default/GET/v1/tenants/acme2/connections",
                false,
            ),
            (
                "*/v1/tenants/acme/*",
                "local/$default/GET/v1/tenants/acme",
                false,
            ),
            ("Acme", "acme", false),
            ("a**b", "ab", true),
        ] {
            assert_eq!(wildcard_match(pattern, text), matches, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn a_tenant_policy_allows_that_tenants_paths_only() {
        let policy = acme_only();
        let resource = |method: &str, path: &str| execute_api_resource(REGION, method, path);
        for (method, path) in [
            ("GET", "/v1/tenants/acme/connections"),
            ("GET", "/v1/tenants/acme/connections/conn_1"),
            ("DELETE", "/v1/tenants/acme/connections/conn_1"),
            ("POST", "/v1/tenants/acme/connect-sessions"),
        ] {
            assert!(policy.allows(&resource(method, path)), "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/v1/tenants/beta/connections"),
            ("GET", "/v1/tenants/acme2/connections"),
            ("GET", "/v1/tenants/acm%65/connections"),
            ("GET", "/v1/tenants/beta/connections/acme"),
            ("GET", "/v1/tenants/acme%2F..%2Fbeta/connections"),
        ] {
            assert!(!policy.allows(&resource(method, path)), "{method} {path}");
        }
        assert!(
            !policy.allows(&execute_api_resource(
                "eu-west-1",
                "GET",
                "/v1/tenants/acme/connections"
            )),
            "another region's API"
        );
    }

    #[test]
    fn an_explicit_deny_wins_and_actions_must_name_invoke() {
        let policy = ExecuteApiPolicy::parse(
            r#"{"Statement": [
              {"Effect": "Allow", "Action": ["execute-api:*"], "Resource": ["arn:aws:execute-api:*:*:local/*"]},
              {"Effect": "Deny", "Action": "EXECUTE-API:INVOKE", "Resource": "arn:aws:execute-api:*:*:local/*/DELETE/*"}
            ]}"#,
        )
        .expect("a policy");
        assert!(policy.allows(&execute_api_resource(
            REGION,
            "GET",
            "/v1/tenants/x/connections"
        )));
        assert!(!policy.allows(&execute_api_resource(
            REGION,
            "DELETE",
            "/v1/tenants/x/connections/c"
        )));
        let other_action = ExecuteApiPolicy::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "execute-api:ManageConnections", "Resource": "*"}}"#,
        )
        .expect("a policy");
        assert!(!other_action.allows(&execute_api_resource(
            REGION,
            "GET",
            "/v1/tenants/x/connections"
        )));
        assert!(
            !ExecuteApiPolicy::parse(r#"{"Statement": []}"#)
                .expect("a policy")
                .allows(&execute_api_resource(REGION, "GET", "/"))
        );
    }

    #[test]
    fn what_the_stand_in_cannot_evaluate_is_refused() {
        for (document, says) in [
            (
                r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}}"#,
                "Condition",
            ),
            (
                r#"{"Statement": {"Effect": "Allow", "Action": "*", "NotResource": "*"}}"#,
                "NotResource",
            ),
            (
                r#"{"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}"#,
                "Maybe",
            ),
            (
                r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": []}}"#,
                "Resource",
            ),
            ("not json", "expected"),
        ] {
            let err = ExecuteApiPolicy::parse(document).expect_err(says);
            assert!(err.to_string().contains(says), "{says}: {err}");
        }
    }

    #[test]
    fn credentials_are_the_stacks_or_issued_with_a_policy() {
        let iam = LocalIam::new(REGION);
        let acme = iam.issue(acme_only());
        let path = "/v1/tenants/beta/connections";
        assert_eq!(iam.decide(None, "GET", path), Decision::Unauthenticated);
        assert_eq!(
            iam.decide(Some(b"guess"), "GET", path),
            Decision::Unauthenticated
        );
        assert_eq!(
            iam.decide(Some(iam.stack_key().as_bytes()), "GET", path),
            Decision::Allowed
        );
        assert_eq!(
            iam.decide(Some(acme.as_bytes()), "GET", "/v1/tenants/acme/connections"),
            Decision::Allowed
        );
        assert_eq!(
            iam.decide(Some(acme.as_bytes()), "GET", path),
            Decision::Denied {
                resource: format!(
                    "arn:aws:execute-api:us-east-1:123456789012:local/$default/GET{path}"
                )
            }
        );
        assert_eq!(iam.keys(), vec![iam.stack_key().to_owned(), acme.clone()]);
        assert!(
            !format!("{iam:?}").contains(&acme),
            "keys stay out of Debug"
        );
        assert_eq!(
            ExecuteApiPolicy::parse(&acme_only().document().to_string()).expect("round trip"),
            acme_only()
        );
        assert_eq!(
            tenant_policy(REGION, "acme").expect("a policy"),
            acme_only()
        );
        for tenant in ["", "*", "ac?e", "a/b", &"x".repeat(129)] {
            assert!(tenant_policy(REGION, tenant).is_err(), "{tenant}");
        }
    }
}
