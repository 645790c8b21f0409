"""Policies acting on real sessions of an in-process node (and on simulated nodes for failures)."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.fleet.testing import SimulatedNode, wait_until

from .conftest import TOKEN, Fleet


async def _policy_events(fleet: Fleet, kind: str = "policy.") -> list[dict[str, Any]]:
    assert fleet.sup is not None
    return await fleet.sup.store.list_events(node_id="supervisor", type_prefix=kind, limit=1000)


async def _first_policy_events(fleet: Fleet, kind: str) -> list[dict[str, Any]]:
    """The events are stored a moment after the action they record."""
    found: list[dict[str, Any]] = []

    async def some() -> bool:
        found[:] = await _policy_events(fleet, kind)
        return bool(found)

    await wait_until(some, 5, f"a {kind} event")
    return found


async def test_resume_on_idle_prompts_an_idle_session_and_audits_it(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(policies={"check_interval_seconds": 0.05, "resume_on_idle": {
        "enabled": True, "idle_threshold_seconds": 0.3, "message": "keep going"}})
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    sid = started["output"]["session_id"]

    async def resumed() -> bool:
        replies = await sup.store.list_events(session_id=sid, type_prefix="session.message", limit=100)
        return any(r["data"]["text"] == "You said: keep going" for r in replies)

    await wait_until(resumed, 5, "a resume turn")
    actions = await _first_policy_events(fleet, "policy.action")
    assert actions[0]["session_id"] == sid
    assert {k: actions[0]["data"][k] for k in ("policy", "action", "result", "retry_count")} == {
        "policy": "resume_on_idle", "action": "resume", "result": "success", "retry_count": 1}
    audit: list[dict[str, Any]] = []

    async def audited() -> bool:
        audit[:] = await sup.store.list_audit(action="policy.resume_on_idle")
        return bool(audit)

    await wait_until(audited, 5, "an audit entry")
    assert audit[-1]["actor"] == "policy-engine" and audit[-1]["target"] == sid


async def test_successful_resumes_count_toward_max_retries(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(policies={"check_interval_seconds": 0.02, "resume_on_idle": {
        "enabled": True, "idle_threshold_seconds": 0.1, "max_retries": 2, "retry_reset_seconds": 60}})
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    sid = started["output"]["session_id"]
    caps = await _first_policy_events(fleet, "policy.retry_cap")
    assert caps[0]["session_id"] == sid and caps[0]["data"]["result"] == "success"
    await asyncio.sleep(1.0)  # ten idle thresholds: an unlimited policy would resume ~10 more times
    actions = await _policy_events(fleet, "policy.action")
    assert [(a["data"]["result"], a["data"]["retry_count"]) for a in actions] == [("success", 1), ("success", 2)]
    assert sup.policies.actions == {("resume_on_idle", "success"): 2}


async def test_retry_cap_stops_a_failing_policy_and_alerts_until_the_reset_window(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(policies={"check_interval_seconds": 0.05, "resume_on_idle": {
        "enabled": True, "idle_threshold_seconds": 0.05, "max_retries": 2, "retry_reset_seconds": 60}})
    sim = SimulatedNode(fleet.ws_url, TOKEN, "sim")
    sim.command_status = "failure"
    await sim.connect()
    await sim.event("session.idle", "s-fail")
    await wait_until(lambda: len(sim.commands) >= 2, 5, "two attempts")
    caps = []

    async def capped() -> bool:
        caps[:] = await _policy_events(fleet, "policy.retry_cap")
        return bool(caps)

    await wait_until(capped, 5, "retry cap event")
    await asyncio.sleep(0.5)  # ten policy ticks
    assert len(sim.commands) == 2  # blocked: no third attempt inside the reset window
    assert caps[0]["data"]["reason"] == "max_retries_reached" and caps[0]["data"]["retry_count"] == 2
    assert [c["type"] for c in sim.commands] == ["resume", "resume"]
    failures = await sup.store.list_audit(action="policy.resume_on_idle")
    assert [a["result"] for a in failures] == ["failure", "failure"]
    await sim.close()


async def test_kill_on_cost_kills_a_session_over_budget(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(
        cost={"pricing": {"scripted": {"input": 1_000_000.0, "output": 1_000_000.0}}},
        policies={"check_interval_seconds": 0.05, "kill_on_cost": {"enabled": True, "cost_threshold_usd": 1.0}})
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "spend", "wait": True})
    sid = started["output"]["session_id"]
    await wait_until(lambda: sup.state.sessions[sid].state == "completed", 5, "the session killed")
    killed = await sup.store.list_events(session_id=sid, type_prefix="session.killed")
    assert killed and killed[0]["node_id"] == "n1"
    action = (await _first_policy_events(fleet, "policy.action"))[0]["data"]
    assert (action["policy"], action["action"], action["result"]) == ("kill_on_cost", "kill", "success")
    assert sup.state.sessions[sid].cost_usd > 1.0


async def test_restart_on_compaction_by_token_threshold_and_by_compaction_event(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(policies={"check_interval_seconds": 0.05, "restart_on_compaction": {
        "enabled": True, "token_threshold": 1_000_000}})
    sim = SimulatedNode(fleet.ws_url, TOKEN, "sim")
    await sim.connect()
    await sim.event("session.running", "s-big")
    await sim.event("usage", "s-big", {"model": "m", "input_tokens": 2_000_000, "output_tokens": 1})
    await sim.event("session.idle", "s-compact")
    await sim.event("session.compacted", "s-compact")
    await wait_until(lambda: len(sim.commands) >= 2, 5, "two restarts")
    restarted = sorted(c["args"]["session_id"] for c in sim.commands if c["type"] == "restart")
    assert restarted == ["s-big", "s-compact"]
    reasons: dict[str, str] = {}

    async def both_recorded() -> bool:
        reasons.update({e["session_id"]: e["data"]["reason"] for e in await _policy_events(fleet, "policy.action")})
        return len(reasons) == 2

    await wait_until(both_recorded, 5, "two policy.action events")
    assert reasons == {"s-big": "2000001 tokens", "s-compact": "compaction event"}
    assert sup.state.sessions["s-compact"].compactions == 1
    await sim.close()


async def test_restart_replaces_a_real_session_with_a_new_one(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor()
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "task", "wait": True})
    old = started["output"]["session_id"]
    restarted = await fleet.command("restart", {"session_id": old}, {"wait": True})
    new = restarted["output"]["session_id"]
    assert new != old and restarted["output"]["replaced"] == old
    assert restarted["output"]["reply"] == "You said: task"  # the last prompt runs again
    await wait_until(lambda: sup.state.sessions[old].state == "completed"
                     and sup.state.sessions.get(new) is not None, 5, "old completed")
    killed = await fleet.command("kill", {"session_id": new})
    assert killed["output"]["state"] == "completed"
    status = await fleet.command("status", {"node_id": "n1"})
    assert {s["session_id"]: s["state"] for s in status["output"]["sessions"]} == {old: "completed",
                                                                                   new: "completed"}
