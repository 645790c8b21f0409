"""``python -m corral.testing.fakes openai --port 8001``: run one fake upstream until
interrupted (for manual tests and benchmarks that need a separate process)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

from corral.testing.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, Reply
from corral.testing.fakes._server import FakeUpstream

KINDS: dict[str, type[FakeUpstream]] = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "gemini": FakeGemini}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.testing.fakes", description=__doc__)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--text", default=None, help="answer this text instead of echoing the last user message")
    parser.add_argument("--api-key", default=None, help="require this key")
    args = parser.parse_args(argv)
    fake = KINDS[args.kind](default=Reply(text=args.text), api_key=args.api_key, host=args.host, port=args.port)
    with fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
