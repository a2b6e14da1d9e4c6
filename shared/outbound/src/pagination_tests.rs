//! The catalog's schemes against each provider's documented response shapes, the
//! `Link` parser's grammar (examples and properties), and the attacks a hostile
//! provider answer could try.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use junction_catalog::Catalog;

fn scheme(provider: &str) -> &'static PaginationSpec {
    Catalog::embedded()
        .expect("catalog")
        .get(provider)
        .and_then(|p| p.pagination.as_ref())
        .unwrap_or_else(|| panic!("{provider} declares [pagination]"))
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("URL")
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[test]
fn slack_follows_response_metadata_next_cursor_until_it_is_empty() {
    // docs.slack.dev/apis/web-api/pagination: conversations.list answers.
    let spec = scheme("slack");
    let base = url("https://slack.com/api");
    let first = first_request(
        spec,
        url("https://slack.com/api/conversations.list?types=im"),
    );
    assert_eq!(query(&first, "limit").as_deref(), Some("200"));
    let page = json!({"ok": true, "channels": [{"id": "C012AB3CD"}],
        "response_metadata": {"next_cursor": "dGVhbTpDMDYxRkE1UEI="}});
    let next = next_request(spec, &base, &first, None, &page)
        .expect("pages")
        .expect("a next page");
    assert_eq!(
        query(&next, "cursor").as_deref(),
        Some("dGVhbTpDMDYxRkE1UEI=")
    );
    assert_eq!(query(&next, "types").as_deref(), Some("im"));
    for last in [
        json!({"ok": true, "channels": [], "response_metadata": {"next_cursor": ""}}),
        json!({"ok": true, "channels": [], "response_metadata": {"next_cursor": null}}),
        json!({"ok": true, "channels": []}),
    ] {
        assert_eq!(next_request(spec, &base, &next, None, &last), Ok(None));
    }
    // The same cursor again would loop.
    assert_eq!(
        next_request(spec, &base, &next, None, &page),
        Err(PaginationError::Repeated)
    );
}

#[test]
fn gmail_follows_next_page_token_in_page_token() {
    // users.threads.list: {threads, nextPageToken, resultSizeEstimate}.
    let spec = scheme("gmail");
    let base = url("https://gmail.googleapis.com");
    let first = first_request(
        spec,
        url("https://gmail.googleapis.com/gmail/v1/users/me/threads?maxResults=20"),
    );
    assert_eq!(
        query(&first, "maxResults").as_deref(),
        Some("20"),
        "the caller's size stays"
    );
    let page = json!({"threads": [{"id": "18c1", "snippet": "hi", "historyId": "9"}],
        "nextPageToken": "09876543210987654321", "resultSizeEstimate": 201});
    let next = next_request(spec, &base, &first, None, &page)
        .expect("pages")
        .expect("next");
    assert_eq!(
        query(&next, "pageToken").as_deref(),
        Some("09876543210987654321")
    );
    let last = json!({"threads": [{"id": "18c2"}], "resultSizeEstimate": 201});
    assert_eq!(next_request(spec, &base, &next, None, &last), Ok(None));
    assert_eq!(
        next_continuation(spec, None, None, &page),
        Ok(Some("09876543210987654321".into()))
    );
    // A poller holds only the token it sent: the same one back is a loop.
    assert_eq!(
        next_continuation(spec, Some("09876543210987654321"), None, &page),
        Err(PaginationError::Repeated)
    );
}

#[test]
fn hubspot_follows_paging_next_after() {
    // CRM v3 list: {results, paging: {next: {after, link}}}.
    let spec = scheme("hubspot");
    let base = url("https://api.hubapi.com");
    let first = first_request(spec, url("https://api.hubapi.com/crm/v3/objects/contacts"));
    assert_eq!(query(&first, "limit").as_deref(), Some("100"));
    let page = json!({"results": [{"id": "512", "properties": {}, "archived": false}],
        "paging": {"next": {"after": "NTI1Cg%3D%3D",
            "link": "?after=NTI1Cg%3D%3D"}}});
    let next = next_request(spec, &base, &first, None, &page)
        .expect("pages")
        .expect("next");
    assert_eq!(query(&next, "after").as_deref(), Some("NTI1Cg%3D%3D"));
    assert_eq!(
        items(spec, &page).expect("items").map(<[Value]>::len),
        Some(1)
    );
    assert_eq!(
        next_request(spec, &base, &next, None, &json!({"results": []})),
        Ok(None)
    );
}

#[test]
fn asana_follows_next_page_offset_until_null() {
    // Asana/openapi: {data, next_page: {offset, path, uri} | null}.
    let spec = scheme("asana");
    let base = url("https://app.asana.com/api/1.0");
    let first = first_request(spec, url("https://app.asana.com/api/1.0/workspaces"));
    let page = json!({"data": [{"gid": "12345", "resource_type": "workspace"}],
        "next_page": {"offset": "eyJ0eXAiOJiKV1iQLCJhbGciOiJIUzI1NiJ9",
            "path": "/workspaces?limit=100&offset=eyJ0eXAiOJiKV1iQLCJhbGciOiJIUzI1NiJ9",
            "uri": "https://app.asana.com/api/1.0/workspaces?limit=100&offset=eyJ0eXAiOJiKV1iQLCJhbGciOiJIUzI1NiJ9"}});
    let next = next_request(spec, &base, &first, None, &page)
        .expect("pages")
        .expect("next");
    assert_eq!(
        query(&next, "offset").as_deref(),
        Some("eyJ0eXAiOJiKV1iQLCJhbGciOiJIUzI1NiJ9")
    );
    let last = json!({"data": [], "next_page": null});
    assert_eq!(next_request(spec, &base, &next, None, &last), Ok(None));
}

#[test]
fn stripe_continues_after_the_last_object_while_has_more() {
    // The platform's API and a connected account's (the proxy's) page alike.
    for provider in ["stripe", "stripe-connect"] {
        stripe_pages(provider);
    }
}

fn stripe_pages(provider: &str) {
    // docs.stripe.com/api/pagination: {object: "list", url, has_more, data}.
    let spec = scheme(provider);
    let base = url("https://api.stripe.com");
    let first = first_request(spec, url("https://api.stripe.com/v1/customers"));
    assert_eq!(query(&first, "limit").as_deref(), Some("100"));
    let page = json!({"object": "list", "url": "/v1/customers", "has_more": true,
        "data": [{"id": "cus_005", "object": "customer"}, {"id": "cus_004", "object": "customer"}]});
    let next = next_request(spec, &base, &first, None, &page)
        .expect("pages")
        .expect("next");
    assert_eq!(query(&next, "starting_after").as_deref(), Some("cus_004"));
    let last = json!({"object": "list", "url": "/v1/customers", "has_more": false,
        "data": [{"id": "cus_003", "object": "customer"}]});
    assert_eq!(next_request(spec, &base, &next, None, &last), Ok(None));
    // has_more with nothing to continue after is not guessed at.
    let empty = json!({"object": "list", "has_more": true, "data": []});
    assert!(matches!(
        next_request(spec, &base, &next, None, &empty),
        Err(PaginationError::Shape(_))
    ));
}

const GITHUB_LINK: &str = r#"<https://api.github.com/repositories/1300192/issues?page=2>; rel="prev", <https://api.github.com/repositories/1300192/issues?page=4>; rel="next", <https://api.github.com/repositories/1300192/issues?page=515>; rel="last", <https://api.github.com/repositories/1300192/issues?page=1>; rel="first""#;

#[test]
fn github_follows_the_link_header_and_stops_without_one() {
    // docs.github.com using-pagination-in-the-rest-api: the example header verbatim.
    let spec = scheme("github");
    let base = url("https://api.github.com");
    let first = first_request(
        spec,
        url("https://api.github.com/repositories/1300192/issues?page=3"),
    );
    assert_eq!(query(&first, "per_page").as_deref(), Some("100"));
    let body = json!([{"id": 1, "number": 1347}]);
    let next = next_request(spec, &base, &first, Some(GITHUB_LINK), &body)
        .expect("pages")
        .expect("next");
    assert_eq!(
        next.as_str(),
        "https://api.github.com/repositories/1300192/issues?page=4"
    );
    assert_eq!(
        items(spec, &body).expect("items").map(<[Value]>::len),
        Some(1)
    );
    assert_eq!(next_request(spec, &base, &next, None, &body), Ok(None));
    let last = r#"<https://api.github.com/repositories/1300192/issues?page=514>; rel="prev", <https://api.github.com/repositories/1300192/issues?page=1>; rel="first""#;
    assert_eq!(
        next_request(spec, &base, &next, Some(last), &body),
        Ok(None)
    );
}

#[test]
fn shopify_follows_page_info_links_on_the_shop() {
    // shopify.dev/api/usage/pagination-rest: `link: <…page_info=…&limit=…>; rel="next"`.
    let spec = scheme("shopify");
    let base = url("https://acme.myshopify.com/admin/api/2026-07");
    let first = first_request(
        spec,
        url("https://acme.myshopify.com/admin/api/2026-07/products.json"),
    );
    assert_eq!(query(&first, "limit").as_deref(), Some("250"));
    let link = r#"<https://acme.myshopify.com/admin/api/2026-07/products.json?page_info=hijgklmn&limit=250>; rel="previous", <https://acme.myshopify.com/admin/api/2026-07/products.json?page_info=abcdefg&limit=250>; rel="next""#;
    let body = json!({"products": [{"id": 632910392}]});
    let next = next_request(spec, &base, &first, Some(link), &body)
        .expect("pages")
        .expect("next");
    assert_eq!(query(&next, "page_info").as_deref(), Some("abcdefg"));
    // Another shop's link is another host: refused.
    let other =
        r#"<https://evil.myshopify.com/admin/api/2026-07/products.json?page_info=x>; rel="next""#;
    assert!(matches!(
        next_request(spec, &base, &first, Some(other), &body),
        Err(PaginationError::ForeignLink(_))
    ));
}

#[test]
fn pipedrive_offsets_advance_by_the_items_read_until_no_more_items() {
    // additional_data.pagination {start, limit, more_items_in_collection, next_start}.
    let spec = scheme("pipedrive");
    let base = url("https://acme.pipedrive.com/api/v1");
    let first = first_request(spec, url("https://acme.pipedrive.com/api/v1/deals"));
    assert_eq!(query(&first, "limit").as_deref(), Some("100"));
    let deals: Vec<Value> = (0..100).map(|id| json!({"id": id})).collect();
    let page = json!({"success": true, "data": deals, "additional_data": {"pagination":
        {"start": 0, "limit": 100, "more_items_in_collection": true, "next_start": 100}}});
    let next = next_request(spec, &base, &first, None, &page)
        .expect("pages")
        .expect("next");
    assert_eq!(query(&next, "start").as_deref(), Some("100"));
    let last = json!({"success": true, "data": [{"id": 100}], "additional_data": {"pagination":
        {"start": 100, "limit": 100, "more_items_in_collection": false}}});
    assert_eq!(next_request(spec, &base, &next, None, &last), Ok(None));
    // An empty list's data is null.
    let empty = json!({"success": true, "data": null, "additional_data": {"pagination":
        {"start": 0, "limit": 100, "more_items_in_collection": false}}});
    assert_eq!(next_request(spec, &base, &first, None, &empty), Ok(None));
}

#[test]
fn an_offset_scheme_without_has_more_stops_on_a_short_page() {
    let spec = PaginationSpec::Offset {
        items: "/items".into(),
        offset_param: "offset".into(),
        limit_param: "limit".into(),
        page_size: 2,
        has_more: None,
    };
    let full = json!({"items": [1, 2]});
    assert_eq!(
        next_continuation(&spec, Some("4"), None, &full),
        Ok(Some("6".into()))
    );
    assert_eq!(
        next_continuation(&spec, Some("4"), Some(3), &full),
        Ok(None)
    );
    assert_eq!(
        next_continuation(&spec, None, None, &json!({"items": [1]})),
        Ok(None)
    );
    assert!(next_continuation(&spec, None, None, &json!({"rows": []})).is_err());
}

#[test]
fn a_forged_link_to_another_host_is_refused_so_the_token_stays_home() {
    let spec = scheme("github");
    let base = url("https://api.github.com");
    let request = url("https://api.github.com/user/repos");
    let body = json!([]);
    for hostile in [
        r#"<https://evil.example/steal?page=2>; rel="next""#,
        r#"<//evil.example/user/repos?page=2>; rel="next""#,
        r#"<http://api.github.com/user/repos?page=2>; rel="next""#,
        r#"<https://api.github.com:8443/user/repos?page=2>; rel="next""#,
        r#"<https://api.github.com@evil.example/user/repos>; rel="next""#,
        r#"<https://user:pass@api.github.com/user/repos>; rel="next""#,
        r#"<https://api.github.com.evil.example/user/repos>; rel="next""#,
    ] {
        assert!(
            matches!(
                next_request(spec, &base, &request, Some(hostile), &body),
                Err(PaginationError::ForeignLink(_))
            ),
            "{hostile}"
        );
    }
    // Under a base with a path, a link out of that path is refused too.
    let shop = url("https://acme.myshopify.com/admin/api/2026-07");
    let on_shop = url("https://acme.myshopify.com/admin/api/2026-07/products.json");
    for outside in [
        "</admin/oauth/access_scopes.json>; rel=next",
        "<../../2026-07x/a>; rel=next",
    ] {
        assert!(
            matches!(
                next_request(scheme("shopify"), &shop, &on_shop, Some(outside), &body),
                Err(PaginationError::ForeignLink(_))
            ),
            "{outside}"
        );
    }
    // A relative link on the same base is fine.
    let relative = next_request(
        spec,
        &base,
        &request,
        Some("</user/repos?page=2>; rel=next"),
        &body,
    );
    assert_eq!(
        relative.expect("pages").map(String::from),
        Some("https://api.github.com/user/repos?page=2".to_owned())
    );
}

#[test]
fn a_listing_stops_at_a_cycle_and_at_its_page_limit() {
    let spec = scheme("slack");
    let base = "https://slack.com/api";
    let mut listing = Listing::new(spec, base, 3).expect("listing");
    let first = listing.first(url("https://slack.com/api/users.list"));
    let page = |cursor: &str| json!({"ok": true, "members": [], "response_metadata": {"next_cursor": cursor}});
    let Step::Next(second) = listing.next(&first, None, &page("a")).expect("a") else {
        panic!("a second page");
    };
    let Step::Next(third) = listing.next(&second, None, &page("b")).expect("b") else {
        panic!("a third page");
    };
    // A provider cycling a → b → a is stopped.
    assert_eq!(
        listing.clone().next(&third, None, &page("a")),
        Err(PaginationError::Repeated)
    );
    // Three pages answered: the fourth is not sent.
    assert!(matches!(
        listing.next(&third, None, &page("c")),
        Ok(Step::Limit(_))
    ));
    assert_eq!(listing.pages(), 3);
}

#[test]
fn link_headers_parse_to_the_rfc_8288_grammar() {
    let links = parse_link_header(GITHUB_LINK).expect("parses");
    assert_eq!(links.len(), 4);
    assert_eq!(links[1].rels, vec!["next".to_owned()]);
    assert_eq!(
        next_link(r#"<https://a.example/x?page=2>; rel=next"#),
        Ok(Some("https://a.example/x?page=2".into()))
    );
    assert_eq!(
        next_link(r#"<https://a.example/p>; rel="prev NEXT""#),
        Ok(Some("https://a.example/p".into()))
    );
    // A comma inside the target is part of it, not a separator.
    assert_eq!(
        next_link(r#"<https://a.example/p?ids=1,2>; title="a, b; c"; rel="next""#),
        Ok(Some("https://a.example/p?ids=1,2".into()))
    );
    // Only the first rel counts (RFC 8288 §3.3).
    assert_eq!(
        next_link(r#"<https://a.example/l>; rel="last"; rel="next""#),
        Ok(None)
    );
    assert_eq!(next_link(""), Ok(None));
    assert_eq!(next_link(" , "), Ok(None));
    for malformed in [
        "https://a.example/x; rel=next",
        "<https://a.example/x; rel=next",
        "<https://a.example/x> rel=next",
        "<https://a.example/x>; =next",
        "<https://a.example/x>; rel=",
        "<https://a.example/x>; rel=\"next",
        "<https://a.example/ x>; rel=next",
        "<https://a.example/x>; rel=\"n\u{7}\"",
    ] {
        assert!(next_link(malformed).is_err(), "{malformed:?}");
    }
    // Two different next links: which one would be a guess.
    assert!(next_link("<https://a.example/1>; rel=next, <https://a.example/2>; rel=next").is_err());
}

fn target() -> impl Strategy<Value = String> {
    "https://[a-z]{1,8}\\.example/[a-zA-Z0-9/_.,;=&?%-]{0,30}"
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,10}"
}

/// A quoted-string's content: visible ASCII, spaces and tabs, quotes and backslashes.
fn quoted() -> impl Strategy<Value = String> {
    "[ -~\t]{0,16}"
}

fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn formatted_links_parse_back(
        links in prop::collection::vec(
            (target(), prop::collection::vec(token(), 0..3), prop::collection::vec((token(), quoted()), 0..3), any::<bool>()),
            0..5,
        ),
    ) {
        let mut header = Vec::new();
        for (target, rels, params, quote_rel) in &links {
            let mut value = format!("<{target}>");
            for (name, param) in params {
                // Other parameters, never named rel (the first rel is the one counted).
                if name.eq_ignore_ascii_case("rel") {
                    continue;
                }
                value.push_str(&format!(" ;{name}={}", quote(param)));
            }
            if !rels.is_empty() {
                let joined = rels.join(" ");
                let rel = if *quote_rel || rels.len() > 1 { quote(&joined) } else { joined };
                value.push_str(&format!("; rel={rel}"));
            }
            header.push(value);
        }
        let parsed = parse_link_header(&header.join(", ")).expect("well-formed parses");
        prop_assert_eq!(parsed.len(), links.len());
        for (link, (target, rels, _, _)) in parsed.iter().zip(&links) {
            prop_assert_eq!(&link.target, target);
            let lower: Vec<String> = rels.iter().map(|r| r.to_ascii_lowercase()).collect();
            prop_assert_eq!(&link.rels, &lower);
        }
    }

    #[test]
    fn any_text_parses_or_fails_without_panicking(text in "\\PC{0,80}") {
        if let Ok(links) = parse_link_header(&text) {
            for link in links {
                // A parsed target never holds the characters that end or split one.
                prop_assert!(!link.target.contains(['<', '>', ' ']));
            }
        }
    }

    #[test]
    fn a_next_link_is_followed_only_on_the_base_origin(host in "[a-z]{1,10}", path in "[a-z/]{0,12}") {
        let base = url("https://api.github.com");
        let request = url("https://api.github.com/user/repos");
        let header = format!("<https://{host}.example/{path}>; rel=next");
        let next = next_request(scheme("github"), &base, &request, Some(&header), &json!([]));
        prop_assert!(matches!(next, Err(PaginationError::ForeignLink(_))));
    }
}

#[test]
fn every_catalog_scheme_has_its_provider_test_here() {
    let tested = [
        "slack",
        "gmail",
        "hubspot",
        "asana",
        "github",
        "stripe",
        "shopify",
        "pipedrive",
        "stripe-connect",
    ];
    let declared: Vec<&str> = Catalog::embedded()
        .expect("catalog")
        .providers()
        .filter(|provider| provider.pagination.is_some())
        .map(|provider| provider.id.as_str())
        .collect();
    for id in &declared {
        assert!(
            tested.contains(id),
            "{id} declares [pagination]: add a test of its documented response here"
        );
    }
    assert_eq!(declared.len(), tested.len(), "{declared:?}");
}
