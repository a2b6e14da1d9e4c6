"""The event consumer's work for an SQS batch as a team would write it with Powertools
for AWS Lambda (Python): the Logger, the Batch utility (partial batch response), the
Idempotency utility keyed on the message id (DynamoDB persistence: a conditional put
when a record starts, an update when it completes), the data key decrypted with KMS
once and cached 300 s (each body is authenticated with it: HMAC-SHA256), and one
PutEvents for the batch's new records."""

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import datetime, timezone

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

logger = Logger()
kms = boto3.client("kms")
events = boto3.client("events")
processor = BatchProcessor(event_type=EventType.SQS)
persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
config = IdempotencyConfig(event_key_jmespath="messageId")
_data_key = {"key": None, "at": 0.0}
_pending = []


def data_key():
    if _data_key["key"] is None or time.monotonic() - _data_key["at"] > 300:
        blob = base64.b64decode(os.environ["ENCRYPTED_DATA_KEY"])
        _data_key["key"] = kms.decrypt(CiphertextBlob=blob)["Plaintext"]
        _data_key["at"] = time.monotonic()
    return _data_key["key"]


@idempotent_function(data_keyword_argument="record", config=config, persistence_store=persistence)
def process(record):
    body = json.loads(record["body"])
    attributes = record.get("messageAttributes") or {}
    event_id = (attributes.get("event_id") or {}).get("stringValue") or record["messageId"]
    digest = hmac.new(data_key(), record["body"].encode(), hashlib.sha256).hexdigest()
    kind = f"github.{body.get('event_type') or 'event'}"
    detail = {
        "specversion": "1.0",
        "id": event_id,
        "source": "junction/github",
        "type": kind,
        "time": datetime.now(timezone.utc).isoformat(),
        "digest": digest,
        "data": body,
    }
    _pending.append(
        {
            "EventBusName": os.environ["EVENT_BUS_NAME"],
            "Source": "junction/github",
            "DetailType": kind,
            "Detail": json.dumps(detail),
        }
    )
    return {"event_id": event_id}


def record_handler(record):
    return process(record=record.raw_event)


@logger.inject_lambda_context
def handler(event, context):
    config.register_lambda_context(context)
    _pending.clear()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    if _pending:
        events.put_events(Entries=list(_pending))
        logger.info("published", extra={"events": len(_pending)})
    return response
