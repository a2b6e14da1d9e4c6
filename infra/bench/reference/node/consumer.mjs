// The event consumer's work for an SQS batch, as a team would write it with the AWS SDK
// v3: the data key decrypted with KMS once and cached 300 s (each body is
// authenticated with it: HMAC-SHA256), one conditional DynamoDB PutItem per record
// (attribute_not_exists: a duplicate is skipped), one PutEvents for the batch's new
// records, and the partial batch response.
import { createHmac } from "node:crypto";
import { DynamoDBClient, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { KMSClient, DecryptCommand } from "@aws-sdk/client-kms";
import { EventBridgeClient, PutEventsCommand } from "@aws-sdk/client-eventbridge";

const dynamodb = new DynamoDBClient({});
const kms = new KMSClient({});
const eventbridge = new EventBridgeClient({});
let dataKey = { key: null, at: 0 };

async function key() {
  if (!dataKey.key || Date.now() - dataKey.at > 300_000) {
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: Buffer.from(process.env.ENCRYPTED_DATA_KEY, "base64") }));
    dataKey = { key: Buffer.from(out.Plaintext), at: Date.now() };
  }
  return dataKey.key;
}

export async function handler(event) {
  const failures = [];
  const entries = [];
  const secret = await key();
  const expires = Math.floor(Date.now() / 1000) + 7 * 24 * 3600;
  for (const record of event.Records) {
    try {
      const body = JSON.parse(record.body);
      const id = record.messageAttributes?.event_id?.stringValue ?? record.messageId;
      const digest = createHmac("sha256", secret).update(record.body).digest("hex");
      try {
        await dynamodb.send(new PutItemCommand({
          TableName: process.env.IDEMPOTENCY_TABLE,
          Item: { pk: { S: `event#${id}` }, status: { S: "done" }, digest: { S: digest }, expires_at: { N: String(expires) } },
          ConditionExpression: "attribute_not_exists(pk)",
        }));
      } catch (error) {
        if (error.name === "ConditionalCheckFailedException") continue;
        throw error;
      }
      entries.push({
        messageId: record.messageId,
        entry: {
          EventBusName: process.env.EVENT_BUS_NAME,
          Source: "junction/github",
          DetailType: `github.${body.event_type ?? "event"}`,
          Detail: JSON.stringify({ specversion: "1.0", id, source: "junction/github", type: `github.${body.event_type ?? "event"}`, time: new Date().toISOString(), data: body }),
        },
      });
    } catch {
      failures.push({ itemIdentifier: record.messageId });
    }
  }
  if (entries.length > 0) {
    try {
      const out = await eventbridge.send(new PutEventsCommand({ Entries: entries.map((e) => e.entry) }));
      (out.Entries ?? []).forEach((result, index) => {
        if (result.ErrorCode) failures.push({ itemIdentifier: entries[index].messageId });
      });
    } catch {
      for (const e of entries) failures.push({ itemIdentifier: e.messageId });
    }
  }
  return { batchItemFailures: failures };
}
