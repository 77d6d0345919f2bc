"""The FastStream face: a router factory holding the auth subscriber."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from dishka import AsyncContainer
from faststream.exceptions import SkipMessage
from faststream.message import StreamMessage
from faststream.nats import NatsRouter
from faststream.nats.subscriber.usecases.core_subscriber import CoreSubscriber

from faststream_callout.core.pipeline import CalloutPipeline, Decision
from faststream_callout.integration.discovery import CalloutService, add_discovery_subscribers
from faststream_callout.integration.feedback import ServerFeedback, add_feedback_subscriber
from faststream_callout.integration.observers import observe

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["AUTH_CALLOUT_SUBJECT", "XKEY_HEADER", "CalloutMessage", "Dispatch", "callout_router"]

Dispatch = Literal["auto", "direct", "framework"]

AUTH_CALLOUT_SUBJECT: Final = "$SYS.REQ.USER.AUTH"
XKEY_HEADER: Final = "Nats-Server-Xkey"
logger: Final = logging.getLogger("faststream_callout")


@dataclass(frozen=True, slots=True)
class CalloutMessage:
    """An authorization request as received: exact body bytes and headers."""

    body: bytes
    headers: Mapping[str, str]

    @property
    def server_xkey(self) -> str | None:
        """The server's public xkey when the request is encrypted."""
        return self.headers.get(XKEY_HEADER)

    @classmethod
    def __get_pydantic_json_schema__(cls, *_: object) -> dict[str, object]:
        # The AsyncAPI payload: what nats-server sends, not this wrapper's fields.
        # Only the schema changes; the title must stay the class name (FastStream
        # resolves the reference by it).
        return dict(_REQUEST_SCHEMA)


_REQUEST_SCHEMA: Final[dict[str, object]] = {
    "title": "CalloutMessage",
    "type": "string",
    "description": (
        "An authorization request from nats-server: a JWT (type authorization_request) "
        "signed by the server's nkey, with the client's connect options, client info "
        "and TLS state. With an xkey configured it is sealed (xkv1) to the service's "
        "xkey and the server's public xkey is in the Nats-Server-Xkey header. The reply "
        "is an authorization response JWT signed by the issuer account: a user JWT, or "
        "an error."
    ),
    "examples": [
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJhdWQiOiJuYXRzLWF1dGhvcml6YXRpb24tcmVxdWVzdCIsLi4ufQ.c2ln"
    ],
}


async def _decode(message: StreamMessage[Any]) -> CalloutMessage:
    # async and passthrough: the default decoder would json-decode the body, and
    # a sync decoder would run in a worker thread.
    return CalloutMessage(message.body, message.headers)


class _PipelineSource:
    __slots__ = ("_container", "_observers", "pipeline")

    def __init__(
        self,
        source: AsyncContainer | CalloutPipeline,
        observers: Sequence[Callable[[Decision], object]],
    ) -> None:
        self._observers = observers  # attached to the pipeline once there is one
        self.pipeline = observe(source, *observers) if isinstance(source, CalloutPipeline) else None
        self._container = None if isinstance(source, CalloutPipeline) else source

    async def get(self) -> CalloutPipeline:
        if self.pipeline is None and self._container is not None:
            self.pipeline = observe(await self._container.get(CalloutPipeline), *self._observers)
        if self.pipeline is None:
            raise RuntimeError("no pipeline source")
        return self.pipeline

    async def reply(self, body: bytes, server_xkey: str | None) -> bytes | None:
        """The pipeline's reply (``None``: send nothing); an empty body (a denial) without one."""
        try:
            pipeline = self.pipeline or await self.get()
        except Exception:
            # Without a pipeline nothing can be signed: an empty body denies.
            logger.exception("cannot build the auth callout pipeline; denying")
            return b""
        return await pipeline(body, server_xkey)


class _CalloutSubscriber(CoreSubscriber):
    """The auth subscriber with its own lean, bounded-concurrency dispatch.

    FastStream's per-message path (context scopes, middleware stack, parser,
    fast-depends call, response publisher) costs more than the whole pipeline,
    and its concurrent subscriber adds a memory stream and a task group on top.
    Here nats-py's callback starts one task per request (at most
    ``max_workers`` at once, then it waits: back-pressure into nats-py's
    pending queue). The task runs the pipeline and publishes the reply itself
    (``direct``), or hands the message to FastStream's ``consume`` when broker
    or router middlewares must see it (``framework``; ``auto`` picks that when
    any are configured). TestNatsBroker calls ``process_message`` and is
    unaffected.
    """

    __slots__ = ()

    _callout_dispatch: Dispatch
    _callout_source: _PipelineSource
    _callout_slots: asyncio.Semaphore
    _callout_tasks: set[asyncio.Task[None]]
    _callout_direct: bool
    max_workers: int

    def setup_dispatch(self, dispatch: Dispatch, source: _PipelineSource, workers: int) -> None:
        """Set the dispatch (called once, right after the class swap)."""
        self.max_workers = workers
        self._callout_dispatch = dispatch
        self._callout_source = source
        self._callout_slots = asyncio.Semaphore(workers)
        self._callout_tasks = set()
        self._callout_direct = dispatch != "framework"

    @property
    def dispatch(self) -> Dispatch:
        """The dispatch asked for (``auto`` is resolved when the subscription starts)."""
        return self._callout_dispatch

    @property
    def direct(self) -> bool:
        """Whether requests bypass FastStream's per-message path."""
        return self._callout_direct

    async def _create_subscription(self) -> None:
        if self.subscription:
            return
        # Decided at start: only then are the broker's middlewares known.
        self._callout_direct = self._callout_dispatch == "direct" or (
            self._callout_dispatch == "auto" and not self._broker_middlewares
        )
        self.subscription = await self.connection.subscribe(
            subject=self.subject.broker_address,
            queue=self.queue,
            cb=self._on_request,
            **self.extra_options,
        )

    async def _on_request(self, msg: Msg) -> None:
        if not self.running:
            return
        await self._callout_slots.acquire()
        task = asyncio.get_running_loop().create_task(self._serve(msg))
        self._callout_tasks.add(task)
        task.add_done_callback(self._callout_tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            if not self._callout_direct:
                await self.consume(msg)
                return
            headers = msg.headers
            xkey = headers.get(XKEY_HEADER) if headers else None
            reply = await self._callout_source.reply(msg.data, xkey)
            if msg.reply and reply is not None:  # None: dropped by the policy, send nothing
                await self.connection.publish(msg.reply, reply)
        except Exception:
            # The pipeline never raises; this is the connection failing under us.
            logger.exception("could not answer an auth callout request")
        finally:
            self._callout_slots.release()

    async def stop(self) -> None:
        """Unsubscribe, then let requests in flight finish so their replies go out."""
        await super().stop()
        tasks = list(self._callout_tasks)
        if not tasks:
            return
        timeout = self._outer_config.graceful_timeout
        pipeline = self._callout_source.pipeline
        if pipeline is not None:  # past nats-server's own deadline nobody waits for a reply
            limit = pipeline.settings.auth_timeout
            timeout = limit if timeout is None else min(timeout, limit)
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()


def callout_router(
    source: AsyncContainer | CalloutPipeline,
    *,
    subject: str = AUTH_CALLOUT_SUBJECT,
    queue: str = "faststream-callout",
    max_workers: int = 32,
    include_in_schema: bool = True,
    feedback: ServerFeedback | bool = False,
    service: CalloutService | str | None = None,
    dispatch: Dispatch = "auto",
) -> NatsRouter:
    """Build a fresh :class:`NatsRouter` that answers auth callout requests.

    Include it into the broker that connects as the callout account's auth
    user: ``broker.include_router(callout_router(container))``. Every call
    returns a new router, because including a router into a broker moves it.

    Args:
        source: a Dishka container providing :class:`CalloutPipeline` (see
            :class:`CalloutProvider`), or a pipeline.
        subject: the request subject; nats-server always uses ``$SYS.REQ.USER.AUTH``.
        queue: the queue group, so several instances share the load.
        max_workers: requests handled concurrently per instance (lookups wait on I/O).
        include_in_schema: show the subscriber in the AsyncAPI schema.
        feedback: also log why nats-server refused logins we allowed (see
            :class:`ServerFeedback`; ``True`` for a default one). Off by default:
            it subscribes to ``$SYS.ACCOUNT.CLIENT.AUTH.ERR``.
        service: also answer ``$SRV.PING/INFO/STATS`` as a NATS micro service of
            this name (or this :class:`CalloutService`). Off by default: it
            subscribes to ``$SRV.>`` subjects and shows name and version to the
            callout account.
        dispatch: how requests reach the pipeline. ``direct``: straight from
            nats-py to the pipeline, the reply published by us, no FastStream
            per-message machinery (several times cheaper than the pipeline's own
            work). ``framework``: through FastStream's ``consume`` (broker and
            router middlewares such as OpenTelemetry or Prometheus see every
            request). ``auto`` (default): ``framework`` when the broker has
            middlewares, else ``direct``.

    """
    if not isinstance(source, AsyncContainer | CalloutPipeline):
        raise TypeError(
            f"callout_router needs a dishka AsyncContainer or a CalloutPipeline, "
            f"not {type(source).__name__} (use make_async_container, not make_container)"
        )
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    if dispatch not in ("auto", "direct", "framework"):
        raise ValueError(f"dispatch must be 'auto', 'direct' or 'framework', not {dispatch!r}")
    router = NatsRouter()
    if feedback is True:
        feedback = ServerFeedback()
    if isinstance(service, str):
        service = CalloutService(service)
    if service is not None:  # report the endpoint this router really serves
        service.subject, service.queue_group = subject, queue
    extras = [x for x in (feedback, service) if isinstance(x, ServerFeedback | CalloutService)]
    pipelines = _PipelineSource(source, extras)

    subscriber = router.subscriber(
        subject,
        queue=queue,
        decoder=_decode,
        title="auth-callout",
        description="Answers nats-server authorization requests with signed responses.",
        include_in_schema=include_in_schema,
    )
    if type(subscriber) is not CoreSubscriber:  # a FastStream change we must notice
        raise RuntimeError(f"unexpected FastStream subscriber {type(subscriber).__name__}")
    # Same slots, one method set more: the dispatch above replaces FastStream's.
    subscriber.__class__ = _CalloutSubscriber
    cast("_CalloutSubscriber", subscriber).setup_dispatch(dispatch, pipelines, max_workers)

    @subscriber
    async def authorize(message: CalloutMessage) -> bytes:
        # Takes only the decoded message: each framework parameter would cost a thread hop.
        reply = await pipelines.reply(message.body, message.server_xkey)
        if reply is None:  # dropped by the policy: FastStream sends any return value
            raise SkipMessage
        return reply

    if isinstance(feedback, ServerFeedback):
        add_feedback_subscriber(router, feedback, include_in_schema=include_in_schema)
    if service is not None:
        add_discovery_subscribers(router, service, include_in_schema=include_in_schema)
    return router
