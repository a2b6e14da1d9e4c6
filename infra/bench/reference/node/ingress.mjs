// The webhook ingress's work for a GitHub delivery, as a team would write it with the
// AWS SDK v3: verify X-Hub-Signature-256 (HMAC-SHA256 of the raw body, constant-time
// compare) with the signing secrets from Secrets Manager (cached 300 s), then one SQS
// SendMessage, then 202.
import { createHmac, timingSafeEqual } from "node:crypto";
import { SQSClient, SendMessageCommand } from "@aws-sdk/client-sqs";
import { SecretsManagerClient, GetSecretValueCommand } from "@aws-sdk/client-secrets-manager";

// The queue URL names the real endpoint; requests go to the configured one (AWS_ENDPOINT_URL).
const sqs = new SQSClient({ useQueueUrlAsEndpoint: false });
const secretsManager = new SecretsManagerClient({});
let cached = { secrets: null, at: 0 };

async function signingSecrets() {
  if (!cached.secrets || Date.now() - cached.at > 300_000) {
    const out = await secretsManager.send(new GetSecretValueCommand({ SecretId: process.env.SECRET_ID }));
    cached = { secrets: JSON.parse(out.SecretString).signing_secrets, at: Date.now() };
  }
  return cached.secrets;
}

function verified(secrets, body, header) {
  if (typeof header !== "string" || !header.startsWith("sha256=")) return false;
  const given = Buffer.from(header.slice(7), "hex");
  return secrets.some((secret) => {
    const expected = createHmac("sha256", secret).update(body).digest();
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

export async function handler(event) {
  const headers = event.headers ?? {};
  const body = event.isBase64Encoded ? Buffer.from(event.body ?? "", "base64") : Buffer.from(event.body ?? "", "utf8");
  if (!verified(await signingSecrets(), body, headers["x-hub-signature-256"])) {
    return { statusCode: 401, body: "invalid signature" };
  }
  const delivery = headers["x-github-delivery"] ?? "";
  const forwarded = Object.fromEntries(Object.entries(headers).filter(([name]) => name.startsWith("x-github-")));
  await sqs.send(new SendMessageCommand({
    QueueUrl: process.env.QUEUE_URL,
    MessageBody: JSON.stringify({
      provider: "github",
      delivery_id: delivery,
      event_type: headers["x-github-event"] ?? null,
      received_at: new Date().toISOString(),
      headers: forwarded,
      body: body.toString("utf8"),
    }),
    MessageAttributes: {
      provider: { DataType: "String", StringValue: "github" },
      event_id: { DataType: "String", StringValue: delivery },
    },
  }));
  return { statusCode: 202, headers: { "content-type": "application/json" }, body: '{"status":"accepted"}' };
}
