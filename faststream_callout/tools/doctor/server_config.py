"""What the callout depends on in a nats-server configuration file, and reading it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from faststream_callout.tools import natsconf
from faststream_callout.tools.doctor.report import Status

if TYPE_CHECKING:
    from faststream_callout.tools.doctor.checkup import Checkup

__all__ = ["GLOBAL_ACCOUNT", "ServerConfig", "load_config", "read_server_config", "strings"]

GLOBAL_ACCOUNT: Final = "$G"


@dataclass
class ServerConfig:
    """What the callout depends on in a nats-server configuration file."""

    path: str
    operator: bool = False
    callout: bool = False
    issuer: str = ""
    account: str = GLOBAL_ACCOUNT
    auth_users: list[str] = field(default_factory=list)
    xkey: str = ""
    allowed_accounts: list[str] = field(default_factory=list)
    timeout: float | None = None
    users: dict[str, str] = field(default_factory=dict)  # user name or nkey -> account
    accounts: list[str] = field(default_factory=list)
    no_auth_user: str = ""
    system_account: str = "$SYS"
    preload: dict[str, str] = field(default_factory=dict)

    def account_of(self, user: str) -> str | None:
        """The account a configured user (name or nkey) logs into, if configured."""
        return self.users.get(user)


def strings(value: object) -> list[str]:
    """A configuration value as a list of strings (a single string becomes a list of one)."""
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int | float)]
    if isinstance(value, str) and value:
        return [value]
    return []


def _login_names(entries: object) -> list[str]:
    """User names and nkeys of a ``users`` / ``nkeys`` list."""
    names: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        name = natsconf.option(entry, "user", "username", "nkey")
        if isinstance(name, str) and name:
            names.append(name)
    return names


def read_server_config(path: str | Path) -> ServerConfig:
    """Read ``path``; raises :class:`~faststream_callout.tools.natsconf.NatsConfigError`."""
    data = natsconf.load(path)
    view = ServerConfig(path=str(path))
    trusted = ("operator", "operators", "root", "roots", "trusted", "trusted_keys")
    view.operator = natsconf.option(data, *trusted) is not None
    accounts = natsconf.option(data, "accounts")
    if isinstance(accounts, dict):
        for name, body in accounts.items():
            view.accounts.append(name)
            for user in _login_names(natsconf.option(body, "users")) + _login_names(
                natsconf.option(body, "nkeys")
            ):
                view.users[user] = name
    elif isinstance(accounts, list):
        view.accounts += strings(accounts)
    authorization = natsconf.option(data, "authorization")
    for user in _login_names(natsconf.option(authorization, "users")):
        view.users.setdefault(user, GLOBAL_ACCOUNT)
    single = natsconf.option(authorization, "user", "username")
    if isinstance(single, str) and single:
        view.users.setdefault(single, GLOBAL_ACCOUNT)
    timeout = natsconf.option(authorization, "timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        view.timeout = float(timeout)
    elif isinstance(timeout, str) and timeout.endswith("s"):
        with contextlib.suppress(ValueError):
            view.timeout = float(timeout.removesuffix("ms").removesuffix("s")) * (
                0.001 if timeout.endswith("ms") else 1
            )
    callout = natsconf.option(authorization, "auth_callout", "auth_hook")
    if isinstance(callout, dict):
        view.callout = True
        view.issuer = str(natsconf.option(callout, "issuer") or "")
        view.account = str(natsconf.option(callout, "account", "acc") or GLOBAL_ACCOUNT)
        view.auth_users = strings(natsconf.option(callout, "auth_users", "users"))
        view.xkey = str(natsconf.option(callout, "xkey", "key") or "")
        view.allowed_accounts = strings(natsconf.option(callout, "allowed_accounts"))
    no_auth = natsconf.option(data, "no_auth_user")
    view.no_auth_user = no_auth if isinstance(no_auth, str) else ""
    system = natsconf.option(data, "system_account", "system")
    if isinstance(system, str) and system:
        view.system_account = system
    preload = natsconf.option(data, "resolver_preload")
    if isinstance(preload, dict):
        view.preload = {k: v for k, v in preload.items() if isinstance(v, str)}
    return view


def load_config(checkup: Checkup, path: str | Path) -> None:
    """Read the server configuration into ``checkup`` and report what kind it is."""
    report = checkup.report
    try:
        checkup.config = read_server_config(path)
    except natsconf.NatsConfigError as exc:
        report.add(
            "server-config",
            Status.FAIL,
            f"cannot read the server configuration: {exc}",
            "give the file nats-server runs with (nats-server -c FILE)",
        )
        return
    config = checkup.config
    if config.operator:
        report.add("server-config", Status.OK, f"{path}: operator mode")
    elif not config.callout:
        report.add(
            "server-config",
            Status.FAIL,
            f"{path} has no authorization.auth_callout block: the server never calls out",
            "add the auth_callout block (faststream-callout config prints one)",
        )
        checkup.mismatch = True
    else:
        report.add(
            "server-config",
            Status.OK,
            f"{path}: config mode, auth_callout in account {config.account}",
        )
