//! `junction events`: what the stack publishes on its event bus, from a terminal.
//!
//! EventBridge keeps nothing for a reader who comes later, so the CLI subscribes a queue
//! of its own, as a product would: a rule named [`RULE`] on the stack's bus matching
//! every `junction/…` source, delivering to the SQS queue [`tap_queue_name`]. It is
//! created on the first `junction events` and kept, so what is published between two
//! runs waits there (SQS's default 4 days); `--unsubscribe` removes both. The queue is
//! named apart from the stack's (`<stack>-…`), and `status` and `dlq` leave it out.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};

/// The rule the CLI adds to the stack's bus.
pub const RULE: &str = "junction-cli-events";

/// The CloudEvents Junction publishes: `source` is `junction/<provider>`.
pub const PATTERN: &str = r#"{"source":[{"prefix":"junction/"}]}"#;

/// The queue the rule delivers to, for the stack `stack`.
pub fn tap_queue_name(stack: &str) -> String {
    format!("junction-cli-events-{stack}")
}

/// Why the bus could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("the template names no event bus")]
    NoBusInTemplate,
    #[error("the stack has no event bus {0} (is the stack name right?)")]
    NoBus(String),
    #[error("SQS")]
    Sqs(#[source] Box<aws_sdk_sqs::Error>),
    #[error("EventBridge")]
    EventBridge(#[source] Box<aws_sdk_eventbridge::Error>),
    #[error("the event bus delivered a message that is not an EventBridge event: {0}")]
    NotAnEvent(String),
    #[error("EventBridge refused the queue as the rule's target: {0}")]
    TargetRefused(String),
    #[error("building the rule's target")]
    Target(#[source] aws_sdk_eventbridge::error::BuildError),
}

fn sqs_error(err: impl Into<aws_sdk_sqs::Error>) -> EventsError {
    EventsError::Sqs(Box::new(err.into()))
}

fn bus_error(err: impl Into<aws_sdk_eventbridge::Error>) -> EventsError {
    EventsError::EventBridge(Box::new(err.into()))
}

/// The subscription.
#[derive(Debug, Clone)]
pub struct Tap {
    pub bus: String,
    pub queue_name: String,
    pub queue_url: String,
    /// True when this call created it (nothing can be waiting yet).
    pub created: bool,
}

/// The stack's bus by name; [`EventsError::NoBus`] when it does not exist.
async fn stack_bus(
    events: &aws_sdk_eventbridge::Client,
    stack: &str,
) -> Result<String, EventsError> {
    let bus = crate::stack::event_bus_name(stack).ok_or(EventsError::NoBusInTemplate)?;
    match events.describe_event_bus().name(&bus).send().await {
        Ok(_) => Ok(bus),
        Err(err) => match aws_sdk_eventbridge::Error::from(err) {
            aws_sdk_eventbridge::Error::ResourceNotFoundException(_) => {
                Err(EventsError::NoBus(bus))
            }
            other => Err(bus_error(other)),
        },
    }
}

/// Subscribes the CLI's queue to the stack's bus, or finds the subscription made
/// earlier. Idempotent: each step is a create-or-update.
pub async fn subscribe(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    stack: &str,
) -> Result<Tap, EventsError> {
    let bus = stack_bus(events, stack).await?;
    let queue_name = tap_queue_name(stack);
    let existing = match sqs.get_queue_url().queue_name(&queue_name).send().await {
        Ok(output) => output.queue_url,
        Err(err) => match aws_sdk_sqs::Error::from(err) {
            aws_sdk_sqs::Error::QueueDoesNotExist(_) => None,
            other => return Err(sqs_error(other)),
        },
    };
    let targeted = match events
        .list_targets_by_rule()
        .rule(RULE)
        .event_bus_name(&bus)
        .send()
        .await
    {
        Ok(output) => output
            .targets()
            .iter()
            .any(|target| target.arn().ends_with(&format!(":{queue_name}"))),
        Err(err) => match aws_sdk_eventbridge::Error::from(err) {
            aws_sdk_eventbridge::Error::ResourceNotFoundException(_) => false,
            other => return Err(bus_error(other)),
        },
    };
    if let (Some(queue_url), true) = (existing, targeted) {
        return Ok(Tap {
            bus,
            queue_name,
            queue_url,
            created: false,
        });
    }

    let queue_url = sqs
        .create_queue()
        .queue_name(&queue_name)
        .send()
        .await
        .map_err(sqs_error)?
        .queue_url
        .unwrap_or_default();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(sqs_error)?
        .attributes
        .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let rule_arn = events
        .put_rule()
        .name(RULE)
        .event_bus_name(&bus)
        .event_pattern(PATTERN)
        .description(
            "junction events: the CLI's subscription (junction events --unsubscribe removes it)",
        )
        .state(aws_sdk_eventbridge::types::RuleState::Enabled)
        .send()
        .await
        .map_err(bus_error)?
        .rule_arn
        .unwrap_or_default();
    // EventBridge may send to the queue only for this rule.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } },
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(sqs_error)?;
    let added = events
        .put_targets()
        .rule(RULE)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("junction-cli")
                .arn(&queue_arn)
                .build()
                .map_err(EventsError::Target)?,
        )
        .send()
        .await
        .map_err(bus_error)?;
    if added.failed_entry_count > 0 {
        let detail = added
            .failed_entries()
            .iter()
            .filter_map(|entry| entry.error_message())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(EventsError::TargetRefused(detail));
    }
    Ok(Tap {
        bus,
        queue_name,
        queue_url,
        created: true,
    })
}

/// Removes the rule and the queue; what is left in the queue goes with it.
pub async fn unsubscribe(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    stack: &str,
) -> Result<(), EventsError> {
    let bus = stack_bus(events, stack).await?;
    let removed = events
        .remove_targets()
        .rule(RULE)
        .event_bus_name(&bus)
        .ids("junction-cli")
        .send()
        .await;
    match removed.map_err(aws_sdk_eventbridge::Error::from) {
        Ok(_) | Err(aws_sdk_eventbridge::Error::ResourceNotFoundException(_)) => {}
        Err(other) => return Err(bus_error(other)),
    }
    let deleted = events
        .delete_rule()
        .name(RULE)
        .event_bus_name(&bus)
        .send()
        .await;
    match deleted.map_err(aws_sdk_eventbridge::Error::from) {
        Ok(_) | Err(aws_sdk_eventbridge::Error::ResourceNotFoundException(_)) => {}
        Err(other) => return Err(bus_error(other)),
    }
    match sqs
        .get_queue_url()
        .queue_name(tap_queue_name(stack))
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)
    {
        Ok(output) => {
            sqs.delete_queue()
                .queue_url(output.queue_url.unwrap_or_default())
                .send()
                .await
                .map_err(sqs_error)?;
        }
        Err(aws_sdk_sqs::Error::QueueDoesNotExist(_)) => {}
        Err(other) => return Err(sqs_error(other)),
    }
    Ok(())
}

/// One event taken from the queue: the CloudEvent (the EventBridge event's `detail`)
/// and the receipt that deletes it once shown.
#[derive(Debug, Clone)]
pub struct Received {
    pub cloud_event: serde_json::Value,
    receipt: String,
}

/// Up to 10 events, waiting at most `wait` (capped at SQS's 20 s) for the first.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    tap: &Tap,
    wait: Duration,
) -> Result<Vec<Received>, EventsError> {
    let wait = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
    let output = sqs
        .receive_message()
        .queue_url(&tap.queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait)
        .send()
        .await
        .map_err(sqs_error)?;
    output
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|message| {
            let body = message.body.unwrap_or_default();
            let envelope: serde_json::Value =
                serde_json::from_str(&body).map_err(|_| EventsError::NotAnEvent(body.clone()))?;
            // The CloudEvent is the envelope's `detail` (an object; a string is parsed).
            let cloud_event = match &envelope["detail"] {
                serde_json::Value::String(text) => {
                    serde_json::from_str(text).unwrap_or_else(|_| envelope["detail"].clone())
                }
                serde_json::Value::Null => return Err(EventsError::NotAnEvent(body)),
                detail => detail.clone(),
            };
            Ok(Received {
                cloud_event,
                receipt: message.receipt_handle.unwrap_or_default(),
            })
        })
        .collect()
}

/// Deletes events that were shown.
pub async fn acknowledge(
    sqs: &aws_sdk_sqs::Client,
    tap: &Tap,
    shown: &[Received],
) -> Result<(), EventsError> {
    if shown.is_empty() {
        return Ok(());
    }
    let entries = shown
        .iter()
        .enumerate()
        .filter_map(|(index, event)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(&event.receipt)
                .build()
                .ok()
        })
        .collect();
    sqs.delete_message_batch()
        .queue_url(&tap.queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(sqs_error)?;
    Ok(())
}

/// How long to keep reading: until `deadline` for the first event, then while events
/// keep coming (a second's wait each), or for ever with `follow`.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub deadline: Instant,
    pub follow: bool,
}

impl Reading {
    /// How long the next receive may wait, or `None` to stop. `seen` is how many events
    /// the last receive returned.
    pub fn next_wait(&self, seen: usize, now: Instant) -> Option<Duration> {
        if self.follow {
            return Some(Duration::from_secs(20));
        }
        if seen > 0 {
            return Some(Duration::from_secs(1));
        }
        let left = self.deadline.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_queue_is_not_one_of_the_stacks_queues() {
        assert_eq!(
            tap_queue_name("junction-local"),
            "junction-cli-events-junction-local"
        );
        assert!(!tap_queue_name("junction-local").starts_with("junction-local-"));
    }

    #[test]
    fn reading_stops_at_the_deadline_unless_events_keep_coming_or_it_follows() {
        let now = Instant::now();
        let reading = Reading {
            deadline: now + Duration::from_secs(10),
            follow: false,
        };
        assert_eq!(reading.next_wait(0, now), Some(Duration::from_secs(10)));
        assert_eq!(reading.next_wait(3, now), Some(Duration::from_secs(1)));
        assert_eq!(reading.next_wait(0, now + Duration::from_secs(10)), None);
        assert_eq!(
            reading.next_wait(2, now + Duration::from_secs(30)),
            Some(Duration::from_secs(1))
        );
        let follow = Reading {
            follow: true,
            ..reading
        };
        assert_eq!(
            follow.next_wait(0, now + Duration::from_secs(60)),
            Some(Duration::from_secs(20))
        );
    }
}
