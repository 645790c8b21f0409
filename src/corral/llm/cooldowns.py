"""Deployment cooldowns (and latency averages) shared by replicas through Redis.

Each replica keeps its own copy of every deployment's health in its `Router`, so picking
a deployment never waits on the network. This module keeps the copies in step:

- A cooldown started on one replica is written to a sorted set (member: the alias and
  deployment, score: when the cooldown ends, on the Redis clock) and published on a
  channel, in one script call, off the request path. Every replica listens and applies
  it to its copy; a replica that starts (or resubscribes after an outage) reads the set
  first, so it skips what the others cooled down before it was there.
- A success on a deployment that had cooled down ends the cooldown everywhere the same way.
- Latency averages are pushed to a hash every ``sync_seconds``; a replica that has never
  called a deployment takes the published average instead of trying it first.

Failures are counted per replica (the first to reach ``allowed_fails`` cools the
deployment down for all). When Redis is unreachable each replica falls back to its own
cooldowns, with a warning in the log; no request waits on Redis or fails because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson

from corral.llm.router import Router
from corral.telemetry.logging import OutageLog

log = logging.getLogger("corral.router")

TIMEOUT = 2.0  # seconds for one Redis call; a hung Redis must not pile up tasks
LATENCY_TTL_MS = 600_000

# KEYS: the cooldown set; ARGV: member, milliseconds (0: recovered), channel, message.
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ms = tonumber(ARGV[2])
if ms > 0 then
  local current = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
  if current < now + ms then redis.call('ZADD', KEYS[1], now + ms, ARGV[1]) end
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 0
"""

# KEYS: the cooldown set. Returns member, milliseconds left, member, milliseconds left, ...
_SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local items = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #items, 2 do
  out[#out + 1] = items[i]
  out[#out + 1] = tostring(math.floor(tonumber(items[i + 1]) - now))
end
return out
"""


def _member(alias: str, key: str) -> str:
    return orjson.dumps([alias, key]).decode()


class RedisHealth:
    """The router's `HealthSink` on Redis. `start()` and `stop()` run with the gateway."""

    def __init__(self, router: Router, client: Any, *, prefix: str = "corral:", sync_seconds: float = 10.0) -> None:
        self.router = router
        self.client = client
        self.origin = uuid.uuid4().hex  # to ignore our own announcements
        self.cooldowns_key = f"{prefix}router:cooldowns"
        self.channel = f"{prefix}router:health"
        self.latency_key = f"{prefix}router:latency"
        self.sync_seconds = sync_seconds
        self._announce = client.register_script(_ANNOUNCE)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._first_try = asyncio.Event()  # set once the first subscription succeeded or failed
        self._outage = OutageLog(log)
        router.health_sink = self

    @classmethod
    def from_url(cls, router: Router, url: str, *, prefix: str = "corral:") -> RedisHealth:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url, socket_connect_timeout=TIMEOUT, socket_keepalive=True)
        return cls(router, client, prefix=prefix)

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self, *, wait: float = TIMEOUT) -> None:
        """Subscribe and read the current cooldowns; waits at most ``wait`` seconds (a
        Redis that is down leaves this replica on its own cooldowns until it is back)."""
        self._loops.append(asyncio.create_task(self._listen(), name="corral-router-health"))
        self._loops.append(asyncio.create_task(self._sync_latency(), name="corral-router-latency"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_try.wait(), wait)

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        self._tasks.clear()
        self.router.health_sink = None
        await self.client.aclose()

    # ---- HealthSink: called by the router, never blocks ----------------------------

    def cooled(self, alias: str, key: str, seconds: float) -> None:
        self._spawn(self._send(alias, key, max(1, round(seconds * 1000))))

    def recovered(self, alias: str, key: str) -> None:
        self._spawn(self._send(alias, key, 0))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a router used synchronously in a test): nothing to share
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, alias: str, key: str, ms: int) -> None:
        message = orjson.dumps({"alias": alias, "key": key, "ms": ms, "origin": self.origin})
        try:
            async with asyncio.timeout(TIMEOUT):
                await self._announce(keys=[self.cooldowns_key],
                                     args=[_member(alias, key), ms, self.channel, message])
        except Exception as exc:
            what = "cooldown" if ms else "recovery"
            self._outage.down(f"could not share the {what} of {alias} -> {key} with the other replicas "
                       f"(each replica cools deployments down on its own until Redis is back): {exc}")
        else:
            self._outage.up("router health is shared through Redis again")

    # ---- listening to the others -------------------------------------------------

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # Subscribed first, then the snapshot: nothing announced in between is missed.
                await self.load()
                self._first_try.set()
                self._outage.up("router health is shared through Redis again")
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._outage.down(f"router health channel unavailable (cooldowns are per replica until Redis "
                           f"is back): {exc}")
                self._first_try.set()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def load(self) -> int:
        """Apply the cooldowns in force; returns how many this router knows."""
        async with asyncio.timeout(TIMEOUT):
            items = await self._snapshot(keys=[self.cooldowns_key])
        applied = 0
        for raw, left in zip(items[::2], items[1::2], strict=True):
            alias, key = orjson.loads(raw)
            applied += self.router.apply_cooldown(alias, key, int(left) / 1000)
        return applied

    def _apply(self, data: bytes | str) -> None:
        try:
            message = orjson.loads(data)
            if message.get("origin") == self.origin:
                return
            self.router.apply_cooldown(str(message["alias"]), str(message["key"]), int(message["ms"]) / 1000)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed router health message: %s", exc)

    async def _sync_latency(self) -> None:
        while True:
            try:
                await self.sync_latency()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("latency averages not shared this time: %s", exc)
            await asyncio.sleep(self.sync_seconds)

    async def sync_latency(self) -> None:
        """Publish this replica's latency averages; adopt the others' for deployments this
        replica has not called yet."""
        states = self.router.deployment_states()
        mine = {_member(s.alias, s.key): repr(s.latency) for s in states if s.latency is not None}
        async with asyncio.timeout(TIMEOUT):
            pipe = self.client.pipeline(transaction=False)
            if mine:
                pipe.hset(self.latency_key, mapping=mine)
                pipe.pexpire(self.latency_key, LATENCY_TTL_MS)
            pipe.hgetall(self.latency_key)
            shared: dict[bytes, bytes] = (await pipe.execute())[-1]
        for state in states:
            if state.latency is None:
                value = shared.get(_member(state.alias, state.key).encode())
                if value is not None:
                    state.latency = float(value)

