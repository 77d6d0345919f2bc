"""Server feedback: learn why nats-server refused a login we allowed.

nats-server checks our reply (signatures, audience, the target account, the
user JWT) and, when it refuses, tells the client only ``Authorization
Violation``. It does publish the reason on ``$SYS.ACCOUNT.CLIENT.AUTH.ERR`` in
the callout account, where the service's own connection can subscribe (SPEC
1.5). :class:`ServerFeedback` remembers the logins we recently allowed (a
pipeline observer) and matches those events against them, so "we allowed it
but the server refused, because ..." is logged and counted. Two steps add it to a
service, next to :func:`~faststream_callout.integration.router.callout_router`::

    feedback = ServerFeedback()
    container = make_async_container(..., ObserverProvider(feedback))  # sees the decisions
    broker.include_router(feedback_router(feedback))                   # sees the events

What is matched: the event (``io.nats.server.advisory.v1.client_disconnect``)
carries no ``user_nkey``. It carries ``server.id`` (the server's public key,
the request's ``server_id.id``) and ``client.id`` (the connection id, the
request's ``client_info.id``), which together name one connection: that pair is
the key. ``client.user`` / ``client.name`` are only reported, as they repeat
across connections.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from faststream.message import StreamMessage
from faststream.nats import NatsRouter

from faststream_callout.core.pipeline import Decision
from faststream_callout.core.stages import printable

__all__ = [
    "AUTH_ERROR_SUBJECT",
    "GrantedLogin",
    "ServerFeedback",
    "ServerRefusal",
    "feedback_router",
]

AUTH_ERROR_SUBJECT: Final = "$SYS.ACCOUNT.CLIENT.AUTH.ERR"
feedback_logger: Final = logging.getLogger("faststream_callout.feedback")


@dataclass(frozen=True, slots=True)
class GrantedLogin:
    """A login the pipeline allowed, remembered until the server's verdict is known."""

    server_id: str
    client_id: int
    user_nkey: str
    identity: str
    account: str
    granted_at: float  # the feedback clock (monotonic by default)


@dataclass(frozen=True, slots=True)
class ServerRefusal:
    """nats-server refused a login we allowed: ``reason`` is its own words."""

    login: GrantedLogin
    reason: str
    event: Mapping[str, Any] = field(repr=False)


class ServerFeedback:
    """Remembers allowed logins and reports those nats-server then refused.

    Feed it decisions (it is a pipeline observer: ``ObserverProvider(feedback)``,
    ``observe(pipeline, feedback)`` or ``CalloutPipeline(..., observers=[feedback])``)
    and auth-error events (:meth:`handle_event`, called by :func:`feedback_router`).

    Args:
        ttl: seconds an allowed login is remembered. The server publishes its
            verdict right after it reads our reply, so a few seconds suffice.
        max_entries: at most this many logins are remembered; the oldest go first.
        keep: how many refusals :attr:`recent` keeps.
        on_refusal: called with every :class:`ServerRefusal` (alerts, metrics).
        clock: a monotonic clock in seconds; injectable for tests.

    Attributes:
        refused: how many allowed logins the server refused.
        reasons: those refusals counted by reason.
        unmatched: auth-error events for logins we did not allow (or forgot):
            our own denials, another instance's grants.
        recent: the last ``keep`` refusals.

    """

    def __init__(
        self,
        *,
        ttl: float = 10.0,
        max_entries: int = 10_000,
        keep: int = 100,
        on_refusal: Sequence[Callable[[ServerRefusal], object]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be positive and max_entries at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self.on_refusal = list(on_refusal)
        self._clock = clock
        self._granted: OrderedDict[tuple[str, int], GrantedLogin] = OrderedDict()
        self.refused = 0
        self.unmatched = 0
        self.reasons: Counter[str] = Counter()
        self.recent: deque[ServerRefusal] = deque(maxlen=keep)

    def __len__(self) -> int:
        """How many allowed logins are remembered right now."""
        self._expire(self._clock())
        return len(self._granted)

    def __call__(self, decision: Decision) -> None:
        """Pipeline observer: remember an allowed login."""
        request = decision.request
        if not decision.allowed or request is None:
            return
        now = self._clock()
        key = (request.server_id.id, request.client_info.id)
        self._granted.pop(key, None)  # re-inserted at the young end
        self._granted[key] = GrantedLogin(
            server_id=key[0],
            client_id=key[1],
            user_nkey=request.user_nkey,
            identity=decision.identity.name if decision.identity else "",
            account=decision.account,
            granted_at=now,
        )
        self._expire(now)
        while len(self._granted) > self.max_entries:
            self._granted.popitem(last=False)

    def _expire(self, now: float) -> None:
        granted = self._granted
        while granted:
            oldest = next(iter(granted.values()))
            if now - oldest.granted_at <= self.ttl:
                break
            granted.popitem(last=False)

    def handle_event(self, event: bytes | str | Mapping[str, Any]) -> ServerRefusal | None:
        """Match one ``$SYS.ACCOUNT.CLIENT.AUTH.ERR`` event; return the refusal if it was ours."""
        if isinstance(event, bytes | str):
            try:
                event = json.loads(event)
            except ValueError:
                feedback_logger.debug("ignoring an auth-error event that is not JSON")
                return None
        if not isinstance(event, Mapping):
            return None
        server = event.get("server")
        client = event.get("client")
        if not isinstance(server, Mapping) or not isinstance(client, Mapping):
            return None
        server_id, client_id = server.get("id"), client.get("id")
        if not isinstance(server_id, str) or not isinstance(client_id, int):
            return None
        self._expire(self._clock())
        login = self._granted.pop((server_id, client_id), None)
        if login is None:
            self.unmatched += 1
            return None
        reason = str(event.get("reason", "")) or "no reason given"
        refusal = ServerRefusal(login, reason, event)
        self.refused += 1
        self.reasons[reason] += 1
        self.recent.append(refusal)
        feedback_logger.warning(
            "we allowed %r (user_nkey %s, account %r, cid %d) but nats-server %s refused it: %s",
            login.identity,
            login.user_nkey,
            login.account,
            login.client_id,
            printable(str(server.get("name") or server_id)),
            printable(reason),
            extra={
                "callout_refusal": {
                    "identity": login.identity,
                    "user_nkey": login.user_nkey,
                    "account": login.account,
                    "client_id": login.client_id,
                    "client_name": client.get("name", ""),
                    "client_host": client.get("host", ""),
                    "server": server_id,
                    "reason": reason,
                }
            },
        )
        for callback in self.on_refusal:
            try:
                callback(refusal)
            except Exception:
                feedback_logger.exception("refusal callback %r failed", callback)
        return refusal


async def _raw(message: StreamMessage[Any]) -> bytes:
    # async passthrough: the default decoder would json-decode into a dict in a thread.
    body: bytes = message.body
    return body


def feedback_router(feedback: ServerFeedback, *, include_in_schema: bool = True) -> NatsRouter:
    """Build a fresh :class:`NatsRouter` that feeds nats-server's auth-error events to ``feedback``.

    Include it into the callout's broker (the events are published in the callout
    account, on ``$SYS.ACCOUNT.CLIENT.AUTH.ERR``, which its user must be allowed to
    subscribe to). ``feedback`` must also observe the pipeline's decisions, or it
    matches nothing: ``ObserverProvider(feedback)`` in the container, or
    ``observe(pipeline, feedback)``.

    No queue group: every instance sees every event, and only the one that
    allowed the login knows it.

    Args:
        feedback: the :class:`ServerFeedback` that matches the events.
        include_in_schema: show the subscriber in the AsyncAPI schema.

    """
    router = NatsRouter()

    @router.subscriber(
        AUTH_ERROR_SUBJECT,
        decoder=_raw,
        title="auth-callout-feedback",
        description="Why nats-server refused logins this service allowed.",
        include_in_schema=include_in_schema,
    )
    async def server_feedback(body: bytes) -> None:
        feedback.handle_event(body)

    return router
