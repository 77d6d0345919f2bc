"""Ask a real nats-server what a connected client may do.

A probe publishes or subscribes with a real nats-py client and lets the server
answer: a permissions violation comes back as ``-ERR 'Permissions Violation
for Publish to "x"'`` (the connection stays open). nats-py runs the error
callback inline while it parses that line, before it parses the PONG of the
round trip that follows, so once :func:`settle` returns every violation the
probe caused has been recorded: no sleeping, no guessing.

Clients opened by :meth:`~faststream_callout.testing.deployment.CalloutDeployment.connect`
record violations from the start; any other nats-py client is hooked on its
first probe (its own error callback still runs).
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from nats.aio.client import Client

from faststream_callout.integration._nats import settle

__all__ = [
    "PermissionMismatch",
    "Probe",
    "can_publish",
    "can_subscribe",
    "expect_permissions",
    "settle",
]

PERMISSIONS_VIOLATION: Final = "permissions violation"
ErrorCallback = Callable[[Exception], Awaitable[None]]


class Violations:
    """The error callback of a probed client: keeps its permissions violations.

    Other errors are passed on to ``forward`` (the client's own callback), if any.
    """

    def __init__(self, label: str = "", forward: ErrorCallback | None = None) -> None:
        self.label = label
        self.forward = forward
        self.seen: list[str] = []

    async def on_error(self, exc: Exception) -> None:
        """The ``error_cb`` (nats-py wants a coroutine function, not a callable object)."""
        text = str(exc)
        if PERMISSIONS_VIOLATION in text.lower():
            self.seen.append(text)
        if self.forward is not None:
            await self.forward(exc)


_watched: weakref.WeakKeyDictionary[Client, Violations] = weakref.WeakKeyDictionary()


def watch(nc: Client, violations: Violations | None = None) -> Violations:
    """Record ``nc``'s permissions violations from now on (idempotent)."""
    known = _watched.get(nc)
    if known is not None:
        return known
    if violations is None:
        # A client we did not open: chain in front of its own callback. nats-py
        # reads the attribute at each error, so replacing it takes effect now.
        own: ErrorCallback = nc._error_cb  # noqa: SLF001
        violations = Violations(_label(nc), forward=own)
        nc._error_cb = violations.on_error  # noqa: SLF001
    _watched[nc] = violations
    return violations


def _label(nc: Client) -> str:
    name = nc.options.get("name") if isinstance(nc.options, dict) else None
    return str(name) if name else f"cid {nc._client_id}"  # noqa: SLF001 - the server's id


@dataclass(frozen=True, slots=True)
class Probe:
    """What the server said to one publish or subscribe. True when it was allowed.

    Attributes:
        action: ``"publish"`` or ``"subscribe"``.
        subject: the subject as asked.
        probed: the subject really used (a publish replaces wildcards, see :func:`can_publish`).
        queue: the queue group of a subscribe probe.
        allowed: the server accepted it.
        violation: the server's error when it did not (lower-cased by nats-py).

    """

    action: Literal["publish", "subscribe"]
    subject: str
    probed: str
    allowed: bool
    queue: str = ""
    violation: str = ""

    def __bool__(self) -> bool:
        return self.allowed

    def __repr__(self) -> str:
        # What `assert await can_publish(...)` shows when it fails.
        return f"<Probe {self}>"

    @property
    def what(self) -> str:
        """``publish to "x"`` / ``subscribe to "x" (queue "q")``, naming the probed subject."""
        subject = f'"{self.subject}"'
        if self.probed != self.subject:
            subject += f' (probed as "{self.probed}")'
        queue = f' (queue "{self.queue}")' if self.queue else ""
        return f"{self.action} to {subject}{queue}"

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else f"denied: {self.violation}"
        return f"{self.what}: {verdict}"


def _concrete(subject: str) -> str:
    """``subject`` with each wildcard token replaced by one fresh literal token."""
    token = f"probe{secrets.token_hex(4)}"
    return ".".join(token if part in {"*", ">"} else part for part in subject.split("."))


def _violation(violations: Violations, since: int, needle: str) -> str:
    needle = needle.lower()
    return next((v for v in violations.seen[since:] if needle in v.lower()), "")


async def can_publish(nc: Client, subject: str, *, timeout: float = 2.0) -> Probe:  # noqa: ASYNC109
    """Publish an empty message to ``subject`` and report whether the server allowed it.

    Publishing to a wildcard is not a question the server answers per subject,
    so each wildcard token is replaced by a fresh literal token
    (``orders.>`` is probed as ``orders.probe1a2b3c4d``): the probe checks one
    subject of that space, not all of them. ``Probe.probed`` names it.
    Use ``assert await can_publish(nc, "orders.new")``; the probe's repr says
    what the server answered.
    """
    violations = watch(nc)
    probed = _concrete(subject)
    mark = len(violations.seen)
    await nc.publish(probed, b"")
    await settle(nc, timeout=timeout)
    violation = _violation(violations, mark, f'publish to "{probed}"')
    return Probe("publish", subject, probed, allowed=not violation, violation=violation)


async def can_subscribe(
    nc: Client,
    subject: str,
    *,
    queue: str = "",
    timeout: float = 2.0,  # noqa: ASYNC109
) -> Probe:
    """Subscribe to ``subject`` (wildcards as given), report whether the server accepted it.

    The subscription is removed again.

    A wildcard subscription is a real question: ``news.>`` may be accepted while
    ``news.hidden`` is denied (the server then filters those messages out).
    """
    violations = watch(nc)
    mark = len(violations.seen)
    sub = await nc.subscribe(subject, queue=queue)
    try:
        await settle(nc, timeout=timeout)
    finally:
        await sub.unsubscribe()  # a denied sid is unknown to the server: harmless
    violation = _violation(violations, mark, f'subscription to "{subject}"')
    return Probe("subscribe", subject, subject, not violation, queue=queue, violation=violation)


class PermissionMismatch(AssertionError):  # noqa: N818 - an assertion, read as what went wrong
    """The server's answers differ from the expected permissions.

    Attributes:
        mismatches: the probes whose answer was not the expected one.
        probes: every probe made.

    """

    def __init__(self, label: str, mismatches: list[Probe], probes: list[Probe]) -> None:
        self.mismatches = mismatches
        self.probes = probes
        lines = [
            (
                f"permissions of {label} differ from the expected ones "
                f"({len(mismatches)} of {len(probes)} checks):"
            )
        ]
        for probe in mismatches:
            if probe.allowed:
                lines.append(f"  {probe.what}: expected DENIED, but nats-server allowed it")
            else:
                lines.append(
                    f"  {probe.what}: expected ALLOWED, but nats-server denied it "
                    f"({probe.violation})"
                )
        super().__init__("\n".join(lines))


async def expect_permissions(
    nc: Client,
    *,
    pub_allow: Iterable[str] = (),
    pub_deny: Iterable[str] = (),
    sub_allow: Iterable[str] = (),
    sub_deny: Iterable[str] = (),
    timeout: float = 2.0,  # noqa: ASYNC109
) -> list[Probe]:
    """Probe every subject and raise :class:`PermissionMismatch` listing each surprise.

    ``pub_*`` subjects are published to (wildcards probed as in
    :func:`can_publish`), ``sub_*`` subjects subscribed to (``"subject queue"``
    probes a queue subscription). All checks run before the assertion, so its
    message lists every subject that was unexpectedly allowed or denied.

    Returns:
        the probes, when all matched.

    """
    __tracebackhide__ = True
    # In order, one round trip each: a violation is matched to its probe by subject.
    expected = [(await can_publish(nc, s, timeout=timeout), True) for s in pub_allow]
    expected += [(await can_publish(nc, s, timeout=timeout), False) for s in pub_deny]
    for entries, allowed in ((sub_allow, True), (sub_deny, False)):
        for entry in entries:
            subject, _, queue = entry.partition(" ")
            probe = await can_subscribe(nc, subject, queue=queue, timeout=timeout)
            expected.append((probe, allowed))
    probes = [probe for probe, _ in expected]
    mismatches = [probe for probe, allowed in expected if probe.allowed != allowed]
    if mismatches:
        label = watch(nc).label or _label(nc)
        raise PermissionMismatch(f"client {label!r}", mismatches, probes)
    return probes
