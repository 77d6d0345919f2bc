"""Benchmark 2: our router vs a raw nats-py responder, through a real nats-server.

    uv run python benchmarks/router_real_server.py [--requests 2000] [--repeat 3]

A requester replays server-shaped signed requests (minted by FakeServer) to
``$SYS.REQ.USER.AUTH`` on a plain nats-server; the service runs in its own
process, once as ``callout_router`` on a FastStream broker and once as a raw
nats-py subscription calling the same pipeline. Sequential and 50 in flight;
throughput and p50/p99 latency; median of the repetitions. Figures are ratios
measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nats

from faststream_callout import CalloutPipeline, KeyPair, SigningKeys
from faststream_callout.local_server import LocalNatsServer, free_port
from faststream_callout.testing import FakeServer

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_offline import Lookup, Permissions

SUBJECT = "$SYS.REQ.USER.AUTH"


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
    # nats-py's flush() can overtake the queued SUB: push the queue out first.
    await broker.connection._flush_pending(force_flush=True)
    await broker.connection.flush()
    print("ready", flush=True)
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
    print("ready", flush=True)
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


def start_service(kind: str, url: str, seed: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BENCH_ISSUER_SEED": seed}
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--url", url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
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
    port = free_port()
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with LocalNatsServer(f"listen: 127.0.0.1:{port}\n", port=port) as server:
        for _ in range(args.repeat):
            for kind in ("raw", "router"):
                service = start_service(kind, server.url, issuer.seed)
                try:
                    for in_flight in (1, 50):
                        sample = asyncio.run(drive(server.url, requests, in_flight))
                        results.setdefault((kind, in_flight), []).append(sample)
                finally:
                    service.kill()
                    service.wait()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.requests} requests, median of {args.repeat}"
    )
    for in_flight in (1, 50):
        row = {}
        for kind in ("raw", "router"):
            samples = results[(kind, in_flight)]
            rate = statistics.median(s[0] for s in samples)
            p50 = statistics.median(s[1] for s in samples) * 1000
            p99 = statistics.median(s[2] for s in samples) * 1000
            row[kind] = rate
            print(
                f"{kind:6s} in flight {in_flight:2d}: {rate:7.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            )
        print(
            f"  router time / raw time at {in_flight} in flight: {row['raw'] / row['router']:.2f}x"
        )


if __name__ == "__main__":
    main()
