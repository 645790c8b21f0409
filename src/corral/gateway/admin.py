"""`/admin`: virtual keys, teams and spend. Every route needs the master key.

Changes take effect on this replica at once and on the others through the Redis
invalidation channel (or their periodic refresh without Redis).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from corral.gateway.auth import Authenticator, AuthError, display_prefix, generate_key, hash_key
from corral.gateway.budgets import BudgetSeeder
from corral.gateway.errors import ApiError
from corral.gateway.http import json_response
from corral.gateway.keysync import KeySync
from corral.gateway.limits import Limiter, parse_duration
from corral.store import AuditRecord, BatchWriter, KeyRecord, Store, TeamRecord
from corral.store.keys import new_id
from corral.store.store import BatchRecord
from corral.store.usage import GroupBy

Handler = Callable[[Request], Awaitable[Response]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _valid_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def json_safe(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Stored and answered as JSON: refused here, not after it is stored (an integer past
    64 bits would otherwise break every later listing of the record)."""
    if value is not None:
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            raise ValueError("must be plain JSON (integers within 64 bits)") from None
    return value


# A 64-bit column: a larger limit would be accepted, then fail to store (a 500).
MAX_STORED_INT = 2**63 - 1
Duration = Annotated[str | None, AfterValidator(_valid_duration)]
Time = Annotated[datetime | None, AfterValidator(_utc)]
Metadata = Annotated[dict[str, Any], AfterValidator(json_safe)]


class ModelLimit(_Body):
    rpm: int | None = Field(default=None, ge=1, le=MAX_STORED_INT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_STORED_INT)


class KeyCreate(_Body):
    name: str | None = Field(default=None, max_length=200)
    team_id: str | None = None
    models: list[str] = Field(default_factory=list)
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: Duration = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_STORED_INT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_STORED_INT)
    model_limits: dict[str, ModelLimit] = Field(default_factory=dict)
    expires_at: Time = None
    metadata: Metadata = Field(default_factory=dict)


class KeyUpdate(_Body):
    """Only the fields sent change; ``null`` clears a setting (no limit, no expiry, all models)."""

    name: str | None = Field(default=None, max_length=200)
    team_id: str | None = None
    models: list[str] | None = None
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: Duration = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_STORED_INT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_STORED_INT)
    model_limits: dict[str, ModelLimit] | None = None
    expires_at: Time = None
    metadata: Metadata | None = None
    disabled: bool = False

    def changes(self) -> dict[str, Any]:
        """The store columns to set (``disabled`` is decided by the caller, who knows since when)."""
        sent = self.model_fields_set - {"disabled"}
        changes: dict[str, Any] = {f: getattr(self, f) for f in sent}
        if "models" in sent:
            changes["models"] = tuple(self.models or ())
        if "model_limits" in sent:
            changes["model_limits"] = {m: v.model_dump(exclude_none=True) for m, v in (self.model_limits or {}).items()}
        if "metadata" in sent:
            changes["metadata"] = self.metadata or {}
        return changes


class TeamCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: Duration = None
    metadata: Metadata = Field(default_factory=dict)


def key_json(record: KeyRecord, *, spend: float | None = None) -> dict[str, Any]:
    return {
        "id": record.id,
        "key_prefix": record.key_prefix,
        "name": record.name,
        "team_id": record.team_id,
        "models": list(record.models),
        "max_budget": record.max_budget,
        "budget_duration": record.budget_duration,
        "spend": spend,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "model_limits": record.model_limits,
        "expires_at": _iso(record.expires_at),
        "metadata": record.metadata,
        "created_at": _iso(record.created_at),
        "revoked_at": _iso(record.revoked_at),
        "rotated_at": _iso(record.rotated_at),
        "disabled": record.disabled,
        "disabled_at": _iso(record.disabled_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _body(request: Request, model: type[_Body]) -> Any:
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = f"unknown field; the fields are {', '.join(model.model_fields)}"
            if where in ("key", "key_hash", "key_prefix"):
                message += " (a key's secret is replaced with POST /admin/keys/{id}/rotate)"
        raise ApiError(400, f"{where}: {message}" if where else message, param=where or None) from None


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 date or time", param=name) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class AdminApi:
    def __init__(self, authenticator: Authenticator, store: Store, limiter: Limiter, keys: KeySync,
                 budgets: BudgetSeeder, writer: BatchWriter[BatchRecord]) -> None:
        self.authenticator = authenticator
        self.store = store
        self.limiter = limiter
        self.keys = keys
        self.budgets = budgets
        self.writer = writer

    def guarded(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            principal = await self.authenticator.authenticate(request)
            if principal.kind == "anonymous":
                raise AuthError(401, "The admin API needs the master key", code="missing_api_key")
            if not principal.is_admin:
                raise AuthError(403, "The admin API needs the master key", code="forbidden")
            return await handler(request)

        return run

    async def _audit(self, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        await self.writer.put(AuditRecord(actor="master", action=action, target=target, detail=detail or {}))

    def _key_id(self, request: Request) -> str:
        return str(request.path_params["key_id"])

    async def _spend(self, record: KeyRecord) -> float | None:
        return await self.limiter.spend(record) if record.max_budget is not None else None

    async def create_key(self, request: Request) -> Response:
        body: KeyCreate = await _body(request, KeyCreate)
        if body.team_id is not None and await self.store.teams.get(body.team_id) is None:
            raise ApiError(400, f"No team with id '{body.team_id}'", param="team_id")
        secret = generate_key()
        record = KeyRecord(
            id=new_id(), key_hash=hash_key(secret), key_prefix=display_prefix(secret), name=body.name,
            team_id=body.team_id, models=tuple(body.models), max_budget=body.max_budget,
            budget_duration=body.budget_duration, rpm=body.rpm, tpm=body.tpm,
            model_limits={m: v.model_dump(exclude_none=True) for m, v in body.model_limits.items()},
            expires_at=body.expires_at, metadata=body.metadata,
        )
        await self.store.keys.create(record)
        await self.keys.key_changed(record.id)
        await self._audit("key.create", record.id, {"name": record.name})
        # The only time the key itself is ever shown.
        return json_response({**key_json(record, spend=0.0 if record.max_budget is not None else None),
                              "key": secret}, 201)

    async def list_keys(self, request: Request) -> Response:
        include = request.query_params.get("include_revoked", "").lower() in ("1", "true", "yes")
        records = await self.store.keys.list(include_revoked=include,
                                                    team_id=request.query_params.get("team_id"))
        return json_response({"data": [key_json(r, spend=await self._spend(r)) for r in records]})

    async def get_key(self, request: Request) -> Response:
        record = await self.store.keys.get(self._key_id(request))
        if record is None:
            raise ApiError(404, f"No key with id '{self._key_id(request)}'", code="not_found")
        return json_response(key_json(record, spend=await self._spend(record)))

    async def update_key(self, request: Request) -> Response:
        body: KeyUpdate = await _body(request, KeyUpdate)
        key_id = self._key_id(request)
        current = await self.store.keys.get(key_id)
        if current is None:
            raise ApiError(404, f"No key with id '{key_id}'", code="not_found")
        if current.revoked:
            raise ApiError(409, f"The key '{key_id}' is revoked; a revoked key cannot be changed", code="conflict")
        if not body.model_fields_set:
            raise ApiError(400, f"Nothing to change: send one or more of {', '.join(KeyUpdate.model_fields)}")
        changes = body.changes()
        if "disabled" in body.model_fields_set and body.disabled != current.disabled:
            changes["disabled_at"] = datetime.now(UTC) if body.disabled else None
        if changes.get("team_id") is not None and await self.store.teams.get(changes["team_id"]) is None:
            raise ApiError(400, f"No team with id '{changes['team_id']}'", param="team_id")
        record = await self.store.keys.update(key_id, changes) if changes else current
        if record is None:  # revoked while we looked
            raise ApiError(409, f"The key '{key_id}' is revoked; a revoked key cannot be changed", code="conflict")
        await self.keys.key_changed(record.id)
        if {"max_budget", "budget_duration"} & set(changes):
            await self.budgets.seed_key(record)
        await self._audit("key.update", record.id, {k: _iso(v) if isinstance(v, datetime) else v
                                                     for k, v in changes.items()})
        return json_response(key_json(record, spend=await self._spend(record)))

    async def revoke_key(self, request: Request) -> Response:
        record = await self.store.keys.revoke(self._key_id(request))
        if record is None:
            raise ApiError(404, f"No key with id '{self._key_id(request)}'", code="not_found")
        await self.keys.key_changed(record.id)
        await self._audit("key.revoke", record.id)
        return json_response(key_json(record))

    async def rotate_key(self, request: Request) -> Response:
        secret = generate_key()
        record = await self.store.keys.rotate(
            self._key_id(request), key_hash=hash_key(secret), key_prefix=display_prefix(secret)
        )
        if record is None:
            raise ApiError(404, f"No live key with id '{self._key_id(request)}'", code="not_found")
        await self.keys.key_changed(record.id)
        await self._audit("key.rotate", record.id)
        return json_response({**key_json(record, spend=await self._spend(record)), "key": secret})

    async def create_team(self, request: Request) -> Response:
        body: TeamCreate = await _body(request, TeamCreate)
        record = TeamRecord(id=new_id(), name=body.name, max_budget=body.max_budget,
                            budget_duration=body.budget_duration, metadata=body.metadata)
        if any(t.name == body.name for t in await self.store.teams.list()):
            raise ApiError(409, f"A team named '{body.name}' exists", param="name")
        await self.store.teams.create(record)
        self.keys.keys.put_team(record)
        await self._audit("team.create", record.id, {"name": record.name})
        return json_response(_team_json(record, spend=0.0 if record.max_budget is not None else None), 201)

    async def list_teams(self, request: Request) -> Response:
        teams = await self.store.teams.list()
        return json_response({"data": [_team_json(t, spend=await self.limiter.spend(t)) for t in teams]})

    async def spend(self, request: Request) -> Response:
        group_by = request.query_params.get("group_by", "key")
        if group_by not in ("key", "model", "day", "subject", "team", "agent"):
            raise ApiError(400, "group_by must be one of: key, model, day, subject, team, agent", param="group_by")
        group: GroupBy = group_by  # type: ignore[assignment]
        rows = await self.store.usage.spend(
            group, since=_time_param(request, "since"), until=_time_param(request, "until"),
            key_id=request.query_params.get("key_id"),
        )
        data = [{group_by: r.group, "requests": r.requests, "input_tokens": r.input_tokens,
                 "output_tokens": r.output_tokens, "cost_usd": round(r.cost_usd, 10)} for r in rows]
        total = round(sum(r.cost_usd for r in rows), 10)
        return json_response({"group_by": group_by, "data": data, "total_cost_usd": total})


def _team_json(record: TeamRecord, *, spend: float | None = None) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "max_budget": record.max_budget,
            "budget_duration": record.budget_duration, "spend": spend, "metadata": record.metadata,
            "created_at": _iso(record.created_at)}
