"""Model calls in the caller's trace.

A call joins the trace of the caller's ``traceparent`` header. The router makes the
call's ``chat`` (or ``embeddings``) span under it, with the GenAI attributes, its
attempts and fallbacks as events (`corral.llm.tracing`), and the gateway's own
attributes given here; an agent run continues the trace with its ``invoke_agent`` span
(the headers travel with the run, so a queued or resumed run stays in it)."""

from __future__ import annotations

from starlette.requests import Request

from corral.gateway.call import Call
from corral.telemetry.tracing import Tracing


class CallTracer:
    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def begin(self, request: Request, call: Call) -> None:
        call.trace_parent = self.tracing.parent(request.headers)
        call.ctx.trace = call.trace_parent
        call.trace_headers = self.tracing.carrier(call.trace_parent)
        call.ctx.span_attributes = {"corral.surface": call.surface, "corral.request_id": call.request_id,
                                    "corral.stream": call.stream}
