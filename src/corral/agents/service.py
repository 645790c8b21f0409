"""Runs of agents: started in the foreground (a client waits or streams) or queued in
the store for a worker; sessions loaded and saved; approvals; cancellation.

Every run has a row in the store from its first moment. A foreground run is inserted
as ``running`` with this process's claim and lease; a background run as ``queued``.
A heartbeat extends the lease. If the process dies, the lease expires and a worker
(here after a restart, or on another replica) claims the row: a background run
continues from its checkpoint; a foreground run, whose client is gone, is marked
failed with the reason. Nothing is lost silently.

With a fan-out (`corral.agents.fanout`, Redis) every event of a run executing here is
also written to the run's Redis stream, and `follow` streams a run that executes on
another replica.

With a `Tracing`, a run joins the trace of whoever started it: `start_run` takes the
caller's W3C trace headers and keeps them with the run, so a run resumed later (after an
approval, or on another replica) is traced under the same parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from corral.agents.events import ApprovalRequested, HandedOff, RunEvent, RunFinished, ToolReturned
from corral.agents.live import LiveRun
from corral.agents.registry import AgentRegistry
from corral.agents.runner import RunContext, Runner
from corral.agents.sessions import ensure_session, load_history, save_run_messages
from corral.agents.spec import RunState
from corral.config.agents import RunsConfig
from corral.llm.errors import ProviderError
from corral.llm.types import Message, Usage
from corral.store import RunRecord, Store
from corral.telemetry.tracing import Tracing, fail

if TYPE_CHECKING:
    from corral.agents.fanout import RedisRunEvents

log = logging.getLogger("corral.agents")

Mode = Literal["foreground", "background"]
INTERRUPTED = "interrupted: the server stopped while a client was waiting for this run"


class RunNotFound(Exception):
    pass


class RunConflict(Exception):
    pass


class RunObserver(Protocol):
    """Metrics hook: told about each tool result and each finished run (must not block)."""

    def tool_returned(self, agent: str, tool: str, is_error: bool) -> None: ...

    def run_finished(self, agent: str, status: str, seconds: float) -> None: ...


class AgentService:
    def __init__(self, registry: AgentRegistry, runner: Runner, store: Store, runs: RunsConfig,
                 *, worker_id: str | None = None, observer: RunObserver | None = None,
                 fanout: RedisRunEvents | None = None, tracing: Tracing | None = None) -> None:
        self.tracing = tracing
        self.observer = observer
        self.fanout = fanout
        self.registry = registry
        self.runner = runner
        self.store = store
        self.settings = runs
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.live: dict[str, LiveRun] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        if not self.registry.agents:
            return  # nothing could run: no workers polling the store on every replica
        for slot in range(self.settings.workers):
            self._workers.append(asyncio.create_task(self._work(), name=f"agent-worker-{slot}"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._workers:
            task.cancel()
        for live in list(self.live.values()):
            if live.task is not None:
                live.task.cancel()
        pending = [t for t in [*self._workers, *(lv.task for lv in self.live.values())] if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=10)

    def stop_claiming(self) -> None:
        """This service is being replaced (a config reload): claim no more queued runs;
        the runs it is executing go on (`idle` waits for them)."""
        self._stopping = True
        for task in self._workers:
            task.cancel()

    async def idle(self, within: float) -> bool:
        """True once no run executes here; False if some still do after ``within`` seconds."""
        running = [lv.task for lv in self.live.values() if lv.task is not None and not lv.task.done()]
        if not running:
            return True
        _, pending = await asyncio.wait(running, timeout=within)
        return not pending

    # ---- starting runs ------------------------------------------------------

    async def start_run(self, agent: str, messages: list[Message], *, session_id: str | None = None,
                        mode: Mode = "foreground", variables: Mapping[str, Any] | None = None,
                        owner: str | None = None, request_id: str = "",
                        caller: Mapping[str, Any] | None = None,
                        trace: Mapping[str, str] | None = None) -> tuple[RunRecord, LiveRun | None]:
        """``caller`` (JSON) says who the run's model calls are charged to; it is kept with the
        run, so a run resumed after approval or on another replica charges the same caller.
        ``trace``: the W3C headers (``traceparent``, ``tracestate``) of the span the run's
        spans go under (`Tracing.carrier`), kept the same way."""
        if self.registry.get(agent) is None:
            raise RunNotFound(f"unknown agent {agent!r}")
        if session_id is not None:
            await ensure_session(self.store, session_id, agent, owner=owner, variables=dict(variables or {}))
        from corral.agents.messages import messages_to_json

        run_input = {"mode": mode, "messages": messages_to_json(messages), "variables": dict(variables or {}),
                     "request_id": request_id}
        if caller is not None:
            run_input["caller"] = dict(caller)
        if trace and self.tracing is not None:
            run_input["trace"] = {k: v for k, v in trace.items() if k in ("traceparent", "tracestate")}
        if owner is not None and self.tracing is not None:
            run_input["owner"] = owner
        run_id = f"run_{uuid.uuid4().hex}"
        if mode == "background":
            record = await self.store.runs.enqueue(RunRecord(run_id, agent, "queued", session_id, input=run_input))
            self._wake.set()
            return record, None
        from datetime import UTC, datetime, timedelta

        lease = datetime.now(UTC) + timedelta(seconds=self.settings.lease_seconds)
        record = await self.store.runs.enqueue(RunRecord(run_id, agent, "running", session_id, input=run_input,
                                                         attempts=1, claimed_by=self.worker_id,
                                                         lease_expires_at=lease))
        return record, self._launch(record)

    def _launch(self, record: RunRecord) -> LiveRun:
        live = LiveRun(record.id, record.agent, record.session_id, sink=self._sink(record))
        self.live[record.id] = live
        live.task = asyncio.create_task(self._drive(record, live), name=f"run:{record.id}")
        return live

    def _sink(self, record: RunRecord) -> Callable[[int, RunEvent], None] | None:
        fanout = self.fanout
        if fanout is None:
            return None
        run_id, attempt = record.id, max(1, record.attempts)

        def sink(seq: int, event: RunEvent) -> None:
            try:
                fanout.publish(run_id, attempt, seq, event)
            except Exception:  # the fan-out is a convenience: it never fails the run
                log.exception("could not fan out an event of run %s", run_id)

        return sink

    async def _initial_state(self, record: RunRecord) -> RunState:
        from corral.agents.messages import messages_from_json

        checkpoint = record.input.get("checkpoint")
        if checkpoint:
            return RunState.from_json(checkpoint)
        variables: dict[str, Any] = {}
        history: list[Message] = []
        if record.session_id is not None:
            session = await self.store.sessions.get(record.session_id)
            if session is not None:
                variables.update(session.metadata.get("variables", {}))
            history = await load_history(self.store, record.session_id)
        variables.update(record.input.get("variables", {}))
        new = messages_from_json(record.input.get("messages", []))
        return RunState(record.agent, history + new, base=len(history), variables=variables)

    # ---- executing ----------------------------------------------------------

    async def _drive(self, record: RunRecord, live: LiveRun) -> None:
        started = asyncio.get_running_loop().time()
        heartbeat = asyncio.create_task(self._heartbeat(record.id, live))
        state: RunState | None = None
        final: RunFinished | None = None
        try:
            state = await self._initial_state(record)
            final = await self._loop(record, live, state)
        except asyncio.CancelledError:
            reason = "the server shut down" if self._stopping else "cancelled"
            final = RunFinished("cancelled", error=reason, usage=state.usage if state else Usage())
            if self._stopping and record.input.get("mode") == "background":
                final = None  # shutting down: hand the run back to the queue below
        except Exception as exc:
            log.exception("run %s failed", record.id)
            final = RunFinished("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.shield(self._settle(record, live, state, final))
            if self.observer is not None:
                status = final.status if final is not None else "requeued"
                self.observer.run_finished(record.agent, status, asyncio.get_running_loop().time() - started)

    async def _loop(self, record: RunRecord, live: LiveRun, state: RunState) -> RunFinished:
        agent = self.registry.agents[state.agent]
        ctx = RunContext(record.id, record.session_id, str(record.input.get("request_id", "")),
                         agent=record.agent, caller=record.input.get("caller"))
        if self.tracing is not None:
            ctx.trace = self.tracing.parent(record.input.get("trace") or {})
            ctx.user = record.input.get("owner")
        # Only background runs are ever resumed, so only they pay for checkpoints.
        resumable = record.input.get("mode") == "background"
        try:
            async with asyncio.timeout(agent.config.timeout):
                async for event in self.runner.run(state, ctx):
                    if isinstance(event, RunFinished):
                        return event
                    live.publish(event)
                    if self.observer is not None and isinstance(event, ToolReturned):
                        self.observer.tool_returned(event.agent, event.name, event.is_error)
                    if resumable and isinstance(event, ToolReturned | HandedOff):
                        await self._checkpoint(record, state)
                    if isinstance(event, ApprovalRequested):
                        record.input["pending_approvals"] = event.calls
        except TimeoutError:
            return RunFinished("failed", error=f"timed out after {agent.config.timeout:g}s", usage=state.usage)
        except ProviderError as exc:
            return RunFinished("failed", error=f"model error ({exc.status}): {exc}", usage=state.usage)
        return RunFinished("failed", error="the run ended without an outcome", usage=state.usage)

    async def _checkpoint(self, record: RunRecord, state: RunState) -> None:
        record.input["checkpoint"] = state.to_json()
        await self.store.runs.save(record.id, input=record.input, worker=self.worker_id)

    async def _heartbeat(self, run_id: str, live: LiveRun) -> None:
        interval = max(0.05, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            held = await self.store.runs.extend_lease(run_id, self.worker_id, lease_seconds=self.settings.lease_seconds)
            if not held and live.task is not None:  # cancelled (or taken over) elsewhere
                live.task.cancel()
                return

    async def _settle(self, record: RunRecord, live: LiveRun, state: RunState | None,
                      final: RunFinished | None) -> None:
        span = None
        if self.tracing is not None:  # the store writes that end a run, beside its agent span
            span = self.tracing.start("settle_run runs", parent=self.tracing.parent(record.input.get("trace") or {}),
                                      attributes={"db.operation.name": "settle_run", "corral.run_id": record.id,
                                                  "corral.run.status": final.status if final else "requeued"})
        try:
            if final is None:
                if state is not None:
                    record.input["checkpoint"] = state.to_json()
                await self.store.runs.save(record.id, input=record.input, state="queued", release=True)
                return
            if final.status == "input-required" and state is not None:
                record.input["checkpoint"] = state.to_json()
                await self.store.runs.save(record.id, input=record.input, state="input-required", release=True)
            else:
                if state is not None and record.session_id is not None:
                    await save_run_messages(self.store, record.session_id, state, record.id)
                store_state = {"completed": "succeeded", "failed": "failed"}.get(final.status, "cancelled")
                usage = final.usage
                output = {"output": final.output, "usage": {"input_tokens": usage.input_tokens,
                                                            "output_tokens": usage.output_tokens}}
                await self.store.runs.finish(record.id, store_state,  # type: ignore[arg-type]
                                             output=output, error=final.error)
        except Exception as exc:
            log.exception("could not record the outcome of run %s", record.id)
            if span is not None:
                fail(span, type(exc).__qualname__)
        finally:
            if span is not None:
                span.end()
            if final is not None:
                live.publish(final)
            live.settle()
            self.live.pop(record.id, None)

    # ---- the background worker ----------------------------------------------

    async def _work(self) -> None:
        while not self._stopping:
            try:
                record = await self.store.runs.claim(self.worker_id, lease_seconds=self.settings.lease_seconds,
                                                     agents=list(self.registry.agents))
            except Exception:
                log.exception("claiming a run failed")
                record = None
            if record is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
                continue
            if record.input.get("mode") != "background":
                await self.store.runs.finish(record.id, "failed", error=INTERRUPTED)
                continue
            live = self._launch(record)
            assert live.task is not None
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(live.task)

    # ---- control ------------------------------------------------------------

    async def get(self, run_id: str) -> RunRecord:
        record = await self.store.runs.get(run_id)
        if record is None:
            raise RunNotFound(f"unknown run {run_id!r}")
        return record

    async def wait(self, run_id: str, within: float) -> RunRecord:
        """The run once it is final or waiting for approval, or as it is after ``within`` seconds."""
        live = self.live.get(run_id)
        if live is not None:
            await live.wait(within)
            return await self.get(run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            record = await self.get(run_id)
            if record.state in FINAL_OR_PAUSED or loop.time() >= deadline:
                return record
            live = self.live.get(run_id)
            if live is not None:
                await live.wait(max(0.0, deadline - loop.time()))
            else:
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    async def follow(self, record: RunRecord, after: str | None = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The events (as JSON, with their entry ids ``<attempt>-<seq>``) of a queued or
        running run that does not execute here, read from the fan-out: what is stored of
        the current attempt (or after ``after``, a follower's ``Last-Event-ID``), then live
        ones, until ``run.finished``. When another replica takes the run over, a
        ``run.attempt`` event (id ``<attempt>-0``) comes before the new attempt's events:
        what the earlier attempt streamed after its last checkpoint is superseded. Ends
        early if the run is over in the store without its last events (the executor died,
        or Redis lost them) or Redis is unreachable: the caller then shows the stored state."""
        assert self.fanout is not None
        # Entry ids are <attempt>-<seq>; a queued run's next attempt is one more than its claims.
        if after is None:
            after = f"{record.attempts if record.state == 'running' else record.attempts + 1}-0"
        attempt = int(after.split("-", 1)[0])
        ending = False
        try:
            async for entry in self.fanout.follow(record.id, after):
                if entry is not None:
                    entry_id, event = entry
                    number = int(entry_id.split("-", 1)[0])
                    if number != attempt:
                        yield f"{number}-0", {"type": "run.attempt", "run_id": record.id, "attempt": number,
                                              "previous_attempt": attempt}
                        attempt = number
                    yield entry_id, event
                    continue
                if ending:
                    return
                current = await self.store.runs.get(record.id)
                # Over in the store: its last events may still be on their way, so wait once more.
                ending = current is None or current.state not in ("queued", "running")
        except Exception as exc:
            log.warning("cannot follow run %s through Redis: %s", record.id, exc)

    async def cancel(self, run_id: str) -> RunRecord:
        record = await self.get(run_id)
        if record.state in FINAL_STATES:
            raise RunConflict(f"run {run_id!r} is already {record.state}")
        live = self.live.get(run_id)
        if live is not None and live.task is not None:
            live.task.cancel()
            await live.wait(10)
        else:
            # Queued, paused, or running on another replica (whose heartbeat will notice).
            await self.store.runs.finish(run_id, "cancelled", error="cancelled")
        return await self.get(run_id)

    async def approve(self, run_id: str, *, approved: bool = True,
                      decisions: Mapping[str, bool] | None = None) -> RunRecord:
        """Record decisions for the tool calls the run waits on and queue it to continue."""
        record = await self.get(run_id)
        if record.state != "input-required":
            raise RunConflict(f"run {run_id!r} is {record.state}, not waiting for approval")
        pending = [c["id"] for c in record.input.get("pending_approvals", [])]
        unknown = set(decisions or {}) - set(pending)
        if unknown:
            raise RunConflict(f"run {run_id!r} is not waiting on tool call(s) {', '.join(sorted(unknown))}")
        run_input = dict(record.input)
        checkpoint = dict(run_input.get("checkpoint") or {})
        chosen = dict(checkpoint.get("decisions", {}))
        for call_id in pending:
            chosen[call_id] = bool((decisions or {}).get(call_id, approved))
        checkpoint["decisions"] = chosen
        run_input.update(checkpoint=checkpoint, mode="background", pending_approvals=[])
        if not await self.store.runs.save(run_id, input=run_input, state="queued", release=True):
            raise RunConflict(f"run {run_id!r} changed while it was being approved")
        self._wake.set()
        return await self.get(run_id)


FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
FINAL_OR_PAUSED = FINAL_STATES | {"input-required"}
