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
//! - the `Link` header is parsed strictly (`junction_aws::link_header`, shared with the
//!   connect's account lookup): a malformed value is an error, never a guess. Its
//!   property tests are here, with the providers' headers.
//!
//! This module does no I/O: the pollers and the proxy send the requests.

use std::collections::BTreeSet;

pub use junction_aws::link_header::{Link, LinkHeaderError, next_link, parse_link_header};
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
    #[error("the next page's Link header is unreadable")]
    BadLink(#[source] LinkHeaderError),
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
        None => match link
            .map(junction_aws::link_header::next_link)
            .transpose()
            .map_err(PaginationError::BadLink)?
            .flatten()
        {
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
