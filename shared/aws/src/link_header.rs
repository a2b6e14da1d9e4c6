//! The HTTP `Link` header (RFC 8288), parsed strictly: what a provider's next page is,
//! for the pollers, the proxy's `paginate` (`junction_outbound::pagination`) and the
//! connect's account lookup (`junction_oauth`). One parser, so a header that one of them
//! would read otherwise than the others cannot exist. Our own (RFC 8288 §3, about 100
//! lines) because the crates.io parser (`parse_link_header` 0.4) strips every quote,
//! angle bracket and space before splitting on `,` and `;`: a target holding a comma
//! splits, `rel="prev next"` becomes the relation `prevnext`, and it pulls in `regex` and
//! `lazy_static`.

/// Why a `Link` header value is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Link header is malformed: {0}")]
pub struct LinkHeaderError(pub &'static str);

/// One relation-typed link of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The target as written (a URI reference, resolved by the caller).
    pub target: String,
    /// The `rel` parameter's relation types, lowercased (RFC 8288 §2.1.1: compared
    /// case-insensitively); empty without `rel`.
    pub rels: Vec<String>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses a `Link` header value (RFC 8288 §3): `#link-value`, each `"<" URI-Reference
/// ">" *( OWS ";" OWS link-param )`, a param `token BWS [ "=" BWS ( token /
/// quoted-string ) ]`. Only the first `rel` of a link counts (§3.3). Empty list
/// elements are allowed (RFC 9110 §5.6.1).
pub fn parse_link_header(header: &str) -> Result<Vec<Link>, LinkHeaderError> {
    let bad = LinkHeaderError;
    let mut links = Vec::new();
    let mut chars = header.chars().peekable();
    let skip_ows = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
    };
    loop {
        skip_ows(&mut chars);
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some('<') => {}
            Some(_) => return Err(bad("a link must start with <")),
        }
        let mut target = String::new();
        loop {
            match chars.next() {
                Some('>') => break,
                Some(c) if c.is_ascii_graphic() && c != '<' => target.push(c),
                Some(_) => return Err(bad("the target holds a space, control or non-ASCII")),
                None => return Err(bad("a target without its closing >")),
            }
        }
        let mut rels: Option<Vec<String>> = None;
        loop {
            skip_ows(&mut chars);
            match chars.next() {
                None | Some(',') => break,
                Some(';') => {}
                Some(_) => return Err(bad("after a target or parameter: ; , or the end")),
            }
            skip_ows(&mut chars);
            let mut name = String::new();
            while let Some(c) = chars.next_if(|c| is_tchar(*c)) {
                name.push(c.to_ascii_lowercase());
            }
            if name.is_empty() {
                return Err(bad("a parameter without a name"));
            }
            skip_ows(&mut chars);
            let mut value = String::new();
            if chars.next_if_eq(&'=').is_some() {
                skip_ows(&mut chars);
                if chars.next_if_eq(&'"').is_some() {
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(c) if c == '\t' || c == ' ' || c.is_ascii_graphic() => {
                                    value.push(c)
                                }
                                _ => return Err(bad("a bad escape in a quoted string")),
                            },
                            Some(c) if c == '\t' || c == ' ' || c.is_ascii_graphic() => {
                                value.push(c)
                            }
                            Some(_) => {
                                return Err(bad("a control or non-ASCII in a quoted string"));
                            }
                            None => return Err(bad("an unterminated quoted string")),
                        }
                    }
                } else {
                    while let Some(c) = chars.next_if(|c| is_tchar(*c)) {
                        value.push(c);
                    }
                    if value.is_empty() {
                        return Err(bad("a parameter with = and no value"));
                    }
                }
            }
            if name == "rel" && rels.is_none() {
                rels = Some(
                    value
                        .split_ascii_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect(),
                );
            }
        }
        links.push(Link {
            target,
            rels: rels.unwrap_or_default(),
        });
    }
    Ok(links)
}

/// The target of the one `rel="next"` link; `None` without one; an error for a
/// malformed header or two different next links (which to follow would be a guess).
pub fn next_link(header: &str) -> Result<Option<String>, LinkHeaderError> {
    let mut next = None;
    for link in parse_link_header(header)? {
        if link.rels.iter().any(|rel| rel == "next") {
            match &next {
                Some(seen) if *seen != link.target => {
                    return Err(LinkHeaderError("two different rel=\"next\" links"));
                }
                _ => next = Some(link.target),
            }
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property tests and providers' headers are in `junction_outbound`'s pagination
    /// tests, which follow pages with it; these pin the account lookup's cases.
    #[test]
    fn the_next_page_is_the_one_rel_next_link() {
        // GitHub's example (docs.github.com, "Using pagination in the REST API").
        let github = r#"<https://api.github.com/repositories/1300192/issues?page=2>; rel="prev", <https://api.github.com/repositories/1300192/issues?page=4>; rel="next", <https://api.github.com/repositories/1300192/issues?page=515>; rel="last", <https://api.github.com/repositories/1300192/issues?page=1>; rel="first""#;
        assert_eq!(
            next_link(github),
            Ok(Some(
                "https://api.github.com/repositories/1300192/issues?page=4".to_owned()
            ))
        );
        assert_eq!(
            next_link(r#"<https://a.example/p>; rel="prev next""#),
            Ok(Some("https://a.example/p".to_owned())),
            "several relation types"
        );
        assert_eq!(next_link(r#"<https://a.example/l>; rel="last""#), Ok(None));
        assert_eq!(
            next_link(r#"<https://a.example/n>; title="next""#),
            Ok(None)
        );
        assert_eq!(next_link(""), Ok(None), "no Link field at all");
        assert!(next_link("garbage").is_err(), "not a Link header");
    }
}
