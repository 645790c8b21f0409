"""Would a server be open to anyone who can reach it? Auth off on a non-loopback address.

Auth off is the single-user default and fine on 127.0.0.1. Listening on any other address
with it off lets every caller spend the provider keys, so `corral serve` refuses to start
unless the open deployment is deliberate (``--allow-unauthenticated`` or
``auth.allow_unauthenticated: true``). An empty master key (``CORRAL_MASTER_KEY=`` left
unfilled in a Secret or an env file) counts as unset and is named as such, never dropped
silently.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.config.schema import AuthConfig

MASTER_KEY_ENV = "CORRAL_MASTER_KEY"


def is_loopback(host: str) -> bool:
    """Only addresses that never leave the machine: 127.0.0.0/8, ::1 and ``localhost``.
    A wildcard (``0.0.0.0``, ``::``, empty) or any other name or address is not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def master_key(auth: AuthConfig, env: Mapping[str, str]) -> str | None:
    """The master key the server will use: the config's, else the environment's; empty is none."""
    configured = auth.master_key.get_secret_value() if auth.master_key is not None else ""
    return configured or env.get(MASTER_KEY_ENV) or None


def empty_master_keys(auth: AuthConfig, env: Mapping[str, str]) -> list[str]:
    """Where a master key was given but empty (each of these counts as unset)."""
    found = []
    if env.get(MASTER_KEY_ENV) == "":
        found.append(f"{MASTER_KEY_ENV} is set but empty")
    if auth.master_key is not None and auth.master_key.get_secret_value() == "":
        found.append("auth.master_key is empty")
    return found


def auth_enabled(auth: AuthConfig, env: Mapping[str, str]) -> bool:
    """The same rule the gateway's `Authenticator` applies: on as soon as a master key,
    a static key or JWT is configured, unless ``auth.required`` says otherwise."""
    configured = master_key(auth, env) is not None or bool(auth.api_keys) or auth.jwt is not None
    return configured if auth.required is None else auth.required


@dataclass(slots=True)
class BindCheck:
    error: str | None = None  # refuse to start, with this message
    notes: list[str] = field(default_factory=list)  # start, and say these


def check_bind(auth: AuthConfig, env: Mapping[str, str], host: str, port: int, *,
               allow_unauthenticated: bool = False) -> BindCheck:
    if auth_enabled(auth, env):
        return BindCheck()
    where = f"{host or '0.0.0.0'}:{port}"
    empty = [f"{e}, which counts as unset" for e in empty_master_keys(auth, env)]
    if is_loopback(host):
        return BindCheck(notes=[f"{e}: authentication is off (only this machine can connect to {where})"
                                for e in empty])
    allowed = allow_unauthenticated or auth.allow_unauthenticated
    if allowed:
        flag = "--allow-unauthenticated" if allow_unauthenticated else "auth.allow_unauthenticated: true"
        return BindCheck(notes=[*empty, f"listening on {where} with authentication off ({flag}): "
                                        "anyone who can reach it can call every model"])
    set_key = f"set {MASTER_KEY_ENV} (or auth.master_key) to a long random secret, e.g. `openssl rand -hex 32`"
    if auth.required is False:
        set_key = f"remove auth.required: false and {set_key}"
    lines = [f"refusing to listen on {where} with authentication off: anyone who can reach this "
             "address could call every model on your provider keys.",
             *(f"  {e}." for e in empty),
             *(["  auth.required is false."] if auth.required is False else []),
             f"  fix: {set_key};",
             "   or: listen on loopback only (--host 127.0.0.1, e.g. behind your own proxy);",
             "   or: for a deliberately open server, pass --allow-unauthenticated "
             "(or set auth.allow_unauthenticated: true)."]
    return BindCheck(error="\n".join(lines))
