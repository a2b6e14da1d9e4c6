// A minimal Lambda runtime loop for Node.js (what the managed nodejs20.x runtime does
// for a handler, without its extras): import the handler module at init, then
// GET /next, call the handler, POST the result, over one keep-alive connection.
// Run as `node bootstrap.mjs ingress|consumer`.
import http from "node:http";

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const { handler } = await import(`./${process.argv[2]}.mjs`);

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, method, path: `/2018-06-01/runtime${path}`, agent,
        headers: body === undefined ? {} : { "content-type": "application/json" } },
      (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

for (;;) {
  const next = await request("GET", "/invocation/next");
  const id = next.headers["lambda-runtime-aws-request-id"];
  const context = {
    awsRequestId: id,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    getRemainingTimeInMillis: () => Number(next.headers["lambda-runtime-deadline-ms"]) - Date.now(),
  };
  try {
    const result = await handler(JSON.parse(next.body), context);
    await request("POST", `/invocation/${id}/response`, JSON.stringify(result));
  } catch (error) {
    await request("POST", `/invocation/${id}/error`,
      JSON.stringify({ errorType: error?.name ?? "Error", errorMessage: String(error?.message ?? error) }));
  }
}
