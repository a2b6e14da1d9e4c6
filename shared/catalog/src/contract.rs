//! Contract requests: what a contract check sends a provider to see whether its API
//! still answers in the shape Junction's adapters were written against (issue 30).
//!
//! For each provider Junction normalizes, one read per normalized resource, besides the
//! connection test request of its `[api]` section. Each read asks for the record in the
//! form the adapter maps, with the fields the recorded schema has (`contracts/` in the
//! repository): a list call when one returns whole records, else a list call for an id
//! and a get of it. `record` is the JSON pointer of the record in the (last) response.
//!
//! Paths are relative to the provider's `[api] base_url`; `{api_version}` is its pinned
//! version and `{id}` the id the first step found. Everything here is a read: a contract
//! check never changes anything at the provider.

/// A read that finds an id first (`GET /workspaces?limit=1` → `/data/0/gid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractStep {
    pub method: &'static str,
    pub path: &'static str,
    /// The JSON pointer of the id in the answer.
    pub id: &'static str,
}

/// One read per normalized resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractRead {
    /// The polled resource as the normalizer names it (`deal`, `thread`).
    pub resource: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    /// A JSON body (GraphQL), or none.
    pub body: Option<&'static str>,
    /// A read to run first, for the id in `path`.
    pub first: Option<ContractStep>,
    /// The JSON pointer of the record in the answer (`""`: the whole answer).
    pub record: &'static str,
}

/// The providers Junction normalizes, each with its contract reads.
pub const CONTRACT_READS: &[(&str, &[ContractRead])] = &[
    (
        "gmail",
        &[ContractRead {
            resource: "thread",
            method: "GET",
            path: "/gmail/v1/users/me/threads/{id}?format=full",
            body: None,
            first: Some(ContractStep {
                method: "GET",
                path: "/gmail/v1/users/me/threads?maxResults=1",
                id: "/threads/0/id",
            }),
            record: "",
        }],
    ),
    (
        "slack",
        &[ContractRead {
            resource: "conversation",
            method: "POST",
            path: "/conversations.info?channel={id}&include_num_members=true",
            body: None,
            first: Some(ContractStep {
                method: "POST",
                path: "/conversations.list?limit=1&exclude_archived=true",
                id: "/channels/0/id",
            }),
            record: "/channel",
        }],
    ),
    (
        "hubspot",
        &[ContractRead {
            resource: "deal",
            method: "GET",
            path: "/crm/v3/objects/deals?limit=1&properties=amount,closedate,createdate,dealname,dealstage,pipeline,hs_lastmodifieddate,hs_object_id,hubspot_owner_id,deal_currency_code,hs_deal_stage_probability,hs_is_closed,hs_is_closed_won,hs_is_closed_lost,description",
            body: None,
            first: None,
            record: "/results/0",
        }],
    ),
    (
        "salesforce",
        &[ContractRead {
            resource: "opportunity",
            method: "GET",
            path: "/services/data/v{api_version}/query?q=SELECT+FIELDS(STANDARD)+FROM+Opportunity+LIMIT+1",
            body: None,
            first: None,
            record: "/records/0",
        }],
    ),
    (
        "asana",
        &[ContractRead {
            resource: "task",
            method: "GET",
            path: "/tasks?assignee=me&workspace={id}&limit=1&opt_fields=resource_type,name,resource_subtype,approval_status,assignee_status,completed,completed_at,completed_by,created_at,due_at,due_on,html_notes,notes,modified_at,start_at,start_on,assignee,assignee_section,custom_fields,followers,parent,projects,memberships,tags,workspace,permalink_url",
            body: None,
            first: Some(ContractStep {
                method: "GET",
                path: "/workspaces?limit=1",
                id: "/data/0/gid",
            }),
            record: "/data/0",
        }],
    ),
    (
        "linear",
        &[ContractRead {
            resource: "issue",
            method: "POST",
            path: "/graphql",
            body: Some(
                r#"{"query":"query JunctionContract { issues(first: 1, includeArchived: true) { nodes { id createdAt updatedAt archivedAt title description priority startedAt completedAt canceledAt dueDate trashed priorityLabel identifier url assignee { id name email } state { id name type } team { id key name } labels { nodes { id name } } project { id name } parent { id identifier } } } }"}"#,
            ),
            first: None,
            record: "/data/issues/nodes/0",
        }],
    ),
    (
        "microsoft",
        &[ContractRead {
            resource: "message",
            method: "GET",
            path: "/v1.0/me/mailFolders/inbox/messages/delta?$select=subject,from,toRecipients,ccRecipients,receivedDateTime,lastModifiedDateTime,conversationId,bodyPreview,isRead,isDraft,categories,parentFolderId,internetMessageId",
            body: None,
            first: None,
            record: "/value/0",
        }],
    ),
];

/// The contract reads of `provider` (empty for a provider Junction does not normalize).
pub fn contract_reads(provider: &str) -> &'static [ContractRead] {
    CONTRACT_READS
        .iter()
        .find(|(id, _)| *id == provider)
        .map(|(_, reads)| *reads)
        .unwrap_or_default()
}

/// The directory name of a pinned API version in `contracts/<provider>/`: the version,
/// or `unversioned` for an API without one (Slack, Linear).
pub fn version_dir(api_version: Option<&str>) -> &str {
    api_version
        .map(str::trim)
        .filter(|version| !version.is_empty())
        .unwrap_or("unversioned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_read_is_a_path_with_a_pointer_and_reads_only() {
        for (provider, reads) in CONTRACT_READS {
            assert!(!reads.is_empty(), "{provider}");
            for read in *reads {
                assert!(read.path.starts_with('/'), "{provider}: {}", read.path);
                assert!(read.record.is_empty() || read.record.starts_with('/'));
                assert!(matches!(read.method, "GET" | "POST"), "{provider}");
                // A POST is a read only where the provider says so: Slack's Web API
                // methods and Linear's GraphQL query.
                if read.method == "POST" {
                    assert!(matches!(*provider, "slack" | "linear"), "{provider}");
                }
                assert_eq!(
                    read.path.contains("{id}"),
                    read.first.is_some(),
                    "{provider}"
                );
                if let Some(body) = read.body {
                    let parsed: serde_json::Value =
                        serde_json::from_str(body).expect("a JSON body");
                    assert!(
                        parsed["query"]
                            .as_str()
                            .is_some_and(|q| q.starts_with("query ")),
                        "a GraphQL query, never a mutation"
                    );
                }
            }
        }
        assert_eq!(contract_reads("stripe"), &[]);
        assert_eq!(contract_reads("hubspot")[0].resource, "deal");
        assert_eq!(version_dir(None), "unversioned");
        assert_eq!(version_dir(Some("2026-03")), "2026-03");
    }
}
