"""The storm driver: many clients log in at once; every outcome is checked against the policy.

Used by storm.py and storm_cache.py, and at a small scale by tests/test_storm.py.
The clients are raw nats-py logins (faststream_callout.testing.logins), the
policy is storm_policy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from storm_policy import (
    ACCOUNTS,
    Credential,
    account_of,
    grant_problems,
    password_of,
    storm_name,
)

from faststream_callout.testing.local_server import LocalNatsServer
from faststream_callout.testing.logins import LoginAttempt, attempt_login, resolve_half_open
from faststream_callout.testing.probes import settle


@dataclass
class StormResult:
    clients: int
    valid: int
    invalid: int
    admitted_valid: int = 0
    refused_valid: int = 0  # valid but refused: a failure, though not a wrong grant
    refused_invalid: int = 0
    wrong_grants: list[str] = field(default_factory=list)
    hangs: int = 0
    half_open: int = 0  # nats.connect returned a not-connected client (resolve_half_open)
    socket_errors: int = 0  # failed TCP connects nats-py retried (reported, not fatal)
    other_errors: list[str] = field(default_factory=list)
    wall: float = 0.0  # start -> every client connected, checked and still connected
    connect_phase: float = 0.0  # start -> the last connect resolved (in or refused)
    connect_latencies: list[float] = field(default_factory=list)  # admitted valid clients
    refusal_latencies: list[float] = field(default_factory=list)
    checked_publishes: int = 0
    audited: int = -1  # storm connections nats-server listed (connz), -1: not audited

    @property
    def connects_per_second(self) -> float:
        return self.clients / self.connect_phase if self.connect_phase else 0.0

    @staticmethod
    def percentile(values: list[float], pct: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]

    def summary(self) -> str:
        lat = self.connect_latencies
        ref = self.refusal_latencies

        def ms(values: list[float], pct: float) -> str:
            return f"{self.percentile(values, pct) * 1000:.0f} ms"

        audit = "not audited" if self.audited < 0 else f"{self.audited} storm connections"
        return "\n".join(
            [
                f"clients            {self.clients} ({self.valid} valid, {self.invalid} invalid)",
                f"valid admitted     {self.admitted_valid}",
                f"valid refused      {self.refused_valid}",
                f"invalid refused    {self.refused_invalid}",
                f"wrong grants       {len(self.wrong_grants)}",
                f"hangs              {self.hangs}",
                f"half-open (nats-py) {self.half_open}",
                f"TCP retries        {self.socket_errors}",
                f"other errors       {len(self.other_errors)}",
                f"publishes checked  {self.checked_publishes}",
                f"server audit       {audit}",
                f"connect phase      {self.connect_phase:.2f} s (until the last connect resolved)",
                f"wall time          {self.wall:.2f} s (with the grant and publish checks)",
                f"connects/s         {self.connects_per_second:.0f}",
                (
                    f"connect latency    p50 {ms(lat, 50)}, p99 {ms(lat, 99)}, "
                    f"max {max(lat, default=0) * 1000:.0f} ms (admitted valid)"
                ),
                f"refusal latency    p50 {ms(ref, 50)}, p99 {ms(ref, 99)} (refused invalid)",
            ]
        )

    @property
    def perfect(self) -> bool:
        return (
            self.admitted_valid == self.valid
            and self.refused_invalid == self.invalid
            and not self.wrong_grants
            and not self.hangs
            and not self.other_errors
        )


class Watchers:
    """One subscriber on ``storm.>`` per account, logged in through the callout."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.seen: dict[str, list[str]] = {account: [] for account in ACCOUNTS}

    async def start(self, url: str) -> None:
        for account in ACCOUNTS:
            name = f"watcher-{account}"
            attempt = await attempt_login(url, user=name, password=password_of(name))
            assert attempt.client is not None, f"{name} refused: {attempt.error!r}"
            self.clients[account] = attempt.client

            async def on_message(msg: Any, account: str = account) -> None:
                self.seen[account].append(msg.subject)

            await attempt.client.subscribe("storm.>", cb=on_message)
            await settle(attempt.client)

    async def settle(self) -> None:
        for client in self.clients.values():
            await settle(client)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def run_storm(
    url: str,
    credentials: Sequence[Credential],
    *,
    connect_timeout: float = 30,
    hang_after: float = 60,
    auth_timeout: float = 2,
    check_publish: bool = True,
    audit: LocalNatsServer | None = None,
) -> StormResult:
    """Connect every credential at once; check every outcome; close everything.

    A valid client checks ``$SYS.REQ.USER.INFO`` (its user, account and exact
    permissions) and, with ``check_publish``, publishes to ``storm.<name>.ok``
    (allowed) and ``storm.<name>.no`` (denied): the watcher of its account must
    see exactly the allowed one, the other account's watcher nothing. Every
    connection stays open until the whole storm is done. With ``audit`` (a server with a monitor port)
    nats-server's own list of connections (``/connz?auth=1``) is audited too:
    no invalid credential's connection, every valid one in its account.
    """
    result = StormResult(
        clients=len(credentials),
        valid=sum(c.valid for c in credentials),
        invalid=sum(not c.valid for c in credentials),
    )
    watchers = Watchers()
    if check_publish:
        await watchers.start(url)
    admitted: list[tuple[Credential, Client]] = []
    everyone_in = asyncio.Event()
    pending = len(credentials)
    started = time.monotonic()

    async def one(credential: Credential) -> None:
        nonlocal pending
        attempt = await attempt_login(
            url,
            connect_timeout=connect_timeout,
            hang_after=hang_after,
            name=storm_name(credential),
            **credential.options,
        )
        try:
            if await resolve_half_open(attempt, within=auth_timeout + 2):
                result.half_open += 1
            result.connect_phase = max(result.connect_phase, time.monotonic() - started)
            await _judge(credential, attempt, result, admitted, check_publish=check_publish)
        finally:
            pending -= 1
            if not pending:
                everyone_in.set()
            await everyone_in.wait()  # hold the connection until the storm is over

    try:
        await asyncio.gather(*(one(c) for c in credentials))
        result.wall = time.monotonic() - started
        if check_publish:
            await watchers.settle()
            _check_deliveries(watchers, admitted, result)
        if audit is not None:
            await asyncio.to_thread(_audit, audit, credentials, result)
    finally:
        await asyncio.gather(*(client.close() for _, client in admitted), return_exceptions=True)
        await watchers.close()
    return result


async def _judge(
    credential: Credential,
    attempt: LoginAttempt,
    result: StormResult,
    admitted: list[tuple[Credential, Client]],
    *,
    check_publish: bool,
) -> None:
    client = attempt.client
    result.socket_errors += len(attempt.socket_errors)
    if client is None:
        if attempt.refused:
            if credential.valid:
                result.refused_valid += 1
            else:
                result.refused_invalid += 1
                result.refusal_latencies.append(attempt.latency)
        elif isinstance(attempt.error, TimeoutError):
            result.hangs += 1
        else:
            result.other_errors.append(f"{credential.name}: {attempt.error!r}")
        return
    admitted.append((credential, client))
    if not credential.valid:
        result.wrong_grants.append(
            f"invalid credential {credential.kind} #{credential.index} got in"
        )
        return
    if not client.is_connected:  # half-open and not refused: admitted, but nats-py is stuck
        result.other_errors.append(f"{credential.name}: admitted but nats-py stuck half-open")
        return
    result.admitted_valid += 1
    result.connect_latencies.append(attempt.latency)
    try:
        result.wrong_grants.extend(await grant_problems(client, credential.name))
        if check_publish:
            await client.publish(f"storm.{credential.name}.ok", b"allowed")
            await client.publish(f"storm.{credential.name}.no", b"denied by the grant")
            await settle(client)
    except (NatsError, OSError, TimeoutError, AssertionError) as exc:
        result.other_errors.append(f"{credential.name} after login: {exc!r}")


def _check_deliveries(
    watchers: Watchers, admitted: list[tuple[Credential, Client]], result: StormResult
) -> None:
    for account, subjects in watchers.seen.items():
        expected = sorted(
            f"storm.{c.name}.ok"
            for c, client in admitted
            if c.valid and client.is_connected and account_of(c.name) == account
        )
        got = sorted(subjects)
        result.checked_publishes += len(got)
        if got != expected:
            extra = sorted(set(got) - set(expected))[:5]
            missing = sorted(set(expected) - set(got))[:5]
            result.wrong_grants.append(
                f"{account}: {len(got)} messages, expected {len(expected)}; "
                f"unexpected {extra}, missing {missing}"
            )


def _audit(server: LocalNatsServer, credentials: Sequence[Credential], result: StormResult) -> None:
    """nats-server's view: no invalid credential connected, every valid one in its account."""
    data = server.monitor("/connz", auth=1, limit=len(credentials) + 100)
    connections = {c.get("name"): c for c in data.get("connections") or []}
    result.audited = 0
    for credential in credentials:
        connection = connections.get(storm_name(credential))
        if connection is None:
            continue
        result.audited += 1
        account = connection.get("account")
        if not credential.valid:
            result.wrong_grants.append(
                f"server lists invalid {credential.kind} #{credential.index} in {account!r}"
            )
        elif (account, connection.get("authorized_user")) != (
            account_of(credential.name),
            credential.name,
        ):
            result.wrong_grants.append(
                f"server lists {credential.name} as {connection.get('authorized_user')!r} "
                f"in {account!r}"
            )


@contextlib.contextmanager
def raised_fd_limit(need: int) -> Iterator[int]:
    """Raise the soft RLIMIT_NOFILE to at least ``need`` (up to the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft if soft >= need else (need if hard == resource.RLIM_INFINITY else min(need, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
