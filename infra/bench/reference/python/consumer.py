"""The event consumer's work for an SQS batch with boto3: the data key decrypted with
KMS once and cached 300 s (each body is authenticated with it: HMAC-SHA256), one
conditional DynamoDB PutItem per record (attribute_not_exists: a duplicate is skipped),
one PutEvents for the batch's new records, and the partial batch response."""

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import datetime, timezone

import boto3

dynamodb = boto3.client("dynamodb")
kms = boto3.client("kms")
events = boto3.client("events")
_data_key = {"key": None, "at": 0.0}


def data_key():
    if _data_key["key"] is None or time.monotonic() - _data_key["at"] > 300:
        blob = base64.b64decode(os.environ["ENCRYPTED_DATA_KEY"])
        _data_key["key"] = kms.decrypt(CiphertextBlob=blob)["Plaintext"]
        _data_key["at"] = time.monotonic()
    return _data_key["key"]


def handler(event, context):
    failures, entries = [], []
    key = data_key()
    expires = int(time.time()) + 7 * 24 * 3600
    for record in event["Records"]:
        try:
            body = json.loads(record["body"])
            attributes = record.get("messageAttributes") or {}
            event_id = (attributes.get("event_id") or {}).get("stringValue") or record["messageId"]
            digest = hmac.new(key, record["body"].encode(), hashlib.sha256).hexdigest()
            try:
                dynamodb.put_item(
                    TableName=os.environ["IDEMPOTENCY_TABLE"],
                    Item={
                        "pk": {"S": f"event#{event_id}"},
                        "status": {"S": "done"},
                        "digest": {"S": digest},
                        "expires_at": {"N": str(expires)},
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except dynamodb.exceptions.ConditionalCheckFailedException:
                continue
            kind = f"github.{body.get('event_type') or 'event'}"
            detail = {
                "specversion": "1.0",
                "id": event_id,
                "source": "junction/github",
                "type": kind,
                "time": datetime.now(timezone.utc).isoformat(),
                "data": body,
            }
            entries.append(
                (
                    record["messageId"],
                    {
                        "EventBusName": os.environ["EVENT_BUS_NAME"],
                        "Source": "junction/github",
                        "DetailType": kind,
                        "Detail": json.dumps(detail),
                    },
                )
            )
        except Exception:  # noqa: BLE001 (the record is retried through the batch response)
            failures.append({"itemIdentifier": record["messageId"]})
    if entries:
        try:
            result = events.put_events(Entries=[entry for _, entry in entries])
            for (message_id, _), outcome in zip(entries, result.get("Entries", [])):
                if outcome.get("ErrorCode"):
                    failures.append({"itemIdentifier": message_id})
        except Exception:  # noqa: BLE001
            failures.extend({"itemIdentifier": message_id} for message_id, _ in entries)
    return {"batchItemFailures": failures}
