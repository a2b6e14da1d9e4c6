//! The `[pagination]` section of a catalog entry: how the provider's list endpoints
//! continue on the next page, where that is the same for the whole API.
//!
//! One section per provider, at the top level beside `[api]`, `[polling]` and
//! `[account_request]`: the scheme is a fact about the provider's API that the pollers,
//! the proxy's `paginate` and later callers all read, and it can be declared (and
//! tested against the provider's documented responses) before the entry has an `[api]`
//! base URL. An API that pages differently per endpoint (GraphQL connections, a search
//! endpoint taking the cursor in a `POST` body) declares the scheme of its plain `GET`
//! lists; the code that calls the other endpoints still reads the cursor through the
//! same rules where the response has the same shape.
//!
//! Following the pages (the next request, the host check of a next URL, repeat and page
//! limits) is `junction_outbound::pagination`. This module only holds and checks the
//! data; it must not depend on the HTTP stack.

use serde::Deserialize;

/// How a provider's list responses lead to the next page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationSpec {
    /// An opaque cursor read from the response body and sent back in a query
    /// parameter (Slack `response_metadata.next_cursor` → `cursor`, HubSpot
    /// `paging.next.after` → `after`), or the last item's id (Stripe `starting_after`).
    Cursor {
        /// JSON pointer to the page's items (`""` for a body that is the list).
        #[serde(default)]
        items: Option<String>,
        /// JSON pointer to the next cursor; absent, `null` or `""` ends the listing.
        #[serde(default)]
        next_cursor: Option<String>,
        /// JSON pointer inside the page's last item to the value that is the next
        /// cursor (Stripe's object `id`); needs `items`.
        #[serde(default)]
        last_item_cursor: Option<String>,
        /// The query parameter the cursor is sent in.
        cursor_param: String,
        /// JSON pointer to a boolean: `false` ends the listing even with a cursor.
        #[serde(default)]
        has_more: Option<String>,
        /// The query parameter that sets the page size, with `page_size`.
        #[serde(default)]
        limit_param: Option<String>,
        /// The largest page the provider serves (sent in `limit_param`).
        #[serde(default)]
        page_size: Option<u32>,
    },
    /// Numeric offsets: `offset_param` = items already read, `limit_param` = page size;
    /// a page shorter than `page_size` (or `has_more` false) is the last.
    Offset {
        /// JSON pointer to the page's items (`""` for a body that is the list).
        items: String,
        offset_param: String,
        limit_param: String,
        page_size: u32,
        /// JSON pointer to a boolean that says whether more items follow.
        #[serde(default)]
        has_more: Option<String>,
    },
    /// RFC 8288 `Link: <…>; rel="next"` response header (GitHub, Shopify's
    /// `page_info`): the next request is that URL, which must stay on the connection's
    /// API origin.
    LinkHeader {
        /// JSON pointer to the page's items (`""` for a body that is the list).
        #[serde(default)]
        items: Option<String>,
        /// The query parameter that sets the page size on the first request, with
        /// `page_size`; later requests are the links as given.
        #[serde(default)]
        limit_param: Option<String>,
        #[serde(default)]
        page_size: Option<u32>,
    },
    /// Google-style page tokens: `nextPageToken` in the body, sent back as `pageToken`.
    PageToken {
        /// JSON pointer to the page's items; Google names the list per method, so it is
        /// given only where one name holds.
        #[serde(default)]
        items: Option<String>,
        /// JSON pointer to the next token (`/nextPageToken` unless said otherwise).
        #[serde(default = "default_next_token")]
        next_token: String,
        /// The query parameter the token is sent in (`pageToken` unless said otherwise).
        #[serde(default = "default_token_param")]
        token_param: String,
        /// The page-size parameter (`maxResults`, `pageSize`), with `page_size`.
        #[serde(default)]
        limit_param: Option<String>,
        #[serde(default)]
        page_size: Option<u32>,
    },
}

fn default_next_token() -> String {
    "/nextPageToken".to_owned()
}

fn default_token_param() -> String {
    "pageToken".to_owned()
}

/// The largest page size a catalog entry may declare: no provider we know serves more
/// per page, and a bigger value is more likely a typo than a fact.
pub const MAX_PAGE_SIZE: u32 = 10_000;

impl PaginationSpec {
    /// JSON pointer to the page's items, where the scheme names one.
    pub fn items(&self) -> Option<&str> {
        match self {
            PaginationSpec::Cursor { items, .. }
            | PaginationSpec::LinkHeader { items, .. }
            | PaginationSpec::PageToken { items, .. } => items.as_deref(),
            PaginationSpec::Offset { items, .. } => Some(items),
        }
    }

    /// The page-size parameter and size the first request carries, where declared.
    pub fn page_size(&self) -> Option<(&str, u32)> {
        match self {
            PaginationSpec::Cursor {
                limit_param,
                page_size,
                ..
            }
            | PaginationSpec::LinkHeader {
                limit_param,
                page_size,
                ..
            }
            | PaginationSpec::PageToken {
                limit_param,
                page_size,
                ..
            } => limit_param.as_deref().zip(*page_size),
            PaginationSpec::Offset {
                limit_param,
                page_size,
                ..
            } => Some((limit_param, *page_size)),
        }
    }

    /// Checks what the types cannot; returns `(field, message)` for the first fault.
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        let field = |name: &str| format!("pagination.{name}");
        let pointer = |name: &str, value: &str, root_ok: bool| {
            let ok = (root_ok && value.is_empty()) || is_pointer(value);
            if ok {
                Ok(())
            } else {
                Err((
                    field(name),
                    format!("{value:?} is not a JSON pointer (`/a/b`)"),
                ))
            }
        };
        let param = |name: &str, value: &str| {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b));
            if ok {
                Ok(())
            } else {
                Err((
                    field(name),
                    format!("{value:?} is not a query parameter name"),
                ))
            }
        };
        let size = |limit: Option<&String>, size: Option<u32>| match (limit, size) {
            (Some(limit), Some(size)) => {
                param("limit_param", limit)?;
                if size == 0 || size > MAX_PAGE_SIZE {
                    return Err((field("page_size"), format!("must be 1 to {MAX_PAGE_SIZE}")));
                }
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err((
                field("page_size"),
                "give limit_param and page_size together".to_owned(),
            )),
        };
        if let Some(items) = self.items() {
            pointer("items", items, true)?;
        }
        match self {
            PaginationSpec::Cursor {
                items,
                next_cursor,
                last_item_cursor,
                cursor_param,
                has_more,
                limit_param,
                page_size,
            } => {
                match (next_cursor, last_item_cursor) {
                    (Some(next), None) => pointer("next_cursor", next, false)?,
                    (None, Some(last)) => {
                        pointer("last_item_cursor", last, false)?;
                        if items.is_none() {
                            return Err((
                                field("last_item_cursor"),
                                "needs `items`: the cursor is read from the last item".to_owned(),
                            ));
                        }
                        if has_more.is_none() {
                            return Err((
                                field("has_more"),
                                "a last-item cursor always has a value: `has_more` must say when the list ends"
                                    .to_owned(),
                            ));
                        }
                    }
                    _ => {
                        return Err((
                            field("next_cursor"),
                            "give exactly one of next_cursor and last_item_cursor".to_owned(),
                        ));
                    }
                }
                param("cursor_param", cursor_param)?;
                if let Some(has_more) = has_more {
                    pointer("has_more", has_more, false)?;
                }
                size(limit_param.as_ref(), *page_size)
            }
            PaginationSpec::Offset {
                offset_param,
                limit_param,
                page_size,
                has_more,
                ..
            } => {
                param("offset_param", offset_param)?;
                if offset_param == limit_param {
                    return Err((
                        field("limit_param"),
                        "must differ from offset_param".to_owned(),
                    ));
                }
                if let Some(has_more) = has_more {
                    pointer("has_more", has_more, false)?;
                }
                size(Some(limit_param), Some(*page_size))
            }
            PaginationSpec::LinkHeader {
                limit_param,
                page_size,
                ..
            } => size(limit_param.as_ref(), *page_size),
            PaginationSpec::PageToken {
                next_token,
                token_param,
                limit_param,
                page_size,
                ..
            } => {
                pointer("next_token", next_token, false)?;
                param("token_param", token_param)?;
                size(limit_param.as_ref(), *page_size)
            }
        }
    }
}

/// A JSON pointer that names a member (RFC 6901): `/` then tokens.
fn is_pointer(value: &str) -> bool {
    value.len() > 1 && value.starts_with('/') && !value.contains("//")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PaginationSpec, String> {
        let spec: PaginationSpec = toml::from_str(text).map_err(|err| err.to_string())?;
        spec.check()
            .map_err(|(field, message)| format!("{field}: {message}"))?;
        Ok(spec)
    }

    #[test]
    fn each_style_parses_with_its_defaults() {
        let token =
            parse("style = \"page_token\"\nlimit_param = \"maxResults\"\npage_size = 500\n")
                .expect("page token");
        assert_eq!(
            token,
            PaginationSpec::PageToken {
                items: None,
                next_token: "/nextPageToken".into(),
                token_param: "pageToken".into(),
                limit_param: Some("maxResults".into()),
                page_size: Some(500),
            }
        );
        assert_eq!(token.page_size(), Some(("maxResults", 500)));
        let offset = parse(
            "style = \"offset\"\nitems = \"/data\"\noffset_param = \"start\"\nlimit_param = \"limit\"\npage_size = 100\n",
        )
        .expect("offset");
        assert_eq!(offset.items(), Some("/data"));
        parse("style = \"link_header\"\nitems = \"\"\n").expect("link header, root list");
        parse(
            "style = \"cursor\"\nnext_cursor = \"/paging/next/after\"\ncursor_param = \"after\"\n",
        )
        .expect("cursor");
    }

    #[test]
    fn faults_name_their_field() {
        for (text, field) in [
            (
                "style = \"cursor\"\ncursor_param = \"after\"\n",
                "pagination.next_cursor",
            ),
            (
                "style = \"cursor\"\nnext_cursor = \"/a\"\nlast_item_cursor = \"/id\"\ncursor_param = \"after\"\n",
                "pagination.next_cursor",
            ),
            (
                "style = \"cursor\"\nlast_item_cursor = \"/id\"\ncursor_param = \"starting_after\"\nhas_more = \"/has_more\"\n",
                "pagination.last_item_cursor",
            ),
            (
                "style = \"cursor\"\nitems = \"/data\"\nlast_item_cursor = \"/id\"\ncursor_param = \"starting_after\"\n",
                "pagination.has_more",
            ),
            (
                "style = \"cursor\"\nnext_cursor = \"paging.next.after\"\ncursor_param = \"after\"\n",
                "pagination.next_cursor",
            ),
            (
                "style = \"cursor\"\nnext_cursor = \"/a\"\ncursor_param = \"a b\"\n",
                "pagination.cursor_param",
            ),
            (
                "style = \"cursor\"\nnext_cursor = \"/a\"\ncursor_param = \"c\"\nlimit_param = \"limit\"\n",
                "pagination.page_size",
            ),
            (
                "style = \"offset\"\nitems = \"/data\"\noffset_param = \"o\"\nlimit_param = \"o\"\npage_size = 1\n",
                "pagination.limit_param",
            ),
            (
                "style = \"offset\"\nitems = \"/data\"\noffset_param = \"o\"\nlimit_param = \"l\"\npage_size = 0\n",
                "pagination.page_size",
            ),
            (
                "style = \"link_header\"\nitems = \"data\"\n",
                "pagination.items",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(field), "{text}: {err}");
        }
        assert!(parse("style = \"scroll\"\n").is_err());
        assert!(parse("style = \"link_header\"\nrel = \"next\"\n").is_err());
    }
}
