"""The webhook ingress's work for a GitHub delivery as a team would write it with
Powertools for AWS Lambda (Python): the Logger (JSON, Lambda context injected), the
signing secrets through the Parameters utility (Secrets Manager, cached 300 s), verify
X-Hub-Signature-256 (HMAC-SHA256 of the raw body, constant-time compare), one SQS
SendMessage, 202."""

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime, timezone

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

logger = Logger()
sqs = boto3.client("sqs")


def verified(secrets, body, header):
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256="):]
    return any(
        hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), given)
        for secret in secrets
    )


@logger.inject_lambda_context
def handler(event, context):
    headers = event.get("headers") or {}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    document = parameters.get_secret(os.environ["SECRET_ID"], max_age=300, transform="json")
    if not verified(document["signing_secrets"], body, headers.get("x-hub-signature-256")):
        logger.warning("rejected", extra={"provider": "github", "reason": "invalid signature"})
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
    logger.info("accepted", extra={"provider": "github", "delivery_id": delivery})
    return {
        "statusCode": 202,
        "headers": {"content-type": "application/json"},
        "body": '{"status":"accepted"}',
    }
