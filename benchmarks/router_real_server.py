"""Benchmark 2: our router vs a raw nats-py responder, through a real nats-server.

    uv run python benchmarks/router_real_server.py [--requests 2000] [--repeat 3]
        [--instances N | --scale-out]

A requester replays server-shaped signed requests (minted by FakeServer) to
``$SYS.REQ.USER.AUTH`` on a plain nats-server; the service runs in its own
process, once as ``callout_router`` on a FastStream broker and once as a raw
nats-py subscription calling the same pipeline. Sequential and 50 in flight;
throughput and p50/p99 latency; median of the repetitions. Figures are ratios
measured in this run.

``--instances N`` runs N service processes of each kind in one queue group
(nats-server spreads the requests over them). ``--scale-out`` (benchmark 5) runs
1 and 2 instances in the same run, alternating, and reports the speed-up of 2
over 1 at 50 in flight. Adding an instance is starting one more process with
the same configuration: no code change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

from faststream_callout import CalloutPipeline, KeyPair, SigningKeys
from faststream_callout.testing import FakeServer
from faststream_callout.testing.local_server import LocalNatsServer
from faststream_callout.testing.probes import settle
from faststream_callout.testing.processes import ServiceProcess

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_offline import Lookup, Permissions

SUBJECT = "$SYS.REQ.USER.AUTH"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int | None) -> int:
    """utime + stime of process ``pid`` (all its threads), in clock ticks (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def pipeline_from_env() -> CalloutPipeline:
    keys = SigningKeys(KeyPair.from_seed(os.environ["BENCH_ISSUER_SEED"]))
    return CalloutPipeline(keys, Lookup(), Permissions())


async def serve_router(url: str) -> None:
    from faststream.nats import NatsBroker

    from faststream_callout import callout_router

    broker = NatsBroker(url, logger=None)
    workers = int(os.environ.get("BENCH_WORKERS", "64"))
    broker.include_router(callout_router(pipeline_from_env(), max_workers=workers))
    await broker.start()
    await settle(broker.connection)
    print("READY", flush=True)
    await asyncio.Event().wait()


async def serve_raw(url: str) -> None:
    pipeline = pipeline_from_env()
    client = await nats.connect(url)

    async def handle(msg) -> None:
        xkey = msg.headers.get("Nats-Server-Xkey") if msg.headers else None
        await msg.respond(await pipeline(msg.data, xkey))

    await client.subscribe(
        SUBJECT, queue="faststream-callout", cb=handle, pending_msgs_limit=100_000
    )
    await client.flush()
    print("READY", flush=True)
    await asyncio.Event().wait()


async def drive(url: str, requests: list[bytes], in_flight: int) -> tuple[float, float, float]:
    client = await nats.connect(url)
    latencies: list[float] = []
    queue = iter(requests)

    async def worker() -> None:
        for body in queue:
            started = time.perf_counter()
            reply = await client.request(SUBJECT, body, timeout=10)
            latencies.append(time.perf_counter() - started)
            assert reply.data.startswith(b"eyJ"), reply.data[:20]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await client.close()
    latencies.sort()
    return (
        len(requests) / elapsed,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
    )


def start_services(
    kind: str, url: str, seed: str, count: int, workdir: Path
) -> list[ServiceProcess]:
    """``count`` processes of ``kind``, all subscribed (one queue group) before returning."""
    services: list[ServiceProcess] = []
    try:
        # extend keeps the ones started before a failure, for the clean-up
        services.extend(start_service(__file__, kind, url, seed, workdir) for _ in range(count))
    except BaseException:
        stop_services(services)
        raise
    return services


def stop_services(services: list[ServiceProcess]) -> None:
    for service in services:  # by PID, each one we started
        service.stop()


def start_service(script: str, kind: str, url: str, seed: str, workdir: Path) -> ServiceProcess:
    """``script --serve kind --url url`` in its own process; returns once it printed READY."""
    service = ServiceProcess(
        [sys.executable, script, "--serve", kind, "--url", url],
        name=f"{kind}-{secrets.token_hex(3)}",
        workdir=workdir,
        env={"BENCH_ISSUER_SEED": seed},
    )
    asyncio.run(service.start())
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1, help="service processes per kind")
    parser.add_argument(
        "--scale-out", action="store_true", help="1 and 2 instances in one run; the speed-up"
    )
    parser.add_argument("--serve", choices=["router", "raw"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.serve:
        serve = serve_router if args.serve == "router" else serve_raw
        asyncio.run(serve(args.url))
        return

    issuer = KeyPair.create_account()
    fake = FakeServer.for_keys(SigningKeys(issuer))
    far = time.time() + 3600  # requests stay valid for the whole run
    requests = [
        fake.request(user="alice", password="pw", now=far).body for _ in range(args.requests)
    ]
    counts = (1, 2) if args.scale_out else (args.instances,)
    results: dict[tuple[str, int, int], list[tuple[float, float, float]]] = {}
    usage: dict[tuple[str, int, int], list[dict[str, float]]] = {}  # share of a core
    print(f"load average at start {os.getloadavg()}")
    with (
        LocalNatsServer() as server,
        tempfile.TemporaryDirectory(prefix="router-bench-") as workdir,
    ):
        for _ in range(args.repeat):
            for count in counts:
                for kind in ("raw", "router"):
                    services = start_services(kind, server.url, issuer.seed, count, Path(workdir))
                    try:
                        for in_flight in (1, 50):
                            pids = {"nats-server": server.pid, "driver": os.getpid()}
                            pids |= {f"service {n + 1}": s.pid for n, s in enumerate(services)}
                            before, wall = (
                                {k: cpu_ticks(v) for k, v in pids.items()},
                                time.monotonic(),
                            )
                            sample = asyncio.run(drive(server.url, requests, in_flight))
                            wall = time.monotonic() - wall
                            busy = {
                                k: (cpu_ticks(v) - before[k]) / CLK_TCK / wall
                                for k, v in pids.items()
                            }
                            results.setdefault((kind, count, in_flight), []).append(sample)
                            usage.setdefault((kind, count, in_flight), []).append(busy)
                    finally:
                        stop_services(services)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.requests} requests, "
        f"median of {args.repeat}; load average at end {os.getloadavg()}"
    )
    rates: dict[tuple[str, int, int], float] = {}
    for count in counts:
        for in_flight in (1, 50):
            for kind in ("raw", "router"):
                samples = results[(kind, count, in_flight)]
                rate = statistics.median(s[0] for s in samples)
                p50 = statistics.median(s[1] for s in samples) * 1000
                p99 = statistics.median(s[2] for s in samples) * 1000
                rates[(kind, count, in_flight)] = rate
                cores = {
                    name: statistics.median(u[name] for u in usage[(kind, count, in_flight)])
                    for name in usage[(kind, count, in_flight)][0]
                }
                print(
                    f"{kind:6s} x{count} in flight {in_flight:2d}: {rate:7.0f} req/s  "
                    f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  cores busy: "
                    + ", ".join(f"{name} {share:.2f}" for name, share in cores.items())
                )
            print(
                f"  router time / raw time at {in_flight} in flight, {count} instance(s): "
                f"{rates[('raw', count, in_flight)] / rates[('router', count, in_flight)]:.2f}x"
            )
    if args.scale_out:
        for kind in ("router", "raw"):
            one, two = rates[(kind, 1, 50)], rates[(kind, 2, 50)]
            runs = {
                count: " ".join(f"{s[0]:.0f}" for s in results[(kind, count, 50)])
                for count in (1, 2)
            }
            print(
                f"scale-out {kind}: 2 instances / 1 at 50 in flight: {two / one:.2f}x "
                f"({one:.0f} -> {two:.0f} req/s; {os.cpu_count()} cpus shared with "
                f"nats-server and the driver; runs x1: {runs[1]}; x2: {runs[2]})"
            )


if __name__ == "__main__":
    main()
