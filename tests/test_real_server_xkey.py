"""Config mode with an xkey: encrypted requests and sealed replies through a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from faststream.nats import NatsBroker
from faststream.nats.security import NatsUserPassword
from nats.errors import Error as NatsError

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
    XKeyPair,
    callout_router,
)
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.probes import settle


class Lookup:
    async def lookup(self, request: AuthorizationRequest) -> Identity:
        opts = request.connect_opts
        if opts.user == "dora" and opts.password == "dora-pw":
            return Identity("dora")
        raise Denied("bad credentials")


class Permissions:
    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        return Grant(account="APP", pub=Permission(allow=["x.>"]), sub=Permission(allow=["x.>"]))


@pytest.fixture(scope="module")
def issuer() -> KeyPair:
    return KeyPair.create_account()


@pytest.fixture(scope="module")
def service_xkey() -> XKeyPair:
    return XKeyPair.generate()


@pytest.fixture(scope="module")
def xkey_server(
    issuer: KeyPair, service_xkey: XKeyPair
) -> Iterator[tuple[LocalNatsServer, CalloutServerConfig]]:
    config = CalloutServerConfig(
        issuer=issuer.public_key, accounts={"APP": {}}, xkey=service_xkey.public_key
    )
    server = LocalNatsServer(config.render(), port=config.port).start()
    assert server.is_running()
    try:
        yield server, config
    finally:
        server.close()


async def _start_service(
    server: LocalNatsServer, config: CalloutServerConfig, keys: SigningKeys
) -> NatsBroker:
    broker = NatsBroker(
        server.url,
        security=NatsUserPassword(username=config.auth_user, password=config.auth_password),
        logger=None,
    )
    broker.include_router(callout_router(CalloutPipeline(keys, Lookup(), Permissions())))
    await broker.start()
    return broker


async def _ignore(_: Exception) -> None:
    return None


@pytest.fixture
async def wiretap(
    xkey_server: tuple[LocalNatsServer, CalloutServerConfig],
) -> AsyncIterator[list[nats.aio.msg.Msg]]:
    """Everything published in the callout account on the request and reply subjects."""
    server, config = xkey_server
    seen: list[nats.aio.msg.Msg] = []
    tap = await nats.connect(server.url, user=config.auth_user, password=config.auth_password)

    async def record(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg)

    await tap.subscribe("$SYS.REQ.USER.AUTH", cb=record)
    await tap.subscribe("$SYS._INBOX.>", cb=record)
    await settle(tap)
    try:
        yield seen
    finally:
        await tap.close()


async def test_encrypted_login_allowed_and_reply_sealed(
    xkey_server: tuple[LocalNatsServer, CalloutServerConfig],
    issuer: KeyPair,
    service_xkey: XKeyPair,
    wiretap: list[nats.aio.msg.Msg],
) -> None:
    server, config = xkey_server
    broker = await _start_service(server, config, SigningKeys(issuer, xkey=service_xkey))
    try:
        client = await nats.connect(server.url, user="dora", password="dora-pw", error_cb=_ignore)
        sub = await client.subscribe("x.y")
        await client.publish("x.y", b"secret stuff")
        assert (await sub.next_msg(timeout=2)).data == b"secret stuff"
        await client.close()
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(
                server.url, user="dora", password="nope", allow_reconnect=False, error_cb=_ignore
            )
    finally:
        await broker.stop()
    await asyncio.sleep(0.1)
    requests = seen_on(wiretap, "$SYS.REQ.USER.AUTH")
    replies = [m for m in wiretap if m.subject.startswith("$SYS._INBOX.")]
    assert len(requests) >= 2
    assert len(replies) >= 2
    for request in requests:
        assert request.headers
        assert request.headers["Nats-Server-Xkey"].startswith("X")
        assert not request.data.startswith(b"eyJ")  # the server encrypted it
    for reply in replies:
        # Sealed back to the server: nats-server would also take plaintext, so check the bytes.
        assert reply.data.startswith(b"xkv1"), reply.data[:8]


def seen_on(messages: list[nats.aio.msg.Msg], subject: str) -> list[nats.aio.msg.Msg]:
    return [m for m in messages if m.subject == subject]


async def test_service_with_wrong_xkey_lets_no_client_in(
    xkey_server: tuple[LocalNatsServer, CalloutServerConfig], issuer: KeyPair
) -> None:
    server, config = xkey_server
    broker = await _start_service(server, config, SigningKeys(issuer, xkey=XKeyPair.generate()))
    try:
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(
                server.url, user="dora", password="dora-pw", allow_reconnect=False, error_cb=_ignore
            )
    finally:
        await broker.stop()


async def test_service_without_xkey_lets_no_client_in(
    xkey_server: tuple[LocalNatsServer, CalloutServerConfig], issuer: KeyPair
) -> None:
    server, config = xkey_server
    broker = await _start_service(server, config, SigningKeys(issuer))
    try:
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(
                server.url, user="dora", password="dora-pw", allow_reconnect=False, error_cb=_ignore
            )
    finally:
        await broker.stop()
