"""One instance's shared state: a connection to the callout account and the stores on it."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from faststream_callout.core import env
from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.throttle import Throttle, ThrottlePolicy
from faststream_callout.integration.sessions import SessionRegistry
from faststream_callout.integration.shared.buckets import (
    Bucket,
    StoreUnavailable,
    logger,
    open_bucket,
)
from faststream_callout.integration.shared.invalidations import SharedInvalidations
from faststream_callout.integration.shared.mirror import BucketMirror, Entry
from faststream_callout.integration.shared.revocations import SharedRevocationList
from faststream_callout.integration.shared.sessions import SharedSessions
from faststream_callout.integration.shared.throttle import SharedThrottleStore

__all__ = ["SharedSettings", "SharedState"]

CONNECTION_NAME: Final = "faststream-callout-shared"
DEFAULT_URL: Final = "nats://localhost:4222"


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedSettings:
    """Which stores are shared, in which buckets, and how stale a copy may get.

    A store set to ``None`` stays per process.

    Attributes:
        revocations: the bucket of the :class:`SharedRevocationList`.
        sessions: the bucket of the shared :class:`SessionRegistry`.
        invalidations: the bucket of the :class:`SharedInvalidations` (entries
            live 5 minutes: keep that above your caches' ``max_ttl``).
        throttle: the bucket of the :class:`SharedThrottleStore` (each record
            lives as long as the policy keeps it: a per-message TTL).
        max_staleness: seconds a local copy may go unconfirmed (JetStream out of
            reach) before the revocation check refuses every login and the
            decision cache stops caching. Above a JetStream leader election
            (4-9 s after a node dies), so that losing one node costs nothing.
        probe_interval: seconds between confirmations of each copy.
        write_timeout: seconds a write (revoke, restore, invalidate, a session)
            is retried; above a leader election, so a node loss loses nothing.
        request_timeout: seconds one JetStream request may take.
        throttle_timeout: seconds one throttle read or write may take at a login;
            past it the login is decided without the shared counts, and for
            ``probe_interval`` s no login waits for them.
        start_timeout: seconds to open the buckets and load the first copies.
        max_pending_sessions: session writes queued at most (see :class:`SharedSessions`).
        max_sessions: sessions each instance keeps in memory (``SessionRegistry.max_entries``).

    """

    revocations: Bucket | None = field(default_factory=lambda: Bucket(name="callout_revocations"))
    sessions: Bucket | None = field(
        default_factory=lambda: Bucket(name="callout_sessions", republish=False)
    )
    invalidations: Bucket | None = field(
        default_factory=lambda: Bucket(name="callout_invalidations", ttl=300.0)
    )
    throttle: Bucket | None = field(
        default_factory=lambda: Bucket(name="callout_throttle", republish=False)
    )
    max_staleness: float = 15.0
    probe_interval: float = 1.0
    write_timeout: float = 15.0
    request_timeout: float = 2.0
    throttle_timeout: float = 0.25
    start_timeout: float = 15.0
    max_pending_sessions: int = 10_000
    max_sessions: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "max_staleness",
            "probe_interval",
            "write_timeout",
            "request_timeout",
            "throttle_timeout",
            "start_timeout",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.max_staleness <= self.probe_interval:
            raise ValueError("max_staleness must be longer than probe_interval")
        stores = (self.revocations, self.sessions, self.invalidations, self.throttle)
        buckets = [b.name for b in stores if b]
        if len(set(buckets)) != len(buckets):
            raise ValueError("each store needs a bucket of its own")


class SharedState:
    """The shared stores of one service instance, on one connection to the callout account.

    The connection logs in like the callout service (an ``auth_users`` login of
    the callout account, so it does not wait for the callout itself) and keeps
    the buckets in that account, where clients cannot reach them. It needs
    JetStream there (see the README's deployment section). Use it as an async
    context manager, or :meth:`start` and :meth:`close`; with Dishka,
    :class:`~faststream_callout.integration.shared.SharedStateProvider` does both.

    Example::

        state = await SharedState.connect("nats://node-1:4222", user="auth", password=pw)
        async with state:
            lookup = state.revocations.guard(MyLookup())
            pipeline = CalloutPipeline(
                keys, lookup, rules, throttle=state.throttle(), observers=[state.sessions]
            )
            ...
            await state.revocations.revoke("mallory")  # refused by every instance

    Args:
        nc: a connected client in the callout account.
        settings: which stores, which buckets.
        own_connection: close ``nc`` in :meth:`close` (what :meth:`connect` sets).
        clock: Unix time; injectable for tests.

    """

    def __init__(
        self,
        nc: Client,
        settings: SharedSettings | None = None,
        *,
        own_connection: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.settings = settings or SharedSettings()
        self._own_connection = own_connection
        self._clock = clock
        self._js: JetStreamContext = nc.jetstream(timeout=self.settings.request_timeout)
        self._mirrors: list[BucketMirror] = []
        self._revocations: SharedRevocationList | None = None
        self._sessions: SessionRegistry | None = None
        self._session_store: SharedSessions | None = None
        self._invalidations: SharedInvalidations | None = None
        self._throttle: SharedThrottleStore | None = None
        self._started = False

    def __repr__(self) -> str:
        stores = [name for name, on in self._stores().items() if on]
        running = "started" if self._started else "stopped"
        return f"SharedState({', '.join(stores) or 'nothing'}, {running})"

    def _stores(self) -> dict[str, bool]:
        return {
            "revocations": self._revocations is not None,
            "sessions": self._sessions is not None,
            "invalidations": self._invalidations is not None,
            "throttle": self._throttle is not None,
        }

    # -- set-up -------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        creds: str | Path | None = None,
        settings: SharedSettings | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,  # noqa: ANN401 - passed to nats.connect
    ) -> Self:
        """Connect to the callout account and :meth:`start`; the state owns the connection.

        The login defaults to the callout service's variables (``NATS_URL``,
        ``CALLOUT_USER`` and ``CALLOUT_PASSWORD``, or ``CALLOUT_CREDS``), so
        the state logs in where the service does. ``url`` may list several
        servers, comma-separated. ``options`` go to ``nats.connect``.

        Raises:
            ConfigurationError: no login is given or set.
            StoreUnavailable: JetStream is not there, or the buckets did not load
                within ``start_timeout``.

        """
        chosen = settings or SharedSettings()
        connect_options = _login(environ, url, user, password, creds)
        connect_options.update(
            name=CONNECTION_NAME,
            max_reconnect_attempts=-1,  # a shared state that gives up serves nothing
            reconnect_time_wait=0.5,
            connect_timeout=chosen.request_timeout,
            error_cb=_log_connection_error,
        )
        connect_options.update(options)
        try:
            nc = await nats.connect(**connect_options)
        except (nats.errors.Error, OSError) as exc:
            raise StoreUnavailable(
                f"the shared state cannot connect: {type(exc).__name__}: {exc}"
            ) from None
        state = cls(nc, chosen, own_connection=True)
        try:
            return await state.start()
        except BaseException:
            await state.close()
            raise

    async def start(self) -> Self:
        """Open (or create) the buckets and load their first copies.

        Raises:
            StoreUnavailable: JetStream is not there, or the copies did not load
                within ``start_timeout``.

        """
        if self._started:
            return self
        settings = self.settings
        try:
            async with asyncio.timeout(settings.start_timeout):
                await self._open_stores()
        except TimeoutError:
            await self._stop_mirrors()
            raise StoreUnavailable(
                f"the shared buckets did not load within {settings.start_timeout:g}s"
            ) from None
        except BaseException:
            await self._stop_mirrors()
            raise
        self._started = True
        return self

    async def _open_stores(self) -> None:
        settings = self.settings
        if settings.revocations is not None:
            bucket = settings.revocations
            kv = await open_bucket(self._js, bucket)
            revocations = SharedRevocationList(
                self._js,
                kv,
                bucket,
                max_staleness=settings.max_staleness,
                write_timeout=settings.write_timeout,
                clock=self._clock,
            )
            revocations.mirror = await self._follow(kv, bucket, revocations.apply)
            revocations.mirror.probes.append(revocations.check)
            self._revocations = revocations
        if settings.sessions is not None:
            bucket = settings.sessions
            kv = await open_bucket(self._js, bucket)
            info = await self._js.stream_info(bucket.stream)
            store = SharedSessions(
                self._js,
                kv,
                bucket,
                ttl_writes=bool(info.config.allow_msg_ttl),
                write_timeout=settings.write_timeout,
                max_pending=settings.max_pending_sessions,
                clock=self._clock,
            )
            registry = SessionRegistry(
                max_entries=settings.max_sessions, clock=self._clock, store=store
            )
            await self._follow(kv, bucket, store.apply)
            store.start()
            self._session_store, self._sessions = store, registry
        if settings.invalidations is not None:
            bucket = settings.invalidations
            kv = await open_bucket(self._js, bucket)
            invalidations = SharedInvalidations(
                kv,
                bucket,
                max_staleness=settings.max_staleness,
                write_timeout=settings.write_timeout,
                clock=self._clock,
            )
            invalidations.mirror = await self._follow(kv, bucket, invalidations.apply)
            invalidations.mirror.probes.append(invalidations.check)
            self._invalidations = invalidations
        if settings.throttle is not None:
            bucket = settings.throttle
            await open_bucket(self._js, bucket)
            info = await self._js.stream_info(bucket.stream)
            ttl_writes = bool(info.config.allow_msg_ttl)
            if not ttl_writes and not info.config.max_age:
                logger.warning(
                    "bucket %s allows no per-message TTL and has none: throttle records "
                    "are never forgotten (create it with nats-server 2.11+, or give it a TTL)",
                    bucket.name,
                )
            self._throttle = SharedThrottleStore(
                self._js,
                bucket,
                ttl_writes=ttl_writes,
                timeout=settings.throttle_timeout,
                retry_after=settings.probe_interval,
                clock=self._clock,
            )

    async def _follow(
        self, kv: KeyValue, bucket: Bucket, apply: Callable[[Entry], None]
    ) -> BucketMirror:
        mirror = BucketMirror(
            self.nc, self._js, kv, bucket, apply, probe_interval=self.settings.probe_interval
        )
        self._mirrors.append(mirror)
        await mirror.start(timeout=self.settings.start_timeout)
        return mirror

    async def close(self) -> None:
        """Stop following the buckets and writing; close the connection if it is ours."""
        self._started = False
        if self._session_store is not None:
            await self._session_store.close()
        await self._stop_mirrors()
        if self._own_connection and not self.nc.is_closed:
            await self.nc.close()

    async def _stop_mirrors(self) -> None:
        mirrors, self._mirrors = self._mirrors, []
        for mirror in mirrors:
            await mirror.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- the stores ---------------------------------------------------------------------------

    @property
    def revocations(self) -> SharedRevocationList:
        """The revocation list every instance shares."""
        if self._revocations is None:
            raise ConfigurationError(_off("revocations", self._started))
        return self._revocations

    @property
    def sessions(self) -> SessionRegistry:
        """The session registry every instance shares (a pipeline observer)."""
        if self._sessions is None:
            raise ConfigurationError(_off("sessions", self._started))
        return self._sessions

    @property
    def session_store(self) -> SharedSessions:
        """The store under :attr:`sessions` (its queue and counters)."""
        if self._session_store is None:
            raise ConfigurationError(_off("sessions", self._started))
        return self._session_store

    @property
    def invalidations(self) -> SharedInvalidations:
        """Cache invalidations every instance follows: ``attach`` your caches to it."""
        if self._invalidations is None:
            raise ConfigurationError(_off("invalidations", self._started))
        return self._invalidations

    @property
    def throttle_store(self) -> SharedThrottleStore:
        """The throttle records every instance shares (see :meth:`throttle`)."""
        if self._throttle is None:
            raise ConfigurationError(_off("throttle", self._started))
        return self._throttle

    def throttle(self, policy: ThrottlePolicy | None = None) -> Throttle:
        """A throttle applying ``policy`` to the counts every instance shares.

        Provide it to the pipeline (``CalloutPipeline(throttle=...)``); its clock
        is wall time, which every instance shares.
        """
        return Throttle(self.throttle_store, policy, clock=self._clock)

    @property
    def mirrors(self) -> list[BucketMirror]:
        """The followed buckets (their age, position and restarts)."""
        return list(self._mirrors)


def _off(store: str, started: bool) -> str:  # noqa: FBT001 - a private helper
    if not started:
        return f"the shared state is not started: start() it before using {store}"
    return f"shared {store}: off (SharedSettings({store}=None))"


def _login(
    environ: Mapping[str, str] | None,
    url: str | None,
    user: str | None,
    password: str | None,
    creds: str | Path | None,
) -> dict[str, Any]:
    """``nats.connect`` options for the callout account's login: arguments, else variables."""
    environ = os.environ if environ is None else environ
    url = url or environ.get(env.NATS_URL, "").strip() or DEFAULT_URL
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if creds is None and user is None and password is None:
        creds = environ.get(env.CALLOUT_CREDS, "").strip() or None
        user = environ.get(env.CALLOUT_USER, "").strip() or None
        password = environ.get(env.CALLOUT_PASSWORD) or None
    if creds is not None:
        if user is not None:
            raise ConfigurationError("give creds (operator mode) or user and password, not both")
        return {"servers": servers, "user_credentials": str(creds)}
    if user is None or password is None:
        raise ConfigurationError(
            f"the shared state has no login: set {env.CALLOUT_USER} and "
            f"{env.CALLOUT_PASSWORD} (or {env.CALLOUT_CREDS}), or pass user and password, "
            "the callout service's own auth_users login"
        )
    return {"servers": servers, "user": user, "password": password}


async def _log_connection_error(exc: Exception) -> None:
    logger.warning("shared state connection: %s: %s", type(exc).__name__, exc)
