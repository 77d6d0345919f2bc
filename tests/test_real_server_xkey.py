"""xkey only: encrypted requests, sealed replies, and services with the wrong curve key.

In both modes' xkey environments (callout_env.py). The shared suite
(test_real_server.py) runs every other behaviour encrypted too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
from callout_env import CalloutEnv, environments, run_in
from nats.aio.client import Client
from nats.aio.msg import Msg
from policies import FixedGrant, Passwords

from faststream_callout import XKeyPair
from faststream_callout.testing import settle

pytestmark = run_in(*environments(xkey=True))

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
REPLY_SUBJECTS = "$SYS._INBOX.>"


def dora() -> tuple[Passwords, FixedGrant]:
    """dora (password dora-pw) may use x.>."""
    return Passwords({"dora": "dora-pw"}), FixedGrant(pub=["x.>"], sub=["x.>"])


@contextlib.asynccontextmanager
async def wiretap(env: CalloutEnv) -> AsyncIterator[tuple[Client, list[Msg]]]:
    """Everything published in the callout account on the request and reply subjects.

    Open it while the service runs: a deployment counts it as a subscriber of
    the request subject, at its start and at its end.
    """
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    tap = await nats.connect(env.url, **env.server.service_login)
    try:
        await tap.subscribe(AUTH_SUBJECT, cb=record)
        await tap.subscribe(REPLY_SUBJECTS, cb=record)
        await settle(tap)
        yield tap, seen
    finally:
        await tap.close()


async def test_encrypted_login_allowed_and_reply_sealed(callout_env: CalloutEnv) -> None:
    async with callout_env.serve(*dora()) as callout, wiretap(callout_env) as (tap, seen):
        async with callout.connect(user="dora", password="dora-pw") as client:
            sub = await client.subscribe("x.y")
            await client.publish("x.y", b"secret stuff")
            assert (await sub.next_msg(timeout=2)).data == b"secret stuff"
        await callout.expect_denied(user="dora", password="nope", reason="bad credentials")
        # The server routed both requests and replies to the tap before this round trip.
        await settle(tap)
    requests = [m for m in seen if m.subject == AUTH_SUBJECT]
    replies = [m for m in seen if m.subject.startswith("$SYS._INBOX.")]
    assert len(requests) >= 2
    assert len(replies) >= 2
    for sent in requests:
        assert sent.headers
        assert sent.headers["Nats-Server-Xkey"].startswith("X")
        assert not sent.data.startswith(b"eyJ")  # the server encrypted it
    for reply in replies:
        # Sealed back to the server: nats-server would also take plaintext, so check the bytes.
        assert reply.data.startswith(b"xkv1"), reply.data[:8]


async def test_service_with_wrong_xkey_lets_no_client_in(callout_env: CalloutEnv) -> None:
    keys = callout_env.keys_with_xkey(XKeyPair.generate())
    async with callout_env.serve(*dora(), keys=keys) as callout:
        await callout.expect_denied(user="dora", password="dora-pw")


async def test_service_without_xkey_lets_no_client_in(callout_env: CalloutEnv) -> None:
    async with callout_env.serve(*dora(), keys=callout_env.keys_with_xkey(None)) as callout:
        await callout.expect_denied(user="dora", password="dora-pw")
