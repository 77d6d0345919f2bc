"""The real-server test environments: one suite, run against every nats-server set-up.

Synadia's callout.go runs one test suite (authservice_test.go) against several
server environments (env_*_test.go) behind a small ``CalloutEnv`` interface.
Here the same: a test written against :class:`CalloutEnv` runs in each
:data:`ENVIRONMENTS` entry, config or operator mode, each with and without
xkey. An environment is a :class:`~faststream_callout.testing.LocalCalloutServer`
(fresh keys, target accounts APP and OTHER) started once per session by
:class:`ServerPool` and stopped by PID at its end; test modules run their callout
services on it with :func:`~faststream_callout.testing.run_deployment`, one
service at a time (:meth:`CalloutEnv.serve` for a pipeline, :meth:`CalloutEnv.run`
for a broker or app of the test's own, e.g. one made by :meth:`CalloutEnv.broker`),
and log clients in through the :class:`~faststream_callout.testing.CalloutDeployment`
it yields.

The fixtures are in conftest.py: ``callout_env`` (the environment; a test
using it runs in all four, or in those :func:`run_in` names) and
``table_callout`` (the shared table policies running on it).

Some set-ups LocalCalloutServer does not make: statically configured users, TLS,
a login in the system account, operator keys and accounts with signing keys.
Tests that need them use the helpers at the end of this module, on the same
library parts: :func:`config_server`, :class:`OperatorWorld`, :func:`nats_server`,
:func:`service` (:func:`service_broker` unstarted), :func:`auth_errors`, :func:`login`
and :func:`refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import nats
import pytest
from dishka import AsyncContainer
from faststream.nats import NatsBroker, NatsRouter
from faststream.nats.security import NatsCredentials
from faststream.security import SASLPlaintext
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats_versions import running_version

from faststream_callout import (
    CalloutPipeline,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
    callout_router,
)
from faststream_callout.core.policy import PermissionBuilder, resolve
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.operator import (
    ExternalAuthorization,
    account_jwt,
    creds,
    operator_jwt,
    user_jwt,
)
from faststream_callout.testing import (
    CalloutDeployment,
    LocalCalloutServer,
    LocalNatsServer,
    run_deployment,
    settle,
)
from faststream_callout.testing.local_server import (
    SYSTEM_USER,
    CalloutServerConfig,
    OperatorServerConfig,
)

AUTH_VIOLATION = "Authorization Violation"
AUTH_ERROR_SUBJECT = "$SYS.ACCOUNT.CLIENT.AUTH.ERR"
USER_INFO_SUBJECT = "$SYS.REQ.USER.INFO"
CALLOUT_ERROR = "Auth callout service returned an error: "  # nats-server's reason prefix
GENERIC_ERROR_REASON = "authorization service error"  # CalloutSettings.error_reason
ACCOUNTS = ("APP", "OTHER")
# Operator mode reaches user/password and token clients through default_sentinel.
SENTINEL_VERSION = (2, 11, 2)

ModeName = Literal["config", "operator"]


# -- the environments ---------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """How nats-server is set up: config or operator mode, with or without xkey."""

    mode: ModeName
    xkey: bool

    def __str__(self) -> str:
        return f"{self.mode}-xkey" if self.xkey else self.mode


ENVIRONMENTS = tuple(
    Environment(mode, xkey) for mode in ("config", "operator") for xkey in (False, True)
)
CONFIG = Environment("config", xkey=False)
OPERATOR = Environment("operator", xkey=False)


def environments(*, mode: ModeName | None = None, xkey: bool | None = None) -> list[Environment]:
    """The environments of ``mode`` and with or without ``xkey`` (``None``: either)."""
    return [
        env
        for env in ENVIRONMENTS
        if (mode is None or env.mode == mode) and (xkey is None or env.xkey == xkey)
    ]


def run_in(*chosen: Environment) -> pytest.MarkDecorator:
    """Run a test (or, as ``pytestmark``, a module's tests) in the ``chosen`` environments only.

    Tests that do not use ``callout_env`` are left alone (conftest.pytest_generate_tests).
    """
    return pytest.mark.environments(*chosen)


class ServerPool:
    """The session's nats-servers, one per environment, started on first use."""

    def __init__(self) -> None:
        self._servers: dict[Environment, LocalCalloutServer] = {}

    def get(self, environment: Environment) -> LocalCalloutServer:
        server = self._servers.get(environment)
        if server is None:
            if environment.mode == "operator" and running_version() < SENTINEL_VERSION:
                pytest.skip("operator mode needs default_sentinel: nats-server 2.11.2+")
            server = LocalCalloutServer(
                mode=environment.mode, accounts=ACCOUNTS, xkey=environment.xkey
            )
            self._servers[environment] = server.start()
        return server

    def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()  # by PID; raises if the process lingers


class InAccounts:
    """Places grants by account name: ``"APP"`` becomes what the server calls APP.

    Config mode: the name itself; operator mode: the account's public key. Other
    values (a public key already) pass unchanged.
    """

    def __init__(self, permissions: PermissionBuilder, accounts: Mapping[str, str]) -> None:
        self.permissions = permissions
        self.accounts = dict(accounts)

    async def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        grant = await resolve(self.permissions.build(identity, request))
        return dataclasses.replace(grant, account=self.accounts.get(grant.account, grant.account))


class CalloutEnv:
    """One environment: its running nats-server, and callout services run on it."""

    def __init__(self, environment: Environment, server: LocalCalloutServer) -> None:
        self.environment = environment
        self.server = server

    def __repr__(self) -> str:
        return f"CalloutEnv({self.environment})"

    @property
    def mode(self) -> ModeName:
        return self.environment.mode

    @property
    def xkey(self) -> bool:
        return self.environment.xkey

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def keys(self) -> SigningKeys:
        """The keys the server trusts."""
        return self.server.keys

    def account(self, name: str) -> str:
        """What the server calls account ``name`` (a public key in operator mode)."""
        return self.server.account(name)

    def keys_with_xkey(self, xkey: XKeyPair | None) -> SigningKeys:
        """The server's signing keys with another curve key (or none)."""
        signer = self.keys.response_signer.key
        if self.mode == "config":
            return SigningKeys(signer, xkey=xkey)
        targets = self.server.accounts.values()
        return SigningKeys.operator(
            signer,
            accounts={account: self._user_jwt_signer(account) for account in targets},
            xkey=xkey,
        )

    def _user_jwt_signer(self, account: str) -> Any:
        signer = self.keys.user_jwt_signer(account)
        assert signer is not None, account
        return signer.key

    def in_accounts(self, permissions: PermissionBuilder) -> InAccounts:
        """``permissions`` whose grants name accounts by name (``"APP"``)."""
        return InAccounts(permissions, self.server.accounts)

    def pipeline(
        self,
        lookup: Any,
        permissions: PermissionBuilder,
        *,
        keys: SigningKeys | None = None,
        **pipeline_options: Any,
    ) -> CalloutPipeline:
        """A pipeline over ``lookup`` and ``permissions`` (:meth:`in_accounts`).

        ``keys`` default to the server's.
        """
        return CalloutPipeline(
            keys or self.keys, lookup, self.in_accounts(permissions), **pipeline_options
        )

    def broker(self, *services: Service, **broker_options: Any) -> NatsBroker:
        """A broker logged in as the callout service with ``services`` (:func:`service_broker`)."""
        return service_broker(self.url, self.server.service_security, *services, **broker_options)

    @contextlib.asynccontextmanager
    async def run(self, service: Any) -> AsyncIterator[CalloutDeployment]:
        """Run ``service`` (anything :func:`run_deployment` takes) as the callout service.

        The server is shared: a second service at once would get half the
        requests, so that is refused.
        """
        subscribers = await asyncio.to_thread(self.server.callout_subscribers)
        assert subscribers == 0, f"another callout service still runs on {self.server!r}"
        async with run_deployment(service, server=self.server, set_environ=False) as deployment:
            yield deployment

    def serve(
        self,
        lookup: Any,
        permissions: PermissionBuilder,
        *,
        keys: SigningKeys | None = None,
        **pipeline_options: Any,
    ) -> contextlib.AbstractAsyncContextManager[CalloutDeployment]:
        """Run a pipeline over ``lookup`` and ``permissions`` (:meth:`pipeline`) as the service."""
        return self.run(self.pipeline(lookup, permissions, keys=keys, **pipeline_options))


# -- what a client sees -----------------------------------------------------------------------


async def user_info(nc: Client) -> dict[str, Any]:
    """The server's view of this connection (``$SYS.REQ.USER.INFO``)."""
    reply = await nc.request(USER_INFO_SUBJECT, b"", timeout=2)
    body = json.loads(reply.data)
    assert "error" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def messages(sub: Subscription, *, owner: Client) -> list[tuple[str, bytes]]:
    """Everything delivered to ``sub`` so far.

    The server queues the PONG of ``settle(owner)`` after every message it
    already delivered to this connection: once the producers were settled, an
    empty result means nothing was delivered.
    """
    await settle(owner)
    got: list[tuple[str, bytes]] = []
    while sub.pending_msgs:
        msg = await sub.next_msg(timeout=1)
        got.append((msg.subject, msg.data))
    return got


# -- set-ups LocalCalloutServer does not make ----------------------------------------------------


class ServerConfig(Protocol):
    """A nats-server configuration: its text and client port."""

    @property
    def port(self) -> int: ...

    def render(self) -> str: ...


@contextlib.contextmanager
def nats_server(config: ServerConfig, *, jetstream: bool = False) -> Iterator[LocalNatsServer]:
    """Run nats-server with ``config``; check it still runs at the end, stop it by PID.

    ``jetstream``: give the server a JetStream store (the config enables it per account).
    """
    server = LocalNatsServer(config.render(), port=config.port, jetstream=jetstream).start()
    process = server.process
    assert process is not None
    try:
        yield server
        assert server.is_running(), f"nats-server died:\n{server.log()[-2000:]}"
    finally:
        server.close()
        assert process.poll() is not None, f"nats-server pid {process.pid} still running"


Service = CalloutPipeline | AsyncContainer | NatsRouter


def service_broker(
    url: str, security: Any, *services: Service, **broker_options: Any
) -> NatsBroker:
    """A FastStream broker (not started) logged in with ``security``, ``services`` included.

    A pipeline or Dishka container becomes our router (:func:`callout_router`); a
    router is included as it is.
    """
    broker_options.setdefault("logger", None)
    broker = NatsBroker(url, security=security, **broker_options)
    for each in services:
        broker.include_router(each if isinstance(each, NatsRouter) else callout_router(each))
    return broker


@contextlib.asynccontextmanager
async def service(
    url: str, security: Any, *services: Service, **broker_options: Any
) -> AsyncIterator[NatsBroker]:
    """:func:`service_broker`, started until the end of the block."""
    broker = service_broker(url, security, *services, **broker_options)
    await broker.start()
    # The SUB must reach the server before the first login (settle: see its docstring).
    await settle(broker.connection, timeout=5)
    try:
        yield broker
    finally:
        await broker.stop()


@dataclass(frozen=True)
class ConfigServer:
    """A config-mode nats-server configured by the test, with its issuer and logins."""

    server: LocalNatsServer
    config: CalloutServerConfig
    issuer: KeyPair
    url: str

    @property
    def keys(self) -> SigningKeys:
        return SigningKeys(self.issuer)

    @property
    def service_login(self) -> dict[str, str]:
        """``nats.connect`` options of the callout service (an ``auth_users`` entry)."""
        return {"user": self.config.auth_user, "password": self.config.auth_password}

    @property
    def system_login(self) -> dict[str, str]:
        """``nats.connect`` options of the system account's admin (bypasses the callout)."""
        return {"user": SYSTEM_USER, "password": self.config.system_password}

    def serve(
        self, pipeline: CalloutPipeline, *, tls: ssl.SSLContext | None = None, **broker: Any
    ) -> contextlib.AbstractAsyncContextManager[NatsBroker]:
        """Run ``pipeline`` as the callout service (see :func:`service`)."""
        login = self.service_login
        security = SASLPlaintext(
            username=login["user"], password=login["password"], ssl_context=tls
        )
        return service(self.url, security, pipeline, **broker)


@contextlib.contextmanager
def config_server(*, scheme: str = "nats", **options: Any) -> Iterator[ConfigServer]:
    """A config-mode nats-server from ``CalloutServerConfig(**options)`` and a fresh issuer.

    For what :class:`~faststream_callout.testing.LocalCalloutServer` does not
    configure: static users, TLS (``scheme="tls"``), the system account's login.
    """
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, **options)
    with nats_server(config, jetstream=config.jetstream) as server:
        yield ConfigServer(server, config, issuer, f"{scheme}://127.0.0.1:{config.port}")


def write_secret(path: Path, text: str) -> Path:
    """Write a creds file (a seed inside): owner-only before the text goes in."""
    path.touch(mode=0o600)
    path.write_text(text)
    return path


_DENY_ALL = Permission(deny=[">"])


@dataclass
class OperatorWorld:
    """Keys and JWTs of an operator-mode deployment, built from scratch.

    An operator, the system account, the callout account AUTH (its JWT turns auth
    callout on) and target accounts APP (users signed by the account key), TEAM
    (signed by a signing key, with ``issuer_account``) and OUTSIDE (valid, but not
    in the callout account's ``allowed_accounts``).
    """

    operator: KeyPair
    system: KeyPair
    callout: KeyPair
    app: KeyPair
    team: KeyPair
    team_signer: KeyPair
    outside: KeyPair
    service_user: KeyPair
    xkey: XKeyPair | None

    @classmethod
    def generate(cls, *, with_xkey: bool) -> OperatorWorld:
        return cls(
            operator=KeyPair.create_operator(),
            system=KeyPair.create_account(),
            callout=KeyPair.create_account(),
            app=KeyPair.create_account(),
            team=KeyPair.create_account(),
            team_signer=KeyPair.create_account(),
            outside=KeyPair.create_account(),
            service_user=KeyPair.create_user(),
            xkey=XKeyPair.generate() if with_xkey else None,
        )

    def server_config(self) -> OperatorServerConfig:
        """A memory-resolver configuration with every account preloaded and a sentinel."""
        op = self.operator
        auth = ExternalAuthorization(
            auth_users=[self.service_user.public_key],
            allowed_accounts=[self.app.public_key, self.team.public_key],
            xkey=self.xkey.public_key if self.xkey else "",
        )
        accounts = {
            self.system.public_key: account_jwt(self.system.public_key, op, name="SYS"),
            self.callout.public_key: account_jwt(
                self.callout.public_key, op, name="AUTH", authorization=auth
            ),
            self.app.public_key: account_jwt(self.app.public_key, op, name="APP"),
            self.team.public_key: account_jwt(
                self.team.public_key, op, name="TEAM", signing_keys=[self.team_signer.public_key]
            ),
            self.outside.public_key: account_jwt(self.outside.public_key, op, name="OUTSIDE"),
        }
        sentinel = user_jwt(
            KeyPair.create_user().public_key,
            self.callout,
            name="sentinel",
            bearer_token=True,
            pub=_DENY_ALL,
            sub=_DENY_ALL,
        )
        return OperatorServerConfig(
            operator_jwt=operator_jwt(op, system_account=self.system.public_key),
            system_account=self.system.public_key,
            account_jwts=accounts,
            default_sentinel=sentinel,
        )

    def service_creds(self) -> str:
        """The callout service's creds (an ``auth_users`` user of AUTH)."""
        token = user_jwt(self.service_user.public_key, self.callout, name="auth-service")
        return creds(token, self.service_user)

    def system_creds(self) -> str:
        """Creds of a fresh user in the system account."""
        admin = KeyPair.create_user()
        return creds(user_jwt(admin.public_key, self.system, name="admin"), admin)

    @contextlib.asynccontextmanager
    async def serve(self, url: str, pipeline: CalloutPipeline) -> AsyncIterator[NatsBroker]:
        """Run ``pipeline`` as the callout service, logged in with :meth:`service_creds`."""
        with tempfile.TemporaryDirectory() as directory:
            path = write_secret(Path(directory, "service.creds"), self.service_creds())
            async with service(url, NatsCredentials(credentials=str(path)), pipeline) as broker:
                yield broker

    def signing_keys(self, *, allowed: list[str] | None = None) -> SigningKeys:
        """The service's keys: APP by its key, TEAM by its signing key, OUTSIDE by its key."""
        return SigningKeys.operator(
            self.callout,
            accounts={
                self.app.public_key: self.app,
                self.team.public_key: self.team_signer,
                self.outside.public_key: self.outside,
            },
            allowed_accounts=allowed,
            xkey=self.xkey,
        )


async def eventually(condition: Callable[[], object], within: float = 3) -> float:
    """Wait until ``condition()`` holds, polling every 5 ms; return the seconds it took.

    Fails the test once ``within`` s have passed.
    """
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "condition not met in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def _quiet(_: Exception) -> None:
    """An ``error_cb``: nats-py prints every error (a refusal too) without one."""


async def login(url: str, **options: Any) -> Client:
    """A nats-py client without reconnects; raises when the server refuses."""
    options.setdefault("error_cb", _quiet)
    return await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3, **options
    )


async def refused(url: str, **options: Any) -> float:
    """Log in expecting ``Authorization Violation``; return how long the refusal took."""
    start = time.monotonic()
    with pytest.raises(NatsError, match=AUTH_VIOLATION):
        await _login_and_close(url, **options)
    return time.monotonic() - start


async def _login_and_close(url: str, **options: Any) -> None:
    nc = await login(url, **options)
    await nc.close()


class AuthErrors:
    """The auth-error events nats-server publishes in the callout account, by client name."""

    def __init__(self) -> None:
        self._events: dict[str, dict[str, Any]] = {}
        self._arrived = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        async with self._arrived:
            self._events[event["client"].get("name", "")] = event
            self._arrived.notify_all()

    async def event(self, name: str, within: float = 2) -> dict[str, Any]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: name in self._events), within)
            return self._events[name]

    async def reason(self, name: str, within: float = 2) -> str:
        return str((await self.event(name, within))["reason"])


@contextlib.asynccontextmanager
async def auth_errors(url: str, **service_login: Any) -> AsyncIterator[AuthErrors]:
    """Collect auth-error events, subscribed with the service's login (SPEC 1.5)."""
    events = AuthErrors()
    nc = await login(url, **service_login)
    await nc.subscribe(AUTH_ERROR_SUBJECT, cb=events.on_message)
    await settle(nc)
    try:
        yield events
    finally:
        await nc.close()


def client_name(label: str) -> str:
    """A unique CONNECT ``name``, to find this client's auth-error event."""
    return f"{label}-{secrets.token_hex(4)}"
