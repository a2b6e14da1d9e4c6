//! Following a provider's pages by the catalog's `[pagination]` scheme
//! ([`PaginationSpec`]): given the request just sent and its response, the next request,
//! or that the listing is done.
//!
//! Every answer here comes from the provider, so it is read as hostile:
//! - a next URL (a `Link` header) must stay on the connection's API origin and under
//!   the base path ([`resolve_next`]): a forged `Link: <https://evil.example/…>` must
//!   not make Junction send the connection's token elsewhere;
//! - a cursor (or next URL) equal to one already sent stops the listing with
//!   [`PaginationError::Repeated`] instead of looping;
//! - a [`Listing`] stops after its page limit;
//! - the `Link` header is parsed strictly ([`parse_link_header`]): a malformed value
//!   is an error, never a guess.
//!
//! The `Link` parser is our own (RFC 8288 §3, about 100 lines): the crates.io parser
//! (`parse_link_header` 0.4) strips every quote, angle bracket and space before
//! splitting on `,` and `;`, so a target holding a comma splits, `rel="prev next"`
//! becomes the relation `prevnext`, and a query member without `=` is an error; it also
//! pulls in `regex` and `lazy_static`. The property tests below check ours.
//!
//! This module does no I/O: the pollers and the proxy send the requests.

use std::collections::BTreeSet;

use junction_catalog::PaginationSpec;
use serde_json::Value;
use url::Url;

/// Why a listing cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaginationError {
    /// The next page's URL is not on the API's origin or under its base path.
    #[error("the next page's link leaves the provider's API base: {0}")]
    ForeignLink(String),
    /// The `Link` header does not parse (RFC 8288 §3).
    #[error("the Link header is malformed: {0}")]
    BadLink(String),
    /// The body does not have the shape the scheme names.
    #[error("the response does not page as the catalog says: {0}")]
    Shape(String),
    /// The provider sent a cursor (or next URL) that was already sent: following it
    /// would loop.
    #[error("the provider repeated a page cursor; the listing stops to avoid a loop")]
    Repeated,
    /// The scheme needs what the caller cannot give (a header to a body-only reader).
    #[error("the pagination scheme needs {0}")]
    Unsupported(&'static str),
}

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
pub fn parse_link_header(header: &str) -> Result<Vec<Link>, PaginationError> {
    let bad = |what: &str| PaginationError::BadLink(what.to_owned());
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
pub fn next_link(header: &str) -> Result<Option<String>, PaginationError> {
    let mut next = None;
    for link in parse_link_header(header)? {
        if link.rels.iter().any(|rel| rel == "next") {
            match &next {
                Some(seen) if *seen != link.target => {
                    return Err(PaginationError::BadLink(
                        "two different rel=\"next\" links".into(),
                    ));
                }
                _ => next = Some(link.target),
            }
        }
    }
    Ok(next)
}

/// Resolves a next-page link against the request it answered and checks it stays on
/// `base` (the connection's API base URL): same scheme, host and port, no user
/// information, no fragment, and a path under the base's path.
pub fn resolve_next(base: &Url, request: &Url, target: &str) -> Result<Url, PaginationError> {
    let foreign = |why: &str| PaginationError::ForeignLink(why.to_owned());
    let next = request
        .join(target)
        .map_err(|_| foreign("the link does not parse as a URL"))?;
    if next.scheme() != base.scheme()
        || next.host() != base.host()
        || next.port_or_known_default() != base.port_or_known_default()
    {
        return Err(foreign("another scheme, host or port than the API base"));
    }
    if !next.username().is_empty() || next.password().is_some() {
        return Err(foreign("the link carries user information"));
    }
    if next.fragment().is_some() {
        return Err(foreign("the link has a fragment"));
    }
    let base_path = base.path().trim_end_matches('/');
    let under = next
        .path()
        .strip_prefix(base_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !under {
        return Err(foreign("a path outside the API base path"));
    }
    Ok(next)
}

/// The query parameter a body-read continuation (cursor, page token, offset) is sent
/// in; `None` for a `Link` header scheme, whose next request is a whole URL.
pub fn continuation_param(spec: &PaginationSpec) -> Option<&str> {
    match spec {
        PaginationSpec::Cursor { cursor_param, .. } => Some(cursor_param),
        PaginationSpec::PageToken { token_param, .. } => Some(token_param),
        PaginationSpec::Offset { offset_param, .. } => Some(offset_param),
        PaginationSpec::LinkHeader { .. } => None,
    }
}

/// The page's items at the scheme's `items` pointer; `None` where the scheme names no
/// items pointer; an error when the body has no array there.
pub fn items<'v>(
    spec: &PaginationSpec,
    body: &'v Value,
) -> Result<Option<&'v [Value]>, PaginationError> {
    let Some(pointer) = spec.items() else {
        return Ok(None);
    };
    match body.pointer(pointer) {
        Some(Value::Array(items)) => Ok(Some(items.as_slice())),
        // An empty list as `null` (Pipedrive).
        Some(Value::Null) => Ok(Some(&[])),
        _ => Err(PaginationError::Shape(format!("no array at {pointer:?}"))),
    }
}

fn has_more(body: &Value, pointer: Option<&String>) -> Result<Option<bool>, PaginationError> {
    let Some(pointer) = pointer else {
        return Ok(None);
    };
    match body.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(more)) => Ok(Some(*more)),
        Some(_) => Err(PaginationError::Shape(format!(
            "{pointer:?} is not a boolean"
        ))),
    }
}

/// A cursor value: a non-empty string or a number; `None` for absent, `null`, `""`.
fn cursor_at(body: &Value, pointer: &str) -> Result<Option<String>, PaginationError> {
    match body.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(PaginationError::Shape(format!(
            "the cursor at {pointer:?} is not a string or number"
        ))),
    }
}

/// The continuation a response body gives for a cursor, page-token or offset scheme
/// (the value of [`continuation_param`] on the next request); `None`: the listing is
/// done. `sent` is the value the answered request carried (`None` on the first page):
/// the same value again is [`PaginationError::Repeated`]. For offsets, `sent_limit` is
/// the page size the request asked for (the scheme's `page_size` when `None`).
pub fn next_continuation(
    spec: &PaginationSpec,
    sent: Option<&str>,
    sent_limit: Option<u64>,
    body: &Value,
) -> Result<Option<String>, PaginationError> {
    let next = match spec {
        PaginationSpec::Cursor {
            next_cursor,
            last_item_cursor,
            has_more: more,
            ..
        } => {
            let more = has_more(body, more.as_ref())?;
            if more == Some(false) {
                return Ok(None);
            }
            match (next_cursor, last_item_cursor) {
                (Some(pointer), _) => cursor_at(body, pointer)?,
                (None, Some(pointer)) => {
                    let page = items(spec, body)?.unwrap_or_default();
                    match page.last() {
                        Some(last) => Some(cursor_at(last, pointer)?.ok_or_else(|| {
                            PaginationError::Shape(format!("the last item has no {pointer:?}"))
                        })?),
                        None if more == Some(true) => {
                            return Err(PaginationError::Shape(
                                "has_more with an empty page: no item to continue after".into(),
                            ));
                        }
                        None => None,
                    }
                }
                (None, None) => None,
            }
        }
        PaginationSpec::PageToken { next_token, .. } => cursor_at(body, next_token)?,
        PaginationSpec::Offset {
            page_size,
            has_more: more,
            ..
        } => {
            let count = items(spec, body)?.map_or(0, <[Value]>::len) as u64;
            let limit = sent_limit.unwrap_or(u64::from(*page_size));
            let done = match has_more(body, more.as_ref())? {
                Some(more) => !more,
                None => count < limit,
            };
            if done || count == 0 {
                return Ok(None);
            }
            let from = match sent {
                None => 0,
                Some(text) => text.parse::<u64>().map_err(|_| {
                    PaginationError::Shape("the sent offset is not a number".into())
                })?,
            };
            Some((from + count).to_string())
        }
        PaginationSpec::LinkHeader { .. } => {
            return Err(PaginationError::Unsupported("the response's Link header"));
        }
    };
    match next {
        Some(next) if sent == Some(next.as_str()) => Err(PaginationError::Repeated),
        next => Ok(next),
    }
}

/// The first request of a listing: `url` with the scheme's page size added when the
/// caller did not set that parameter.
pub fn first_request(spec: &PaginationSpec, mut url: Url) -> Url {
    if let Some((param, size)) = spec.page_size()
        && !url.query_pairs().any(|(name, _)| name == param)
    {
        url.query_pairs_mut().append_pair(param, &size.to_string());
    }
    url
}

/// The request after `request`, given its response (`link`: the `Link` header values
/// joined with `,`; `body`: the JSON body); `None` when the listing is done. A next
/// URL is checked against `base` ([`resolve_next`]); a repeat of the answered request
/// is [`PaginationError::Repeated`].
pub fn next_request(
    spec: &PaginationSpec,
    base: &Url,
    request: &Url,
    link: Option<&str>,
    body: &Value,
) -> Result<Option<Url>, PaginationError> {
    let next = match continuation_param(spec) {
        None => match link.map(next_link).transpose()?.flatten() {
            None => return Ok(None),
            Some(target) => resolve_next(base, request, &target)?,
        },
        Some(param) => {
            let query = |name: &str| {
                request
                    .query_pairs()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            };
            let sent = query(param);
            let sent_limit = spec
                .page_size()
                .and_then(|(limit, _)| query(limit))
                .and_then(|limit| limit.parse().ok());
            let Some(value) = next_continuation(spec, sent.as_deref(), sent_limit, body)? else {
                return Ok(None);
            };
            with_param(request, param, &value)
        }
    };
    if next == *request {
        return Err(PaginationError::Repeated);
    }
    Ok(Some(next))
}

/// `url` with `name` set to `value` (replacing any earlier values), the other
/// parameters kept in order.
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut next = url.clone();
    next.set_query(None);
    {
        let mut pairs = next.query_pairs_mut();
        for (key, value) in &kept {
            pairs.append_pair(key, value);
        }
        pairs.append_pair(name, value);
    }
    next
}

/// What a [`Listing`] does after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request next.
    Next(Url),
    /// The provider said the listing is done.
    Done,
    /// The page limit is reached; this request would have come next.
    Limit(Url),
}

/// A listing of at most `max_pages` pages on one API base: [`next_request`] plus a
/// memory of every request sent, so a provider that cycles through cursors (not only
/// one that repeats the last) is stopped too.
#[derive(Debug, Clone)]
pub struct Listing<'s> {
    spec: &'s PaginationSpec,
    base: Url,
    max_pages: usize,
    sent: BTreeSet<String>,
}

impl<'s> Listing<'s> {
    /// A listing on `base` (the connection's API base URL).
    pub fn new(
        spec: &'s PaginationSpec,
        base: &str,
        max_pages: usize,
    ) -> Result<Self, PaginationError> {
        let base = Url::parse(base)
            .map_err(|_| PaginationError::ForeignLink("the API base does not parse".into()))?;
        Ok(Listing {
            spec,
            base,
            max_pages,
            sent: BTreeSet::new(),
        })
    }

    /// Pages answered so far.
    pub fn pages(&self) -> usize {
        self.sent.len()
    }

    /// The first request ([`first_request`]).
    pub fn first(&self, url: Url) -> Url {
        first_request(self.spec, url)
    }

    /// Records that `request` was answered with `link` and `body`; what comes next.
    pub fn next(
        &mut self,
        request: &Url,
        link: Option<&str>,
        body: &Value,
    ) -> Result<Step, PaginationError> {
        self.sent.insert(request.as_str().to_owned());
        let Some(next) = next_request(self.spec, &self.base, request, link, body)? else {
            return Ok(Step::Done);
        };
        if self.sent.contains(next.as_str()) {
            return Err(PaginationError::Repeated);
        }
        if self.sent.len() >= self.max_pages {
            return Ok(Step::Limit(next));
        }
        Ok(Step::Next(next))
    }
}

#[cfg(test)]
#[path = "pagination_tests.rs"]
mod tests;
