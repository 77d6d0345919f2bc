"""The JetStream KV buckets of the shared stores: how they are named, made and written.

A bucket is opened if it exists (its own replicas and TTL are kept) and created
from its :class:`Bucket` otherwise. Writes retry until a deadline: a JetStream
leader election after a node loss takes several seconds, during which every
write to that bucket fails.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from faststream_callout.core.errors import StoreUnavailable
from faststream_callout.core.stages import printable

__all__ = [
    "ALL_KEYS",
    "Bucket",
    "StoreUnavailable",
    "key_of",
    "name_of",
    "open_bucket",
    "write",
]

logger: Final = logging.getLogger("faststream_callout.shared")

#: The subjects a bucket's entries are republished on (the live feed every
#: instance follows besides its watch): ``callout.shared.<bucket>.<key>``.
REPUBLISH_PREFIX: Final = "callout.shared"
#: A key no name encodes to (see :func:`key_of`): "every name".
ALL_KEYS: Final = "_all"

_BUCKET_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
_NOT_CLUSTERED: Final = 10074  # replicas > 1 not supported in non-clustered mode
_NAME_IN_USE: Final = 10058  # stream name already in use with a different configuration
_NO_JETSTREAM: Final = 10039  # jetstream not enabled for account
_MAX_NAME_BYTES: Final = 1024  # a key is a subject token: keep it well under the control line
# Errors that pass once JetStream has a leader again (or the client reconnected).
_TRANSIENT: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    TimeoutError,
    OSError,
)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    """A JetStream KV bucket of a shared store, and how to create it when it is missing.

    An existing bucket is used as it is: ``replicas``, ``ttl`` and ``memory``
    apply only when this service creates it (the first instance to start).

    Attributes:
        name: the bucket's name (letters, digits, ``-`` and ``_``).
        replicas: copies kept by the cluster: 3 survives the loss of one node.
            A single server (no cluster) gets 1, with a warning.
        ttl: seconds an entry lives; ``None``: until it is deleted.
        memory: keep it in memory instead of on disk (lost when every node restarts).
        republish: republish every write on ``callout.shared.<name>.>``, the live
            feed that reaches each instance in milliseconds even while its
            watch is being re-established (after a node loss).

    """

    name: str
    replicas: int = 3
    ttl: float | None = None
    memory: bool = False
    republish: bool = True

    def __post_init__(self) -> None:
        if not _BUCKET_NAME.match(self.name):
            raise ValueError(f"bucket name {self.name!r}: use letters, digits, '-' and '_'")
        if not 1 <= self.replicas <= 5:  # JetStream's own bounds
            raise ValueError("replicas must be 1 to 5")
        if self.ttl is not None and not (self.ttl > 0 and math.isfinite(self.ttl)):
            raise ValueError("ttl must be a positive number of seconds, or None")

    @property
    def stream(self) -> str:
        """The stream that holds the bucket."""
        return f"KV_{self.name}"

    @property
    def feed(self) -> str:
        """The subject prefix of the republished writes (see ``republish``)."""
        return f"{REPUBLISH_PREFIX}.{self.name}"


async def open_bucket(js: JetStreamContext, bucket: Bucket) -> KeyValue:
    """Open ``bucket``, creating it when it is missing.

    Two instances starting together may both create it: the same configuration
    is accepted twice by JetStream; a different one means someone else made it
    first, and theirs is used.

    Raises:
        StoreUnavailable: JetStream is not enabled for this account or does not answer.

    """
    try:
        try:
            return await js.key_value(bucket.name)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            return await _create(js, bucket, bucket.replicas)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _NOT_CLUSTERED and bucket.replicas > 1:
                logger.warning(
                    "bucket %s: this server is not clustered; created with 1 replica, not %d",
                    bucket.name,
                    bucket.replicas,
                )
                return await _create(js, bucket, 1)
            if exc.err_code == _NAME_IN_USE:
                return await js.key_value(bucket.name)
            raise
    except nats.js.errors.APIError as exc:
        if exc.err_code == _NO_JETSTREAM:
            raise StoreUnavailable(
                f"bucket {bucket.name}: JetStream is not enabled for the callout account "
                "(config mode: 'jetstream: enabled' in its account block; operator mode: "
                "JetStream limits in its account JWT)"
            ) from None
        if not isinstance(exc, nats.js.errors.ServiceUnavailableError):
            raise StoreUnavailable(
                f"bucket {bucket.name}: JetStream refused it: {printable(str(exc))}"
            ) from None
        raise StoreUnavailable(_no_answer(bucket, exc)) from None
    except _TRANSIENT as exc:
        raise StoreUnavailable(_no_answer(bucket, exc)) from None


def _no_answer(bucket: Bucket, exc: BaseException) -> str:
    return (
        f"bucket {bucket.name}: JetStream does not answer ({type(exc).__name__}); "
        "is it enabled on the server and for the callout account?"
    )


async def _create(js: JetStreamContext, bucket: Bucket, replicas: int) -> KeyValue:
    republish = (
        api.RePublish(src=f"$KV.{bucket.name}.>", dest=f"{bucket.feed}.>")
        if bucket.republish
        else None
    )
    return await js.create_key_value(
        bucket=bucket.name,
        description="faststream-callout shared state",
        history=1,
        ttl=bucket.ttl,
        replicas=replicas,
        storage=api.StorageType.MEMORY if bucket.memory else api.StorageType.FILE,
        republish=republish,
    )


def key_of(name: str) -> str:
    """The KV key of a name: unpadded URL-safe base64 of its UTF-8 bytes.

    Any name (dots, spaces, Unicode) becomes a valid key, and the key gives the
    name back (:func:`name_of`). It never starts with ``_`` or ``-`` (no UTF-8
    text starts with the bytes those encode), so :data:`ALL_KEYS` is free.

    Raises:
        ValueError: the name is empty or longer than 1024 bytes in UTF-8.

    """
    raw = name.encode()
    if not raw:
        raise ValueError("a name must not be empty")
    if len(raw) > _MAX_NAME_BYTES:
        raise ValueError(f"a name must be at most {_MAX_NAME_BYTES} bytes in UTF-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def name_of(key: str) -> str | None:
    """The name :func:`key_of` made ``key`` from; ``None`` for a key it cannot have made."""
    if not key or key[0] in "_-":
        return None
    try:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        name = raw.decode()
    except (binascii.Error, ValueError):
        return None
    return name if name and key_of(name) == key else None


async def write(
    operation: Callable[[], Awaitable[_T]],
    *,
    what: str,
    timeout: float,  # noqa: ASYNC109 - the whole retry budget
) -> _T:
    """Run ``operation`` (one JetStream write), retrying transient failures for ``timeout`` s.

    Backs off from 50 ms to 1 s between attempts. Other errors (a compare-and-set
    conflict, a refused request) propagate at once.

    Raises:
        StoreUnavailable: no attempt succeeded in time.

    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.05
    last: BaseException | None = None
    try:
        async with asyncio.timeout_at(deadline):
            # The deadline is also checked by hand: Python 3.11's wait_for (in nats-py's
            # requests) may lose the one cancellation the timeout sends.
            while loop.time() < deadline:
                try:
                    return await operation()
                except _TRANSIENT as exc:
                    last = exc
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                pause = min(1.0, pause * 2)
    except TimeoutError:
        pass
    reason = type(last).__name__ if last is not None else "no answer"
    raise StoreUnavailable(f"{what}: not written within {timeout:g}s ({reason})") from None
