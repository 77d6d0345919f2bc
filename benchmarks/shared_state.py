"""Issue 15: what the shared stores (JetStream KV) cost per login, and storms through 1 and 2 processes.

    uv run python benchmarks/shared_state.py offline [--rounds 30 --burst 300]
    uv run python benchmarks/shared_state.py throttle [--rounds 20 --burst 200 --cluster]
    uv run python benchmarks/shared_state.py storm [--clients 1000 --repeat 3]

``offline``: the pipeline (benchmark 1's workload, FakeServer requests) in one
process, in alternating bursts so that load hits every variant alike, against a
local JetStream server:

- ``memory``: ``RevocationList.guard`` (1,000 names revoked) and an in-memory
  ``SessionRegistry`` observer: today's per-process stores;
- ``kv-revocations``: ``SharedRevocationList.guard`` (the same 1,000 names, in
  the bucket), the in-memory registry: the cost of the shared revocation check;
- ``kv-all``: the shared revocation check and the shared ``SessionRegistry``,
  every login's session written to the bucket (the burst's time includes
  waiting until every write is acknowledged).

Reported: CPU time per login of this process (every write's client side
included) and of nats-server (``/proc/<pid>/stat``), and the ratios to ``memory``.

``throttle``: the shared throttle (``SharedThrottleStore``, a JetStream round trip
per read and per write) against ``MemoryThrottle``, with the same policy, in
alternating bursts; logins one after the other, so wall time per login is the
latency a login gains. ``ok``: every login allowed (a read of 3 records and 1
write); ``fail``: every login denied, distinct users from distinct addresses (a
read of 3 records and 3 writes; limits raised so nothing locks). ``none``: no
throttle. ``--cluster``: a 3-node cluster and an R3 bucket instead of one server.

``storm``: benchmark 2's storm (storm.py: every client at once, every outcome
checked) through 1 and 2 service processes (storm_service.py), with the shared
stores off and on, alternating, on one JetStream server. Reported: connects/s,
p50/p99 connect latency, CPU per login of the services, nats-server and the
driver (the clients, in this process), and the speed-up of 2 processes over 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from connect_storm import cpu_ticks
from pipeline_offline import GRANT, IDENTITY, mint
from storm_driver import StormResult, raised_fd_limit, run_storm
from storm_policy import callout_config, storm_credentials
from storm_service import StormService

from faststream_callout import CalloutPipeline, Denied, KeyPair, SigningKeys
from faststream_callout.core.throttle import Backoff, MemoryThrottle, Throttle, ThrottlePolicy
from faststream_callout.integration.sessions import RevocationList, SessionRegistry
from faststream_callout.integration.shared import Bucket, SharedSettings, SharedState
from faststream_callout.testing import FakeServer
from faststream_callout.testing.cluster import NatsCluster
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer

TICK = 0.01  # seconds per /proc clock tick (USER_HZ = 100 on Linux)
REVOKED = 1_000


class Lookup:
    def lookup(self, request: object) -> object:
        return IDENTITY


class Refuse:
    def lookup(self, request: object) -> object:
        raise Denied("bad credentials")


class Permissions:
    def build(self, identity: object, request: object) -> object:
        return GRANT


# -- offline ---------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    pipeline: CalloutPipeline
    state: SharedState | None = None  # whose session writes a burst waits for
    cpu: float = 0.0
    server_ticks: int = 0
    requests: int = 0
    wall: float = 0.0
    requests_of_its_own: list[tuple[bytes, str | None]] | None = None


async def burst(variant: Variant, requests: list[tuple[bytes, str | None]], server: int) -> None:
    requests = variant.requests_of_its_own or requests
    ticks = cpu_ticks(server)
    started = time.process_time()
    wall = time.perf_counter()
    for body, header in requests:
        await variant.pipeline(body, header)
    if variant.state is not None and variant.state.settings.sessions is not None:
        await variant.state.session_store.flush(60)
    variant.cpu += time.process_time() - started
    variant.wall += time.perf_counter() - wall
    variant.server_ticks += cpu_ticks(server) - ticks
    variant.requests += len(requests)


async def offline(args: argparse.Namespace) -> None:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, jetstream=True)
    keys = SigningKeys(issuer)
    fake = FakeServer.for_keys(keys)
    requests = mint(fake, args.burst)
    with LocalNatsServer(config.render(), jetstream=True) as server:
        assert server.pid is not None
        login = {"user": config.auth_user, "password": config.auth_password}
        state = await SharedState.connect(server.url, **login)
        memory = RevocationList()
        for n in range(REVOKED):
            memory.revoke(f"revoked-{n}")
            await state.revocations.revoke(f"revoked-{n}")
        variants = [
            Variant(
                "memory",
                CalloutPipeline(
                    keys, memory.guard(Lookup()), Permissions(), observers=[SessionRegistry()]
                ),
            ),
            Variant(
                "kv-revocations",
                CalloutPipeline(
                    keys,
                    state.revocations.guard(Lookup()),
                    Permissions(),
                    observers=[SessionRegistry()],
                ),
            ),
            Variant(
                "kv-all",
                CalloutPipeline(
                    keys,
                    state.revocations.guard(Lookup()),
                    Permissions(),
                    observers=[state.sessions],
                ),
                state,
            ),
        ]
        for variant in variants:  # warm up; each must allow
            assert (await variant.pipeline.decide(*requests[0])).allowed
        for i in range(args.rounds):
            order = variants if i % 2 == 0 else variants[::-1]
            for variant in order:
                await burst(variant, requests, server.pid)
        await state.close()
    base = variants[0]
    print(
        f"python {sys.version.split()[0]}; {args.rounds} rounds of {args.burst} logins per "
        f"variant, alternating; {REVOKED} names revoked"
    )
    for variant in variants:
        us = variant.cpu / variant.requests * 1e6
        server_us = variant.server_ticks * TICK / variant.requests * 1e6
        print(
            f"{variant.name:15} service {us:7.1f} us/login ({variant.cpu / base.cpu:.2f}x memory)"
            f"   nats-server {server_us:6.1f} us/login"
        )


# -- throttle --------------------------------------------------------------------------------

NEVER_LOCKS = Backoff(free_failures=10**9)


async def throttle(args: argparse.Namespace) -> None:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, jetstream=True)
    keys = SigningKeys(issuer)
    fake = FakeServer.for_keys(keys)
    allowed = mint(fake, args.burst)
    denied = []
    for i in range(args.burst):  # distinct users from distinct addresses: 3 new records each
        minted = fake.request(
            user=f"user-{i}",
            password="wrong",
            client_host=f"10.1.{i // 250}.{i % 250}",
            now=time.time() + 3600,
        )
        denied.append((minted.body, minted.server_xkey))
    policy = ThrottlePolicy(per_pair=NEVER_LOCKS, per_subject=NEVER_LOCKS, per_source=NEVER_LOCKS)
    replicas = 3 if args.cluster else 1
    settings = SharedSettings(
        revocations=None,
        sessions=None,
        invalidations=None,
        throttle=Bucket(name="bench_throttle", replicas=replicas, republish=False),
    )
    login = {"user": config.auth_user, "password": config.auth_password}
    with contextlib.ExitStack() as stack:
        if args.cluster:
            cluster = stack.enter_context(
                NatsCluster(config.render(), size=3, jetstream=True, name="bench")
            )
            server = cluster.servers[0]
        else:
            server = stack.enter_context(LocalNatsServer(config.render(), jetstream=True))
        assert server.pid is not None
        state = await SharedState.connect(server.url, settings=settings, **login)

        def pipeline(lookup: object, throttle: Throttle | None) -> CalloutPipeline:
            return CalloutPipeline(keys, lookup, Permissions(), throttle=throttle)  # type: ignore[arg-type]

        variants = [
            Variant("ok none", pipeline(Lookup(), None)),
            Variant("ok memory", pipeline(Lookup(), MemoryThrottle(policy))),
            Variant("ok kv", pipeline(Lookup(), state.throttle(policy))),
            Variant("fail none", pipeline(Refuse(), None), requests_of_its_own=denied),
            Variant(
                "fail memory",
                pipeline(Refuse(), MemoryThrottle(policy)),
                requests_of_its_own=denied,
            ),
            Variant(
                "fail kv", pipeline(Refuse(), state.throttle(policy)), requests_of_its_own=denied
            ),
        ]
        for variant in variants:  # warm up
            await variant.pipeline.decide(*(variant.requests_of_its_own or allowed)[0])
        for i in range(args.rounds):
            order = variants if i % 2 == 0 else variants[::-1]
            for variant in order:
                await burst(variant, allowed, server.pid)
        store = state.throttle_store
        await state.close()
    where = "3-node cluster, R3 bucket" if args.cluster else "one server, R1 bucket"
    print(
        f"python {sys.version.split()[0]}; {where}; {args.rounds} rounds of {args.burst} "
        f"logins per variant, alternating; {store.conflicts} conflicts, {store.failures} failures"
    )
    for variant in variants:
        base = next(v for v in variants if v.name == variant.name.split()[0] + " memory")
        us = variant.cpu / variant.requests * 1e6
        wall_us = variant.wall / variant.requests * 1e6
        server_us = variant.server_ticks * TICK / variant.requests * 1e6
        print(
            f"{variant.name:12} service {us:7.1f} us/login ({variant.cpu / base.cpu:.2f}x memory)"
            f"  latency {wall_us:7.1f} us/login ({variant.wall / base.wall:.2f}x)"
            f"  nats-server {server_us:6.1f} us/login"
        )


# -- storm -------------------------------------------------------------------------------------


@dataclass
class StormRun:
    rate: float
    p50: float
    p99: float
    service_ms: float  # CPU per login, all service processes together
    server_ms: float
    driver_ms: float  # this process: the clients
    perfect: bool


@dataclass
class Series:
    runs: list[StormRun] = field(default_factory=list)

    def med(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)


async def storm_once(
    server: LocalNatsServer,
    config: CalloutServerConfig,
    issuer: KeyPair,
    workdir: Path,
    *,
    instances: int,
    shared: bool,
    clients: int,
    run: int,
) -> StormRun:
    services = [
        StormService(
            url=server.url,
            config=config,
            issuer=issuer,
            name=f"r{run}-{'kv' if shared else 'mem'}-{instances}-{n}",
            workdir=workdir,
            max_workers=64,
            shared=shared,
        )
        for n in range(instances)
    ]
    try:
        await asyncio.gather(*(service.start(within=60) for service in services))
        assert server.pid is not None
        before = [cpu_ticks(s.pid) for s in services], cpu_ticks(server.pid)
        driver = time.process_time()
        result: StormResult = await run_storm(
            server.url, storm_credentials(clients, 3), check_publish=False
        )
        driver = time.process_time() - driver
        after = [cpu_ticks(s.pid) for s in services], cpu_ticks(server.pid)
    finally:
        for service in services:
            service.stop()
    service_ticks = sum(after[0]) - sum(before[0])
    return StormRun(
        rate=result.connects_per_second,
        p50=StormResult.percentile(result.connect_latencies, 50) * 1000,
        p99=StormResult.percentile(result.connect_latencies, 99) * 1000,
        service_ms=service_ticks * TICK / clients * 1000,
        server_ms=(after[1] - before[1]) * TICK / clients * 1000,
        driver_ms=driver / clients * 1000,
        perfect=result.perfect,
    )


async def storm(args: argparse.Namespace) -> int:
    issuer = KeyPair.create_account()
    config = callout_config(issuer, timeout=2.0, jetstream=True)
    series = {(n, kv): Series() for kv in (False, True) for n in (1, 2)}
    with (
        tempfile.TemporaryDirectory(prefix="shared-storm-") as workdir,
        raised_fd_limit(2 * args.clients + 1024),
        LocalNatsServer(config.render(), port=config.port, jetstream=True) as server,
    ):
        for run in range(args.repeat):
            for (instances, kv), runs in series.items():
                runs.runs.append(
                    await storm_once(
                        server,
                        config,
                        issuer,
                        Path(workdir),
                        instances=instances,
                        shared=kv,
                        clients=args.clients,
                        run=run,
                    )
                )
    print(f"{args.clients} clients (a third invalid), {args.repeat} runs per variant, medians")
    for (instances, kv), runs in series.items():
        print(
            f"{instances} process{'es' if instances > 1 else '  '} {'kv ' if kv else 'mem'}: "
            f"{runs.med('rate'):6.0f} connects/s  p50 {runs.med('p50'):5.0f} ms  "
            f"p99 {runs.med('p99'):5.0f} ms  service {runs.med('service_ms'):.3f} ms/login  "
            f"nats-server {runs.med('server_ms'):.3f}  driver {runs.med('driver_ms'):.3f}  "
            f"{'ok' if all(r.perfect for r in runs.runs) else 'NOT PERFECT'}"
        )
    for kv in (False, True):
        one, two = series[(1, kv)].med("rate"), series[(2, kv)].med("rate")
        print(f"speed-up of 2 processes over 1, {'kv ' if kv else 'mem'}: {two / one:.2f}x")
    return 0 if all(r.perfect for s in series.values() for r in s.runs) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    off = sub.add_parser("offline", help="per-login cost of the shared stores")
    off.add_argument("--rounds", type=int, default=30)
    off.add_argument("--burst", type=int, default=300)
    th = sub.add_parser("throttle", help="per-login cost of the shared throttle")
    th.add_argument("--rounds", type=int, default=20)
    th.add_argument("--burst", type=int, default=200)
    th.add_argument("--cluster", action="store_true", help="3 nodes, an R3 bucket")
    st = sub.add_parser("storm", help="storms through 1 and 2 processes, stores off and on")
    st.add_argument("--clients", type=int, default=1000)
    st.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "offline":
        asyncio.run(offline(args))
    elif args.mode == "throttle":
        asyncio.run(throttle(args))
    else:
        sys.exit(asyncio.run(storm(args)))


if __name__ == "__main__":
    main()
