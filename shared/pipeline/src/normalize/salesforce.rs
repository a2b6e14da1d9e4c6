//! Salesforce Opportunity → [`PipelineItem`].
//!
//! `salesforce.opportunity` accepts three documented shapes:
//! - the Opportunity sObject from the REST API
//!   (<https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunity.htm>,
//!   `GET /services/data/vXX.X/sobjects/Opportunity/{id}`): `attributes{type,url}`, `Id`,
//!   `Name`, `Amount`, `CurrencyIsoCode` (multi-currency orgs), `StageName`,
//!   `Probability` (percent), `CloseDate` (`YYYY-MM-DD`), `IsClosed`, `IsWon`, `OwnerId`,
//!   `AccountId`, `IsDeleted`, `CreatedDate`, `LastModifiedDate` and `SystemModstamp`
//!   (`2024-01-02T03:04:05.000+0000`). The API version in `attributes.url` is reported;
//! - a SOQL query page `{totalSize, done, records:[…]}` of them;
//! - an `OpportunityChangeEvent` from Change Data Capture
//!   (<https://developer.salesforce.com/docs/atlas.en-us.change_data_capture.meta/change_data_capture/cdc_event_fields_header.htm>),
//!   bare, as `{payload, event}` or as the CometD message `{data:{payload, event:{replayId}}}`:
//!   the `ChangeEventHeader` (`entityName`, `recordIds`, `changeType`, `nulledFields`,
//!   `commitTimestamp` in epoch ms, `transactionKey`, `sequenceNumber`) plus the changed
//!   fields. One record per id in `recordIds`; `UPDATE` records are partial; gap and
//!   overflow events carry no field values and become [`FetchRequest`]s.

use serde::Deserialize;
use serde_json::{Number, Value};

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, dates, meta,
    models::{ChangeKind, FetchRequest, Model, PipelineItem, PipelineStatus},
    read::{self, NumberOrString},
};

pub(crate) const OPPORTUNITY: Adapter = Adapter {
    name: "salesforce.opportunity",
    mapping_version: 1,
};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Opportunity {
    #[serde(rename = "attributes")]
    attributes: Option<Attributes>,
    id: Option<String>,
    name: Option<String>,
    amount: Option<Number>,
    currency_iso_code: Option<String>,
    stage_name: Option<String>,
    probability: Option<f64>,
    close_date: Option<NumberOrString>,
    is_closed: Option<bool>,
    is_won: Option<bool>,
    owner_id: Option<String>,
    account_id: Option<String>,
    is_deleted: Option<bool>,
    created_date: Option<NumberOrString>,
    last_modified_date: Option<NumberOrString>,
    system_modstamp: Option<NumberOrString>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct Attributes {
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ChangeEventHeader {
    entity_name: Option<String>,
    #[serde(deserialize_with = "read::null_default")]
    record_ids: Vec<String>,
    change_type: Option<String>,
    #[serde(deserialize_with = "read::null_default")]
    nulled_fields: Vec<String>,
    commit_timestamp: Option<i64>,
    transaction_key: Option<String>,
    sequence_number: Option<i64>,
}

pub(crate) fn opportunity(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(OPPORTUNITY, raw.body)?;
    if let Some((payload, replay_id)) = change_event(&value) {
        return change_data_capture(raw, payload.clone(), replay_id);
    }
    let records = match value {
        Value::Object(mut map) if map.contains_key("records") => match map.remove("records") {
            Some(Value::Array(records)) => records,
            _ => return Err(read::invalid(OPPORTUNITY, "records", "is not an array")),
        },
        other => vec![other],
    };
    let mut version = None;
    let mut items = Vec::with_capacity(records.len());
    for (index, value) in records.into_iter().enumerate() {
        let prefix = if index == 0 {
            String::new()
        } else {
            format!("records[{index}].")
        };
        let opportunity: Opportunity =
            read::typed(OPPORTUNITY, "a Salesforce Opportunity sObject", value)?;
        if let Some(attributes) = &opportunity.attributes {
            if let Some(kind) = attributes.kind.as_deref()
                && kind != "Opportunity"
            {
                return Err(NormalizeError::Unsupported {
                    adapter: OPPORTUNITY.name,
                    reason: format!("{prefix}attributes.type is `{kind}`, not `Opportunity`"),
                });
            }
            if version.is_none() {
                version = attributes.url.as_deref().and_then(api_version);
            }
        }
        let id = read::required_str(OPPORTUNITY, &format!("{prefix}Id"), opportunity.id.clone())?;
        let change = if opportunity.is_deleted == Some(true) {
            ChangeKind::Deleted
        } else {
            ChangeKind::Snapshot
        };
        let modified = match datetime(&prefix, "LastModifiedDate", &opportunity.last_modified_date)?
        {
            Some(t) => Some(t),
            None => datetime(&prefix, "SystemModstamp", &opportunity.system_modstamp)?,
        };
        let meta = meta(raw, OPPORTUNITY, id, change, modified, true);
        items.push(Normalized::PipelineItem(map_fields(
            meta,
            &prefix,
            opportunity,
        )?));
    }
    Ok((items, version))
}

/// `60.0` from `/services/data/v60.0/sobjects/Opportunity/006…`.
fn api_version(url: &str) -> Option<String> {
    let rest = url.split("/services/data/v").nth(1)?;
    let version = rest.split('/').next()?;
    (!version.is_empty()).then(|| version.to_owned())
}

/// The object holding `ChangeEventHeader` (bare, `payload`, or `data.payload`) and the
/// replay id when the envelope has one.
fn change_event(value: &Value) -> Option<(&Value, Option<String>)> {
    let replay = |event: Option<&Value>| {
        event
            .and_then(|e| e.get("replayId"))
            .and_then(|id| match id {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
    };
    if value.get("ChangeEventHeader").is_some() {
        return Some((value, None));
    }
    if let Some(payload) = value.get("payload")
        && payload.get("ChangeEventHeader").is_some()
    {
        return Some((payload, replay(value.get("event"))));
    }
    let data = value.get("data")?;
    let payload = data.get("payload")?;
    payload
        .get("ChangeEventHeader")
        .map(|_| (payload, replay(data.get("event"))))
}

fn change_data_capture(
    raw: &RawEvent<'_>,
    payload: Value,
    replay_id: Option<String>,
) -> Result<Adapted, NormalizeError> {
    let header_value = payload
        .get("ChangeEventHeader")
        .cloned()
        .unwrap_or_default();
    let header: ChangeEventHeader =
        read::typed(OPPORTUNITY, "a Salesforce ChangeEventHeader", header_value)?;
    let entity = read::required_str(
        OPPORTUNITY,
        "ChangeEventHeader.entityName",
        header.entity_name,
    )?;
    if entity != "Opportunity" {
        return Err(NormalizeError::Unsupported {
            adapter: OPPORTUNITY.name,
            reason: format!("change event is for `{entity}`, not `Opportunity`"),
        });
    }
    let change_type = read::required_str(
        OPPORTUNITY,
        "ChangeEventHeader.changeType",
        header.change_type,
    )?;
    let committed = read::millis(
        OPPORTUNITY,
        "ChangeEventHeader.commitTimestamp",
        header.commit_timestamp.map(NumberOrString::Number).as_ref(),
    )?;
    let event_id = replay_id
        .or_else(|| match (&header.transaction_key, header.sequence_number) {
            (Some(key), Some(sequence)) => Some(format!("{key}:{sequence}")),
            _ => None,
        })
        .or_else(|| raw.event_id.map(str::to_owned));
    let fields: Opportunity = read::typed(OPPORTUNITY, "an OpportunityChangeEvent", payload)?;
    let cleared: Vec<&'static str> = header
        .nulled_fields
        .iter()
        .filter_map(|f| model_field(f))
        .collect();

    let mut record_ids = header.record_ids;
    if change_type == "GAP_OVERFLOW" && record_ids.is_empty() {
        record_ids.push("*".to_owned());
    }
    if record_ids.is_empty() {
        return Err(read::missing(OPPORTUNITY, "ChangeEventHeader.recordIds"));
    }

    let mut items = Vec::with_capacity(record_ids.len());
    for id in record_ids {
        let base = |change, complete| {
            let mut m = meta(raw, OPPORTUNITY, id.clone(), change, committed, complete);
            m.provider_event_id = event_id.clone();
            m
        };
        let fetch = |change, reason| {
            Normalized::NeedsFetch(FetchRequest {
                meta: base(change, false),
                model: Model::PipelineItem,
                resource: "Opportunity".to_owned(),
                account: None,
                reason,
            })
        };
        // A wildcard (`006*`) means every record of the object changed (field type
        // conversion): only a resync can follow.
        if id.ends_with('*') {
            items.push(fetch(ChangeKind::Updated, WILDCARD));
            continue;
        }
        let item = match change_type.as_str() {
            "CREATE" => {
                let meta = base(ChangeKind::Created, true);
                Normalized::PipelineItem(map_fields(meta, "", fields.clone())?)
            }
            "UPDATE" => {
                let mut meta = base(ChangeKind::Updated, false);
                meta.cleared_fields = cleared.clone();
                Normalized::PipelineItem(map_fields(meta, "", fields.clone())?)
            }
            "UNDELETE" => {
                let meta = base(ChangeKind::Restored, false);
                Normalized::PipelineItem(map_fields(meta, "", fields.clone())?)
            }
            "DELETE" => Normalized::PipelineItem(map_fields(
                base(ChangeKind::Deleted, false),
                "",
                Opportunity::default(),
            )?),
            "GAP_CREATE" => fetch(ChangeKind::Created, GAP),
            "GAP_UPDATE" => fetch(ChangeKind::Updated, GAP),
            "GAP_UNDELETE" => fetch(ChangeKind::Restored, GAP),
            "GAP_DELETE" => Normalized::PipelineItem(map_fields(
                base(ChangeKind::Deleted, false),
                "",
                Opportunity::default(),
            )?),
            "GAP_OVERFLOW" => fetch(ChangeKind::Updated, OVERFLOW),
            other => {
                return Err(read::invalid(
                    OPPORTUNITY,
                    "ChangeEventHeader.changeType",
                    format!("`{other}` is not a documented change type"),
                ));
            }
        };
        items.push(item);
    }
    Ok((items, None))
}

const GAP: &str = "Salesforce gap events carry no field values: fetch the record";
const OVERFLOW: &str =
    "Salesforce overflow event: too many changes to report; resync opportunities";
const WILDCARD: &str = "Salesforce wildcard record id: every opportunity changed; resync";

/// The model field a Salesforce field maps to (for `nulledFields`).
fn model_field(salesforce_field: &str) -> Option<&'static str> {
    Some(match salesforce_field {
        "Name" => "name",
        "Amount" => "amount",
        "CurrencyIsoCode" => "currency",
        "StageName" => "stage",
        "Probability" => "probability",
        "CloseDate" => "close_at",
        "OwnerId" => "owner_id",
        "AccountId" => "account_id",
        _ => return None,
    })
}

/// A date-time given as text (REST, CometD) or epoch milliseconds (Pub/Sub API).
fn datetime(
    prefix: &str,
    name: &str,
    value: &Option<NumberOrString>,
) -> Result<Option<dates::Timestamp>, NormalizeError> {
    let field = format!("{prefix}{name}");
    match value {
        None => Ok(None),
        Some(NumberOrString::String(s)) => read::date(OPPORTUNITY, &field, Some(s)),
        Some(number) => read::millis(OPPORTUNITY, &field, Some(number)),
    }
}

fn map_fields(
    meta: super::RecordMeta,
    prefix: &str,
    o: Opportunity,
) -> Result<PipelineItem, NormalizeError> {
    let close_at = match &o.close_date {
        None => None,
        Some(NumberOrString::String(s)) => {
            read::date(OPPORTUNITY, &format!("{prefix}CloseDate"), Some(s))?
        }
        Some(NumberOrString::Number(_)) => {
            return Err(read::invalid(
                OPPORTUNITY,
                &format!("{prefix}CloseDate"),
                "is a number; expected YYYY-MM-DD",
            ));
        }
    };
    let status = match (o.is_closed, o.is_won) {
        (Some(false), _) => Some(PipelineStatus::Open),
        (Some(true), Some(true)) | (None, Some(true)) => Some(PipelineStatus::Won),
        (Some(true), Some(false)) => Some(PipelineStatus::Lost),
        _ => None,
    };
    let probability = o.probability.map(|p| p / 100.0);
    Ok(PipelineItem {
        meta,
        name: read::non_empty(o.name),
        amount: o.amount.map(|a| a.to_string()),
        currency: read::non_empty(o.currency_iso_code),
        stage: read::non_empty(o.stage_name),
        pipeline: None,
        status,
        probability,
        close_at,
        owner_id: read::non_empty(o.owner_id),
        account_id: read::non_empty(o.account_id),
        created_at: datetime(prefix, "CreatedDate", &o.created_date)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_from_the_record_url() {
        assert_eq!(
            api_version("/services/data/v60.0/sobjects/Opportunity/006xx"),
            Some("60.0".to_owned())
        );
        assert_eq!(api_version("/somewhere/else"), None);
    }
}
