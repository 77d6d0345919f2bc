"""Issue 14's floods: does a legitimate user keep logging in while unknown names pour in?

    uv run python benchmarks/flood.py [--base <other checkout>] [--seconds 15]

Per checkout (this one, and ``--base`` when given: the service then imports the
library from there) and per flood, a fresh nats-server (config mode, the default
2 s ``authorization.timeout``) and a fresh service process: the router over a
``StaticTable`` (argon2id with its defaults, ``hash_workers`` default: 2 threads
here) behind the default ``MemoryThrottle()``, exactly what ``CalloutProvider``
installs. Floods, for ``--seconds`` each:

- ``ipv4``: raw CONNECTs with unknown user names from one address (127.0.0.2),
  50/s, through nats-server: the issue's first measurement.
- ``ipv6/64``: unknown names at 60/s from addresses rotating inside one IPv6 /64.
  This machine has no IPv6 prefix to bind addresses of, so the requests are
  minted as nats-server mints them (``FakeServer``, whose key the service
  trusts like any server key) and sent through nats-server to the service. A
  client may not publish on ``$SYS.REQ.USER.AUTH`` (nats-server refuses), so
  the service subscribes to ``$SYS.REQ.USER.*`` and the flood goes to
  ``$SYS.REQ.USER.FLOOD``: one subscription, one router, one pipeline for the
  flood and the real logins, as if the flood came through nats-server.
- ``ipv6/many``: the same at 60/s from a different /64 every time (a /48 or a
  botnet): no per-source limit binds, only the hash pool's fairness does.

Meanwhile, from 127.0.0.1 through nats-server, ``alice`` (who logged in once
before the flood, so her source is trusted) tries every 0.25 s, and a new user
who never logged in before (``new-<n>``, a different one each time) every 0.5 s.
Reported: the success rate of each, their p50/p99 login time, and the service's
outcomes (allowed, denied, throttled = lockouts, shed = too busy or too many at
once, timeout, other), counted by the service's decision observer.

``serve`` runs the service (the script in its own process, see FloodService).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOODS = ("ipv4", "ipv6/64", "ipv6/many")
USERS = 400  # new-<n> users in the table
FLOOD_SUBJECT = "$SYS.REQ.USER.FLOOD"  # the minted requests; served with the real ones

# -- the service -------------------------------------------------------------------------------


def category(outcome: str, reason: str) -> str:
    """The service outcome as the report counts it."""
    if outcome == "throttled":
        return "throttled" if "failed attempts" in reason else "shed"
    return outcome if outcome in ("allowed", "denied", "timeout") else "other"


async def serve() -> None:
    """The router over a StaticTable behind the default throttle, until SIGTERM."""
    from faststream.nats import NatsBroker
    from faststream.nats.security import NatsUserPassword

    import faststream_callout
    from faststream_callout import (
        CalloutPipeline,
        Grant,
        KeyPair,
        Permission,
        SigningKeys,
        callout_router,
    )
    from faststream_callout.batteries.table import StaticTable
    from faststream_callout.core.throttle import MemoryThrottle
    from faststream_callout.testing.probes import settle

    environ = os.environ
    counts: Counter[str] = Counter()

    started = time.monotonic()

    def record(decision: object) -> None:
        counts[category(decision.outcome.value, decision.reason)] += 1  # type: ignore[attr-defined]
        if environ.get("FLOOD_TRACE"):
            request = decision.request  # type: ignore[attr-defined]
            user = request.connect_opts.user if request else ""
            print(
                f"{time.monotonic() - started:7.3f} {decision.outcome.value:9} "  # type: ignore[attr-defined]
                f"{decision.latency * 1000:6.0f} ms {user} {decision.reason}",  # type: ignore[attr-defined]
                flush=True,
            )

    class AppGrant:
        def build(self, identity: object, request: object) -> Grant:
            return Grant(
                account="APP",
                pub=Permission(allow=["app.>"]),
                sub=Permission(allow=["app.>", "_INBOX.>"]),
            )

    table = StaticTable.from_file(environ["FLOOD_TABLE"])
    pipeline = CalloutPipeline(
        SigningKeys(KeyPair.from_seed(environ["CALLOUT_ISSUER_SEED"])),
        table,
        AppGrant(),
        throttle=MemoryThrottle(),
        observers=[record],
        decision_log=None,
    )
    broker = NatsBroker(
        environ["NATS_URL"],
        security=NatsUserPassword(
            username=environ["CALLOUT_USER"], password=environ["CALLOUT_PASSWORD"]
        ),
        logger=None,
        max_reconnect_attempts=-1,
    )
    broker.include_router(callout_router(pipeline, subject="$SYS.REQ.USER.*"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    await settle(broker.connection)
    print(f"READY {os.getpid()} {Path(faststream_callout.__file__).parent.parent}", flush=True)
    await stop.wait()
    await broker.stop()
    table.close()
    write_outcomes(environ["FLOOD_OUTCOMES"], counts)
    print("STOPPED", flush=True)


def write_outcomes(path: str, counts: Counter[str]) -> None:
    Path(path).write_text(json.dumps(counts))


# -- the driver: logins by hand ----------------------------------------------------------------


async def raw_login(
    port: int, user: str, password: str, *, source: str, within: float = 5.0
) -> tuple[str, float]:
    """CONNECT by hand from ``source``: (``admitted`` | ``refused`` | ``hung`` | error, seconds)."""
    started = time.monotonic()
    options = {"verbose": False, "pedantic": False, "user": user, "pass": password}
    writer = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            await reader.readline()  # INFO
            writer.write(f"CONNECT {json.dumps(options | {'protocol': 1})}\r\nPING\r\n".encode())
            while True:
                line = await reader.readline()
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    return "admitted", time.monotonic() - started
                elif line.startswith(b"-ERR") or not line:
                    return "refused", time.monotonic() - started
    except TimeoutError:
        return "hung", time.monotonic() - started
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - started
    finally:
        if writer is not None:
            writer.close()


@dataclass
class Tries:
    """One legitimate user's logins during a flood."""

    outcomes: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, outcome: str, seconds: float) -> None:
        self.outcomes.append(outcome)
        self.seconds.append(seconds)

    @property
    def rate(self) -> float:
        return self.outcomes.count("admitted") / max(1, len(self.outcomes))

    def summary(self) -> str:
        if not self.seconds:
            return "no tries"
        ordered = sorted(self.seconds)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return (
            f"{self.outcomes.count('admitted')}/{len(self.outcomes)} = {self.rate:.0%}, "
            f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )


async def keep_trying(
    port: int, user: Callable[[int], str], password: str, every: float, stop: asyncio.Event
) -> Tries:
    tries = Tries()
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        tries.add(*await raw_login(port, user(n), password, source="127.0.0.1"))
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, every - (time.monotonic() - started)))
    return tries


@contextlib.asynccontextmanager
async def paced(rate: float, attempt: Callable[[int], Awaitable[None]]) -> AsyncIterator[None]:
    """Start ``attempt(n)`` ``rate`` times a second, not waiting for each, until the block ends.

    On leaving, the sending stops and the attempts under way are awaited.
    """
    tasks: set[asyncio.Task[None]] = set()

    async def send() -> None:
        n = 0
        while True:
            task = asyncio.ensure_future(attempt(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(1 / rate)

    sending = asyncio.create_task(send())
    try:
        yield
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def flood(
    kind: str, port: int, url: str, config: object, issuer: str
) -> AsyncIterator[Counter[str]]:
    """Run the flood ``kind`` until the block ends; yields the driver's view of its replies."""
    seen: Counter[str] = Counter()
    rate = 50 if kind == "ipv4" else 60
    sender: Callable[[int], Awaitable[None]]
    nc = None
    if kind == "ipv4":

        async def one(n: int) -> None:
            outcome, _ = await raw_login(port, f"nobody-{n}", "x", source="127.0.0.2")
            seen[outcome] += 1

        sender = one
    else:
        import nats

        from faststream_callout.testing import FakeServer

        server = FakeServer.config_mode(issuer)
        nc = await nats.connect(
            url,
            user=config.auth_user,  # type: ignore[attr-defined]
            password=config.auth_password,  # type: ignore[attr-defined]
        )
        prefix = ipaddress.IPv6Network("2001:db8:1:2::/64")

        def host() -> str:
            if kind == "ipv6/64":
                return str(prefix[random.getrandbits(64)])
            network = random.getrandbits(32)  # one of 2^32 /64s in 2001:db8::/32
            return str(ipaddress.IPv6Address((0x20010DB8 << 96) | (network << 64) | 1))

        async def request(n: int) -> None:
            minted = server.request(user=f"nobody-{n}", password="x", client_host=host())
            try:
                reply = await nc.request(FLOOD_SUBJECT, minted.body, timeout=3)
            except TimeoutError:
                seen["no reply"] += 1
            else:
                verdict = server.check(minted, reply.data)
                seen["allowed" if verdict.allowed else "refused"] += 1

        sender = request

    try:
        async with paced(rate, sender):
            yield seen
    finally:
        if nc is not None:
            await nc.close()


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    checkout: str
    kind: str
    alice: Tries
    newcomers: Tries
    flood: Counter[str]
    service: Counter[str]


class FloodService:
    """This script's ``serve`` in its own process, importing the library from ``checkout``."""

    def __init__(
        self, checkout: Path | None, url: str, config: object, seed: str, workdir: Path
    ) -> None:
        from faststream_callout.testing.processes import ServiceProcess

        self.outcomes = workdir / "outcomes.json"
        env = {
            "NATS_URL": url,
            "CALLOUT_USER": config.auth_user,  # type: ignore[attr-defined]
            "CALLOUT_PASSWORD": config.auth_password,  # type: ignore[attr-defined]
            "CALLOUT_ISSUER_SEED": seed,
            "FLOOD_TABLE": str(workdir / "users.toml"),
            "FLOOD_OUTCOMES": str(self.outcomes),
        }
        if checkout is not None:
            env["PYTHONPATH"] = str(checkout)
        if os.environ.get("FLOOD_TRACE"):
            env["FLOOD_TRACE"] = "1"
        self.process = ServiceProcess(
            [sys.executable, str(Path(__file__).resolve()), "serve"],
            name="flood-service",
            workdir=workdir,
            env=env,
            cwd=HERE,
        )

    async def start(self) -> str:
        await self.process.start(within=60)
        ready = next(s for s in self.process.output().splitlines() if s.startswith("READY"))
        return ready.split()[2]  # where the library was imported from

    def stop(self) -> Counter[str]:
        self.process.stop(timeout=15)
        return (
            Counter(json.loads(self.outcomes.read_text())) if self.outcomes.exists() else Counter()
        )


def write_table(path: Path, password: str) -> None:
    from faststream_callout.batteries.table import hash_password

    hashed = hash_password(password)  # argon2id, the library's defaults
    lines = [f'[users.alice]\npassword = "{hashed}"\n']
    lines += [f'[users.new-{n}]\npassword = "{hashed}"\n' for n in range(USERS)]
    path.write_text("\n".join(lines))


async def one_run(checkout: Path | None, kind: str, seconds: float, where: str) -> Run:
    from faststream_callout import KeyPair
    from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer

    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}})
    password = secrets.token_urlsafe(12)
    workdir = Path(where)
    write_table(workdir / "users.toml", password)
    server = LocalNatsServer.from_config(config).start()
    service = FloodService(checkout, server.url, config, issuer.seed, workdir)
    try:
        imported = await service.start()
        port = config.port
        warm, _ = await raw_login(port, "alice", password, source="127.0.0.1")
        if warm != "admitted":
            raise SystemExit(f"alice could not log in before the flood: {warm}")
        stop = asyncio.Event()
        async with flood(kind, port, server.url, config, issuer.public_key) as seen:
            await asyncio.sleep(1.0)  # the flood gets going first
            alice = asyncio.create_task(keep_trying(port, lambda n: "alice", password, 0.25, stop))
            newcomers = asyncio.create_task(
                keep_trying(port, lambda n: f"new-{n % USERS}", password, 0.5, stop)
            )
            await asyncio.sleep(seconds)
            stop.set()
            tries = await asyncio.gather(alice, newcomers)
    finally:
        counts = service.stop()
        server.close()
    label = "base" if checkout is not None else "this"
    print(f"  [{label}: {imported}]", flush=True)
    return Run(label, kind, tries[0], tries[1], seen, counts)


def report(runs: list[Run]) -> None:
    print(
        "\n| checkout | flood | alice (trusted source) | new user | flood replies (driver) "
        "| service outcomes |\n|---|---|---|---|---|---|"
    )
    for run in runs:
        service = ", ".join(f"{k} {v}" for k, v in sorted(run.service.items()))
        replies = ", ".join(f"{k} {v}" for k, v in sorted(run.flood.items()))
        print(
            f"| {run.checkout} | {run.kind} | {run.alice.summary()} | "
            f"{run.newcomers.summary()} | {replies} | {service} |"
        )


async def main(args: argparse.Namespace) -> int:
    checkouts: list[Path | None] = [None]
    if args.base:
        checkouts.insert(0, args.base.resolve())
    print(f"load average {os.getloadavg()}", flush=True)
    runs = []
    for kind in args.floods:
        for checkout in checkouts:
            with tempfile.TemporaryDirectory(prefix="flood-") as workdir:
                print(f"{kind} flood, {'base' if checkout else 'this'} checkout ...", flush=True)
                run = await one_run(checkout, kind, args.seconds, workdir)
                print(f"  alice {run.alice.summary()}; new {run.newcomers.summary()}", flush=True)
                runs.append(run)
    report(runs)
    print(f"load average {os.getloadavg()}")
    this = [run for run in runs if run.checkout == "this" and run.kind != "ipv6/many"]
    return 0 if all(run.alice.rate >= 0.95 for run in this) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve())
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout to serve from (before)")
    parser.add_argument("--seconds", type=float, default=15.0, help="of each flood")
    parser.add_argument("--floods", nargs="+", choices=FLOODS, default=list(FLOODS))
    raise SystemExit(asyncio.run(main(parser.parse_args())))
