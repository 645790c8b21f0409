"""`corral generate systemd`: hardened units for `serve`, `supervisor` and `node`.

Every path a unit may write to is listed in ``ReadWritePaths`` (the rest of the file
system is read-only under ``ProtectSystem=strict``), and those paths come from the
configs themselves: the data dir, the log dir, a SQLite file placed elsewhere, the
node's state dir and project directories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from corral.config.fleet import NodeConfig, SupervisorConfig
from corral.config.schema import CorralConfig
from corral.deploy.common import fixed_port
from corral.store.engine import is_sqlite

ROLES = ("serve", "supervisor", "node")
UNIT_NAMES = {"serve": "corral", "supervisor": "corral-supervisor", "node": "corral-node"}
CONFIG_FILES = {"serve": "corral.yaml", "supervisor": "supervisor.yaml", "node": "node.yaml"}


@dataclass(slots=True)
class HostLayout:
    prefix: str = "/opt/corral"
    config_dir: str = "/etc/corral"
    data_dir: str = "/var/lib/corral"
    log_dir: str = "/var/log/corral"
    user: str = "corral"
    group: str = "corral"
    log_to_file: bool = False  # False: the journal

    @property
    def executable(self) -> str:
        return f"{self.prefix}/venv/bin/corral"

    def config_path(self, role: str) -> str:
        return f"{self.config_dir}/{CONFIG_FILES[role]}"

    @property
    def env_file(self) -> str:
        return f"{self.config_dir}/corral.env"


@dataclass(slots=True)
class RoleConfigs:
    serve: CorralConfig = field(default_factory=CorralConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    node: NodeConfig = field(default_factory=lambda: NodeConfig(node_id="node"))


def _sqlite_dir(url: str | None) -> str | None:
    if url is None or not is_sqlite(url):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return str(PurePosixPath(database).parent) if database.startswith("/") else None


def writable_paths(role: str, layout: HostLayout, configs: RoleConfigs) -> list[str]:
    paths = [layout.data_dir, layout.log_dir]
    extra: list[str | None] = []
    if role == "serve":
        extra.append(_sqlite_dir(configs.serve.database.url))
    elif role == "supervisor":
        extra.append(_sqlite_dir(configs.supervisor.database_url))
    else:
        node = configs.node
        extra.append(str(node.state_dir) if node.state_dir else None)
        extra.extend(str(project.directory) for project in node.projects)
    for path in extra:
        if path and not any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths):
            # "-": a project directory that does not exist yet must not stop the service.
            paths.append(f"-{path}")
    return paths


def listen_ports(role: str, configs: RoleConfigs) -> list[int]:
    if role == "serve":
        return [fixed_port(configs.serve.server.port)]
    if role == "supervisor":
        server = configs.supervisor.server
        return [p for p in (fixed_port(server.port), server.http_port) if p]
    return []


def _hardening(role: str, ports: list[int]) -> list[tuple[str, str]]:
    low_port = any(p < 1024 for p in ports)
    caps = "CAP_NET_BIND_SERVICE" if low_port else ""
    lines = [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        # The node drives coding agents in project directories, often under /home.
        ("ProtectHome", "read-only" if role == "node" else "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", caps),
        ("AmbientCapabilities", caps),
        ("UMask", "0027"),
    ]
    # No MemoryDenyWriteExecute: the node runs `opencode` (a JIT runtime) and some Python
    # extensions allocate executable callbacks; either would crash under it.
    return lines


def _validate_command(role: str, layout: HostLayout) -> str:
    if role == "serve":
        return f"{layout.executable} validate {layout.config_path(role)}"
    if role == "supervisor":
        return f"{layout.executable} supervisor --config {layout.config_path(role)} --validate"
    return f"{layout.executable} node --config {layout.config_path(role)} --validate"


def render_unit(role: str, layout: HostLayout, configs: RoleConfigs) -> str:
    ports = listen_ports(role, configs)
    name = UNIT_NAMES[role]
    timeout = int(configs.serve.server.shutdown_timeout) + 10 if role == "serve" else 40
    service: list[tuple[str, str]] = [
        ("Type", "exec"),
        ("User", layout.user),
        ("Group", layout.group),
        ("WorkingDirectory", layout.data_dir),
        ("EnvironmentFile", f"-{layout.env_file}"),
        ("Environment", f"CORRAL_DATA_DIR={layout.data_dir}"),
        ("Environment", f"HOME={layout.data_dir}"),
        ("Environment", f"PATH={layout.prefix}/venv/bin:/usr/local/bin:/usr/bin:/bin"),
        # A config error stops the start with the file's line in the journal, not a crash loop.
        ("ExecStartPre", _validate_command(role, layout)),
        ("ExecStart", f"{layout.executable} {role} --config {layout.config_path(role)}"),
        ("Restart", "on-failure"),
        ("RestartSec", "5s"),
        ("TimeoutStopSec", f"{timeout}s"),
        ("KillSignal", "SIGTERM"),
        ("LimitNOFILE", "65536"),
        ("MemoryMax", {"serve": "2G", "supervisor": "2G", "node": "4G"}[role]),
        ("SyslogIdentifier", name),
    ]
    if layout.log_to_file:
        log = f"{layout.log_dir}/{name}.log"
        service += [("StandardOutput", f"append:{log}"), ("StandardError", f"append:{log}")]
    else:
        service += [("StandardOutput", "journal"), ("StandardError", "journal")]
    service.append(("ReadWritePaths", " ".join(writable_paths(role, layout, configs))))
    service += _hardening(role, ports)
    after = "network-online.target" + (" postgresql.service redis-server.service" if role == "serve" else "")
    listening = f" (listens on {', '.join(str(p) for p in ports)})" if ports else ""
    lines = [
        f"# Generated by `corral generate systemd` for `corral {role}`{listening}.",
        "[Unit]",
        f"Description=Corral {role}",
        "Wants=network-online.target",
        f"After={after}",
        "",
        "[Service]",
        *[f"{key}={value}" for key, value in service],
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def render(roles: list[str], layout: HostLayout, configs: RoleConfigs) -> dict[str, str]:
    return {f"{UNIT_NAMES[role]}.service": render_unit(role, layout, configs) for role in roles}


def env_template(role_names: list[str], env_names: list[str]) -> str:
    """The EnvironmentFile: names to fill in, no values (it is written 0600)."""
    lines = ["# Secrets for Corral's services (mode 0600). One NAME=value per line."]
    names = [*env_names]
    for extra in ("CORRAL_MASTER_KEY", *(["CORRAL_FLEET_TOKEN"] if {"supervisor", "node"} & set(role_names) else [])):
        if extra not in names:
            names.append(extra)
    lines += [f"#{name}=" for name in names]
    return "\n".join(lines) + "\n"
