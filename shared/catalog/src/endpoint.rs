//! Which URLs Junction may call with credentials, decided on the parsed URL's parts.
//!
//! Every URL Junction calls that comes from configuration (catalog entries, overlays) or
//! from a provider (discovery metadata, JWKS URIs, token-response values filled into URL
//! templates) passes [`EndpointRules::check`] or [`EndpointRules::check_filled`]. A text
//! prefix check is not enough: `http://127.0.0.1:@[::1]:8080/` starts with
//! `http://127.0.0.1:` and names the host `::1`, with `127.0.0.1` as its user name.
//!
//! The rules: https only; no user name or password; a host that is neither `localhost`
//! nor an IP literal in a loopback, link-local, private, unique-local, shared or
//! unspecified range (those reach the function's own network: the instance metadata
//! service, a VPC's internal hosts). Tests and the local stack run providers on
//! loopback over plain http, which [`EndpointRules::LoopbackHttpForTests`] allows; no
//! deployed function ever runs with it (the template never sets
//! [`LOOPBACK_TEST_SETTING`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// The environment variable that, set to `allow`, lets a process call loopback http
/// endpoints: set by the local stack for the functions it runs, never by the template.
pub const LOOPBACK_TEST_SETTING: &str = "JUNCTION_TEST_LOOPBACK_ENDPOINTS";

/// Which endpoints may be called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointRules {
    /// Public https endpoints only: every deployed function.
    #[default]
    Public,
    /// Public https endpoints, and loopback hosts over http or https: tests and the local
    /// stack, whose providers listen on 127.0.0.1.
    LoopbackHttpForTests,
}

/// Why a URL may not be called. The messages never repeat the URL: its user-info part
/// may carry a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("is not an absolute URL ({0})")]
    NotAUrl(#[source] url::ParseError),
    #[error("must be an https:// URL")]
    NotHttps,
    #[error("must not carry a user name or password")]
    Userinfo,
    #[error("has no host")]
    NoHost,
    #[error(
        "names a host on the function's own network (localhost, or a loopback, link-local, private or unique-local address)"
    )]
    InternalHost,
    #[error("does not keep the template's host shape ({expected})")]
    HostShape { expected: String },
    #[error("does not keep the template's scheme and port")]
    OriginShape,
}

impl EndpointRules {
    /// The rules for this process: [`EndpointRules::LoopbackHttpForTests`] only when
    /// `setting` (the value of [`LOOPBACK_TEST_SETTING`]) is `allow`.
    pub fn from_setting(setting: Option<&str>) -> EndpointRules {
        match setting {
            Some("allow") => EndpointRules::LoopbackHttpForTests,
            _ => EndpointRules::Public,
        }
    }

    /// Parses `url` and checks it part by part.
    pub fn check(self, url: &str) -> Result<Url, EndpointError> {
        let parsed = Url::parse(url).map_err(EndpointError::NotAUrl)?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EndpointError::Userinfo);
        }
        let host = parsed.host().ok_or(EndpointError::NoHost)?;
        let loopback = is_loopback(&host);
        let test_loopback = self == EndpointRules::LoopbackHttpForTests && loopback;
        match parsed.scheme() {
            "https" => {}
            "http" if test_loopback => {}
            _ => return Err(EndpointError::NotHttps),
        }
        if is_internal(&host) && !test_loopback {
            return Err(EndpointError::InternalHost);
        }
        Ok(parsed)
    }

    /// Checks `filled`, the URL `template` became once its `{name}` placeholders were
    /// filled, against the rules of [`EndpointRules::check`], and checks that it kept
    /// the template's shape: the same scheme and port, and the same host with each
    /// placeholder standing for one DNS label (`{shop}.myshopify.com`). A placeholder
    /// that is the whole host (`https://{domain}/…`) may be any host name; one that
    /// begins the template (`{instance_url}/…`, a value the provider returned) may be
    /// any origin that passes the rules.
    pub fn check_filled(self, template: &str, filled: &str) -> Result<Url, EndpointError> {
        let url = self.check(filled)?;
        if template.starts_with('{') {
            return Ok(url);
        }
        let probe = template_probe(template);
        let shape = Url::parse(&probe).map_err(EndpointError::NotAUrl)?;
        if shape.scheme() != url.scheme() || shape.port() != url.port() {
            return Err(EndpointError::OriginShape);
        }
        let expected = shape.host_str().unwrap_or_default();
        let actual = url.host_str().unwrap_or_default();
        if !host_has_shape(expected, actual) {
            return Err(EndpointError::HostShape {
                expected: expected.replace(PLACEHOLDER_PROBE, "{…}"),
            });
        }
        Ok(url)
    }
}

/// What a placeholder becomes while the template's own shape is parsed: one DNS label
/// that no real host contains.
const PLACEHOLDER_PROBE: &str = "junction-placeholder-probe";

/// `template` with each placeholder replaced by one DNS label, so that its fixed parts
/// can be parsed and checked before any value is filled in.
pub(crate) fn template_probe(template: &str) -> String {
    let mut probe = template.to_owned();
    for name in super::placeholders(template) {
        probe = probe.replace(&format!("{{{name}}}"), PLACEHOLDER_PROBE);
    }
    probe
}

/// Whether `actual` is `expected` with each probe label replaced by one DNS label, or
/// (when the probe is the whole host) by any host name.
fn host_has_shape(expected: &str, actual: &str) -> bool {
    if expected == PLACEHOLDER_PROBE {
        return !actual.is_empty();
    }
    let pieces: Vec<&str> = expected.split(PLACEHOLDER_PROBE).collect();
    let mut pattern = String::from("^");
    for (index, piece) in pieces.iter().enumerate() {
        if index > 0 {
            pattern.push_str("[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?");
        }
        pattern.push_str(&regex_lite::escape(piece));
    }
    pattern.push('$');
    regex_lite::Regex::new(&pattern).is_ok_and(|re| re.is_match(actual))
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(_) => false,
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn is_internal(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Host::Ipv4(ip) => internal_ipv4(*ip),
        Host::Ipv6(ip) => internal_ipv6(*ip),
    }
}

fn internal_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10, shared address space (RFC 6598): carrier and VPC-internal NAT.
        || (a == 100 && (64..128).contains(&b))
        // 0.0.0.0/8: "this network".
        || a == 0
}

fn internal_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_ipv4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7, unique local (RFC 4193).
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // The IPv4-compatible form ::a.b.c.d (deprecated) of an internal address.
        || (ip.segments()[..6].iter().all(|&s| s == 0)
            && internal_ipv4(Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)))
}

/// Whether an address is one a function must never be sent to; for callers that resolve
/// a host themselves.
pub fn is_internal_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_ipv4(v4),
        IpAddr::V6(v6) => internal_ipv6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PUBLIC: EndpointRules = EndpointRules::Public;
    const TESTS: EndpointRules = EndpointRules::LoopbackHttpForTests;

    #[test]
    fn public_https_endpoints_pass() {
        for url in [
            "https://oauth2.googleapis.com/token",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            "https://api.example.com:8443/v1",
        ] {
            assert!(PUBLIC.check(url).is_ok(), "{url}");
        }
    }

    /// The review's reproducers: each passed the old `starts_with("http://127.0.0.1:")`.
    #[test]
    fn userinfo_tricks_are_refused_under_every_rule() {
        for url in [
            "http://127.0.0.1:@[::1]:8080/token",
            "http://127.0.0.1:@169.254.169.254/",
            "http://127.0.0.1:80@evil.com",
            "https://user:pass@api.example.com/",
            "https://login.acme.example@evil.com/authorize",
        ] {
            assert_eq!(PUBLIC.check(url), Err(EndpointError::Userinfo), "{url}");
            assert_eq!(TESTS.check(url), Err(EndpointError::Userinfo), "{url}");
        }
    }

    #[test]
    fn plain_http_is_refused_except_on_loopback_in_tests() {
        assert_eq!(
            PUBLIC.check("http://api.example.com/"),
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            TESTS.check("http://api.example.com/"),
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            PUBLIC.check("http://127.0.0.1:8080/token"),
            Err(EndpointError::NotHttps)
        );
        assert!(TESTS.check("http://127.0.0.1:8080/token").is_ok());
        assert!(TESTS.check("http://[::1]:8080/token").is_ok());
        assert_eq!(
            PUBLIC.check("ftp://files.example.com/"),
            Err(EndpointError::NotHttps)
        );
        assert!(matches!(
            PUBLIC.check("/relative/path"),
            Err(EndpointError::NotAUrl(_))
        ));
    }

    #[test]
    fn internal_hosts_are_refused() {
        for url in [
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.5/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::]/",
        ] {
            assert_eq!(PUBLIC.check(url), Err(EndpointError::InternalHost), "{url}");
        }
        // Tests may use loopback, and nothing else internal.
        assert!(TESTS.check("https://127.0.0.1:9/").is_ok());
        assert_eq!(
            TESTS.check("http://169.254.169.254/"),
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            TESTS.check("https://10.0.0.5/"),
            Err(EndpointError::InternalHost)
        );
        assert_eq!(
            TESTS.check("http://localhost:8080/"),
            Err(EndpointError::NotHttps)
        );
    }

    #[test]
    fn public_ip_literals_pass() {
        assert!(PUBLIC.check("https://93.184.216.34/").is_ok());
        assert!(PUBLIC.check("https://[2606:2800:220:1::]/").is_ok());
    }

    #[test]
    fn a_filled_template_keeps_its_host_shape() {
        let template = "https://{shop}.myshopify.com/admin/oauth/access_token";
        assert!(
            PUBLIC
                .check_filled(
                    template,
                    "https://acme.myshopify.com/admin/oauth/access_token"
                )
                .is_ok()
        );
        // A value with a dot, a path or an @ moves the host: each is refused.
        for filled in [
            "https://evil.com/x.myshopify.com/admin/oauth/access_token",
            "https://evil.com.myshopify.com.evil.net/admin/oauth/access_token",
            "https://a.b.myshopify.com/admin/oauth/access_token",
            "https://evil.com#.myshopify.com/admin/oauth/access_token",
        ] {
            assert!(
                PUBLIC.check_filled(template, filled).is_err(),
                "{filled} must be refused"
            );
        }
        let userinfo = "https://evil.com@x.myshopify.com/admin/oauth/access_token";
        assert_eq!(
            PUBLIC.check_filled(template, userinfo),
            Err(EndpointError::Userinfo)
        );
    }

    #[test]
    fn a_whole_host_placeholder_takes_any_public_host() {
        let template = "https://{domain}/oauth2/v1/token";
        assert!(
            PUBLIC
                .check_filled(template, "https://login.acme.example/oauth2/v1/token")
                .is_ok()
        );
        assert_eq!(
            PUBLIC.check_filled(
                template,
                "https://login.acme.example@evil.com/oauth2/v1/token"
            ),
            Err(EndpointError::Userinfo)
        );
        assert_eq!(
            PUBLIC.check_filled(template, "https://169.254.169.254/oauth2/v1/token"),
            Err(EndpointError::InternalHost)
        );
    }

    #[test]
    fn a_filled_template_keeps_its_scheme_and_port() {
        let template = "https://{shop}.myshopify.com/x";
        assert_eq!(
            PUBLIC.check_filled(template, "https://acme.myshopify.com:8443/x"),
            Err(EndpointError::OriginShape)
        );
    }

    #[test]
    fn an_origin_placeholder_takes_any_origin_that_passes() {
        let template = "{instance_url}/services/data/v62.0";
        assert!(
            PUBLIC
                .check_filled(
                    template,
                    "https://acme.my.salesforce.com/services/data/v62.0"
                )
                .is_ok()
        );
        assert_eq!(
            PUBLIC.check_filled(template, "http://evil.example/services/data/v62.0"),
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            PUBLIC.check_filled(template, "https://10.1.2.3/services/data/v62.0"),
            Err(EndpointError::InternalHost)
        );
    }

    #[test]
    fn the_setting_allows_loopback_only_when_it_says_allow() {
        assert_eq!(EndpointRules::from_setting(None), PUBLIC);
        assert_eq!(EndpointRules::from_setting(Some("true")), PUBLIC);
        assert_eq!(EndpointRules::from_setting(Some("allow")), TESTS);
    }

    proptest! {
        /// Whatever the text, a URL that passes the public rules is https with a host
        /// and no user-info, and that host is not internal.
        #[test]
        fn what_passes_the_public_rules_is_public_https(text in "(https?://)?[a-z0-9.:@\\[\\]/%-]{0,40}") {
            if let Ok(url) = PUBLIC.check(&text) {
                prop_assert_eq!(url.scheme(), "https");
                prop_assert!(url.username().is_empty() && url.password().is_none());
                let host = url.host().expect("host");
                prop_assert!(!is_internal(&host));
            }
        }
    }
}
