"""Every FastStream internal the callout router relies on, and nothing else.

The router builds its subscriber with FastStream's public API (``NatsRouter.subscriber``
with a decoder and a handler). This module lets requests skip FastStream's per-message
path (context scopes, middleware stack, parser, fast-depends, response publisher), which
costs more than the pipeline's own work. It knows nothing of the callout protocol: it runs
an ``answer(msg)`` coroutine per request and publishes what it returns.

The internals it relies on, all of ``faststream.nats`` 0.7 (pyproject.toml has the
supported range; ``.ci/run`` runs the router tests on its lowest and highest release):

- ``CoreSubscriber`` (``faststream.nats.subscriber.usecases.core_subscriber``): the class
  ``NatsRouter.subscriber`` returns for a core subject. :func:`take_over` checks that the
  subscriber is exactly one, then swaps its class for :class:`DirectSubscriber`, a
  subclass without slots of its own (FastStream's NATS subscribers are unslotted), so that
  everything not overridden here stays FastStream's.
- ``_create_subscription()``: called by ``start()``; FastStream's subscribes with
  ``cb=self.consume``, ours with our own callback. It reads what FastStream's reads:
  ``subject.broker_address`` (the subject with router prefixes; 0.7.0-0.7.4 called it
  ``clear_subject``), ``queue``, ``extra_options``, ``connection``, and sets
  ``subscription``, which ``stop()`` unsubscribes.
- ``_post_start()``: called once the subscriber runs, by ``start()`` and by
  ``TestNatsBroker``; ``auto`` is resolved there, from ``_broker_middlewares`` (the
  broker's and routers' middlewares, known only once the router is included).
- ``running``: false once ``stop()`` began; requests that arrive later are not taken.
- ``consume(msg)``: FastStream's per-message path, for ``framework``.
- ``process_message(msg)``: what ``consume`` and ``TestNatsBroker`` call; overridden so
  that ``TestNatsBroker`` takes the path production takes.
- ``_outer_config.graceful_timeout``: the broker's ``graceful_timeout``, which also bounds
  how long ``stop()`` waits for requests in flight.

For :class:`~faststream_callout.integration.app.AuthCallout`, of the application
(``faststream._internal.application.Application``, the base of ``FastStream`` and
``AsgiFastStream``; ``AsgiFastStream.from_app`` shares these lists with the app):

- ``_on_startup_calling``: the ``on_startup`` hooks, awaited in order with the CLI's extra
  options as keyword arguments before any broker starts. :func:`run_first_on_startup`
  puts a hook at the front, so the callout serves before any other hook or broker logs in.
- ``_after_shutdown_calling``: the ``after_shutdown`` hooks, awaited in order without
  arguments once every broker stopped. :func:`run_first_after_shutdown` puts a hook at
  the front, ahead of ``container.close`` that dishka-faststream's
  ``setup_dishka(..., finalize_container=True)`` registers there.
- ``faststream run`` exits with status 1 after a ``StartupValidationError`` from a
  startup hook, printing only the CLI options the error lists (none, for ours).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from faststream import Response
from faststream.nats.subscriber.usecases.core_subscriber import CoreSubscriber

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = [
    "Answer",
    "DirectSubscriber",
    "Dispatch",
    "Hook",
    "run_first_after_shutdown",
    "run_first_on_startup",
    "take_over",
]

Dispatch = Literal["auto", "direct", "framework"]

Answer = Callable[["Msg"], Awaitable[bytes | None]]
"""Answers one request: the reply's body, or ``None`` to send nothing."""

logger: Final = logging.getLogger("faststream_callout")


class DirectSubscriber(CoreSubscriber):
    """A core subscriber whose requests can bypass FastStream's per-message path.

    nats-py's callback starts one task per request (at most ``max_workers`` at once, then
    it waits: back-pressure into nats-py's pending queue). The task awaits ``answer`` and
    publishes the reply itself (``direct``), or hands the message to FastStream's
    ``consume`` so that broker and router middlewares see it (``framework``; ``auto``
    picks it when there are any).
    """

    __slots__ = ()

    max_workers: int
    _answer: Answer
    _dispatch: Dispatch
    _direct: bool
    _drain_limit: Callable[[], float | None]
    _workers: asyncio.Semaphore
    _tasks: set[asyncio.Task[None]]

    def configure_dispatch(
        self,
        answer: Answer,
        *,
        dispatch: Dispatch,
        max_workers: int,
        drain_limit: Callable[[], float | None],
    ) -> None:
        """Set the dispatch (once, right after the class swap); see :func:`take_over`."""
        self.max_workers = max_workers
        self._answer = answer
        self._dispatch = dispatch
        self._direct = dispatch != "framework"  # resolved again at start
        self._drain_limit = drain_limit
        self._workers = asyncio.Semaphore(max_workers)
        self._tasks = set()

    @property
    def dispatch(self) -> Dispatch:
        """The dispatch asked for (``auto`` is resolved when the subscriber starts)."""
        return self._dispatch

    @property
    def direct(self) -> bool:
        """Whether requests bypass FastStream's per-message path."""
        return self._direct

    def _post_start(self) -> None:
        # Only now are the broker's middlewares known (the router has been included).
        self._direct = self._dispatch == "direct" or (
            self._dispatch == "auto" and not self._broker_middlewares
        )
        super()._post_start()

    async def _create_subscription(self) -> None:
        if self.subscription:
            return
        self.subscription = await self.connection.subscribe(
            subject=self.subject.broker_address,
            queue=self.queue,
            cb=self._on_request,
            **self.extra_options,
        )

    async def _on_request(self, msg: Msg) -> None:
        if not self.running:
            return
        await self._workers.acquire()
        task = asyncio.get_running_loop().create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            if not self._direct:
                await self.consume(msg)
                return
            reply = await self._answer(msg)
            if msg.reply and reply is not None:
                await self.connection.publish(msg.reply, reply)
        except Exception:
            # ``answer`` never raises; this is the connection failing under us.
            logger.exception("could not answer an auth callout request")
        finally:
            self._workers.release()

    async def process_message(self, msg: Msg) -> Response:
        """FastStream's path for ``framework``; for ``direct`` only ``TestNatsBroker`` calls it."""
        if not self._direct:
            return await super().process_message(msg)
        async with self._workers:
            # None (send nothing) becomes an empty body, as on FastStream's own path.
            return Response(await self._answer(msg))

    async def stop(self) -> None:
        """Unsubscribe, then let requests in flight finish so their replies go out."""
        await super().stop()
        tasks = list(self._tasks)
        if not tasks:
            return
        timeout = self._outer_config.graceful_timeout
        limit = self._drain_limit()  # past the requester's deadline nobody waits for a reply
        if limit is not None:
            timeout = limit if timeout is None else min(timeout, limit)
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()


def take_over(
    subscriber: object,
    answer: Answer,
    *,
    dispatch: Dispatch,
    max_workers: int,
    drain_limit: Callable[[], float | None],
) -> DirectSubscriber:
    """Make ``subscriber`` (fresh from ``NatsRouter.subscriber``) a :class:`DirectSubscriber`.

    Args:
        subscriber: a core subscriber nobody has started yet.
        answer: the reply to one request (``direct`` and under ``TestNatsBroker``).
        dispatch: ``direct``, ``framework`` or ``auto`` (see :class:`DirectSubscriber`).
        max_workers: requests handled at once.
        drain_limit: seconds ``stop()`` waits at most for requests in flight, besides the
            broker's ``graceful_timeout`` (``None``: no limit of its own).

    """
    if type(subscriber) is not CoreSubscriber:  # a FastStream change we must notice
        raise RuntimeError(f"unexpected FastStream subscriber {type(subscriber).__name__}")
    # Same layout, more methods: the dispatch above replaces FastStream's.
    subscriber.__class__ = DirectSubscriber
    taken = cast("DirectSubscriber", subscriber)
    taken.configure_dispatch(
        answer, dispatch=dispatch, max_workers=max_workers, drain_limit=drain_limit
    )
    return taken


Hook = Callable[..., Awaitable[None]]
"""An application hook: ``on_startup`` ones get the CLI's extra options as keywords."""


class _Hooks(Protocol):
    # What FastStream and AsgiFastStream keep their hooks in (see the module docstring).
    _on_startup_calling: list[Any]
    _after_shutdown_calling: list[Any]


def run_first_on_startup(app: object, hook: Hook) -> None:
    """Make ``hook`` the first ``on_startup`` hook of ``app`` (before any broker starts)."""
    _hooks(app)._on_startup_calling.insert(0, hook)  # noqa: SLF001 - see the module docstring


def run_first_after_shutdown(app: object, hook: Hook) -> None:
    """Make ``hook`` the first ``after_shutdown`` hook of ``app`` (once its brokers stopped)."""
    _hooks(app)._after_shutdown_calling.insert(0, hook)  # noqa: SLF001 - see the module docstring


def _hooks(app: object) -> _Hooks:
    for name in ("_on_startup_calling", "_after_shutdown_calling"):
        if not isinstance(getattr(app, name, None), list):  # a FastStream change we must notice
            raise TypeError(f"not a FastStream application (no hook list {name}): {app!r}")
    return cast("_Hooks", app)
