"""Helpers for tests with real nats-py clients."""

from __future__ import annotations

from nats.aio.client import Client


async def settle(nc: Client) -> None:
    """Return once the server has processed everything ``nc`` sent so far.

    nats-py 2.16's ``flush()`` writes its PING straight to the socket, ahead of
    PUB/SUB commands still queued for the client's flusher task, so on its own
    it may return before the server saw them (seen here as ~2% lost "delivered"
    messages). Push the queue out first, then do the PING/PONG round trip.
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush(timeout=2)
