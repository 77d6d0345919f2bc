"""Raw login attempts against a real nats-server: timed, never raising for a refusal.

For fault and load tests that count outcomes (admitted, refused, hung) rather
than expect one; :meth:`~faststream_callout.testing.deployment.CalloutDeployment.connect`
is the friendlier way to log in to a deployment.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import nats
from nats.aio.client import Client
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError

from faststream_callout.testing.processes import DeploymentError

__all__ = [
    "AUTH_VIOLATION",
    "USER_INFO_SUBJECT",
    "LoginAttempt",
    "attempt_login",
    "quiet",
    "resolve_half_open",
    "user_info",
    "wait_closed",
]

AUTH_VIOLATION: Final = "authorization violation"  # compared lower-cased: nats-py words vary
USER_INFO_SUBJECT: Final = "$SYS.REQ.USER.INFO"


async def quiet(_: Exception) -> None:
    """An ``error_cb`` that ignores errors (nats-py prints a traceback without one)."""


@dataclass
class LoginAttempt:
    """One connect: the client if it got in, else the error; timed.

    Attributes:
        client: the connected client, or None.
        error: why there is no client.
        started: ``time.monotonic()`` when the connect began.
        latency: seconds until it resolved.
        reported: everything the client's error callback saw.

    """

    client: Client | None
    error: BaseException | None
    started: float
    latency: float
    reported: list[Exception] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """nats-server refused the login (``Authorization Violation``)."""
        return isinstance(self.error, AuthorizationError) or (
            isinstance(self.error, NatsError) and AUTH_VIOLATION in str(self.error).lower()
        )

    @property
    def half_open(self) -> bool:
        """``nats.connect`` returned a client that is not connected (:func:`resolve_half_open`)."""
        return self.client is not None and not self.client.is_connected

    @property
    def socket_errors(self) -> list[Exception]:
        """Errors before the CONNECT was answered (refused or timed-out TCP connects)."""
        return [e for e in self.reported if isinstance(e, OSError | TimeoutError)]


async def attempt_login(
    url: str,
    *,
    connect_timeout: float = 5,
    hang_after: float | None = None,
    **options: Any,  # noqa: ANN401 - passed on to nats.connect
) -> LoginAttempt:
    """Connect once, without reconnects; never raises for a refusal.

    nats-py retries a failed *TCP* connect even with ``allow_reconnect=False``
    (and forever with ``max_reconnect_attempts=0``): ``max_reconnect_attempts=1``
    bounds it to two tries, and every failure shows in ``LoginAttempt.reported``.
    A connect still pending after ``hang_after`` seconds (default
    ``2 * connect_timeout + 10``) is given up as a ``TimeoutError``: a hang.
    """
    reported: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        reported.append(exc)

    settings: dict[str, Any] = {
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "connect_timeout": connect_timeout,
        "error_cb": on_error,
        **options,
    }
    started = time.monotonic()
    try:
        client = await asyncio.wait_for(
            nats.connect(url, **settings), hang_after or 2 * connect_timeout + 10
        )
    except (NatsError, OSError, TimeoutError) as exc:
        return LoginAttempt(None, exc, started, time.monotonic() - started, reported)
    return LoginAttempt(client, None, started, time.monotonic() - started, reported)


async def wait_closed(client: Client, within: float) -> bool:
    """Wait up to ``within`` seconds for ``client`` to be closed; return whether it is.

    Polled: nats-py calls no ``closed_cb`` when a client still CONNECTING is closed.
    """
    deadline = time.monotonic() + within
    while not client.is_closed and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return client.is_closed


async def resolve_half_open(attempt: LoginAttempt, within: float) -> bool:
    """Settle a half-open attempt; return whether it was half-open.

    nats-py 2.16 ``connect()`` reads one line after CONNECT+PING and only
    raises on ``-ERR``; any other line counts as success. nats-server sends a
    client its first PING about 2 s after accepting it, while the callout may
    still be pending: when the callout outcome comes later than that, connect
    returns a client whose status stays CONNECTING. It is then closed by the
    ``-ERR 'Authorization Violation'`` that follows (a refusal), or, when the
    server admits it, stays unusable (nothing is ever flushed). Wait up to
    ``within`` seconds for the close and turn it into a refusal.
    """
    client = attempt.client
    if client is None or client.is_connected:
        return False
    if await wait_closed(client, within):
        attempt.error = client.last_error or NatsError("closed while half-open")
        attempt.client = None
        attempt.latency = time.monotonic() - attempt.started
    return True


async def user_info(client: Client, *, timeout: float = 5) -> dict[str, Any]:  # noqa: ASYNC109 - a request timeout
    """The server's view of ``client``: user, account, permissions (``$SYS.REQ.USER.INFO``).

    Raises:
        DeploymentError: the server answered with an error.

    """
    reply = await client.request(USER_INFO_SUBJECT, b"", timeout=timeout)
    body = json.loads(reply.data)
    if "error" in body:
        raise DeploymentError(f"{USER_INFO_SUBJECT} answered {body['error']}")
    data: dict[str, Any] = body["data"]
    return data
