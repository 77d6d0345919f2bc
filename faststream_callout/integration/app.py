"""Add auth callout to an existing FastStream app: ``AuthCallout(container).attach(app)``.

The connection that answers ``$SYS.REQ.USER.AUTH`` must log in to the callout account
(an ``auth_users`` entry in config mode, a user of the callout account listed in its
``auth_users`` in operator mode). The app's own broker does not belong there: its
subscribers would stop receiving its clients' messages. So :class:`AuthCallout` owns a
connection of its own and runs it with the app:

- **start**: the first ``on_startup`` hook builds the pipeline from the container (keys
  and ports: a missing seed or a failing provider stops the start with one line naming
  it), logs in to the callout account and subscribes, before any other hook runs or any
  broker of the app connects, since their logins go through the callout too;
- **stop**: the first ``after_shutdown`` hook, once the app's brokers stopped (they may
  reconnect until then), and before the container is closed by the hook
  ``setup_dishka(..., finalize_container=True)`` registers: requests in flight finish
  with the ports still open;
- **feedback**: nats-server's reasons for refusing logins the callout allowed (a grant
  into an account the server does not know, say) are logged by default
  (:mod:`~faststream_callout.integration.feedback`);
- **logging**: where nobody configured logging, the library's loggers (the decision log
  included) write through the app's logger handlers, so ``faststream run --log-level
  info`` shows every decision.
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import dishka
from dishka import AsyncContainer
from faststream.exceptions import StartupValidationError
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials
from faststream.security import BaseSecurity, SASLPlaintext

from faststream_callout.core import env
from faststream_callout.core.errors import CalloutError, ConfigurationError
from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.integration._faststream import (
    Dispatch,
    run_first_after_shutdown,
    run_first_on_startup,
)
from faststream_callout.integration._nats import settle
from faststream_callout.integration.feedback import ServerFeedback, feedback_router
from faststream_callout.integration.observers import observe
from faststream_callout.integration.router import DEFAULT_QUEUE, callout_router
from faststream_callout.protocol import jwt
from faststream_callout.protocol.claims import UserClaims

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.asgi import AsgiFastStream

__all__ = ["AuthCallout", "CalloutStartError"]

DEFAULT_URL: Final = "nats://localhost:4222"  # NatsBroker's own default
CONNECTION_NAME: Final = "faststream-callout"

logger: Final = logging.getLogger("faststream_callout")
# FastStream's per-message logs of the callout connection (feedback events) are DEBUG.
broker_logger: Final = logging.getLogger("faststream_callout.broker")

_SECRET_NAME = re.compile(r"SEED|PASSWORD|TOKEN|SECRET|CREDS", re.IGNORECASE)
_SEED = re.compile(r"\bS[A-Z][A-Z2-7]{50,}")  # an nkey or curve seed, anywhere in a text
_CREDS_JWT = re.compile(r"-{3,}BEGIN NATS USER JWT-{3,}\s*([^\s-][^\s]*)\s*-{3,}END", re.DOTALL)


class CalloutStartError(ConfigurationError, StartupValidationError):
    """The auth callout cannot start: what is wrong, in one line, never a secret.

    It names the variable, the provider or the login at fault. A
    ``StartupValidationError`` as well: ``faststream run`` then exits with status 1
    without a traceback (the message was logged just before).
    """

    def __init__(self, message: str) -> None:
        ConfigurationError.__init__(self, message)
        self.message = message
        self.missed_fields = ()  # no CLI options at fault (StartupValidationError's fields)
        self.invalid_fields = ()

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class _Login:
    """How the callout connection logs in, and how to tell the user when it is refused."""

    url: str
    security: BaseSecurity
    who: str  # the login without its secret: "user 'auth' (CALLOUT_USER)"
    must: str  # what that login must be


class AuthCallout:
    """The auth callout service of an existing FastStream app, on a connection of its own.

    Add it in one line next to Dishka's own set-up::

        app = FastStream(broker)
        setup_dishka(container, app, auto_inject=True, finalize_container=True)
        AuthCallout(container).attach(app)

    The app's broker stays where it is; the callout logs in to the callout account with
    ``CALLOUT_USER`` / ``CALLOUT_PASSWORD`` (config mode: an ``auth_users`` entry of the
    callout account) or ``CALLOUT_CREDS`` (operator mode: the creds file of an
    ``auth_users`` user of the callout account), on ``NATS_URL``. Arguments replace the
    variables. The app's broker now logs in through the callout: your user store needs
    a login for it.

    Everything is read and built when the app starts, and any mistake stops the start
    with one line naming it (:class:`CalloutStartError`): a missing or wrong seed, a
    provider that raises, a login the server refuses.

    The callout connects for real whenever the app starts, under FastStream's
    ``TestApp`` too: leave it out of apps tested with ``TestNatsBroker``.

    Args:
        source: a Dishka container providing :class:`CalloutPipeline` (see
            :class:`~faststream_callout.CalloutProvider`): the app's own or one of its
            own. Or a pipeline.
        url: the server; default ``NATS_URL``, else ``nats://localhost:4222``.
        user: the login in config mode; default ``CALLOUT_USER``.
        password: its password; default ``CALLOUT_PASSWORD``.
        creds: a creds file, the login in operator mode; default ``CALLOUT_CREDS``.
        ssl_context: TLS for the connection (``tls://`` URLs need none of their own).
        feedback: log why nats-server refused logins the callout allowed (on by
            default); a :class:`ServerFeedback` of yours to also count or alert. The
            callout's user subscribes to ``$SYS.ACCOUNT.CLIENT.AUTH.ERR`` for it.
        queue: the queue group the app's instances share.
        max_workers: requests decided at once.
        dispatch: see :func:`~faststream_callout.callout_router`.
        environ: where the variables are read; ``os.environ`` by default.

    """

    def __init__(
        self,
        source: AsyncContainer | CalloutPipeline,
        *,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        creds: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        feedback: ServerFeedback | bool = True,
        queue: str = DEFAULT_QUEUE,
        max_workers: int = 32,
        dispatch: Dispatch = "auto",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(source, AsyncContainer | CalloutPipeline):
            raise TypeError(
                f"AuthCallout needs a dishka AsyncContainer or a CalloutPipeline, "
                f"not {type(source).__name__} (use make_async_container, not make_container)"
            )
        if creds is not None and (user is not None or password is not None):
            raise ValueError("give creds (operator mode) or user and password (config mode)")
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.source = source
        self._url = url
        self._user = user
        self._password = password
        self._creds = None if creds is None else Path(creds)
        self._ssl_context = ssl_context
        # Not `feedback or None`: a ServerFeedback with nothing remembered is falsy.
        self.feedback = (
            feedback
            if isinstance(feedback, ServerFeedback)
            else ServerFeedback()
            if feedback
            else None
        )
        self._router_options: dict[str, Any] = {
            "queue": queue,
            "max_workers": max_workers,
            "dispatch": dispatch,
        }
        self._environ = environ
        self._app_logger: logging.Logger | None = None
        self._restore_logging: Callable[[], None] | None = None
        self.broker: NatsBroker | None = None
        """The callout's own broker while it runs."""
        self.pipeline: CalloutPipeline | None = None
        """The pipeline, once started."""

    def __repr__(self) -> str:
        state = "running" if self.broker is not None else "stopped"
        return f"AuthCallout({type(self.source).__name__}, {state})"

    def attach(self, app: FastStream | AsgiFastStream) -> Self:
        """Run with ``app``: start before its brokers connect, stop after they stopped.

        The start is ``app``'s first ``on_startup`` hook and the stop its first
        ``after_shutdown`` hook, whenever ``attach`` is called: before or after the
        app's brokers, hooks and ``setup_dishka``. Returns ``self``.
        """
        app_logger = getattr(app, "logger", None)
        self._app_logger = app_logger if isinstance(app_logger, logging.Logger) else None

        async def start_callout(**_: object) -> None:  # the CLI's extra options, if any
            await self.start()

        run_first_on_startup(app, start_callout)
        run_first_after_shutdown(app, self.stop)
        return self

    async def start(self) -> None:
        """Build the pipeline, log in to the callout account and serve (once; see :meth:`attach`).

        Raises:
            CalloutStartError: the pipeline cannot be built, the login is
                incomplete or refused. The message is also logged (ERROR).

        """
        if self.broker is not None:
            return
        self._adopt_app_logging()
        try:
            await self._start()
        except CalloutStartError as exc:
            logger.error("faststream-callout cannot start: %s", exc)  # noqa: TRY400 - one line, no traceback
            self._release_logging()
            raise

    async def _start(self) -> None:
        environ = os.environ if self._environ is None else self._environ
        pipeline = await self._build_pipeline(environ)
        login = self._login(environ)
        if self.feedback is not None:
            observe(pipeline, self.feedback)
        watch = _StartWatch(_without_userinfo(login.url))
        broker = NatsBroker(
            login.url,
            security=login.security,
            name=CONNECTION_NAME,
            logger=broker_logger,
            log_level=logging.DEBUG,
            error_cb=watch.on_error,
            # Longer than the server's callout deadline: a login that is no auth user is
            # then refused ("Authorization Violation", named below) rather than retried
            # after each client-side timeout.
            connect_timeout=math.ceil(pipeline.settings.auth_timeout) + 3,
        )
        broker.include_router(callout_router(pipeline, **self._router_options))
        if self.feedback is not None:
            broker.include_router(feedback_router(self.feedback, include_in_schema=False))
        try:
            await broker.start()
            watch.connected = True
            await settle(broker.connection)  # serving before any login depends on it
        except Exception as exc:
            await _quietly_stop(broker)
            if "authorization violation" in str(exc).lower():
                raise CalloutStartError(
                    f"the callout connection's login as {login.who} was refused by "
                    f"{_without_userinfo(login.url)} ({exc}): {login.must}"
                ) from None
            raise
        except BaseException:
            await _quietly_stop(broker)
            raise
        self.broker, self.pipeline = broker, pipeline
        logger.info("auth callout serving on %s as %s", _without_userinfo(login.url), login.who)

    async def stop(self) -> None:
        """Stop serving: requests in flight are answered first (see :meth:`attach`)."""
        broker, self.broker = self.broker, None
        try:
            if broker is not None:
                await broker.stop()
        finally:
            self._release_logging()

    async def _build_pipeline(self, environ: Mapping[str, str]) -> CalloutPipeline:
        if isinstance(self.source, CalloutPipeline):
            return self.source
        try:
            return await self.source.get(CalloutPipeline)
        except Exception as exc:  # noqa: BLE001 - any provider may raise anything: name it
            provider = _failed_provider(exc)
            where = f"provider {provider}" if provider else "the container"
            detail = _one_line(f"{type(exc).__name__}: {exc}", environ, self._password)
            raise CalloutStartError(
                f"cannot build the auth callout pipeline: {where} raised {detail}"
            ) from None

    def _login(self, environ: Mapping[str, str]) -> _Login:
        explicit = any(v is not None for v in (self._user, self._password, self._creds))
        url = self._url or environ.get(env.NATS_URL, "").strip() or DEFAULT_URL
        if explicit:
            creds, user, password = self._creds, self._user, self._password
            names = {"creds": "creds=", "user": "user=", "password": "password="}
        else:
            path = environ.get(env.CALLOUT_CREDS, "").strip()
            creds = Path(path) if path else None
            user = environ.get(env.CALLOUT_USER, "").strip() or None
            password = environ.get(env.CALLOUT_PASSWORD) or None
            names = {"creds": env.CALLOUT_CREDS, "user": env.CALLOUT_USER}
            names["password"] = env.CALLOUT_PASSWORD
        if creds is not None:
            if user is not None:
                raise CalloutStartError(
                    f"both {names['creds']} (operator mode) and {names['user']} (config "
                    "mode) are set: the callout connection logs in with one of them"
                )
            return self._creds_login(url, creds, names["creds"])
        if user is None:
            raise CalloutStartError(
                f"the callout connection has no login: set {names['user']} and "
                f"{names['password']} (config mode: an auth_users entry of the callout "
                f"account) or {names['creds']} (operator mode: the creds file of a user "
                "of the callout account)"
            )
        if password is None:
            raise CalloutStartError(
                f"{names['password']} is not set: the password of {names['user']} "
                f"{user!r}, an auth_users login of the callout account"
            )
        return _Login(
            url,
            SASLPlaintext(username=user, password=password, ssl_context=self._ssl_context),
            who=f"user {user!r} ({names['user']})",
            must=(
                f"{names['user']} must be an auth_users entry of the callout account "
                "(authorization { auth_callout { auth_users: [...] } } in the server "
                f"configuration) and {names['password']} its password"
            ),
        )

    def _creds_login(self, url: str, creds: Path, name: str) -> _Login:
        try:
            text = creds.read_text()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CalloutStartError(f"{name}: cannot read {creds}: {reason}") from None
        return _Login(
            url,
            NatsCredentials(credentials=str(creds), ssl_context=self._ssl_context),
            who=f"{_creds_user(text)} from {creds} ({name})",
            must=(
                f"{name} must hold the callout account's credentials: a user of the "
                "callout account listed in its JWT's authorization.auth_users"
            ),
        )

    # -- logging ------------------------------------------------------------------------

    def _adopt_app_logging(self) -> None:
        """Write our records through the app logger's handlers, if nobody configured ours.

        Configured means: the root logger or any of ours has a handler (``logging``
        set-up, ``--log-config``, pytest). Then our records go where the user sends
        them, and adding the app's handlers would print them twice.
        """
        app_logger = self._app_logger
        if self._restore_logging is not None or app_logger is None or not app_logger.handlers:
            return
        if logging.getLogger().handlers or _configured(logger.name):
            return
        handlers = list(app_logger.handlers)
        level, propagate = logger.level, logger.propagate
        for handler in handlers:
            logger.addHandler(handler)
        if level == logging.NOTSET:  # a level the user set stays
            logger.setLevel(app_logger.getEffectiveLevel())
        logger.propagate = False  # as FastStream's own loggers: printed here only

        def restore() -> None:
            for handler in handlers:
                logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate

        self._restore_logging = restore

    def _release_logging(self) -> None:
        restore, self._restore_logging = self._restore_logging, None
        if restore is not None:
            restore()


class _StartWatch:
    """Says why the first connection is not made yet; FastStream retries in silence."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connected = False
        self.seen: set[str] = set()

    async def on_error(self, exc: Exception) -> None:
        """nats-py's ``error_cb``: each failed attempt, and later errors of the connection."""
        text = f"{type(exc).__name__}: {exc}"
        if self.connected or text in self.seen or "authorization violation" in text.lower():
            return  # once up, FastStream logs broken connections; a refusal is reported
        self.seen.add(text)
        if isinstance(exc, TimeoutError):  # the server took the login but did not answer
            logger.warning(
                "the callout connection's login on %s timed out; retrying (a login that "
                "is no auth user waits for the callout, that is for itself)",
                self.url,
            )
        else:
            logger.warning(
                "the callout connection cannot reach %s yet (%s); retrying", self.url, text
            )


async def _quietly_stop(broker: NatsBroker) -> None:
    try:
        await broker.stop()
    except Exception:  # already failing: the first error is the one to report
        logger.debug("stopping the callout connection after a failed start", exc_info=True)


def _configured(name: str) -> bool:
    """Whether the logger ``name`` or one below it has handlers of its own."""
    loggers = logging.getLogger().manager.loggerDict
    return any(
        isinstance(found, logging.Logger) and bool(found.handlers)
        for key, found in loggers.items()
        if key == name or key.startswith(name + ".")
    )


def _without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    scheme, separator, rest = url.rpartition("://")
    return f"{scheme}{separator}{rest.rpartition('@')[2]}"


def _failed_provider(exc: BaseException) -> str | None:
    """The factory that raised ``exc`` inside Dishka: the first frame called by Dishka's code.

    Dishka calls factories from its own modules and from code it generates (file names
    like ``<get_SigningKeys_async>``).
    """
    dishka_dir = str(Path(dishka.__file__).parent)
    inside = False
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith((dishka_dir, "<")):
            inside = True
        elif inside:
            # "create_app.<locals>.Policy.keys" reads as "Policy.keys"
            return code.co_qualname.rpartition("<locals>.")[2].removesuffix(".__init__")
        tb = tb.tb_next
    return None


def _one_line(text: str, environ: Mapping[str, str], *secrets: str | None) -> str:
    """``text`` on one line, without secret values of ``environ`` or anything like a seed."""
    values = [v for name, v in environ.items() if _SECRET_NAME.search(name)]
    for value in [*values, *secrets]:
        if value and len(value.strip()) >= 4:
            text = text.replace(value.strip(), "<redacted>")
    return " ".join(_SEED.sub("<seed>", text).split())


def _creds_user(text: str) -> str:
    """The user a creds file holds (name and public key), without its seed."""
    found = _CREDS_JWT.search(text)
    if found is not None:
        try:
            claims = jwt.decode(found[1], UserClaims)
        except CalloutError:
            return "a creds file whose user JWT is not valid"
        named = f"{claims.name!r} " if claims.name else ""
        return f"user {named}{claims.sub} of account {claims.nats.issuer_account or claims.iss}"
    return "a creds file without a user JWT"
