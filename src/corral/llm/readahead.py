"""Tells a stream's writer that more events are already in memory.

An upstream usually delivers several server-sent events in one network read (a
provider's burst of tokens; a whole short answer). The SSE reader sets `more` while
it yields events of a read that has others after them; a writer that sees it set
keeps its output and sends it with the next, so one read costs one write to the
client instead of one per event. Nothing is ever held back waiting for the network:
`more` is false whenever the next event would need another read, and a source that
never sets it (the scripted model, an agent) gets one write per event, as before.

It travels in signatures: the writer creates it, puts it on the call's
`CallContext.read_ahead`, and the router hands it to `Provider.stream(request,
read_ahead=...)`, whose SSE reader (`HttpClient.sse`) sets it.
"""

from __future__ import annotations


class ReadAhead:
    """Shared by a stream's source and its writer (`EventStreamResponse`): ``more``, set
    by the source's reader as above; ``settling``, set by the source once it is closing
    (recording the call), after which the writer does not cancel it for a client that
    left."""

    __slots__ = ("more", "settling")

    def __init__(self) -> None:
        self.more = False
        self.settling = False
