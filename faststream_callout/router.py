"""The FastStream face: a router factory holding the auth subscriber."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dishka import AsyncContainer
from faststream.exceptions import SkipMessage
from faststream.message import StreamMessage
from faststream.nats import NatsRouter

from faststream_callout.discovery import CalloutService, add_discovery_subscribers
from faststream_callout.feedback import ServerFeedback, add_feedback_subscriber
from faststream_callout.observers import observe
from faststream_callout.pipeline import NO_REPLY, CalloutPipeline, Decision

__all__ = ["AUTH_CALLOUT_SUBJECT", "XKEY_HEADER", "CalloutMessage", "callout_router"]

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


def callout_router(
    source: AsyncContainer | CalloutPipeline,
    *,
    subject: str = AUTH_CALLOUT_SUBJECT,
    queue: str = "faststream-callout",
    max_workers: int = 32,
    include_in_schema: bool = True,
    feedback: ServerFeedback | bool = False,
    service: CalloutService | str | None = None,
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

    """
    if not isinstance(source, AsyncContainer | CalloutPipeline):
        raise TypeError(
            f"callout_router needs a dishka AsyncContainer or a CalloutPipeline, "
            f"not {type(source).__name__} (use make_async_container, not make_container)"
        )
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    router = NatsRouter()
    if feedback is True:
        feedback = ServerFeedback()
    if isinstance(service, str):
        service = CalloutService(service)
    if service is not None:  # report the endpoint this router really serves
        service.subject, service.queue_group = subject, queue
    extras = [x for x in (feedback, service) if isinstance(x, ServerFeedback | CalloutService)]
    pipelines = _PipelineSource(source, extras)

    @router.subscriber(
        subject,
        queue=queue,
        decoder=_decode,
        max_workers=max_workers,
        title="auth-callout",
        description="Answers nats-server authorization requests with signed responses.",
        include_in_schema=include_in_schema,
    )
    async def authorize(message: CalloutMessage) -> bytes:
        # Takes only the decoded message: each framework parameter would cost a thread hop.
        try:
            pipeline = pipelines.pipeline or await pipelines.get()
        except Exception:
            # Without a pipeline nothing can be signed: an empty body denies.
            logger.exception("cannot build the auth callout pipeline; denying")
            return b""
        reply = await pipeline(message.body, message.server_xkey)
        if reply is NO_REPLY:  # dropped by the policy: FastStream sends any return value
            raise SkipMessage
        return reply

    if isinstance(feedback, ServerFeedback):
        add_feedback_subscriber(router, feedback, include_in_schema=include_in_schema)
    if service is not None:
        add_discovery_subscribers(router, service, include_in_schema=include_in_schema)
    return router
