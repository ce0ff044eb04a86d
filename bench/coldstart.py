"""Cold start of a Lambda binary, without AWS: the time from process start until the function
is ready to handle (its first `GET /runtime/invocation/next` to the Lambda Runtime API).

The init includes what a real cold start does: build the AWS clients and read the deltadrop
configuration from S3 (served here by an in-process moto server, so no network latency).

    coldstart.py <binary> [runs]
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from moto.server import ThreadedMotoServer

CONFIG = b'[[feeds]]\nname = "orders"\nincoming = "incoming/"\ntable = "tables/orders"\nkeys = ["id"]\n'


class RuntimeApi(BaseHTTPRequestHandler):
    ready = threading.Event()

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            RuntimeApi.ready_at = time.perf_counter()
            RuntimeApi.ready.set()
            time.sleep(5)  # hold the long poll; the process is killed meanwhile
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def main(binary, runs=10):
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    endpoint = "http://127.0.0.1:%d" % moto._server.server_port
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="coldstart")
    s3.put_object(Bucket="coldstart", Key="deltadrop.toml", Body=CONFIG)
    api = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    env = dict(os.environ, AWS_LAMBDA_RUNTIME_API="127.0.0.1:%d" % api.server_port,
               AWS_LAMBDA_FUNCTION_NAME="coldstart", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1769",
               AWS_LAMBDA_FUNCTION_VERSION="1", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", DELTADROP_BUCKET="coldstart",
               DELTADROP_S3_ENDPOINT=endpoint, STATE_MACHINE_ARN="arn:aws:states:us-east-1:1:stateMachine:x")
    times = []
    for _ in range(int(runs)):
        RuntimeApi.ready.clear()
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not RuntimeApi.ready.wait(30):
            process.kill()
            raise SystemExit("not ready after 30 s: " + process.stderr.read().decode())
        times.append((RuntimeApi.ready_at - started) * 1000)
        process.kill()
        process.wait()
    size = os.path.getsize(binary)
    print(json.dumps({"binary": os.path.basename(binary), "size_mb": round(size / 1e6, 1),
                      "init_ms_median": round(statistics.median(times), 1),
                      "init_ms_max": round(max(times), 1), "runs": len(times)}))
    moto.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
