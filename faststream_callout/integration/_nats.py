"""The one nats-py internal the package relies on: pushing a client's queued commands out.

nats-py 2.16's ``flush()`` writes its PING straight to the socket, ahead of PUB/SUB
commands still queued for the client's flusher task (``Client._flush_pending``), so on
its own it may return before the server saw them.
"""

from __future__ import annotations

from nats.aio.client import Client

__all__ = ["settle"]


async def settle(nc: Client, *, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a round trip bound
    """Return once the server has processed everything ``nc`` sent so far.

    Push the queue out first (see the module docstring), then do the PING/PONG
    round trip. A callout service settles its subscription before any login may
    depend on it; tests settle a probe before reading the server's answer.
    """
    await nc._flush_pending(force_flush=True)  # noqa: SLF001 - see the module docstring
    await nc.flush(timeout=timeout)  # type: ignore[arg-type]  # nats-py annotates int seconds
