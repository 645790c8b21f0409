"""The stub upstream: a fixed OpenAI chat completion and a fixed SSE stream.

nginx serves them when it is installed (`return 200 '...'`, no disk, no logs);
otherwise a small asyncio HTTP/1.1 server in this file does (`python -m bench.stub`).
`POST /v1/chat/completions` answers the JSON completion; `POST /sse/v1/chat/completions`
answers the stream, so one path decides the answer and nobody has to parse a body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.common import Child, spawn, wait_http

STREAM_PREFIX = "/sse"

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}, separators=(",", ":"))


def _chunk(delta: dict[str, object], finish: str | None = None, usage: dict[str, int] | None = None,
           choices: bool = True) -> str:
    body: dict[str, object] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                               "model": "gpt-bench",
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"


WORDS = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
STREAM = (
    _chunk({"role": "assistant", "content": ""})
    + "".join(_chunk({"content": w}) for w in WORDS)
    + _chunk({}, finish="stop")
    + _chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}, choices=False)
    + "data: [DONE]\n\n"
)


def _nginx_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_conf(port: int, work: Path) -> str:
    temp = "\n".join(f"  {k}_temp_path {work / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
worker_processes 1;
daemon off;
pid {work / 'nginx.pid'};
error_log {work / 'nginx-error.log'} warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
{temp}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 {_nginx_quote(COMPLETION)};
    }}
    location = {STREAM_PREFIX}/v1/chat/completions {{
      default_type text/event-stream;
      add_header cache-control no-cache;
      return 200 {_nginx_quote(STREAM)};
    }}
    location = /health {{ return 200 'ok'; }}
  }}
}}
"""


def start_stub(port: int, work: Path, *, prefer_nginx: bool = True, cpus: list[int] | None = None) -> tuple[Child, str]:
    """Starts the stub on `port`; returns the child and which server it is."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if prefer_nginx and nginx:
        conf = work / "nginx.conf"
        conf.write_text(nginx_conf(port, work))
        child = spawn("stub-nginx", [nginx, "-c", str(conf), "-p", str(work)], log_dir=work, cpus=cpus)
        kind = "nginx"
    else:
        child = spawn("stub-python", [sys.executable, "-m", "bench.stub", "--port", str(port)], log_dir=work,
                      cpus=cpus)
        kind = "python"
    try:
        wait_http(f"http://127.0.0.1:{port}/health", child, timeout=15)
    except BaseException:
        child.stop()  # not handed to anyone yet: nobody else would stop it
        raise
    return child, kind


# ---- the built-in fallback server ------------------------------------------------


def _response(body: str, content_type: str) -> bytes:
    raw = body.encode()
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {len(raw)}\r\n"
            "connection: keep-alive\r\n\r\n")
    return head.encode() + raw


class _StubProtocol(asyncio.Protocol):
    ANSWERS = {
        b"/v1/chat/completions": _response(COMPLETION, "application/json"),
        STREAM_PREFIX.encode() + b"/v1/chat/completions": _response(STREAM, "text/event-stream"),
        b"/health": _response("ok", "text/plain"),
    }
    NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None  # an asyncio or a uvloop transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            path = head.split(b" ", 2)[1].split(b"?", 1)[0]
            self.buffer = self.buffer[total:]
            self.transport.write(self.ANSWERS.get(path, self.NOT_FOUND))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_StubProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmark's stub OpenAI upstream (fallback when no nginx).")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port))
    except ImportError:
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
