"""Benchmark 1: the pipeline offline, against the crypto-only bound, on one core.

    uv run python benchmarks/pipeline_offline.py [--requests 3000] [--repeat 3]

Per request the pipeline verifies one Ed25519 signature (the server's) and makes
two (user JWT and response JWT); with an xkey it also opens and seals a box. The
bound does exactly that crypto with the same library (PyNaCl) on messages of the
same size, and nothing else. Both are measured here, in this run; the figure that
matters is the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import nacl.public
from nacl._sodium import ffi, lib
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from faststream_callout import (
    CalloutPipeline,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
)
from faststream_callout.testing import FakeServer

GRANT = Grant(
    account="APP",
    pub=Permission(allow=["chat.alice.>", "news.>"]),
    sub=Permission(allow=["chat.>", "_INBOX.>"]),
    ttl=3600,
)
IDENTITY = Identity("alice")


class Lookup:
    def lookup(self, request):
        return IDENTITY


class Permissions:
    def build(self, identity, request):
        return GRANT


def mint(server: FakeServer, count: int) -> list[tuple[bytes, str | None]]:
    requests = []
    for i in range(count):
        minted = server.request(user="alice", password=f"pw-{i}", now=time.time() + 3600)
        requests.append((minted.body, minted.server_xkey))
    return requests


async def run_pipeline(pipeline: CalloutPipeline, requests) -> float:
    started = time.perf_counter()
    for body, xkey in requests:
        await pipeline(body, xkey)
    return len(requests) / (time.perf_counter() - started)


def run_bound(requests, reply_size: int, user_size: int, xkey: bool) -> float:
    """1 verify + 2 signs (+ box open + seal) per request: libsodium calls only.

    The calls go straight to PyNaCl's cffi module (``nacl._sodium``), the thinnest
    way to libsodium from Python, so the bound is the cost of the crypto itself.
    """
    _, server_secret = crypto_sign_seed_keypair(os.urandom(32))
    server_public = server_secret[32:]
    _, issuer_secret = crypto_sign_seed_keypair(os.urandom(32))
    signed = [crypto_sign(os.urandom(len(body)), server_secret) for body, _ in requests]
    user_input, reply_input = os.urandom(user_size), os.urandom(reply_size)
    box = nacl.public.Box(
        nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate().public_key
    )
    sealed = [box.encrypt(os.urandom(len(body))) for body, _ in requests] if xkey else []
    nonce = os.urandom(24)
    new, buffer, null = ffi.new, ffi.buffer, ffi.NULL
    started = time.perf_counter()
    for i, message in enumerate(signed):
        if xkey:
            box.decrypt(sealed[i])
        opened = new("unsigned char[]", len(message))
        size = new("unsigned long long *")
        assert lib.crypto_sign_open(opened, size, message, len(message), server_public) == 0
        for data in (user_input, reply_input):
            out = new("unsigned char[]", len(data) + 64)
            lib.crypto_sign(out, null, data, len(data), issuer_secret)
            signature = buffer(out, 64)[:]
        if xkey:
            box.encrypt(signature + reply_input, nonce)
    return len(signed) / (time.perf_counter() - started)


def measure(xkey: bool, count: int, repeat: int) -> tuple[float, float]:
    issuer = KeyPair.create_account()
    keys = SigningKeys(issuer, xkey=XKeyPair.generate() if xkey else None)
    server = FakeServer.for_keys(keys)
    pipeline = CalloutPipeline(keys, Lookup(), Permissions())
    requests = mint(server, count)
    sample = asyncio.run(pipeline.decide(*requests[0]))
    assert sample.allowed, sample.reason
    reply_size = len(sample.reply)
    user_size = reply_size * 2 // 3
    ours, bound = [], []
    for _ in range(repeat):
        ours.append(asyncio.run(run_pipeline(pipeline, requests)))
        bound.append(run_bound(requests, reply_size, user_size, xkey))
    return statistics.median(ours), statistics.median(bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, median of {args.repeat}")
    for xkey in (False, True):
        ours, bound = measure(xkey, args.requests, args.repeat)
        label = "xkey " if xkey else "plain"
        print(
            f"{label}: pipeline {ours:8.0f} req/s   crypto bound {bound:8.0f} req/s   "
            f"ratio {ours / bound:6.1%}"
        )


if __name__ == "__main__":
    main()
