from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.boot.specs import (
    ServiceSpecError,
    effective_services,
    topological_levels,
    unknown_overrides,
)
from corral.config.schema import CorralConfig


def config(**sections: Any) -> CorralConfig:
    return CorralConfig.model_validate(sections)


def by_name(cfg: CorralConfig, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {s.name: s for s in effective_services(cfg, env or {})}


def test_dependency_cycle_is_rejected_by_config_validation() -> None:
    with pytest.raises(ValidationError) as info:
        config(services={
            "a": {"type": "tcp", "port": 1, "depends_on": ["b"]},
            "b": {"type": "tcp", "port": 2, "depends_on": ["c"]},
            "c": {"type": "tcp", "port": 3, "depends_on": ["a"]},
        })
    assert "dependency cycle: a -> b -> c -> a" in str(info.value)


def test_unknown_dependency_and_self_dependency_are_rejected() -> None:
    with pytest.raises(ValidationError, match="depends on unknown service 'nope'"):
        config(services={"a": {"type": "tcp", "port": 1, "depends_on": ["nope"]}})
    with pytest.raises(ValidationError, match="'a' depends on itself"):
        config(services={"a": {"type": "tcp", "port": 1, "depends_on": ["a"]}})


def test_start_needs_exactly_one_way_and_a_service_needs_an_address() -> None:
    with pytest.raises(ValidationError, match=r"either start\.command or start\.compose_service"):
        config(services={"a": {"type": "tcp", "port": 1, "start": {"command": "x", "compose_service": "y"}}})
    with pytest.raises(ValidationError, match="needs url, or host and/or port"):
        config(services={"a": {"type": "http"}})


def test_database_and_cache_urls_imply_required_services_with_their_credentials() -> None:
    cfg = config(database={"url": "postgresql+asyncpg://app:s3cret@db.internal:5433/corral"},
                 cache={"url": "redis://:pw@cache.internal:6380/2"})
    specs = by_name(cfg)
    assert list(specs) == ["postgres", "redis"]
    pg = specs["postgres"]
    assert (pg.url, pg.required, pg.source) == ("postgresql://app:s3cret@db.internal:5433/corral", True, "database.url")
    assert pg.address == "postgresql://app:***@db.internal:5433/corral"
    assert specs["redis"].source == "cache.url"
    assert specs["redis"].address == "redis://:***@cache.internal:6380/2"


def test_sqlite_implies_nothing_and_a_declared_service_at_the_cache_address_adopts_its_url() -> None:
    cfg = config(database={"url": "sqlite:///x.db"}, cache={"url": "redis://:pw@127.0.0.1:6379/0"},
                 services={"cache": {"type": "redis", "host": "127.0.0.1", "port": 6379}})
    specs = by_name(cfg)
    assert list(specs) == ["cache"]
    # so the probe logs in with the credentials Corral will really use
    assert (specs["cache"].url, specs["cache"].source) == ("redis://:pw@127.0.0.1:6379/0", "services + cache.url")
    env_moved = by_name(cfg, {"SVC_CACHE_PORT": "1"})["cache"]
    assert env_moved.url == "redis://:pw@127.0.0.1:1/0"


def test_port_override_rewrites_host_port_and_url_services_keeping_credentials() -> None:
    cfg = config(services={
        "redis": {"type": "redis", "host": "127.0.0.1", "port": 6379},
        "db": {"type": "postgres", "url": "postgresql://u:pw@127.0.0.1:5432/app"},
    })
    specs = by_name(cfg, {"SVC_REDIS_PORT": "1", "SVC_DB_HOST": "10.0.0.5", "SVC_DB_PORT": "6543"})
    assert (specs["redis"].host, specs["redis"].port) == ("127.0.0.1", 1)
    assert specs["redis"].overrides == ("SVC_REDIS_PORT",)
    assert specs["db"].url == "postgresql://u:pw@10.0.0.5:6543/app"


def test_helixagent_hybrid_variables_mark_services_remote() -> None:
    # The exact variables of the HelixAgent hybrid guide, including its POSTGRESQL/CHROMADB names.
    cfg = config(services={
        "postgres": {"type": "postgres", "host": "127.0.0.1"},
        "redis": {"type": "redis", "host": "127.0.0.1"},
        "chroma": {"type": "chroma", "port": 8001},
    })
    env = {"SVC_POSTGRESQL_HOST": "thinker.local", "SVC_POSTGRESQL_REMOTE": "true",
           "SVC_REDIS_HOST": "thinker.local", "SVC_REDIS_REMOTE": "true",
           "SVC_CHROMADB_HOST": "thinker.local", "SVC_CHROMADB_REMOTE": "true"}
    specs = by_name(cfg, env)
    assert {n: (s.host, s.remote) for n, s in specs.items()} == {
        "postgres": ("thinker.local", True), "redis": ("thinker.local", True), "chroma": ("thinker.local", True)}
    assert specs["chroma"].address == "thinker.local:8001"
    assert unknown_overrides(list(specs.values()), env) == []


def test_every_override_field_is_parsed() -> None:
    cfg = config(services={"api": {"type": "http", "url": "http://127.0.0.1:9000"}})
    env = {"SVC_API_URL": "http://10.1.1.1:9100", "SVC_API_ENABLED": "no", "SVC_API_REQUIRED": "0",
           "SVC_API_TIMEOUT": "500ms", "SVC_API_RETRY_COUNT": "3", "SVC_API_HEALTH_PATH": "/livez",
           "SVC_API_HEALTH_TYPE": "tcp", "SVC_API_DEADLINE": "2m"}
    spec = by_name(cfg, env)["api"]
    assert (spec.url, spec.enabled, spec.required, spec.timeout, spec.retries, spec.health_path,
            spec.health_kind, spec.deadline) == ("http://10.1.1.1:9100", False, False, 0.5, 3, "/livez", "tcp", 120.0)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SVC_REDIS_PORT", "abc", "expected a port number"),
    ("SVC_REDIS_PORT", "70000", "expected a port number"),
    ("SVC_REDIS_REMOTE", "maybe", "expected true or false"),
    ("SVC_REDIS_TIMEOUT", "-1", "expected seconds"),
    ("SVC_REDIS_HEALTH_TYPE", "mongo", "expected one of"),
])
def test_bad_override_values_name_the_variable(variable: str, value: str, message: str) -> None:
    cfg = config(services={"redis": {"type": "redis", "port": 6379}})
    with pytest.raises(ServiceSpecError, match=message) as info:
        effective_services(cfg, {variable: value})
    assert str(info.value).startswith(f"{variable}={value!r}")


def test_overrides_for_undeclared_services_are_reported() -> None:
    cfg = config(services={"redis": {"type": "redis", "port": 6379}})
    specs = effective_services(cfg, {})
    assert unknown_overrides(specs, {"SVC_REDIS_PORT": "1", "SVC_KAFKA_HOST": "x", "SVC_NOTE": "y"}) == [
        "SVC_KAFKA_HOST"]


def test_levels_follow_depends_on_including_implied_services() -> None:
    cfg = config(database={"url": "postgresql://postgres@127.0.0.1/test"}, services={
        "app": {"type": "http", "port": 9000, "depends_on": ["api", "postgres"]},
        "api": {"type": "http", "port": 9001, "depends_on": ["postgres"]},
        "other": {"type": "tcp", "port": 9002},
    })
    levels = topological_levels(effective_services(cfg, {}))
    assert [[s.name for s in level] for level in levels] == [["postgres", "other"], ["api"], ["app"]]


def test_depending_on_an_implied_service_that_is_not_configured_is_an_error() -> None:
    cfg = config(services={"api": {"type": "http", "port": 9001, "depends_on": ["postgres"]}})
    with pytest.raises(ServiceSpecError, match="depends on 'postgres', which is neither declared"):
        effective_services(cfg, {})
