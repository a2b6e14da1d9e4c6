"""The webhook ingress's work for a GitHub delivery with boto3: verify
X-Hub-Signature-256 (HMAC-SHA256 of the raw body, constant-time compare) with the
signing secrets from Secrets Manager (cached 300 s), one SQS SendMessage, 202."""

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import datetime, timezone

import boto3

sqs = boto3.client("sqs")
secrets_manager = boto3.client("secretsmanager")
_cache = {"secrets": None, "at": 0.0}


def signing_secrets():
    if _cache["secrets"] is None or time.monotonic() - _cache["at"] > 300:
        value = secrets_manager.get_secret_value(SecretId=os.environ["SECRET_ID"])
        _cache["secrets"] = json.loads(value["SecretString"])["signing_secrets"]
        _cache["at"] = time.monotonic()
    return _cache["secrets"]


def verified(secrets, body, header):
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256="):]
    return any(
        hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), given)
        for secret in secrets
    )


def handler(event, context):
    headers = event.get("headers") or {}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    if not verified(signing_secrets(), body, headers.get("x-hub-signature-256")):
        return {"statusCode": 401, "body": "invalid signature"}
    delivery = headers.get("x-github-delivery", "")
    sqs.send_message(
        QueueUrl=os.environ["QUEUE_URL"],
        MessageBody=json.dumps(
            {
                "provider": "github",
                "delivery_id": delivery,
                "event_type": headers.get("x-github-event"),
                "received_at": datetime.now(timezone.utc).isoformat(),
                "headers": {k: v for k, v in headers.items() if k.startswith("x-github-")},
                "body": body.decode(),
            }
        ),
        MessageAttributes={
            "provider": {"DataType": "String", "StringValue": "github"},
            "event_id": {"DataType": "String", "StringValue": delivery},
        },
    )
    return {
        "statusCode": 202,
        "headers": {"content-type": "application/json"},
        "body": '{"status":"accepted"}',
    }
