//! What a Junction stack is made of, read from the `template.yaml` this CLI was built
//! with: which queues `status` must find (so a missing one is reported, not silently
//! left out of the table) and what the event bus is called. Reading the template
//! instead of listing the names here keeps one source of truth: a queue added to the
//! template is expected by the next build.
//!
//! The template is SAM YAML with CloudFormation tags (`!Sub`, `!GetAtt`), which a plain
//! YAML parser refuses, and only two facts per resource are needed: its `Type:` and a
//! name of the form `!Sub ${AWS::StackName}-<suffix>`. The scan reads exactly those, at
//! the indentation the template uses for them.

/// The template the CLI was built with.
pub const TEMPLATE: &str = include_str!("../../../template.yaml");

/// A resource of the template whose physical name the template sets from the stack's
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedResource {
    /// The logical id (`IngestQueue`).
    pub logical_id: String,
    /// The resource type (`AWS::SQS::Queue`).
    pub kind: String,
    /// What follows `<stack>-` in its name (`ingest`).
    pub suffix: String,
}

impl NamedResource {
    /// Its name in the stack `stack`.
    pub fn name_in(&self, stack: &str) -> String {
        format!("{stack}-{}", self.suffix)
    }
}

/// Every resource of `template` named `!Sub ${AWS::StackName}-<suffix>` by its first
/// property of that form, in template order.
pub fn named_resources(template: &str) -> Vec<NamedResource> {
    let mut found = Vec::new();
    let mut in_resources = false;
    let mut current: Option<(String, Option<String>)> = None;
    let mut named = false;
    for line in template.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_resources = line.trim_end() == "Resources:";
            current = None;
            continue;
        }
        if !in_resources {
            continue;
        }
        // A resource: two spaces, its logical id, a colon, nothing else.
        if let Some(id) = line
            .strip_prefix("  ")
            .filter(|rest| !rest.starts_with(' '))
            .and_then(|rest| rest.trim_end().strip_suffix(':'))
        {
            current = Some((id.to_owned(), None));
            named = false;
            continue;
        }
        let Some((id, kind)) = current.as_mut() else {
            continue;
        };
        if let Some(value) = line.strip_prefix("    Type:") {
            *kind = Some(value.trim().to_owned());
            continue;
        }
        // A property: six spaces (under `Properties:`), `Name: !Sub ${AWS::StackName}-…`.
        let property = line
            .strip_prefix("      ")
            .filter(|rest| !rest.starts_with(' '))
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(_, value)| value.trim().strip_prefix("!Sub"))
            .map(|value| value.trim().trim_matches(['"', '\'']))
            .and_then(|value| value.strip_prefix("${AWS::StackName}-"));
        if let (Some(suffix), Some(kind), false) = (property, kind.as_ref(), named) {
            named = true;
            found.push(NamedResource {
                logical_id: id.clone(),
                kind: kind.clone(),
                suffix: suffix.to_owned(),
            });
        }
    }
    found
}

/// The queues of the template the CLI was built with.
pub fn expected_queues() -> Vec<NamedResource> {
    named_resources(TEMPLATE)
        .into_iter()
        .filter(|resource| resource.kind == "AWS::SQS::Queue")
        .collect()
}

/// The name of the stack's event bus (the template's `AWS::Events::EventBus`).
pub fn event_bus_name(stack: &str) -> Option<String> {
    named_resources(TEMPLATE)
        .into_iter()
        .find(|resource| resource.kind == "AWS::Events::EventBus")
        .map(|bus| bus.name_in(stack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_names_six_queues_and_a_bus() {
        let queues: Vec<(String, String)> = expected_queues()
            .into_iter()
            .map(|q| (q.logical_id, q.suffix))
            .collect();
        let mut sorted = queues.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                ("ActionsDeadLetterQueue".into(), "actions-dlq".into()),
                ("ActionsQueue".into(), "actions".into()),
                ("IngestDeadLetterQueue".into(), "ingest-dlq".into()),
                ("IngestQueue".into(), "ingest".into()),
                ("PollDeadLetterQueue".into(), "poll-dlq".into()),
                ("PollQueue".into(), "poll".into()),
            ],
            "{queues:?}"
        );
        assert_eq!(
            event_bus_name("junction-local").as_deref(),
            Some("junction-local-events")
        );
    }

    #[test]
    fn only_resource_names_count_not_other_properties_or_sections() {
        let template = "\
Parameters:
  Prefix:
    Type: String
    Default: !Sub ${AWS::StackName}-not-a-resource
Resources:
  Work:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub ${AWS::StackName}-work
      Tags:
        - Key: !Sub ${AWS::StackName}-nested-is-not-a-name
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmName: !Sub \"${AWS::StackName}-work-alarm\"
      AlarmDescription: !Sub ${AWS::StackName}-second-is-not-the-name
  Unnamed:
    Type: AWS::SQS::Queue
Outputs:
  Queue:
    Value: !Sub ${AWS::StackName}-output
";
        assert_eq!(
            named_resources(template),
            [
                NamedResource {
                    logical_id: "Work".into(),
                    kind: "AWS::SQS::Queue".into(),
                    suffix: "work".into(),
                },
                NamedResource {
                    logical_id: "Alarm".into(),
                    kind: "AWS::CloudWatch::Alarm".into(),
                    suffix: "work-alarm".into(),
                },
            ]
        );
    }
}
