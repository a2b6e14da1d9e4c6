//! `microsoft-messages`: the Outlook messages of the mailbox's Inbox (resource `message`,
//! adapter `microsoft.message`), through Microsoft Graph's delta query for messages.
//!
//! Requests (all `GET`, under the catalog's `https://graph.microsoft.com`; sources:
//! <https://learn.microsoft.com/graph/api/message-delta>,
//! <https://learn.microsoft.com/graph/delta-query-messages> and
//! <https://learn.microsoft.com/graph/delta-query-overview>, read in
//! microsoftgraph/microsoft-graph-docs-contrib):
//! - The first round: `/v1.0/me/mailFolders/inbox/messages/delta?$select=…` ("If you use
//!   any query parameter … you must specify it in the initial delta request"; `inbox` is
//!   the folder's well-known name). It "will return the resources that currently exist in
//!   the collection".
//! - Every request carries `Prefer: odata.maxpagesize=50`, "the maximum number of
//!   messages in a response" (the docs' example sends it on every request of a round).
//! - An answer is `{"value": [message…], "@odata.nextLink" | "@odata.deltaLink"}`. A
//!   next link "indicates there are more messages in the folder to get" and is requested
//!   as given ("copy and apply the URL returned from the last GET request"); a delta link
//!   "signifies that the current round of change tracking is complete" and is saved to
//!   start the next round, which returns only what changed since. The tokens "are opaque
//!   to the client": the poller keeps the whole URL. Each must stay on the API base
//!   (`junction_outbound::pagination::resolve_next`): a forged link must not get the
//!   connection's token.
//! - "Removed instances are represented by their id and an @removed object"
//!   (`{"reason": "deleted" | "changed"}`), "in the initial delta query response and in
//!   tracked (deltaLink) responses"; for a folder, a message moved out of it too.
//! - **Sync reset**: "a response code of 410 (gone) and a Location header containing a
//!   request URL with an empty $deltaToken (same as the initial query)", or, for an
//!   expired token, "a 40X-series error with error codes such as syncStateNotFound"
//!   (`resyncRequired` is the errors page's other code for it, learn.microsoft.com/graph/errors).
//!   The catalog's error rules give those codes as the failure code; on any of them the
//!   poller drops its stored link and starts a first round again (the Location URL is
//!   that same first request, so it is not followed).
//! - Replays: "the same change [can appear] in subsequent responses", and "the same item
//!   can show up anywhere in the @odata.nextLink sequence": event ids name the version,
//!   so a replay is a duplicate the consumer drops.
//!
//! Record versions: `updated_at` is the message's `lastModifiedDateTime` ("The date and
//! time the message was last changed", learn.microsoft.com/graph/api/resources/message),
//! or its `@odata.etag` where an update leaves the time out ("Updated instances are
//! represented by their id with at least the properties that have been updated"). A
//! removal is versioned `removed`: a message's id "may change if a message is moved", so
//! an id is removed once, and a repeat of the same removal is a duplicate.
//!
//! Cursor (JSON): `{"next": "<@odata.nextLink>"}` while a round is being paged,
//! `{"delta": "<@odata.deltaLink>"}` between rounds.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Api, PollTarget, unexpected};
use crate::{Page, PolledRecord, Poller};
use junction_outbound::{CallError, pagination::resolve_next};

/// The Inbox's message delta, by the folder's well-known name.
const INBOX_DELTA: &str = "/v1.0/me/mailFolders/inbox/messages/delta";
/// The message properties the `microsoft.message` adapter reads, plus what identifies
/// a version (`id` always comes). The catalog's contract read of `microsoft` `message`
/// (`junction_catalog::CONTRACT_READS`) selects the same, so the contract check sees
/// the shape this poller reads.
const SELECT: &str = "subject,from,toRecipients,ccRecipients,receivedDateTime,lastModifiedDateTime,conversationId,bodyPreview,isRead,isDraft,categories,parentFolderId,internetMessageId";
/// Messages per page: one call, well inside the worker's page budget at the catalog's
/// 4 requests/s.
const PREFER: &str = "odata.maxpagesize=50";

/// Polls the Inbox's messages with Graph's delta query.
#[derive(Debug)]
pub struct MicrosoftMessages {
    api: Api,
}

impl MicrosoftMessages {
    pub fn new(api: Api) -> Self {
        MicrosoftMessages { api }
    }
}

/// The stored cursor (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Cursor {
    /// The rest of the current round.
    Next(String),
    /// The next round's start.
    Delta(String),
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, CallError> {
        serde_json::from_str(text)
            .map_err(|_| unexpected("stored cursor is not a microsoft-messages cursor"))
    }

    fn encode(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|_| unexpected("cursor does not serialize"))
    }

    fn link(&self) -> &str {
        match self {
            Cursor::Next(link) | Cursor::Delta(link) => link,
        }
    }
}

/// One delta page.
#[derive(Debug, Deserialize)]
struct DeltaPage {
    value: Vec<Value>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(default, rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// The documented signals that the stored link is dead and the sync must start over.
fn sync_reset(err: &CallError) -> bool {
    matches!(
        err,
        CallError::Failed(failure)
            if matches!(failure.code.as_str(), "http_410" | "syncStateNotFound" | "resyncRequired")
    )
}

/// A delta item as a polled record: a message, or a removal.
fn record(item: Value) -> Result<PolledRecord, CallError> {
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| unexpected("a delta item without id"))?
        .to_owned();
    let updated_at = if item.get("@removed").is_some() {
        "removed".to_owned()
    } else {
        ["lastModifiedDateTime", "@odata.etag"]
            .iter()
            .find_map(|field| item.get(*field).and_then(Value::as_str))
            .filter(|version| !version.is_empty())
            .ok_or_else(|| {
                unexpected("a delta message without lastModifiedDateTime or @odata.etag")
            })?
            .to_owned()
    };
    Ok(PolledRecord {
        id,
        updated_at,
        body: item,
    })
}

impl MicrosoftMessages {
    /// `GET` of `url` with the page size preference.
    async fn delta(&self, target: &PollTarget<'_>, url: url::Url) -> Result<Value, CallError> {
        self.api
            .get_link(target, "messages.delta", url, &[("Prefer", PREFER)])
            .await
    }

    /// The first request of a round from scratch.
    fn first_url(target: &PollTarget<'_>) -> Result<url::Url, CallError> {
        let mut url = url::Url::parse(&format!("{}{INBOX_DELTA}", target.base_url))
            .map_err(|_| unexpected("API URL does not parse"))?;
        url.query_pairs_mut().append_pair("$select", SELECT);
        Ok(url)
    }

    /// A link Graph handed out, checked to stay on the connection's API base.
    fn checked(target: &PollTarget<'_>, link: &str) -> Result<url::Url, CallError> {
        let base = url::Url::parse(target.base_url)
            .map_err(|_| unexpected("API base URL does not parse"))?;
        resolve_next(&base, &base, link)
            .map_err(|_| unexpected("a delta link that leaves the Graph API base"))
    }
}

#[async_trait]
impl Poller for MicrosoftMessages {
    fn resource(&self) -> &str {
        "message"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let mut stored = cursor.map(Cursor::parse).transpose()?;
        let answer = match &stored {
            None => self.delta(target, Self::first_url(target)?).await?,
            Some(cursor) => {
                let url = Self::checked(target, cursor.link())?;
                match self.delta(target, url).await {
                    Ok(answer) => answer,
                    Err(err) if sync_reset(&err) => {
                        // A new round: its links are not repeats of the dead one.
                        stored = None;
                        tracing::warn!(
                            provider = %target.job.provider,
                            connection = %target.job.connection,
                            reason = %err,
                            "Graph no longer has the delta state; the Inbox syncs from scratch"
                        );
                        self.delta(target, Self::first_url(target)?).await?
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        let page: DeltaPage = serde_json::from_value(answer)
            .map_err(|_| unexpected("a delta answer without a value list"))?;
        let next = match (page.next_link, page.delta_link) {
            (Some(next), _) if !next.is_empty() => {
                if matches!(&stored, Some(Cursor::Next(sent)) if *sent == next) {
                    return Err(unexpected("Graph repeated the next link it was sent"));
                }
                Self::checked(target, &next)?;
                Cursor::Next(next)
            }
            (_, Some(delta)) if !delta.is_empty() => {
                Self::checked(target, &delta)?;
                Cursor::Delta(delta)
            }
            _ => {
                return Err(unexpected(
                    "a delta answer with neither next nor delta link",
                ));
            }
        };
        let records = page
            .value
            .into_iter()
            .map(record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            records,
            more: matches!(next, Cursor::Next(_)),
            cursor: Some(next.encode()?),
        })
    }
}

#[cfg(test)]
#[path = "microsoft_tests.rs"]
mod tests;
