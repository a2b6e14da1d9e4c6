//! The cursor of pollers that page through records ordered by a modification time and
//! filter the next pass with `>=` that time (Linear's `updatedAt`, Salesforce's
//! `SystemModstamp`): where the next pass starts, which records at exactly that time
//! were already sent (so `>=` repeats none and loses none that share the millisecond),
//! and, during a pass, the provider's page token and the newest time seen so far. The
//! watermark only moves once a pass has read every page, so the order the provider
//! returns records in does not matter.
//!
//! JSON: `{"since": "<time as the provider wrote it>"?, "seen": ["<id>", …]?, "page":
//! "<provider page token>"?, "newest": "<time>"?, "newest_ids": ["<id>", …]?}`. No
//! `since`: the first pass. `page` present: a pass is under way.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::unexpected;
use crate::{Page, PolledRecord};
use junction_outbound::CallError;

/// Reads a provider's time format.
pub(crate) type Instant = fn(&str) -> Result<OffsetDateTime, CallError>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Watermark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub newest_ids: Vec<String>,
}

impl Watermark {
    /// The stored cursor of `poller`; anything else is refused (never read as "start
    /// over").
    pub fn parse(text: &str, poller: &str) -> Result<Watermark, CallError> {
        let refused = || unexpected(&format!("stored cursor is not a {poller} cursor"));
        match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_object() => serde_json::from_value(value).map_err(|_| refused()),
            _ => Err(refused()),
        }
    }

    pub fn encode(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|_| unexpected("cursor does not encode"))
    }

    /// The records of a page this pass sends: each one's id and modification time read at
    /// the JSON pointers `id` and `at`, those the previous pass already sent at the
    /// watermark left out, the rest taken into this pass's newest.
    pub fn admit(
        &mut self,
        items: Vec<Value>,
        id: &str,
        at: &str,
        instant: Instant,
    ) -> Result<Vec<PolledRecord>, CallError> {
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let record_id = match item.pointer(id) {
                Some(Value::String(text)) if !text.is_empty() => text.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => return Err(unexpected(&format!("a record without {id}"))),
            };
            let modified = item
                .pointer(at)
                .and_then(Value::as_str)
                .ok_or_else(|| unexpected(&format!("a record without {at}")))?
                .to_owned();
            if self.already_sent(&record_id, &modified, instant)? {
                continue;
            }
            self.observe(&record_id, &modified, instant)?;
            records.push(PolledRecord {
                id: record_id,
                updated_at: modified,
                body: item,
            });
        }
        Ok(records)
    }

    /// The page of `records`: another follows at the provider's `next` page token, or,
    /// without one, the pass is complete and the watermark moves ([`Watermark::finish`]).
    pub fn into_page(
        mut self,
        records: Vec<PolledRecord>,
        next: Option<String>,
        instant: Instant,
    ) -> Result<Page, CallError> {
        let more = next.is_some();
        let cursor = match next {
            Some(next) => {
                self.page = Some(next);
                self
            }
            None => self.finish(instant)?,
        };
        Ok(Page {
            records,
            cursor: Some(cursor.encode()?),
            more,
        })
    }

    /// Whether record `id` at `at` was sent by the previous pass.
    pub fn already_sent(&self, id: &str, at: &str, instant: Instant) -> Result<bool, CallError> {
        Ok(match &self.since {
            Some(since) => instant(at)? == instant(since)? && self.seen.iter().any(|s| s == id),
            None => false,
        })
    }

    /// Takes record `id`, modified `at`, into this pass's newest.
    pub fn observe(&mut self, id: &str, at: &str, instant: Instant) -> Result<(), CallError> {
        let at_instant = instant(at)?;
        let newest = self.newest.as_deref().map(instant).transpose()?;
        match newest {
            Some(newest) if at_instant < newest => {}
            Some(newest) if at_instant == newest => {
                if !self.newest_ids.iter().any(|seen| seen == id) {
                    self.newest_ids.push(id.to_owned());
                }
            }
            _ => {
                self.newest = Some(at.to_owned());
                self.newest_ids = vec![id.to_owned()];
            }
        }
        Ok(())
    }

    /// The cursor after a pass's last page: the next pass starts at the newest time
    /// seen (or where this one started, if it saw nothing new).
    pub fn finish(self, instant: Instant) -> Result<Watermark, CallError> {
        let Some(newest) = self.newest else {
            return Ok(Watermark {
                since: self.since,
                seen: self.seen,
                ..Watermark::default()
            });
        };
        let mut seen = self.newest_ids;
        if let Some(since) = &self.since
            && instant(since)? == instant(&newest)?
        {
            for id in self.seen {
                if !seen.contains(&id) {
                    seen.push(id);
                }
            }
        }
        Ok(Watermark {
            since: Some(newest),
            seen,
            ..Watermark::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn rfc3339(text: &str) -> Result<OffsetDateTime, CallError> {
        OffsetDateTime::parse(text, &Rfc3339).map_err(|_| unexpected("time"))
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = Watermark {
            since: Some("2026-11-20T10:00:05.000Z".into()),
            seen: vec!["a".into()],
            page: Some("pos:4".into()),
            newest: Some("2026-11-20T10:00:09.000Z".into()),
            newest_ids: vec!["b".into()],
        };
        let text = cursor.encode().expect("encodes");
        assert_eq!(Watermark::parse(&text, "x").expect("parses"), cursor);
        assert!(Watermark::parse(r#"{"since": 5}"#, "x").is_err());
        assert!(Watermark::parse(r#"{"after": "x"}"#, "x").is_err());
        assert!(Watermark::parse("12345", "x").is_err());
    }

    #[test]
    fn the_watermark_moves_to_the_newest_time_and_remembers_its_ids() {
        let mut pass = Watermark {
            since: Some("2026-11-20T10:00:05.000Z".into()),
            seen: vec!["old".into()],
            ..Watermark::default()
        };
        assert!(
            pass.already_sent("old", "2026-11-20T10:00:05Z", rfc3339)
                .expect("ok")
        );
        assert!(
            !pass
                .already_sent("new", "2026-11-20T10:00:05Z", rfc3339)
                .expect("ok")
        );
        for (id, at) in [
            ("a", "2026-11-20T10:00:07.000Z"),
            ("b", "2026-11-20T10:00:09.000Z"),
            ("c", "2026-11-20T10:00:09Z"),
            ("d", "2026-11-20T10:00:08.000Z"),
        ] {
            pass.observe(id, at, rfc3339).expect("observed");
        }
        let next = pass.finish(rfc3339).expect("finished");
        assert_eq!(next.since.as_deref(), Some("2026-11-20T10:00:09.000Z"));
        assert_eq!(next.seen, ["b", "c"]);
        assert_eq!(next.page, None);

        // A pass that found nothing keeps its start.
        let idle = next.clone().finish(rfc3339).expect("finished");
        assert_eq!(idle, next);
    }
}
