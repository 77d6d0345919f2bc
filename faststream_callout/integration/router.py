"""The FastStream face: a router factory holding the auth subscriber.

FastStream internals (the lean dispatch) live in :mod:`._faststream`; this module uses
FastStream's public API only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast, get_args

from dishka import AsyncContainer
from faststream import StreamMessage
from faststream.exceptions import SkipMessage
from faststream.nats import NatsRouter

from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.integration._faststream import Dispatch, take_over

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = [
    "AUTH_CALLOUT_SUBJECT",
    "DEFAULT_QUEUE",
    "XKEY_HEADER",
    "CalloutMessage",
    "Dispatch",
    "callout_router",
]

AUTH_CALLOUT_SUBJECT: Final = "$SYS.REQ.USER.AUTH"
DEFAULT_QUEUE: Final = "faststream-callout"
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
    """The pipeline, given or resolved from the container on the first request."""

    __slots__ = ("_source", "pipeline")

    def __init__(self, source: AsyncContainer | CalloutPipeline) -> None:
        self.pipeline = source if isinstance(source, CalloutPipeline) else None
        self._source = source

    async def reply(self, body: bytes, server_xkey: str | None) -> bytes | None:
        """The reply to send (an empty body, a denial, when there is no pipeline)."""
        pipeline = self.pipeline
        if pipeline is None:  # then the source is a container
            try:
                container = cast("AsyncContainer", self._source)
                pipeline = self.pipeline = await container.get(CalloutPipeline)
            except Exception:
                # Without a pipeline nothing can be signed: an empty body denies.
                logger.exception("cannot build the auth callout pipeline; denying")
                return b""
        return await pipeline(body, server_xkey)  # None: the policy dropped it, send nothing

    def answer(self, msg: Msg) -> Awaitable[bytes | None]:
        """The reply to a raw request (the direct dispatch)."""
        # Not a coroutine itself: one coroutine per request fewer on the hot path.
        headers = msg.headers
        return self.reply(msg.data, headers.get(XKEY_HEADER) if headers else None)

    def drain_limit(self) -> float | None:
        """nats-server's deadline for a reply, once the pipeline is known."""
        return None if self.pipeline is None else self.pipeline.settings.auth_timeout


def callout_router(
    source: AsyncContainer | CalloutPipeline,
    *,
    subject: str = AUTH_CALLOUT_SUBJECT,
    queue: str = DEFAULT_QUEUE,
    max_workers: int = 32,
    include_in_schema: bool = True,
    dispatch: Dispatch = "auto",
) -> NatsRouter:
    """Build a fresh :class:`NatsRouter` that answers auth callout requests.

    Include it into the broker that connects as the callout account's auth
    user: ``broker.include_router(callout_router(container))``. Every call
    returns a new router, because including a router into a broker moves it.
    Server feedback and discovery are routers of their own
    (:func:`~faststream_callout.integration.feedback.feedback_router`,
    :func:`~faststream_callout.integration.discovery.discovery_router`).

    Args:
        source: a Dishka container providing :class:`CalloutPipeline` (see
            :class:`CalloutProvider`), or a pipeline.
        subject: the request subject; nats-server always uses ``$SYS.REQ.USER.AUTH``.
        queue: the queue group, so several instances share the load.
        max_workers: requests handled concurrently per instance (lookups wait on I/O).
        include_in_schema: show the subscriber in the AsyncAPI schema.
        dispatch: how requests reach the pipeline. ``direct``: straight from
            nats-py to the pipeline, the reply published by us, no FastStream
            per-message machinery (several times cheaper than the pipeline's own
            work). ``framework``: through FastStream's ``consume`` (broker and
            router middlewares such as OpenTelemetry or Prometheus see every
            request). ``auto`` (default): ``framework`` when the broker has
            middlewares, else ``direct``. ``TestNatsBroker`` takes the same path.

    """
    if not isinstance(source, AsyncContainer | CalloutPipeline):
        raise TypeError(
            f"callout_router needs a dishka AsyncContainer or a CalloutPipeline, "
            f"not {type(source).__name__} (use make_async_container, not make_container)"
        )
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    if dispatch not in get_args(Dispatch):
        raise ValueError(f"dispatch must be 'auto', 'direct' or 'framework', not {dispatch!r}")
    pipelines = _PipelineSource(source)
    router = NatsRouter()
    subscriber = router.subscriber(
        subject,
        queue=queue,
        decoder=_decode,
        title="auth-callout",
        description="Answers nats-server authorization requests with signed responses.",
        include_in_schema=include_in_schema,
    )

    @subscriber
    async def authorize(message: CalloutMessage) -> bytes:
        # The framework dispatch. Takes only the decoded message: each framework
        # parameter would cost a thread hop.
        reply = await pipelines.reply(message.body, message.server_xkey)
        if reply is None:  # FastStream sends any return value, even None
            raise SkipMessage
        return reply

    take_over(
        subscriber,
        pipelines.answer,
        dispatch=dispatch,
        max_workers=max_workers,
        drain_limit=pipelines.drain_limit,
    )
    return router
