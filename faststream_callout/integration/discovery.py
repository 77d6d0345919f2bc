"""Discovery and statistics as a NATS micro service (ADR-32).

The callout answers ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS`` (and the
``.<name>`` and ``.<name>.<id>`` variants) like any ``nats.micro`` service, so
``nats micro ls`` / ``nats micro stats`` list it. The JSON mirrors nats-py 2.16's
``nats.micro.service`` field by field. Statistics come from the pipeline's
decisions (a pipeline observer): every decision is a request; outcomes where the
service failed or the request was bad (``error``, ``timeout``, ``rejected``) are
errors, while a policy denial or a throttled login is a normal answer. Two steps add
it to a service, next to :func:`~faststream_callout.integration.router.callout_router`::

    service = CalloutService("auth-callout")
    container = make_async_container(..., ObserverProvider(service))  # counts decisions
    broker.include_router(discovery_router(service))                  # answers $SRV
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Final

from faststream.message import StreamMessage
from faststream.nats import NatsRouter

from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.integration.router import AUTH_CALLOUT_SUBJECT, DEFAULT_QUEUE

__all__ = [
    "ERROR_OUTCOMES",
    "INFO_RESPONSE_TYPE",
    "PING_RESPONSE_TYPE",
    "SERVICE_PREFIX",
    "STATS_RESPONSE_TYPE",
    "CalloutService",
    "discovery_router",
]

SERVICE_PREFIX: Final = "$SRV"
PING_RESPONSE_TYPE: Final = "io.nats.micro.v1.ping_response"
INFO_RESPONSE_TYPE: Final = "io.nats.micro.v1.info_response"
STATS_RESPONSE_TYPE: Final = "io.nats.micro.v1.stats_response"
ERROR_OUTCOMES: Final = frozenset(
    {Outcome.ERROR, Outcome.TIMEOUT, Outcome.REJECTED, Outcome.SIGNER_FAILED}
)
ENDPOINT_NAME: Final = "authorize"

_NAME = re.compile(r"^[A-Za-z0-9\-_]+$")  # nats.micro NAME_REGEX
_SEMVER = re.compile(  # nats.micro SEMVER_REGEX
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_ID_ALPHABET: Final = string.ascii_letters + string.digits


def _package_version() -> str:
    try:
        return metadata.version("faststream-callout")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.0.0"


def _timestamp(moment: datetime) -> str:
    # As nats.micro writes it: RFC 3339, UTC, milliseconds.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class CalloutService:
    """The callout's identity and statistics as a NATS micro service.

    Use it as a pipeline observer (``ObserverProvider(service)``,
    ``observe(pipeline, service)``) and read :meth:`ping`, :meth:`info`,
    :meth:`stats`, or answer the ``$SRV`` requests with :func:`discovery_router`.

    Args:
        name: the service name shared by all instances (letters, digits, ``-``, ``_``).
        version: a semantic version; the package version by default.
        description: shown by ``$SRV.INFO``.
        metadata: string pairs shown in every response.
        id: this instance's id; a random 22-character one by default.
        subject: the callout endpoint's subject as reported: ``callout_router``'s
            ``subject`` (the defaults are the same).
        queue_group: the endpoint's queue group: ``callout_router``'s ``queue``.

    """

    def __init__(
        self,
        name: str = "auth-callout",
        *,
        version: str | None = None,
        description: str = "NATS auth callout service",
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,  # noqa: A002 - the protocol's field name
        subject: str = AUTH_CALLOUT_SUBJECT,
        queue_group: str = DEFAULT_QUEUE,
    ) -> None:
        version = version or _package_version()
        if not _NAME.match(name):
            raise ValueError(f"invalid service name {name!r}: use letters, digits, '-' and '_'")
        if not _SEMVER.match(version):
            raise ValueError(f"invalid service version {version!r}: use semantic versioning")
        self.id = id or "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
        if not _NAME.match(self.id):
            raise ValueError(f"invalid service id {self.id!r}")
        self.name = name
        self.version = version
        self.description = description
        self.metadata = dict(metadata or {})
        self.subject = subject
        self.queue_group = queue_group
        self.reset()

    def reset(self) -> None:
        """Zero the statistics and restart the ``started`` clock."""
        self.started = datetime.now(UTC)
        self.num_requests = 0
        self.num_errors = 0
        self.last_error = ""
        self.processing_time = 0  # nanoseconds
        self.outcomes: Counter[str] = Counter()

    def __call__(self, decision: Decision) -> None:
        """Pipeline observer: count one decision."""
        self.num_requests += 1
        self.processing_time += int(decision.latency * 1_000_000_000)
        self.outcomes[decision.outcome.value] += 1
        if decision.outcome in ERROR_OUTCOMES:
            self.num_errors += 1
            self.last_error = f"{decision.outcome.value}: {decision.reason}"

    @property
    def average_processing_time(self) -> int:
        """Mean processing time per request, in nanoseconds."""
        return self.processing_time // self.num_requests if self.num_requests else 0

    def control_subjects(self, verb: str) -> list[str]:
        """``$SRV.<verb>``, ``$SRV.<verb>.<name>`` and ``$SRV.<verb>.<name>.<id>``."""
        base = f"{SERVICE_PREFIX}.{verb}"
        return [base, f"{base}.{self.name}", f"{base}.{self.name}.{self.id}"]

    def ping(self) -> dict[str, Any]:
        """The ``$SRV.PING`` response."""
        return {
            "type": PING_RESPONSE_TYPE,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "metadata": self.metadata,
        }

    def info(self) -> dict[str, Any]:
        """The ``$SRV.INFO`` response."""
        return {
            "type": INFO_RESPONSE_TYPE,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "endpoints": [
                {
                    "name": ENDPOINT_NAME,
                    "subject": self.subject,
                    "queue_group": self.queue_group,
                    "metadata": {},
                }
            ],
            "metadata": self.metadata,
        }

    def stats(self) -> dict[str, Any]:
        """The ``$SRV.STATS`` response; the endpoint's ``data`` counts decisions by outcome."""
        return {
            "type": STATS_RESPONSE_TYPE,
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "started": _timestamp(self.started),
            "endpoints": [
                {
                    "name": ENDPOINT_NAME,
                    "subject": self.subject,
                    "queue_group": self.queue_group,
                    "num_requests": self.num_requests,
                    "num_errors": self.num_errors,
                    "last_error": self.last_error,
                    "processing_time": self.processing_time,
                    "average_processing_time": self.average_processing_time,
                    "data": {outcome.value: self.outcomes[outcome.value] for outcome in Outcome},
                }
            ],
            "metadata": self.metadata,
        }


async def _raw(message: StreamMessage[Any]) -> bytes:
    # async passthrough: a sync or default decoder would cost a thread hop.
    body: bytes = message.body
    return body


def discovery_router(service: CalloutService, *, include_in_schema: bool = True) -> NatsRouter:
    """Build a fresh :class:`NatsRouter` answering the ``$SRV`` PING, INFO and STATS requests.

    Include it into the callout's broker (its user must be allowed to subscribe to
    ``$SRV.>``; anyone in the callout account then sees the service's name and
    version). ``service`` must also observe the pipeline's decisions, or its
    statistics stay at zero: ``ObserverProvider(service)`` in the container, or
    ``observe(pipeline, service)``.

    No queue group: every instance answers, as the protocol requires.

    Args:
        service: the identity and statistics to answer with.
        include_in_schema: show the subscribers in the AsyncAPI schema.

    """
    router = NatsRouter()
    answers = {"PING": service.ping, "INFO": service.info, "STATS": service.stats}
    for verb, answer in answers.items():
        for subject in service.control_subjects(verb):
            router.subscriber(
                subject,
                decoder=_raw,
                title=f"{service.name}-{verb.lower()}-{subject.count('.')}",
                description=f"NATS micro {verb} for the auth callout service.",
                include_in_schema=include_in_schema,
            )(_answering(answer))
    return router


def _answering(answer: Callable[[], dict[str, Any]]) -> Callable[[bytes], Awaitable[bytes]]:
    # A fresh handler per subscriber: the request body is ignored.
    async def respond(_body: bytes) -> bytes:
        return json.dumps(answer()).encode()

    return respond
