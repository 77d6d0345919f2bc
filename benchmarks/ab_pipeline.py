"""The offline pipeline of another checkout against this one, interleaved in one process.

Benchmark 1's workload (one lookup, one grant, requests minted by FakeServer) run
through two pipelines in alternating bursts, so load from other processes on the
machine hits both alike: the CPU time per request of each and their ratio. The
other checkout's package is copied into a temporary folder under another name
(``faststream_callout_base``), so both load in one interpreter. Use it to check
that a change does not slow the pipeline:

    git worktree add /tmp/base <commit> && \
    uv run python benchmarks/ab_pipeline.py --base /tmp/base --rounds 40
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline_offline import GRANT, IDENTITY, mint

import faststream_callout as ours
from faststream_callout.testing import FakeServer

BASE = "faststream_callout_base"


def load_base(checkout: Path, into: Path) -> ModuleType:
    """The other checkout's package, renamed so it loads beside this one."""
    target = into / BASE
    shutil.copytree(checkout / "faststream_callout", target)
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bfaststream_callout\b", BASE, text))
    sys.path.insert(0, str(into))
    return importlib.import_module(BASE)


def pipelines(base: Any, xkey: bool) -> tuple[Any, Any, FakeServer]:
    issuer = ours.KeyPair.create_account()
    curve = ours.XKeyPair.generate() if xkey else None
    keys = ours.SigningKeys(issuer, xkey=curve)
    base_keys = base.SigningKeys(
        base.KeyPair.from_seed(issuer.seed),
        xkey=base.XKeyPair.from_seed(curve.seed) if curve else None,
    )

    class BaseLookup:
        def lookup(self, request: object) -> object:
            return base.Identity("alice")

    class BasePermissions:
        def build(self, identity: object, request: object) -> object:
            return base.Grant(
                account="APP",
                pub=base.Permission(allow=["chat.alice.>", "news.>"]),
                sub=base.Permission(allow=["chat.>", "_INBOX.>"]),
                ttl=3600,
            )

    class Lookup:
        def lookup(self, request: object) -> object:
            return IDENTITY

    class Permissions:
        def build(self, identity: object, request: object) -> object:
            return GRANT

    return (
        base.CalloutPipeline(base_keys, BaseLookup(), BasePermissions()),
        ours.CalloutPipeline(keys, Lookup(), Permissions()),
        FakeServer.for_keys(keys),
    )


async def burst(pipeline: Any, requests: list[tuple[bytes, str | None]]) -> float:
    started = time.process_time()
    for body, header in requests:
        await pipeline(body, header)
    return time.process_time() - started


def compare(base: Any, xkey: bool, rounds: int, size: int) -> str:
    theirs, mine, server = pipelines(base, xkey)
    requests = mint(server, size)
    loop = asyncio.new_event_loop()
    for pipeline in (theirs, mine):  # warm up; both must allow
        assert loop.run_until_complete(pipeline.decide(*requests[0])).allowed
    total = {"base": 0.0, "this": 0.0}
    ratios = []
    for i in range(rounds):
        order = [("base", theirs), ("this", mine)]
        times = {
            name: loop.run_until_complete(burst(p, requests))
            for name, p in order[:: 1 - 2 * (i % 2)]
        }
        total["base"] += times["base"]
        total["this"] += times["this"]
        ratios.append(times["this"] / times["base"])
    loop.close()
    n = rounds * size
    return (
        f"{'xkey ' if xkey else 'plain'}: base {total['base'] / n * 1e6:6.1f} us/request  "
        f"this {total['this'] / n * 1e6:6.1f} us/request  this/base {total['this'] / total['base']:.3f} "
        f"(median of {rounds} bursts {statistics.median(ratios):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--burst", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = load_base(args.base, Path(folder))
        print(
            f"python {sys.version.split()[0]}; base {args.base}; {args.rounds} bursts of {args.burst}"
        )
        for xkey in (False, True):
            print(compare(base, xkey, args.rounds, args.burst))


if __name__ == "__main__":
    main()
