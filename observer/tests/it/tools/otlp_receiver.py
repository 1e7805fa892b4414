"""An OTLP/HTTP logs receiver for observer's integration tests (observer/tests/it/otlp.rs).

It decodes each request with OpenTelemetry's own protobuf definitions (PyPI
`opentelemetry-proto`), so what observer sends is checked against the specification's
types, not against observer's own encoder. Every log record becomes one JSON line in
--out: its resource attributes, its attributes, body, event name, severity and times.

Prints `port N` on stdout once it listens on 127.0.0.1. Options: --tls CERT KEY (https),
--require-header NAME VALUE (401 without it), --fail-first N (503 to the first N requests,
to prove retries).
"""

import argparse
import gzip
import http.server
import json
import ssl
import sys
import threading

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class State:
    def __init__(self, out, require, fail_first):
        self.out = out
        self.require = require
        self.fail_left = fail_first
        self.lock = threading.Lock()
        self.requests = 0


def handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, code, body=b"", ctype="text/plain"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests += 1
                if state.fail_left > 0:
                    state.fail_left -= 1
                    return self.answer(503, b"try later")
            if state.require and self.headers.get(state.require[0]) != state.require[1]:
                return self.answer(401, b"who are you")
            if self.path != "/v1/logs":
                return self.answer(404, b"not the logs path")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                return self.answer(415, b"protobuf only")
            encoding = self.headers.get("Content-Encoding", "identity")
            if encoding == "gzip":
                body = gzip.decompress(body)
            req = logs_service_pb2.ExportLogsServiceRequest()
            req.ParseFromString(body)
            lines = []
            for rl in req.resource_logs:
                resource = attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        lines.append(json.dumps({
                            "resource": resource,
                            "scope": sl.scope.name,
                            "attributes": attributes(r.attributes),
                            "body": value(r.body),
                            "event_name": r.event_name,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "time_unix_nano": r.time_unix_nano,
                            "observed_time_unix_nano": r.observed_time_unix_nano,
                            "content_encoding": encoding,
                        }))
            with state.lock:
                with open(state.out, "a") as f:
                    for l in lines:
                        f.write(l + "\n")
            resp = logs_service_pb2.ExportLogsServiceResponse()
            self.answer(200, resp.SerializeToString(), "application/x-protobuf")

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--require-header", nargs=2, metavar=("NAME", "VALUE"))
    p.add_argument("--fail-first", type=int, default=0)
    a = p.parse_args()
    state = State(a.out, a.require_header, a.fail_first)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("port", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
