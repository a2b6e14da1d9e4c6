//! HubSpot → [`PipelineItem`] (and pass-through for other objects' events).
//!
//! - `hubspot.deal`: the CRM v3 deal object
//!   (<https://developers.hubspot.com/docs/api-reference/crm-deals-v3/guide>) as returned
//!   by `GET /crm/v3/objects/deals/{id}`, or a `{results:[…]}` page of them: `id`,
//!   `createdAt`, `updatedAt`, `archived`, and `properties`, whose values are all strings
//!   (or null): `dealname`, `amount`, `deal_currency_code`, `dealstage`, `pipeline`,
//!   `closedate` (ISO or epoch milliseconds), `hubspot_owner_id`,
//!   `hs_deal_stage_probability` (0–1), `hs_is_closed`, `hs_is_closed_won`,
//!   `hs_is_closed_lost`, `createdate`, `hs_lastmodifieddate`.
//! - `hubspot.webhook`: a webhook v3 delivery, an array of events
//!   (<https://developers.hubspot.com/docs/api/webhooks#webhook-payloads>) with
//!   `eventId`, `subscriptionType` (`deal.creation`, `deal.propertyChange`,
//!   `deal.deletion`, `deal.restore`, `deal.merge`, … or the generic `object.*` with
//!   `objectTypeId` `0-3` for deals), `objectId`, `portalId`, `occurredAt` (epoch ms),
//!   `propertyName`/`propertyValue`. Deal events other than deletions carry an id (and at
//!   most one property), so they become [`FetchRequest`]s; a deletion becomes a partial
//!   deleted record; events about other objects pass through. HubSpot documents that
//!   `eventId` is not guaranteed unique, so the delivery is deduplicated on its body hash
//!   (see the catalog) and `eventId` is only informative.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, meta,
    models::{ChangeKind, FetchRequest, Model, PipelineItem, PipelineStatus, ProviderEvent},
    read::{self, NumberOrString},
};

pub(crate) const DEAL: Adapter = Adapter {
    name: "hubspot.deal",
    mapping_version: 1,
};

pub(crate) const WEBHOOK: Adapter = Adapter {
    name: "hubspot.webhook",
    mapping_version: 1,
};

/// HubSpot's object type id for deals (generic `object.*` subscriptions).
const DEAL_OBJECT_TYPE_ID: &str = "0-3";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Deal {
    #[serde(default, deserialize_with = "read::opt_id")]
    id: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, Option<String>>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    archived: bool,
}

pub(crate) fn deal(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(DEAL, raw.body)?;
    let deals = match value {
        Value::Object(mut map) if map.contains_key("results") => match map.remove("results") {
            Some(Value::Array(results)) => results,
            _ => {
                return Err(read::invalid(DEAL, "results", "is not an array"));
            }
        },
        other => vec![other],
    };
    let items = deals
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let deal: Deal = read::typed(DEAL, "a HubSpot CRM v3 deal object", value)?;
            map_deal(raw, deal, index).map(Normalized::PipelineItem)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, None))
}

fn map_deal(raw: &RawEvent<'_>, deal: Deal, index: usize) -> Result<PipelineItem, NormalizeError> {
    let prop = |name: &str| {
        deal.properties
            .get(name)
            .cloned()
            .flatten()
            .filter(|v| !v.trim().is_empty())
    };
    let id = read::required_str(DEAL, "id", deal.id.clone().or_else(|| prop("hs_object_id")))?;
    let field = |name: &str| {
        if index == 0 {
            name.to_owned()
        } else {
            format!("results[{index}].{name}")
        }
    };
    let updated = read::date(DEAL, &field("updatedAt"), deal.updated_at.as_deref())?;
    let modified = match updated {
        Some(t) => Some(t),
        None => read::date(
            DEAL,
            &field("properties.hs_lastmodifieddate"),
            prop("hs_lastmodifieddate").as_deref(),
        )?,
    };
    let created = match read::date(DEAL, &field("createdAt"), deal.created_at.as_deref())? {
        Some(t) => Some(t),
        None => read::date(
            DEAL,
            &field("properties.createdate"),
            prop("createdate").as_deref(),
        )?,
    };
    let amount = prop("amount")
        .map(|a| decimal(DEAL, &field("properties.amount"), a))
        .transpose()?;
    let probability = prop("hs_deal_stage_probability")
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| p.is_finite())
                .ok_or_else(|| {
                    read::invalid(
                        DEAL,
                        &field("properties.hs_deal_stage_probability"),
                        "is not a number",
                    )
                })
        })
        .transpose()?;
    let flag = |name: &str| prop(name).map(|v| v.trim().eq_ignore_ascii_case("true"));
    let status = match (
        flag("hs_is_closed_won"),
        flag("hs_is_closed_lost"),
        flag("hs_is_closed"),
    ) {
        (Some(true), _, _) => Some(PipelineStatus::Won),
        (_, Some(true), _) | (Some(false), _, Some(true)) => Some(PipelineStatus::Lost),
        (_, _, Some(false)) => Some(PipelineStatus::Open),
        _ => None,
    };
    let change = if deal.archived {
        ChangeKind::Deleted
    } else {
        ChangeKind::Snapshot
    };
    Ok(PipelineItem {
        meta: meta(raw, DEAL, id, change, modified, true),
        name: prop("dealname"),
        amount,
        currency: prop("deal_currency_code"),
        stage: prop("dealstage"),
        pipeline: prop("pipeline"),
        status,
        probability,
        close_at: read::date(
            DEAL,
            &field("properties.closedate"),
            prop("closedate").as_deref(),
        )?,
        owner_id: prop("hubspot_owner_id"),
        account_id: None,
        created_at: created,
    })
}

/// Keeps a decimal amount as text after checking it is one (`-12`, `1500.00`).
pub(crate) fn decimal(
    adapter: Adapter,
    field: &str,
    text: String,
) -> Result<String, NormalizeError> {
    let trimmed = text.trim();
    let unsigned = trimmed.strip_prefix('-').unwrap_or(trimmed);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let ok = !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(read::invalid(adapter, field, "is not a decimal number"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookEvent {
    #[serde(default)]
    event_id: Option<NumberOrString>,
    #[serde(default)]
    subscription_type: Option<String>,
    #[serde(default)]
    object_id: Option<NumberOrString>,
    #[serde(default)]
    object_type_id: Option<String>,
    #[serde(default)]
    portal_id: Option<NumberOrString>,
    #[serde(default)]
    occurred_at: Option<NumberOrString>,
    #[serde(default)]
    primary_object_id: Option<NumberOrString>,
}

pub(crate) fn webhook(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(WEBHOOK, raw.body)?;
    let Value::Array(events) = value else {
        return Err(NormalizeError::InvalidBody {
            adapter: WEBHOOK.name,
            expected: "a HubSpot webhook v3 array of events",
            detail: "the top level is not an array".to_owned(),
        });
    };
    let mut items = Vec::with_capacity(events.len());
    for (index, value) in events.into_iter().enumerate() {
        let event: WebhookEvent =
            read::typed(WEBHOOK, "a HubSpot webhook v3 event", value.clone())?;
        let field = |name: &str| format!("[{index}].{name}");
        let subscription_type =
            read::required_str(WEBHOOK, &field("subscriptionType"), event.subscription_type)?;
        let occurred = read::millis(WEBHOOK, &field("occurredAt"), event.occurred_at.as_ref())?;
        let event_id = event
            .event_id
            .map(NumberOrString::into_string)
            .unwrap_or_else(|| read::sha256_of_value(&value));
        let (object, action) = subscription_type
            .split_once('.')
            .unwrap_or((subscription_type.as_str(), ""));
        let is_deal = object == "deal"
            || (object == "object" && event.object_type_id.as_deref() == Some(DEAL_OBJECT_TYPE_ID));
        let deal_action = match action {
            "creation" => Some((ChangeKind::Created, Some(CREATION))),
            "propertyChange" => Some((ChangeKind::Updated, Some(PROPERTY_CHANGE))),
            "restore" => Some((ChangeKind::Restored, Some(RESTORE))),
            "merge" => Some((ChangeKind::Updated, Some(MERGE))),
            "deletion" => Some((ChangeKind::Deleted, None)),
            _ => None,
        };
        let item = match (is_deal, deal_action) {
            (true, Some((change, fetch_reason))) => {
                let object_id = match (action, event.primary_object_id) {
                    ("merge", Some(primary)) => Some(primary),
                    _ => event.object_id,
                };
                let object_id =
                    read::required(WEBHOOK, &field("objectId"), object_id)?.into_string();
                let mut meta = meta(raw, WEBHOOK, object_id, change, occurred, false);
                meta.provider_event_id = Some(event_id);
                match fetch_reason {
                    Some(reason) => Normalized::NeedsFetch(FetchRequest {
                        meta,
                        model: Model::PipelineItem,
                        resource: "deal".to_owned(),
                        account: event.portal_id.map(NumberOrString::into_string),
                        reason,
                    }),
                    None => Normalized::PipelineItem(PipelineItem {
                        meta,
                        name: None,
                        amount: None,
                        currency: None,
                        stage: None,
                        pipeline: None,
                        status: None,
                        probability: None,
                        close_at: None,
                        owner_id: None,
                        account_id: None,
                        created_at: None,
                    }),
                }
            }
            _ => {
                let mut meta = meta(
                    raw,
                    WEBHOOK,
                    event_id.clone(),
                    read::change_from_verb(action),
                    occurred,
                    true,
                );
                meta.provider_event_id = Some(event_id);
                Normalized::ProviderEvent(ProviderEvent {
                    meta,
                    event_type: Some(subscription_type.clone()),
                    api_version: None,
                    raw: value,
                })
            }
        };
        items.push(item);
    }
    Ok((items, None))
}

const CREATION: &str = "HubSpot deal.creation events carry only the deal id";
const PROPERTY_CHANGE: &str =
    "HubSpot deal.propertyChange events carry one property, not the deal: fetch the deal";
const RESTORE: &str = "HubSpot deal.restore events carry only the deal id";
const MERGE: &str = "HubSpot deal.merge events carry only ids: fetch the surviving deal";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_checked_and_kept_as_text() {
        for ok in ["0", "1500.00", "-12.5", " 7 "] {
            assert!(decimal(DEAL, "amount", ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in ["", "1e3", "12,50", "1.", ".5", "abc", "1.2.3"] {
            assert!(decimal(DEAL, "amount", bad.to_owned()).is_err(), "{bad}");
        }
    }
}
