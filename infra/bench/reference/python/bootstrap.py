"""A minimal Lambda runtime loop for Python (what the managed python3.11 runtime does
for a handler, without its extras): import the handler module at init, then GET /next,
call the handler, POST the result, over one keep-alive connection.
Run as `python bootstrap.py ingress|consumer|powertools_ingress|powertools_consumer`."""

import http.client
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
handler = importlib.import_module(sys.argv[1]).handler
connection = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0"))

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def call(method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    connection.request(method, "/2018-06-01/runtime" + path, body=body, headers=headers)
    response = connection.getresponse()
    return response.headers, response.read()


while True:
    headers, payload = call("GET", "/invocation/next")
    context = Context(headers)
    try:
        result = handler(json.loads(payload), context)
        call("POST", f"/invocation/{context.aws_request_id}/response", json.dumps(result))
    except Exception as error:  # noqa: BLE001 (reported to the runtime, as Lambda does)
        call(
            "POST",
            f"/invocation/{context.aws_request_id}/error",
            json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}),
        )
