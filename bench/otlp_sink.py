"""`python -m bench.otlp_sink --port N`: a loopback OTLP/HTTP trace receiver that accepts
every export and counts the bytes (the traced gateway's exporter needs somewhere to send).
``GET /count`` answers the number of exports and bytes received."""

from __future__ import annotations

import argparse
import http.server
import json
import threading


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    lock = threading.Lock()
    totals = {"exports": 0, "bytes": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            size = int(self.headers.get("content-length", "0"))
            self.rfile.read(size)
            with lock:
                totals["exports"] += 1
                totals["bytes"] += size
            self._reply(b"", "application/x-protobuf")  # an empty ExportTraceServiceResponse

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(totals).encode()
            self._reply(body, "application/json")

        def _reply(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
