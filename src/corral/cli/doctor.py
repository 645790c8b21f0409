"""`corral doctor`: check everything a start needs, each failure with a one-line fix."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from corral.boot.specs import ServiceSpec, ServiceSpecError, effective_services, env_prefix, unknown_overrides
from corral.boot.status import ServiceCheck
from corral.cli._services import CONFIG_OPTION_HELP, console
from corral.cli.status import StatusFormat, gather_status

if TYPE_CHECKING:
    from corral.config.loaded import LoadedConfig
    from corral.config.schema import CorralConfig, ProviderConfig


@dataclass(frozen=True)
class Finding:
    check: str
    result: str  # "ok", "fail", "warn", "skip"
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "result": self.result, "detail": self.detail, "fix": self.fix}


def check_config(path: Path | None) -> tuple[LoadedConfig | None, list[Finding]]:
    from corral.config.errors import ConfigError
    from corral.config.loader import load_config

    try:
        loaded = load_config(path, probe_ollama=False)
    except ConfigError as exc:
        return None, [Finding("config", "fail", issue.render(),
                              f"edit {issue.file or 'the config'}" + (f" line {issue.line}" if issue.line else "")
                              + (f" ({issue.key})" if issue.key else ""))
                      for issue in exc.issues]
    where = str(loaded.path) if loaded.path else "zero-config (no corral.yaml found)"
    return loaded, [Finding("config", "ok", f"{where} is valid")]


def check_port(host: str, port: int) -> Finding:
    if port == 0:
        return Finding("port", "ok", "server.port is 0: a free port is picked at start")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Finding("port", "fail", f"{host}:{port} is not free: {exc.strerror or exc}",
                           f"stop what listens on {port} (e.g. a running corral), or set server.port / --port")
    return Finding("port", "ok", f"{host}:{port} is free")


def check_data_dir() -> Finding:
    from corral.store.engine import data_dir

    try:
        directory = data_dir()
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-", delete=True) as handle:
            handle.write(b"ok")
            handle.flush()
    except OSError as exc:
        target = os.environ.get("CORRAL_DATA_DIR", "the data dir")
        return Finding("data dir", "fail", f"{target} is not writable: {exc.strerror or exc}",
                       "set CORRAL_DATA_DIR to a writable directory, or fix its permissions")
    return Finding("data dir", "ok", f"{directory} is writable")


def service_findings(checks: list[ServiceCheck]) -> list[Finding]:
    findings = []
    for check in checks:
        spec, result = check.spec, check.result
        name = f"service {spec.name}"
        if result is None:
            findings.append(Finding(name, "skip", "disabled"))
        elif result.ok:
            findings.append(Finding(name, "ok", f"{spec.address}: {result.detail}"))
        else:
            detail = f"{spec.address}: {result.status.value}: {result.detail}"
            fix = service_fix(spec, result.status.value)
            findings.append(Finding(name, "fail" if spec.required else "warn", detail, fix))
    return findings


def service_fix(spec: ServiceSpec, status: str) -> str:
    prefix = env_prefix(spec.name)
    if status == "rejected":
        return f"fix the credentials / database name in {spec.source} (or {prefix}URL)"
    if status == "starting":
        return "it is starting up: wait, or raise its deadline (services.<name>.deadline)"
    if spec.remote:
        return f"make {spec.address} reachable from here (firewall, {prefix}HOST / {prefix}PORT)"
    return f"start it (corral up --only-deps), or point {prefix}HOST / {prefix}PORT at where it runs"


async def provider_findings(config: CorralConfig, env: Mapping[str, str]) -> list[Finding]:
    try:
        from corral.llm.registry import build_provider
    except ImportError:
        return [Finding("providers", "skip", "provider registry not available in this build")]
    enabled = {n: p for n, p in config.providers.items() if p.enabled}
    if not enabled:
        return [Finding("providers", "skip", "no providers configured")]
    timeout = config.verification.timeout
    jobs = [_provider_finding(name, cfg, env, build_provider, timeout) for name, cfg in enabled.items()]
    return list(await asyncio.gather(*jobs))


async def _provider_finding(name: str, cfg: ProviderConfig, env: Mapping[str, str], build: Any,
                            limit: float) -> Finding:
    from corral.config.presets import PRESETS
    from corral.llm import errors
    from corral.llm.registry import resolve_api_key

    check = f"provider {name}"
    preset = PRESETS[cfg.type]
    key_hint = f"set {preset.key_env} or providers.{name}.api_key" if preset.key_env else f"providers.{name}.api_key"
    if preset.needs_key and preset.wire != "scripted" and not resolve_api_key(cfg, preset, env):
        return Finding(check, "fail", "no API key", key_hint)
    try:
        provider = build(name, cfg, env=env)
    except ValueError as exc:
        return Finding(check, "fail", str(exc), f"fix providers.{name} in the config")
    try:
        models = await asyncio.wait_for(provider.list_models(), limit)
    except errors.AuthenticationError:
        return Finding(check, "fail", "API key rejected (401)", key_hint + " with a valid key")
    except errors.PermissionDeniedError:
        return Finding(check, "fail", "API key lacks permission (403)", "use a key allowed to list models")
    except (errors.ProviderError, TimeoutError, OSError) as exc:
        return Finding(check, "fail", f"not reachable: {type(exc).__name__}: {exc}"[:200],
                       f"check providers.{name}.base_url and the network, or set enabled: false")
    finally:
        await provider.aclose()
    return Finding(check, "ok", f"key accepted, {len(models)} models listed")


async def run_checks(loaded: LoadedConfig, specs: list[ServiceSpec]) -> list[Finding]:
    services = service_findings(await gather_status(specs)) if specs else [
        Finding("services", "skip", "none configured")]
    providers = await provider_findings(loaded.config, loaded.env or os.environ)
    return services + providers


def doctor_findings(config: Path | None) -> list[Finding]:
    loaded, findings = check_config(config)
    if loaded is None:
        return [*findings, check_data_dir(), Finding("services", "skip", "config invalid")]
    server = loaded.config.server
    findings += [check_port(server.host, server.port), check_data_dir()]
    env = loaded.env or os.environ
    try:
        specs = effective_services(loaded.config, env)
    except ServiceSpecError as exc:
        return [*findings, Finding("services", "fail", str(exc), "fix the SVC_* variable or depends_on it names")]
    findings += [Finding("overrides", "warn", f"{v} names no configured service", "remove it or fix the name")
                 for v in unknown_overrides(specs, env)]
    return findings + asyncio.run(run_checks(loaded, specs))


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        config: Path | None = typer.Option(None, "--config", "-c", help=CONFIG_OPTION_HELP),
        output: StatusFormat = typer.Option(StatusFormat.table, "--format", "-f", help="Output format."),
    ) -> None:
        """Check config, port, data dir, services and provider keys; each failure with a fix."""
        findings = doctor_findings(config)
        failed = [f for f in findings if f.result == "fail"]
        if output is StatusFormat.json:
            typer.echo(json.dumps({"ok": not failed, "checks": [f.to_dict() for f in findings]}, indent=2))
        else:
            table = Table()
            for column in ("check", "result", "detail", "fix"):
                table.add_column(column, overflow="fold")
            for finding in findings:
                table.add_row(finding.check, Text(finding.result, style=_style(finding.result)), finding.detail,
                              finding.fix)
            out = console()
            out.print(table)
            out.print(f"{len(failed)} problem(s) found" if failed else "all checks passed")
        if failed:
            raise typer.Exit(1)


def _style(result: str) -> str:
    return {"ok": "green", "fail": "red bold", "warn": "yellow", "skip": "dim"}[result]
