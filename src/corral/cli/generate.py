"""`corral generate`: deployment files and client configs, derived from the config."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from corral.config.schema import CorralConfig
from corral.deploy import yamlio
from corral.deploy.common import REDIS_MAXMEMORY as c_REDIS_MAXMEMORY
from corral.deploy.common import DeployError
from corral.deploy.source import DeploySource, load_source

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="corral.yaml to derive from (default: built-in defaults).")


@contextmanager
def _reported() -> Iterator[None]:
    from corral.config.errors import ConfigError

    try:
        yield
    except (ConfigError, DeployError, OSError) as exc:
        typer.secho(f"corral generate: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _source(config: Path | None) -> DeploySource:
    return load_source(config)


def _served_config(config: Path | None) -> CorralConfig:
    """The config `corral serve` would run with: the file, else ./corral.yaml or
    $CORRAL_CONFIG, else zero-config (what the environment's keys make available)."""
    if config is not None:
        return load_source(config).config
    from corral.config.loader import load_config

    return load_config(None).config


def _write_files(files: dict[str, str | bytes], out: Path | None, *, mode: int = 0o644) -> None:
    if out is None:
        for name, content in files.items():
            text = content.decode() if isinstance(content, bytes) else content
            if len(files) > 1:
                typer.echo(f"# ---- {name}")
            typer.echo(text, nl=not text.endswith("\n"))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        path.chmod(mode)
        typer.secho(f"wrote {path}", err=True)


def _write_one(content: str, out: Path | None) -> None:
    if out is None:
        typer.echo(content, nl=not content.endswith("\n"))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(content)
    typer.secho(f"wrote {out}", err=True)


def _k8s(app: typer.Typer) -> None:
    @app.command("k8s")
    def k8s_command(
        config: Path | None = CONFIG_OPTION,
        out: Path | None = typer.Option(None, "--out", "-o", help="Directory for the manifests (default: stdout)."),
        namespace: str = typer.Option("corral", "--namespace", "-n"),
        image: str = typer.Option("corral:latest", "--image", help="Corral image (build with deploy/Dockerfile)."),
        replicas: int = typer.Option(2, "--replicas", min=1),
        max_replicas: int = typer.Option(10, "--max-replicas", min=1, help="HPA ceiling."),
        host_name: str = typer.Option("corral.example.com", "--host-name", help="Ingress host."),
        postgres: bool | None = typer.Option(None, "--postgres/--no-postgres",
                                             help="Run Postgres in the cluster (default: unless the config has one)."),
        redis: bool | None = typer.Option(None, "--redis/--no-redis",
                                          help="Run Redis for shared limits (default: unless the config has one)."),
        secrets_from_env: bool = typer.Option(False, "--secrets-from-env",
                                              help="Fill the Secret from this environment (default: empty values)."),
    ) -> None:
        """Kubernetes manifests: namespace, secret, configmap, deployment, service, HPA, ingress,
        Postgres, backup CronJob, NetworkPolicy (and a kustomization.yaml)."""
        from corral.deploy import k8s, k8s_data

        with _reported():
            source = _source(config)
            use_pg = k8s.wants_postgres(source.config, postgres)
            values = {}
            if secrets_from_env:
                values = {k: os.environ[k] for k in k8s.secret_keys(source, use_pg) if os.environ.get(k)}
            opts = k8s.K8sOptions(namespace=namespace, image=image, replicas=replicas, max_replicas=max_replicas,
                                  ingress_host=host_name, postgres=postgres, redis=redis, secret_values=values)
            files = k8s_data.render(source, opts)
            _fill_in_hint(k8s.secret_keys(source, use_pg), values, out)
            if out is None:
                typer.echo(yamlio.dump_all(doc for name, docs in files.items()
                                           if name != "kustomization.yaml" for doc in docs), nl=False)
                return
            rendered = {name: yamlio.dump_all(docs) for name, docs in files.items()}
            _write_files(dict(rendered), out)
            (out / "10-secret.yaml").chmod(0o600)


def _fill_in_hint(keys: list[str], values: dict[str, str], out: Path | None) -> None:
    from corral.deploy.common import MASTER_KEY_ENV

    empty = [k for k in keys if k not in values]
    if not empty:
        return
    where = out / "10-secret.yaml" if out else "the corral-secrets Secret"
    why = (f"; `corral serve` refuses to start while {MASTER_KEY_ENV} is empty" if MASTER_KEY_ENV in empty else "")
    typer.secho(f"corral generate: fill {', '.join(empty)} in {where} before applying (never commit it){why}",
                fg=typer.colors.YELLOW, err=True)


def _compose(app: typer.Typer) -> None:
    @app.command("compose")
    def compose_command(
        config: Path | None = CONFIG_OPTION,
        out: Path | None = typer.Option(None, "--out", "-o",
                                        help="Directory for docker-compose.yml and the container's corral.yaml."),
        image: str = typer.Option("corral:latest", "--image"),
        build: str | None = typer.Option(None, "--build", help="Build context for the image, relative to --out."),
        qdrant: bool = typer.Option(True, "--qdrant/--no-qdrant", help="Qdrant, in the agents profile."),
        redis_maxmemory: str = typer.Option(c_REDIS_MAXMEMORY, "--redis-maxmemory",
                                            help="Redis memory cap (noeviction: limit counters are never evicted)."),
        services_only: bool = typer.Option(False, "--services-only",
                                           help="Hybrid: only Postgres, Redis and Qdrant, with published ports."),
    ) -> None:
        """docker-compose.yml: Corral, Postgres, Redis (+ PgBouncer if declared) with healthchecks and
        limits; profiles agents (Qdrant) and observability (Prometheus)."""
        from corral.deploy import common as c
        from corral.deploy import compose
        from corral.deploy.source import container_text

        with _reported():
            source = _source(config)
            text = container_text(source, database_env=c.DATABASE_URL_ENV, cache_env=c.REDIS_URL_ENV)
            opts = compose.ComposeOptions(image=image, build_context=build, qdrant=qdrant, services_only=services_only,
                                          redis_maxmemory=redis_maxmemory)
            if services_only:
                _write_one(yamlio.dump(compose.render(source, opts)), out / "docker-compose.yml" if out else None)
                return
            if out is None:
                opts.observability = False  # its prometheus.yml needs a directory: --out
                if text != source.text:
                    raise DeployError("the config names its own database.url/cache.url; use --out DIR so a "
                                      "container copy of it can point at the compose Postgres and Redis")
                opts.config_source = compose.config_source_for(Path.cwd(), source.path)
                _write_one(yamlio.dump(compose.render(source, opts)), None)
                return
            _write_compose_dir(out, source, text, yamlio.dump(compose.render(source, opts)))
            _write_one(yamlio.dump(compose.prometheus_config(source)), out / "prometheus.yml")
            typer.secho(f"corral generate: the observability profile sends the key in {out / 'metrics-key'} "
                        "to /metrics: create it (a Corral API key) before `docker compose --profile "
                        "observability up -d`", fg=typer.colors.YELLOW, err=True)


def _write_compose_dir(out: Path, source: DeploySource, text: str, compose_text: str) -> None:
    target = out / "corral.yaml"
    same = source.path is not None and target.exists() and target.resolve() == source.path.resolve()
    if same and text != source.text:
        raise DeployError(f"{target} would be rewritten for the containers; choose another --out")
    _write_one(compose_text, out / "docker-compose.yml")
    if not same:
        _write_one(text, target)


def _roles(role: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    chosen = role or ["serve"]
    if "all" in chosen:
        return list(allowed)
    bad = [r for r in chosen if r not in allowed]
    if bad:
        raise DeployError(f"unknown role {bad[0]!r}; one of: {', '.join(allowed)}, all")
    return list(dict.fromkeys(chosen))


def _systemd(app: typer.Typer) -> None:
    @app.command("systemd")
    def systemd_command(
        config: Path | None = CONFIG_OPTION,
        supervisor_config: Path | None = typer.Option(None, "--supervisor-config", help="supervisor.yaml to read."),
        node_config: Path | None = typer.Option(None, "--node-config", help="node.yaml to read."),
        role: list[str] | None = typer.Option(None, "--role", "-r", help="serve, supervisor, node or all (repeat)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Directory for the units (default: stdout)."),
        prefix: str = typer.Option("/opt/corral", "--prefix", help="Install prefix (venv at PREFIX/venv)."),
        config_dir: str = typer.Option("/etc/corral", "--config-dir"),
        data_dir: str = typer.Option("/var/lib/corral", "--data-dir"),
        log_dir: str = typer.Option("/var/log/corral", "--log-dir"),
        user: str = typer.Option("corral", "--user"),
        log_to_file: bool = typer.Option(False, "--log-to-file", help="Append to LOG_DIR/<unit>.log, not the journal."),
    ) -> None:
        """systemd units for serve, supervisor and node: dedicated user, EnvironmentFile, hardening."""
        from corral.config.fleet import NodeConfig, SupervisorConfig, load_fleet_config
        from corral.deploy import systemd

        with _reported():
            roles = _roles(role, systemd.ROLES)
            configs = systemd.RoleConfigs(serve=_source(config).config)
            if supervisor_config:
                configs.supervisor = load_fleet_config(supervisor_config, SupervisorConfig)
            if node_config:
                configs.node = load_fleet_config(node_config, NodeConfig)
            layout = systemd.HostLayout(prefix=prefix.rstrip("/"), config_dir=config_dir.rstrip("/"),
                                        data_dir=data_dir.rstrip("/"), log_dir=log_dir.rstrip("/"), user=user,
                                        group=user, log_to_file=log_to_file)
            _write_files(dict(systemd.render(roles, layout, configs)), out)


def _env(app: typer.Typer) -> None:
    @app.command("env")
    def env_command(
        config: Path | None = CONFIG_OPTION,
        role: list[str] | None = typer.Option(None, "--role", "-r"),
    ) -> None:
        """An EnvironmentFile template naming every variable the config uses (no values)."""
        from corral.deploy import systemd

        with _reported():
            roles = _roles(role, systemd.ROLES)
            names = _source(config).env_names if "serve" in roles else []
            typer.echo(systemd.env_template(roles, names), nl=False)


def _launchd(app: typer.Typer) -> None:
    @app.command("launchd")
    def launchd_command(
        config: Path | None = CONFIG_OPTION,
        role: list[str] | None = typer.Option(None, "--role", "-r", help="serve, supervisor, node or all (repeat)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Directory (e.g. ~/Library/LaunchAgents)."),
        executable: str | None = typer.Option(None, "--executable", help="corral binary (default: this one)."),
        config_dir: Path | None = typer.Option(None, "--config-dir", help="Default: the config's directory."),
        data_dir: Path | None = typer.Option(None, "--data-dir"),
        log_dir: Path | None = typer.Option(None, "--log-dir", help="Default: ~/Library/Logs/corral."),
    ) -> None:
        """launchd plists (macOS LaunchAgents) for serve, supervisor and node."""
        from platformdirs import user_data_dir

        from corral.deploy import launchd

        with _reported():
            roles = _roles(role, launchd.ROLES)
            source = _source(config)
            home = Path.home()
            layout = launchd.MacLayout(
                executable=executable or shutil.which("corral") or str(Path(sys.prefix) / "bin" / "corral"),
                config_dir=str((config_dir or (source.path.parent if source.path else home / ".config/corral"))
                               .expanduser().resolve()),
                data_dir=str((data_dir or Path(user_data_dir("corral", appauthor=False))).expanduser().resolve()),
                log_dir=str((log_dir or home / "Library/Logs/corral").expanduser().resolve()),
            )
            _write_files(dict(launchd.render(roles, layout)), out)


def _client(app: typer.Typer, name: str, build: Callable[..., dict[str, Any]], default_file: str) -> None:
    @app.command(name)
    def client_command(
        config: Path | None = CONFIG_OPTION,
        url: str | None = typer.Option(None, "--url", help="Server URL (default: from server.host/port/tls)."),
        out: Path | None = typer.Option(None, "--out", "-o",
                                        help=f"File to write, e.g. {default_file} (default: stdout)."),
        default_context: int = typer.Option(128_000, "--default-context", help="For models without context_window."),
        default_output: int = typer.Option(8_192, "--default-output", help="For models without max_output_tokens."),
    ) -> None:
        from corral.deploy import clients
        from corral.deploy.source import server_url

        with _reported():
            served = _served_config(config)
            models = clients.served_models(served, default_context=default_context, default_output=default_output)
            data = build(served, url or server_url(served), models)
            _write_one(json.dumps(data, indent=2) + "\n", out)

    client_command.__doc__ = f"Config for {name},  pointing at this server (key from $CORRAL_API_KEY)."


def _template(app: typer.Typer) -> None:
    @app.command("template")
    def template_command(
        role: str = typer.Argument("serve", help="serve (corral.yaml), supervisor or node."),
    ) -> None:
        """Print a starting config file for a role."""
        from corral.deploy.source import template_path

        with _reported():
            if role not in ("serve", "supervisor", "node"):
                raise DeployError(f"unknown role {role!r}; one of: serve, supervisor, node")
            typer.echo(template_path(role).read_text(), nl=False)


def _prometheus(app: typer.Typer) -> None:
    @app.command("prometheus")
    def prometheus_command(
        config: Path | None = CONFIG_OPTION,
        gateway: list[str] | None = typer.Option(None, "--gateway", help="host:port of a gateway to scrape (repeat; "
                                                 "default: localhost and the config's port)."),
        supervisor: list[str] | None = typer.Option(None, "--supervisor", help="host:http_port of a fleet supervisor "
                                                    "to scrape (repeat)."),
        kubernetes: str | None = typer.Option(None, "--kubernetes", help="Namespace: find gateway pods by their "
                                              "prometheus.io annotations (`corral generate k8s`) instead."),
        token_file: str = typer.Option("/etc/prometheus/corral-metrics-token", "--token-file",
                                       help="File holding CORRAL_METRICS_TOKEN, as Prometheus sees it."),
        no_token: bool = typer.Option(False, "--no-token", help="The gateway's /metrics is public "
                                      "(observability.public_metrics) or auth is off."),
        daily_budget: float = typer.Option(100.0, "--daily-budget", help="USD a day; CorralBudgetBurn fires when "
                                           "the last hour's spend rate would pass it."),
        tokens_per_minute: float = typer.Option(1_000_000, "--tokens-per-minute",
                                                help="CorralHighTokenUsage threshold."),
        interval: str = typer.Option("15s", "--scrape-interval", help="Prometheus scrape and rule interval."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Directory for prometheus.yml and "
                                        "corral-rules.yml (default: print both)."),
    ) -> None:
        """Prometheus scrape config and alert rules for the gateway and the fleet supervisor."""
        from corral.deploy import prometheus

        with _reported():
            served = _served_config(config)
            targets = prometheus.ScrapeTargets(
                gateways=gateway or [f"localhost:{served.server.port}"], supervisors=supervisor or [],
                token_file=None if no_token else token_file, kubernetes_namespace=kubernetes, interval=interval)
            thresholds = prometheus.Thresholds(daily_budget_usd=daily_budget, tokens_per_minute=tokens_per_minute)
            _write_files({"prometheus.yml": yamlio.dump(prometheus.scrape_config(targets)),
                          prometheus.RULES_FILE: yamlio.dump(prometheus.alert_rules(thresholds))}, out)


def _grafana(app: typer.Typer) -> None:
    @app.command("grafana")
    def grafana_command(
        out: Path | None = typer.Option(None, "--out", "-o", help="Directory for the dashboards' JSON files "
                                        "(default: print them)."),
    ) -> None:
        """Grafana dashboards (JSON) for the gateway, the agents and the fleet."""
        from corral.deploy import grafana

        with _reported():
            _write_files({name: json.dumps(board, indent=2) + "\n" for name, board in grafana.dashboards().items()},
                         out)


def generate_app() -> typer.Typer:
    from corral.deploy import clients

    app = typer.Typer(help="Generate deployment files and client configs from the config.", no_args_is_help=True)
    _k8s(app)
    _compose(app)
    _systemd(app)
    _env(app)
    _launchd(app)
    _template(app)
    _prometheus(app)
    _grafana(app)
    _client(app, "opencode", clients.opencode_config, "opencode.json")
    _client(app, "crush", clients.crush_config, "crush.json")
    return app


def register(app: typer.Typer) -> None:
    app.add_typer(generate_app(), name="generate")
