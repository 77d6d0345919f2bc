"""Benchmark 4: faststream-callout against nats-callout 0.1.1 (the other Python library).

    uv run --group bench python benchmarks/versus_nats_callout.py [--requests 2000] [--repeat 3]

Same requests (minted by FakeServer, config mode), same policy (user ``alice``
gets two publish and two subscribe subjects; anyone else is denied), same
issuer key. Both replies are judged by FakeServer first, so the comparison is
between libraries that produce what nats-server accepts.

1. Offline, one core: requests/s of each library's request -> reply call.
2. Through a real nats-server, each service in its own process the way its
   README wires it: ours as ``callout_router`` on a FastStream broker, theirs as
   a FastStream subscriber calling the service; sequential and 50 in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from faststream_callout import CalloutPipeline, Grant, KeyPair, SigningKeys
from faststream_callout.testing import FakeServer
from faststream_callout.testing.local_server import LocalNatsServer
from faststream_callout.testing.probes import settle

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_offline import GRANT, Lookup, Permissions
from router_real_server import SUBJECT, drive, start_service

ACCOUNT = "APP"


def their_service(seed: str, users: Mapping[str, str] | None = None, grant: Grant = GRANT):
    """nats-callout's service: ``alice`` only, or with ``users`` a name -> password check."""
    import nkeys
    from nats_callout import AdaptixEncoder, AuthError, BaseAuthCalloutService
    from nats_callout.claims import UserData
    from nats_callout.claims.user import PubSubPermissions

    # 0.1.1's README leaves these out, but its encoder needs them (stdlib json,
    # as the README says: "adaptix with standard json encoding"). PyJWT 2.x hands
    # it the payload already parsed, so json_loads must pass a dict through.
    encoder = AdaptixEncoder()
    encoder.kp = nkeys.from_seed(seed.encode())
    encoder.json_dumps = json.dumps
    encoder.json_loads = lambda value: value if isinstance(value, dict) else json.loads(value)

    class TheirService(BaseAuthCalloutService):
        def __init__(self) -> None:
            self.encoder = encoder
            self.nkey_seed = seed
            self.account = ACCOUNT

        async def _handle_auth_request_data(self, auth_request_data) -> UserData:
            opts = auth_request_data.connect_opts
            if users is None:
                if opts.user != "alice":
                    raise AuthError("bad user")
            else:
                expected = users.get(opts.user or "")
                if expected is None or not hmac.compare_digest(opts.pass_ or "", expected):
                    raise AuthError("bad credentials")
            return UserData(
                pub=PubSubPermissions(allow=list(grant.pub.allow), deny=[]),
                sub=PubSubPermissions(allow=list(grant.sub.allow), deny=[]),
                version=auth_request_data.version,
                tags=auth_request_data.tags,
            )

    return TheirService()


def our_pipeline(seed: str) -> CalloutPipeline:
    return CalloutPipeline(SigningKeys(KeyPair.from_seed(seed)), Lookup(), Permissions())


# -- offline ---------------------------------------------------------------------------


async def rate(call, bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        await call(body)
    return len(bodies) / (time.perf_counter() - started)


def offline(seed: str, bodies: list[bytes], repeat: int) -> tuple[float, float]:
    ours, theirs = our_pipeline(seed), their_service(seed)
    our_rates, their_rates = [], []
    for _ in range(repeat):
        our_rates.append(asyncio.run(rate(ours, bodies)))
        their_rates.append(asyncio.run(rate(theirs, bodies)))
    return statistics.median(our_rates), statistics.median(their_rates)


def judge_both(fake: FakeServer, seed: str) -> None:
    """Both libraries' replies must be what nats-server accepts, or the race is moot."""
    ours, theirs = our_pipeline(seed), their_service(seed)
    for name, call in (("ours", ours), ("nats-callout", theirs)):
        minted = fake.request(user="alice", password="pw")
        reply = asyncio.run(call(minted.body))
        verdict = fake.check(minted, reply if isinstance(reply, bytes) else reply.encode())
        print(
            f"  {name:13s} reply judged by FakeServer: {'allowed' if verdict.allowed else verdict.reason}"
        )


# -- through a real nats-server ------------------------------------------------------


async def serve(kind: str, url: str) -> None:
    from faststream.nats import NatsBroker, NatsMessage

    from faststream_callout import callout_router

    seed = os.environ["BENCH_ISSUER_SEED"]
    broker = NatsBroker(url, logger=None)
    if kind == "ours":
        broker.include_router(callout_router(our_pipeline(seed)))
    else:
        service = their_service(seed)

        @broker.subscriber(SUBJECT, queue="nats-callout")
        async def handle(message: NatsMessage) -> str:
            return await service(message.body)

    await broker.start()
    await settle(broker.connection)
    print("READY", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", choices=["ours", "theirs"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.url))
        return

    issuer = KeyPair.create_account()
    fake = FakeServer.config_mode(issuer.public_key, accounts=[ACCOUNT])
    far = time.time() + 3600
    bodies = [fake.request(user="alice", password="pw", now=far).body for _ in range(args.requests)]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.requests} requests, "
        f"median of {args.repeat}"
    )
    judge_both(fake, issuer.seed)

    ours, theirs = offline(issuer.seed, bodies, args.repeat)
    print(
        f"offline      : ours {ours:7.0f} req/s  nats-callout {theirs:7.0f} req/s  ratio {ours / theirs:5.2f}x"
    )

    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with (
        LocalNatsServer() as server,
        tempfile.TemporaryDirectory(prefix="versus-bench-") as workdir,
    ):
        for _ in range(args.repeat):
            for kind in ("ours", "theirs"):
                service = start_service(__file__, kind, server.url, issuer.seed, Path(workdir))
                try:
                    for in_flight in (1, 50):
                        sample = asyncio.run(drive(server.url, bodies, in_flight))
                        results.setdefault((kind, in_flight), []).append(sample)
                finally:
                    service.stop()
    for in_flight in (1, 50):
        row = {}
        for kind in ("ours", "theirs"):
            samples = results[(kind, in_flight)]
            row[kind] = statistics.median(s[0] for s in samples)
            p50 = statistics.median(s[1] for s in samples) * 1000
            p99 = statistics.median(s[2] for s in samples) * 1000
            label = "ours" if kind == "ours" else "nats-callout"
            print(
                f"server, {in_flight:2d} in flight: {label:13s} {row[kind]:7.0f} req/s  "
                f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            )
        print(f"  ratio at {in_flight} in flight: {row['ours'] / row['theirs']:.2f}x")


if __name__ == "__main__":
    main()
