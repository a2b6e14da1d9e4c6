#!/usr/bin/env python3
"""Provision template.yaml into the local AWS emulator (moto server), offline.

The SAM template is translated with aws-sam-translator (the same transform CloudFormation
runs on `sam deploy`) and created as a CloudFormation stack in the emulator, so queues,
redrive policies, buckets, tables and function environments are the template's own.

Subcommands (all but `serve` print JSON on stdout):
  translate                 the CloudFormation the template becomes
  deploy                    create (or replace) the stack and describe what it made
  describe                  describe an existing stack
  serve [moto_server args]  run the emulator (moto server) with AWS's size limits

The emulator does not run API Gateway routes or EventBridge schedules; the local stack
reads those from the translated template itself (see `routes`, `schedules` and
`event_source_mappings` in the description). Nor does it invoke Lambda functions that
are targets of a bus rule (moto's PutEvents fails on a Lambda target): each such target
is deployed as an SQS queue instead, which moto's rule matching fills with the
EventBridge event, and the local stack invokes the function from it (`bus_rules`).
"""

import argparse
import base64
import hashlib
import io
import json
import os
import re
import sys
import time
import zipfile

import boto3
import yaml

# The translator needs a region for ARNs; the emulator answers for us-east-1.
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACT_BUCKET = "junction-local-artifacts"

# Resource types the emulator's CloudFormation cannot create. The local stack serves
# their behaviour itself from the template (routes, permissions for them, schedules).
SERVED_LOCALLY = {
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::Permission",
    "AWS::Scheduler::Schedule",
}

# Resource types the emulator's CloudFormation does not model (it has no CloudWatch alarm
# resource): created after the stack through their own API, so the template's
# definitions still reach the service that validates them.
CREATED_BY_API = {"AWS::CloudWatch::Alarm"}


def _served_locally(resource):
    """True for resources the local stack serves itself instead of the emulator.

    Event source mappings are polled by the local stack: created in the emulator, its
    Lambda would try to invoke the function on every send (and, without Docker, fail and
    bump the message's receive count). Rules that only carry a schedule are fired by the
    local stack; rules with an event pattern stay in the emulator.
    """
    if resource["Type"] in SERVED_LOCALLY:
        return True
    props = resource.get("Properties", {})
    return (resource["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in props
            and "EventPattern" not in props)


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short intrinsic tags."""


def _construct_tag(loader, tag_suffix, node):
    name = {"Ref": "Ref", "Condition": "Condition"}.get(tag_suffix, "Fn::" + tag_suffix)
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


class _NoManagedPolicies:
    """The template names no managed policies by name, so no IAM lookup is needed."""

    def load(self):
        return {}


def load_template(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)


def translate(template_path, parameters):
    # Imported here: `serve` starts faster without it.
    from samtranslator.translator.transform import transform

    sam = load_template(template_path)
    # Local code paths are replaced by where `sam package` would have put them.
    for logical_id, resource in sam.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{logical_id}.zip"
    return transform(sam, parameters, _NoManagedPolicies())


def _placeholder_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bootstrap", "#!/bin/sh\necho 'run by the local stack, not the emulator'\n")
    return buffer.getvalue()


def _clients(endpoint):
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    return lambda service: session.client(service, endpoint_url=endpoint)


def _functions(cfn):
    return [lid for lid, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Function"]


def _routes(cfn):
    """(method, path, function logical id) for every HTTP API route in the template."""
    routes = []
    for resource in cfn["Resources"].values():
        if resource["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        paths = resource.get("Properties", {}).get("Body", {}).get("paths", {})
        for path, methods in paths.items():
            for method, operation in methods.items():
                integration = operation.get("x-amazon-apigateway-integration", {})
                uri = json.dumps(integration.get("uri", ""))
                function = next((lid for lid in _functions(cfn) if f"${{{lid}.Arn}}" in uri
                                 or f'"{lid}"' in uri), None)
                security = json.dumps(operation.get("security", []))
                routes.append({
                    "method": method.upper().replace("X-AMAZON-APIGATEWAY-ANY-METHOD", "ANY"),
                    "path": path,
                    "function": function,
                    # IAM-authorized routes: the local stack asks for its local credential.
                    "auth": "AWS_IAM" if "AWS_IAM" in security else None,
                })
    return routes


def _schedules(cfn):
    """Schedules (EventBridge rules and Scheduler schedules) that target a function."""
    schedules = []
    for logical_id, resource in cfn["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Scheduler::Schedule":
            target = json.dumps(props.get("Target", {}))
            schedules.append({"name": logical_id, "expression": props.get("ScheduleExpression"),
                              "target": target, "input": props.get("Target", {}).get("Input"),
                              "source": "scheduler",
                              "enabled": props.get("State", "ENABLED") == "ENABLED",
                              "timezone": props.get("ScheduleExpressionTimezone")})
        elif resource["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in props:
            for target in props.get("Targets", []):
                schedules.append({"name": logical_id, "expression": props["ScheduleExpression"],
                                  "target": json.dumps(target), "input": target.get("Input"),
                                  "source": "events",
                                  "enabled": props.get("State", "ENABLED") == "ENABLED",
                                  "timezone": None})
    for schedule in schedules:
        target = schedule.pop("target")
        schedule["function"] = next((f for f in _functions(cfn) if f'"{f}"' in target), None)
    return schedules


def _bus_rule_targets(cfn):
    """(rule logical id, rule resource, target index, target, function logical id) for
    each target of a rule with an event pattern that is one of the template's functions."""
    functions = _functions(cfn)
    for logical_id, resource in cfn["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] != "AWS::Events::Rule" or "EventPattern" not in props:
            continue
        for index, target in enumerate(props.get("Targets", [])):
            arn = json.dumps(target.get("Arn"))
            function = next((f for f in functions if f'"{f}"' in arn or f"${{{f}.Arn}}" in arn), None)
            if function:
                yield logical_id, resource, index, target, function


def _dispatch_queue_id(rule_id, index):
    """The logical id of the queue that stands in for a rule's function target."""
    return f"{rule_id}Target{index}LocalDispatch"


def _dispatch_queue_name(stack_name, rule_id, index):
    """`local-bus-rule-<hash>`: not named after the stack, so the CLI, which finds the
    stack's queues by their `<stack>-` prefix, does not count it as one of them."""
    digest = hashlib.sha256(f"{stack_name}/{rule_id}/{index}".encode("utf-8")).hexdigest()[:16]
    return f"local-bus-rule-{digest}"


def _with_dispatch_queues(resources, cfn, stack_name):
    """`resources` with every function target of a bus rule replaced by an SQS queue
    (created here, named after the stack) that moto delivers the matched events to."""
    resources = dict(resources)
    for rule_id, rule, index, target, _function in _bus_rule_targets(cfn):
        if rule_id not in resources:
            continue
        queue_id = _dispatch_queue_id(rule_id, index)
        resources[queue_id] = {"Type": "AWS::SQS::Queue",
                               "Properties": {"QueueName": _dispatch_queue_name(stack_name, rule_id, index)}}
        rule = json.loads(json.dumps(resources[rule_id]))
        replaced = {k: v for k, v in target.items() if k not in ("Arn", "RetryPolicy", "DeadLetterConfig")}
        replaced["Arn"] = {"Fn::GetAtt": [queue_id, "Arn"]}
        rule["Properties"]["Targets"][index] = replaced
        resources[rule_id] = rule
    return resources


def _bus_rules(cfn, queues):
    """The function targets of rules with an event pattern, and the queue each is
    delivered to (`None` where no dispatch queue exists: real AWS invokes it itself).
    Retries are Lambda's for asynchronous invocations: the function's
    EventInvokeConfig, else 2 retries within 6 hours."""
    configs = {}
    for resource in cfn["Resources"].values():
        if resource["Type"] == "AWS::Lambda::EventInvokeConfig":
            props = resource.get("Properties", {})
            name = props.get("FunctionName")
            function = name.get("Ref") if isinstance(name, dict) else name
            configs[function] = props
    rules = []
    for rule_id, rule, index, target, function in _bus_rule_targets(cfn):
        queue_id = _dispatch_queue_id(rule_id, index)
        config = configs.get(function, {})
        rules.append({
            "name": rule_id,
            "target": target.get("Id"),
            "function": function,
            "pattern": rule["Properties"]["EventPattern"],
            "queue": queue_id if queue_id in queues else None,
            "maximum_retry_attempts": int(config.get("MaximumRetryAttempts", 2)),
            "maximum_event_age_seconds": int(config.get("MaximumEventAgeInSeconds", 21600)),
        })
    return rules


def _event_source_mappings(cfn, parameters):
    """The SQS mappings, their numbers resolved: the translator leaves a property that
    names a stack parameter (`{"Ref": "IngestBatchSize"}`) as the reference."""

    def number(value, default):
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
            value = parameters[value["Ref"]]
        return default if value is None else int(value)

    mappings = []
    for resource in cfn["Resources"].values():
        if resource["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        props = resource["Properties"]
        mappings.append({
            "function": props["FunctionName"].get("Ref"),
            "queue": props["EventSourceArn"]["Fn::GetAtt"][0],
            "batch_size": number(props.get("BatchSize"), 10),
            "maximum_batching_window_seconds": number(props.get("MaximumBatchingWindowInSeconds"), 0),
            "report_batch_item_failures": "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            "enabled": props.get("Enabled", True) is not False,
            "maximum_concurrency": number(props.get("ScalingConfig", {}).get("MaximumConcurrency"), None),
        })
    return mappings


def describe(client, stack_name, cfn):
    stack = client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    # The stack's parameter values: the template's defaults, then what it was created with.
    parameters = {k: v.get("Default") for k, v in (cfn.get("Parameters") or {}).items()}
    parameters.update({p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])})
    # The emulator lists some resources (bucket policies, alarms) without ids: skip those.
    resources = [r for r in client("cloudformation").describe_stack_resources(StackName=stack_name)["StackResources"]
                 if "LogicalResourceId" in r and "PhysicalResourceId" in r]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
    types = {r["LogicalResourceId"]: r["ResourceType"] for r in resources}
    functions = {}
    lam = client("lambda")
    for logical_id, kind in types.items():
        if kind == "AWS::Lambda::Function":
            config = lam.get_function_configuration(FunctionName=physical[logical_id])
            functions[logical_id] = {
                "name": physical[logical_id],
                "arn": config.get("FunctionArn"),
                "binary": cfn["Resources"][logical_id].get("Metadata", {}).get("BuildProperties", {}).get("Binary"),
                "timeout": config.get("Timeout", 3),
                "memory": config.get("MemorySize", 128),
                "environment": config.get("Environment", {}).get("Variables", {}),
            }
    queues = {}
    sqs = client("sqs")
    for logical_id, kind in types.items():
        if kind == "AWS::SQS::Queue":
            url = physical[logical_id]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            queues[logical_id] = {"url": url, "arn": attributes.get("QueueArn"),
                                  "attributes": attributes}
    cloudwatch = client("cloudwatch")
    alarms = {}
    for alarm in cloudwatch.describe_alarms(AlarmNamePrefix=f"{stack_name}-")["MetricAlarms"]:
        alarms[alarm["AlarmName"]] = {
            "arn": alarm.get("AlarmArn"),
            "namespace": alarm.get("Namespace"),
            "metric": alarm.get("MetricName"),
            "expressions": [m["Expression"] for m in alarm.get("Metrics", []) if m.get("Expression")],
            "threshold": alarm.get("Threshold"),
            "comparison": alarm.get("ComparisonOperator"),
            "actions": alarm.get("AlarmActions", []),
        }
    dashboards = {}
    for entry in cloudwatch.list_dashboards(DashboardNamePrefix=stack_name).get("DashboardEntries", []):
        name = entry["DashboardName"]
        dashboards[name] = cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"]
    return {
        "stack_name": stack_name,
        "status": stack["StackStatus"],
        "alarms": alarms,
        "dashboards": dashboards,
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "resources": physical,
        "functions": functions,
        "queues": queues,
        "routes": _routes(cfn),
        "schedules": _schedules(cfn),
        "event_source_mappings": _event_source_mappings(cfn, parameters),
        "bus_rules": _bus_rules(cfn, queues),
        "served_locally": sorted({r["Type"] for r in cfn["Resources"].values() if _served_locally(r)}),
    }


def _without_local_refs(node, local_ids):
    """`node` with Ref / Sub references to `local_ids` replaced by "local"."""
    if isinstance(node, list):
        return [_without_local_refs(item, local_ids) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"} and node["Ref"] in local_ids:
        return "local"
    if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
        text = node["Fn::Sub"]
        for local_id in local_ids:
            text = text.replace("${" + local_id + "}", "local")
        return {"Fn::Sub": text}
    return {key: _without_local_refs(value, local_ids) for key, value in node.items()}


def deploy(endpoint, stack_name, parameters, template_path):
    client = _clients(endpoint)
    cfn = translate(template_path, parameters)
    s3 = client("s3")
    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            code = resource["Properties"]["Code"]
            s3.put_object(Bucket=code["S3Bucket"], Key=code["S3Key"], Body=_placeholder_zip())
    created = dict(cfn)
    created["Resources"] = {k: v for k, v in cfn["Resources"].items()
                            if not _served_locally(v) and v["Type"] not in CREATED_BY_API}
    # Properties of created resources may name a resource served locally (a function's
    # environment naming the API id): the emulator cannot resolve those, so they become
    # the literal "local" (the local stack overrides what depends on them, such as
    # PUBLIC_BASE_URL).
    local_ids = {k for k, v in cfn["Resources"].items() if _served_locally(v)}
    created["Resources"] = _without_local_refs(created["Resources"], local_ids)
    created["Resources"] = _with_dispatch_queues(created["Resources"], cfn, stack_name)
    # Outputs may refer to resources served locally (the API id): resolve those here.
    outputs = {}
    for key, output in cfn.get("Outputs", {}).items():
        if "HttpApi" not in json.dumps(output):
            outputs[key] = output
    created["Outputs"] = outputs
    formation = client("cloudformation")
    try:
        formation.delete_stack(StackName=stack_name)
    except Exception:  # noqa: BLE001 - no such stack yet
        pass
    formation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(created),
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.time() + 120
    while True:
        status = formation.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
        if not status.endswith("IN_PROGRESS"):
            break
        if time.time() > deadline:
            raise SystemExit(f"stack {stack_name} still {status} after 120 s")
        time.sleep(0.2)
    if status != "CREATE_COMPLETE":
        events = formation.describe_stack_events(StackName=stack_name)["StackEvents"]
        reasons = [f'{e["LogicalResourceId"]}: {e.get("ResourceStatusReason")}' for e in events
                   if e.get("ResourceStatus", "").endswith("FAILED")]
        raise SystemExit(f"stack {stack_name} ended {status}: {reasons}")
    _create_alarms(client, stack_name, cfn, parameters)
    return describe(client, stack_name, cfn)


def _create_alarms(client, stack_name, cfn, parameters):
    """Creates the template's CloudWatch alarms with PutMetricAlarm, their intrinsics
    resolved against the created stack (what CloudFormation would do)."""
    resources = client("cloudformation").describe_stack_resources(StackName=stack_name)["StackResources"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources
                if "LogicalResourceId" in r and "PhysicalResourceId" in r}
    values = {k: v.get("Default") for k, v in (cfn.get("Parameters") or {}).items()}
    values.update(parameters)
    pseudo = {"AWS::StackName": stack_name, "AWS::Region": os.environ["AWS_DEFAULT_REGION"],
              "AWS::AccountId": "123456789012", "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}

    def ref(name):
        if name in pseudo:
            return pseudo[name]
        if name in values:
            return values[name]
        if physical.get(name):
            return physical[name]
        raise SystemExit(f"alarm property refers to {name}, which the stack does not have")

    def get_att(logical_id, attribute):
        kind = cfn["Resources"][logical_id]["Type"]
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return physical[logical_id].rsplit("/", 1)[-1]
        raise SystemExit(f"alarm property uses {logical_id}.{attribute}, which this script cannot resolve")

    def resolve(node):
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return ref(node["Ref"])
        if set(node) == {"Fn::GetAtt"}:
            logical_id, attribute = node["Fn::GetAtt"]
            return get_att(logical_id, attribute)
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            text = node["Fn::Sub"]
            for name in set(re.findall(r"\$\{([^}]+)\}", text)):
                text = text.replace("${" + name + "}", str(ref(name)))
            return text
        if any(key.startswith("Fn::") for key in node):
            raise SystemExit(f"alarm property uses {sorted(node)}, which this script cannot resolve")
        return {key: resolve(value) for key, value in node.items()}

    cloudwatch = client("cloudwatch")
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resolve(resource["Properties"])
        for number in ("Threshold", "Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if number in props:
                props[number] = float(props[number]) if number == "Threshold" else int(props[number])
        for query in props.get("Metrics", []):
            stat = query.get("MetricStat")
            if stat:
                stat["Period"] = int(stat["Period"])
        cloudwatch.put_metric_alarm(**props)


# AWS's size limits that moto does not enforce (or enforces at other values), so a test
# fails locally the way a deploy would. EventBridge: 256 KB per PutEvents entry and per
# request, entries sized as "Calculating Amazon EventBridge PutEvents event entry size"
# says; a request over it is refused as a whole with ValidationException (moto already
# refuses more than 10 entries). SQS: 262,144 bytes per message, body plus attributes,
# and per SendMessageBatch. AWS raised both services to 1 MiB in 2026 for new queues and
# buses; the local stack keeps the lower limit, which every queue and bus still honours,
# so what passes here passes on any of them.
PUT_EVENTS_MAX_BYTES = 262_144
SQS_MAX_MESSAGE_BYTES = 262_144


def put_events_entry_size(entry):
    """A PutEventsRequestEntry's size as EventBridge counts it: Time 14 bytes if
    present, the UTF-8 bytes of Source, DetailType, Detail and each of Resources.
    EventBusName, TraceHeader and the JSON around them are not counted."""
    size = 14 if entry.get("Time") is not None else 0
    for name in ("Source", "DetailType", "Detail"):
        if entry.get(name) is not None:
            size += len(str(entry[name]).encode("utf-8"))
    for resource in entry.get("Resources") or []:
        if resource is not None:
            size += len(str(resource).encode("utf-8"))
    return size


def sqs_message_size(body, attributes):
    """An SQS message's size as SQS counts it against its limit: the body's UTF-8 bytes
    plus each message attribute's name, data type and value."""
    size = len((body or "").encode("utf-8"))
    for name, value in (attributes or {}).items():
        size += len(name.encode("utf-8")) + len(str(value.get("DataType", "")).encode("utf-8"))
        if value.get("StringValue") is not None:
            size += len(str(value["StringValue"]).encode("utf-8"))
        binary = value.get("BinaryValue")
        if isinstance(binary, (bytes, bytearray)):
            size += len(binary)
        elif isinstance(binary, str):
            try:
                size += len(base64.b64decode(binary, validate=True))
            except ValueError:
                size += len(binary.encode("utf-8"))
    return size


def enforce_aws_limits():
    """Patches moto's EventBridge and SQS request handling with the limits above.

    Applied to the request handlers (and EventBridge's backend entry point), so every
    client of the server sees them, while moto's own deliveries (a rule's target
    queue) are left alone.
    """
    from moto.events.exceptions import ValidationException
    from moto.events.models import EventsBackend
    from moto.sqs.exceptions import InvalidParameterValue, SQSException
    from moto.sqs.responses import SQSResponse

    put_events = EventsBackend.put_events

    def limited_put_events(self, events):
        if len(events) <= 10:
            total = sum(put_events_entry_size(entry) for entry in events)
            if total > PUT_EVENTS_MAX_BYTES:
                raise ValidationException("Total size of the entries in the request is over the limit.")
        return put_events(self, events)

    EventsBackend.put_events = limited_put_events

    def queue_limit(response):
        queue = response.sqs_backend.get_queue(response._get_queue_name())
        return min(SQS_MAX_MESSAGE_BYTES, int(queue.maximum_message_size or SQS_MAX_MESSAGE_BYTES))

    def too_long(limit):
        return InvalidParameterValue(
            f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes.")

    send_message = SQSResponse.send_message

    def limited_send_message(self):
        limit = queue_limit(self)
        if sqs_message_size(self._get_param("MessageBody"), self._get_param("MessageAttributes", {})) > limit:
            raise too_long(limit)
        return send_message(self)

    SQSResponse.send_message = limited_send_message

    send_message_batch = SQSResponse.send_message_batch

    def limited_send_message_batch(self):
        entries = self._get_param("Entries", []) or []
        sizes = [sqs_message_size(e.get("MessageBody"), e.get("MessageAttributes")) for e in entries]
        if sum(sizes) > SQS_MAX_MESSAGE_BYTES:
            raise SQSException(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {SQS_MAX_MESSAGE_BYTES} bytes. "
                f"You have sent {sum(sizes)} bytes.")
        limit = queue_limit(self)
        if any(size > limit for size in sizes):
            raise too_long(limit)
        return send_message_batch(self)

    SQSResponse.send_message_batch = limited_send_message_batch


def serve(argv):
    """Runs moto's server in this process (so its pid is the server's) with the limits."""
    enforce_aws_limits()
    from moto.server import main as moto_server

    moto_server(argv or ["-H", "127.0.0.1"])


def _parameters(pairs):
    parameters = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        parameters[key] = value
    return parameters


def main(argv):
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["translate", "deploy", "describe"])
    parser.add_argument("--template", default=os.path.join(ROOT, "template.yaml"))
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL"))
    parser.add_argument("--real-aws", action="store_true",
                        help="describe: read a deployed stack in real AWS (no endpoint, the caller's credentials)")
    parser.add_argument("--stack-name", default="junction-local")
    parser.add_argument("--parameter", action="append", metavar="KEY=VALUE",
                        help="a template parameter override (repeatable)")
    parser.add_argument("--optional-parameter", action="append", metavar="KEY=VALUE",
                        help="an override used only if the template declares the parameter")
    args = parser.parse_args(argv)
    parameters = _parameters(args.parameter)
    declared = load_template(args.template).get("Parameters") or {}
    for key, value in _parameters(args.optional_parameter).items():
        if key in declared:
            parameters.setdefault(key, value)
    if args.command == "translate":
        result = translate(args.template, parameters)
    else:
        if args.real_aws and args.command == "describe":
            session = boto3.session.Session()
            result = describe(lambda service: session.client(service), args.stack_name,
                              translate(args.template, parameters))
            json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
            sys.stdout.write("\n")
            return
        if not args.endpoint:
            raise SystemExit("--endpoint (or AWS_ENDPOINT_URL) must name the emulator")
        if args.command == "deploy":
            result = deploy(args.endpoint, args.stack_name, parameters, args.template)
        else:
            result = describe(_clients(args.endpoint), args.stack_name, translate(args.template, parameters))
    json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
