"""Benchmark 3: a storm of logins sharing few credentials, with and without DecisionCache.

    uv run python benchmarks/storm_cache.py --clients 1000 --users 10 --delay 0.005 --pool 4

One nats-server (auth callout, generated issuer key). For each variant a fresh
service process (the router over the storm policy of storm_policy.py, a
simulated user store: every lookup holds one of ``--pool`` connections for
``--delay`` seconds) takes the same storm: ``--clients`` clients connecting at
once, the valid ones spread over ``--users`` users (a fleet of devices sharing
credentials, or every client of a restarted server reconnecting). The variants
alternate, ``--repeat`` times each, in the same run: ``no cache`` is the plain
pipeline, ``cache`` wraps the same lookup and permissions in a DecisionCache
that starts empty.

Every valid client's grant is checked through ``$SYS.REQ.USER.INFO`` and, unless
``--no-publish-check``, by publishing where it may and may not (see storm.py).

Reported per run: auths/s (clients / time until the last connect resolved),
p50/p99 connect latency of admitted clients, the service's own decision time
p50/p99 (svc, ms), how many lookups reached the user store, and how many valid
clients got in. A user store too slow for the storm makes logins time out
(``--pool 1``): the plain pipeline then refuses valid clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from storm_driver import StormResult, raised_fd_limit, run_storm
from storm_policy import callout_config, shared_credentials
from storm_service import StormService

from faststream_callout import KeyPair
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer, free_port


@dataclass
class Run:
    variant: str
    result: StormResult
    lookups: int
    cache_stats: str
    decision_ms: list[float]

    def row(self) -> str:
        r = self.result
        lat = r.connect_latencies
        pct = StormResult.percentile
        return (
            f"{self.variant:<9} {r.connects_per_second:>7.0f} "
            f"{pct(lat, 50) * 1000:>8.0f} {pct(lat, 99) * 1000:>8.0f} "
            f"{pct(self.decision_ms, 50):>9.2f} {pct(self.decision_ms, 99):>9.2f} "
            f"{self.lookups:>8} {r.admitted_valid:>5}/{r.valid:<5} "
            f"{'ok' if r.perfect else 'FAILED':>6}"
        )


HEADER = (
    f"{'variant':<9} {'auths/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'svc p50':>9} {'svc p99':>9} {'lookups':>8} {'admitted':>11} {'result':>6}"
)


def last_line(output: str, word: str) -> str:
    found = [line for line in output.splitlines() if line.startswith(word + " ")]
    return found[-1].removeprefix(word + " ") if found else "?"


async def one_run(
    args: argparse.Namespace,
    *,
    cache: bool,
    server: LocalNatsServer,
    config: CalloutServerConfig,
    issuer: KeyPair,
    workdir: Path,
    number: int,
) -> Run:
    variant = "cache" if cache else "no cache"
    service = StormService(
        url=server.url,
        config=config,
        issuer=issuer,
        name=f"service-{number}-{variant.replace(' ', '-')}",
        workdir=workdir,
        max_workers=args.max_workers,
        delay=args.delay,
        pool=args.pool,
        cache=cache,
    )
    try:
        await service.start()
        credentials = shared_credentials(args.clients, args.users, args.invalid_every)
        result = await run_storm(
            server.url,
            credentials,
            connect_timeout=args.connect_timeout,
            hang_after=args.hang_after,
            auth_timeout=args.auth_timeout,
            check_publish=not args.no_publish_check,
            audit=server,
        )
        assert service.is_running(), service.output()[-2000:]
    finally:
        service.stop()  # terminate by PID; the process prints its counters on the way out
    output = service.output()
    lookups = last_line(output, "LOOKUPS")
    # The watchers log in too: count only the storm's decisions.
    decisions = [
        float(line.latency_ms) for line in service.decisions() if line.client.startswith("storm-")
    ]
    for problem in result.wrong_grants[:5] + result.other_errors[:5]:
        print(f"  ! {variant}: {problem}")
    return Run(
        variant,
        result,
        int(lookups) if lookups.isdigit() else -1,
        re.sub(r"^CacheStats", "", last_line(output, "CACHE")),
        decisions,
    )


async def main(args: argparse.Namespace) -> int:
    issuer = KeyPair.create_account()  # generated per run, never stored
    config = callout_config(
        issuer,
        timeout=args.auth_timeout,
        server_name="callout-storm-cache",
    )
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="callout-storm-cache-") as workdir,
        raised_fd_limit(2 * args.clients + 1024),
    ):
        server = LocalNatsServer.from_config(config, monitor_port=free_port()).start()
        try:
            print(
                f"nats-server pid {server.pid} on {server.url}; {args.clients} clients over "
                f"{args.users} users (invalid every {args.invalid_every or 'none'}); user store: "
                f"{args.delay * 1000:.1f} ms per lookup, pool of {args.pool or 'unlimited'}; "
                f"max_workers {args.max_workers}; {os.cpu_count()} cpus"
            )
            number = 0
            for _ in range(args.repeat):
                for cache in (False, True):
                    number += 1
                    started = time.monotonic()
                    run = await one_run(
                        args,
                        cache=cache,
                        server=server,
                        config=config,
                        issuer=issuer,
                        workdir=Path(workdir),
                        number=number,
                    )
                    runs.append(run)
                    print(
                        f"\nrun {number} ({run.variant}, {time.monotonic() - started:.1f} s "
                        f"with start-up and checks)"
                    )
                    print(HEADER)
                    print(run.row())
                    if cache:
                        print(f"cache: {run.cache_stats}")
                    server.check_running()
        finally:
            server.close()
    print("\nsummary")
    print(HEADER)
    for run in runs:
        print(run.row())
    # Valid clients refused by the plain pipeline are the effect being measured;
    # a wrong grant anywhere, or any failure with the cache, is a failure.
    ok = all(not run.result.wrong_grants for run in runs) and all(
        run.result.perfect for run in runs if run.variant == "cache"
    )
    print("\nresult:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--users", type=int, default=10, help="distinct valid users")
    parser.add_argument("--invalid-every", type=int, default=0, help="0: all valid")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds per lookup")
    parser.add_argument("--pool", type=int, default=4, help="concurrent lookups; 0: no limit")
    parser.add_argument("--max-workers", type=int, default=64)
    parser.add_argument("--auth-timeout", type=float, default=2.0, help="authorization.timeout")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--hang-after", type=float, default=90.0)
    parser.add_argument("--no-publish-check", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
