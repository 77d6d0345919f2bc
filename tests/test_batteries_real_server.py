"""Real nats-server 2.15 and real nats-py clients logging in through every battery.

One config-mode server serves the static table (argon2id password, token), OIDC
tokens (as token and as password) and nkeys, composed with ByCredential and
FirstMatch; a second server with ``tls { verify: true }`` serves client
certificates. Each allowed login proves nats-server accepted the grant; each
denial is checked against the reason nats-server publishes on
``$SYS.ACCOUNT.CLIENT.AUTH.ERR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import argon2
import nats
import pytest
from batteries_support import JWKSServer, Pki, Signer, claims, jwks_server, running_service
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from faststream_callout import CalloutPipeline, Identity, KeyPair, ResponsePermission, SigningKeys
from faststream_callout.batteries import (
    ByCredential,
    FirstMatch,
    NKeyLookup,
    PermissionSet,
    RoleBasedPermissions,
)
from faststream_callout.batteries.oidc import OIDCLookup
from faststream_callout.batteries.table import StaticTable, TableToken, TableUser, new_token
from faststream_callout.batteries.tls import ClientCertificateLookup
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer
from faststream_callout.testing.probes import settle

AUTH_VIOLATION = "Authorization Violation"
PERMISSIONS_VIOLATION = "Permissions Violation"
AUTH_ERRORS = "$SYS.ACCOUNT.CLIENT.AUTH.ERR"
USER_INFO = "$SYS.REQ.USER.INFO"

ALICE_PASSWORD = "alice-" + secrets.token_urlsafe(12)
SENSOR_TOKEN, SENSOR_DIGEST = new_token()
RESPONDER_TOKEN, RESPONDER_DIGEST = new_token()
READER_TOKEN, READER_DIGEST = new_token()
SENSOR_KEY = KeyPair.create_user()


def permissions() -> RoleBasedPermissions:
    return RoleBasedPermissions(
        {
            "chat": PermissionSet(
                pub=["chat.{user}.>", "svc.echo", USER_INFO],
                sub=["chat.>", "_INBOX.>"],
            ),
            # No pub at all: replies only (resp), or nothing (reader).
            "svc": PermissionSet(sub=["svc.echo"], resp=ResponsePermission(max=1)),
            "reader": PermissionSet(sub=["chat.>"]),
            "telemetry": PermissionSet(pub=["telemetry.{user}", USER_INFO], sub=["_INBOX.>"]),
        },
        account="APP",
        default_ttl=600,
    )


class Recorder:
    """An ``error_cb`` that keeps the errors (nats-py lower-cases server errors)."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self._changed = asyncio.Condition()

    async def on_error(self, exc: Exception) -> None:
        async with self._changed:
            self.errors.append(exc)
            self._changed.notify_all()

    async def wait_for(self, text: str, within: float = 2) -> bool:
        def seen() -> bool:
            return any(text.lower() in str(e).lower() for e in self.errors)

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(seen), within)
            return seen()


async def login(url: str, recorder: Recorder | None = None, **options: Any) -> Client:
    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=3,
        error_cb=(recorder or Recorder()).on_error,
        **options,
    )


async def _login_and_close(url: str, **options: Any) -> None:
    nc = await login(url, **options)
    await nc.close()


async def refused(url: str, **options: Any) -> None:
    with pytest.raises(NatsError, match=AUTH_VIOLATION):
        await _login_and_close(url, **options)


async def user_info(nc: Client) -> dict[str, Any]:
    reply = await nc.request(USER_INFO, b"", timeout=2)
    body = json.loads(reply.data)
    assert "error" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def round_trip(nc: Client, subject: str) -> bool:
    sub = await nc.subscribe(subject)
    await settle(nc)
    await nc.publish(subject, b"ping")
    try:
        msg = await sub.next_msg(timeout=1)
    except nats.errors.TimeoutError:
        return False
    finally:
        await sub.unsubscribe()
    return msg.data == b"ping"


class AuthErrors:
    """Reasons nats-server publishes for refused logins, by client name."""

    def __init__(self) -> None:
        self.by_name: dict[str, str] = {}
        self._arrived = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        async with self._arrived:
            self.by_name[event["client"].get("name", "")] = event["reason"]
            self._arrived.notify_all()

    async def reason(self, name: str, within: float = 2) -> str:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: name in self.by_name), within)
            return self.by_name[name]


@contextlib.asynccontextmanager
async def auth_errors(
    url: str, config: CalloutServerConfig, **options: Any
) -> AsyncIterator[AuthErrors]:
    events = AuthErrors()
    nc = await login(url, user=config.auth_user, password=config.auth_password, **options)
    await nc.subscribe(AUTH_ERRORS, cb=events.on_message)
    await settle(nc)
    try:
        yield events
    finally:
        await nc.close()


# -- the plain server: table, OIDC, nkey ---------------------------------------------------


@dataclass
class Deployment:
    server: LocalNatsServer
    config: CalloutServerConfig
    idp: JWKSServer
    signer: Signer
    errors: AuthErrors

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[JWKSServer, Signer]]:
    signer = Signer("RSA", "rsa-real")
    with jwks_server(keys=[signer.jwk]) as server:
        yield server, signer


@pytest.fixture(scope="module")
async def deployment(idp) -> AsyncIterator[Deployment]:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}})
    # A placeholder nkey user (its seed is thrown away) makes nats-server send a nonce.
    text = config.render()
    marker = f'"{config.callout_account}": {{ users: [ '
    assert marker in text
    text = text.replace(marker, marker + f"{{ nkey: {KeyPair.create_user().public_key} }}, ")
    jwks, signer = idp
    table = StaticTable(
        [TableUser("alice", argon2.PasswordHasher().hash(ALICE_PASSWORD), frozenset({"chat"}))],
        [
            TableToken("sensor-1", (SENSOR_DIGEST,), frozenset({"telemetry"})),
            TableToken("responder", (RESPONDER_DIGEST,), frozenset({"svc"})),
            TableToken("reader", (READER_DIGEST,), frozenset({"reader"})),
        ],
    )
    oidc = OIDCLookup(
        issuer=jwks.base, audience="nats", jwks_uri=jwks.jwks_uri, sources=("token", "password")
    )
    nkeys = NKeyLookup({SENSOR_KEY.public_key: Identity("sensor-2", frozenset({"telemetry"}))})
    lookup = ByCredential(
        password=FirstMatch(table, oidc), token=FirstMatch(table, oidc), nkey=nkeys
    )
    pipeline = CalloutPipeline(SigningKeys(issuer), lookup, permissions())
    with LocalNatsServer(text, port=config.port) as server:
        async with (
            running_service(server.url, config.auth_user, config.auth_password, pipeline),
            auth_errors(server.url, config) as errors,
        ):
            yield Deployment(server, config, jwks, signer, errors)
        assert server.is_running(), server.log()[-2000:]
    table.close()


async def test_table_argon2id_password(deployment):
    recorder = Recorder()
    nc = await login(deployment.url, recorder, user="alice", password=ALICE_PASSWORD)
    try:
        info = await user_info(nc)
        assert (info["user"], info["account"]) == ("alice", "APP")
        assert sorted(info["permissions"]["publish"]["allow"]) == sorted(
            ["chat.alice.>", "svc.echo", USER_INFO]
        )
        assert 590 < info["expires"] / 1e9 <= 600  # the default TTL: no grant lives forever
        assert await round_trip(nc, "chat.alice.room")
        await nc.publish("chat.bob.room", b"not mine")
        assert await recorder.wait_for(PERMISSIONS_VIOLATION)
    finally:
        await nc.close()


async def test_table_wrong_password_and_unknown_user(deployment):
    name = f"wrong-{secrets.token_hex(3)}"
    await refused(deployment.url, user="alice", password="wrong", name=name)
    reason = await deployment.errors.reason(name)
    assert reason == "Auth callout service returned an error: wrong password"
    name = f"nobody-{secrets.token_hex(3)}"
    await refused(deployment.url, user="nobody", password="wrong", name=name)
    assert "unknown user" in await deployment.errors.reason(name)


async def test_table_token(deployment):
    nc = await login(deployment.url, token=SENSOR_TOKEN)
    try:
        info = await user_info(nc)
        assert (info["user"], info["account"]) == ("sensor-1", "APP")
        assert sorted(info["permissions"]["publish"]["allow"]) == sorted(
            ["telemetry.sensor-1", USER_INFO]
        )
    finally:
        await nc.close()
    await refused(deployment.url, token=SENSOR_TOKEN[:-1] + "x")


async def test_roles_without_pub_publish_nothing_but_replies(deployment):
    responder_errors, reader_errors = Recorder(), Recorder()
    responder = await login(deployment.url, responder_errors, token=RESPONDER_TOKEN)
    reader = await login(deployment.url, reader_errors, token=READER_TOKEN)
    alice = await login(deployment.url, user="alice", password=ALICE_PASSWORD)

    async def echo(msg: Msg) -> None:
        await msg.respond(b"echo:" + msg.data)

    try:
        await responder.subscribe("svc.echo", cb=echo)
        await settle(responder)
        reply = await alice.request("svc.echo", b"hi", timeout=2)
        assert reply.data == b"echo:hi"  # the reply was allowed
        await responder.publish("chat.responder.x", b"no")
        assert await responder_errors.wait_for(PERMISSIONS_VIOLATION)
        # A role with subscriptions only: everything it publishes is refused,
        # not left to the account's (open) defaults.
        sub = await reader.subscribe("chat.>")
        await settle(reader)
        await alice.publish("chat.alice.news", b"x")
        assert (await sub.next_msg(timeout=2)).data == b"x"
        await reader.publish("chat.reader.x", b"no")
        assert await reader_errors.wait_for(PERMISSIONS_VIOLATION)
    finally:
        for nc in (responder, reader, alice):
            await nc.close()


@pytest.mark.parametrize("how", ["token", "password"])
async def test_oidc_token(deployment, how):
    body = claims(deployment.idp.base, lifetime=120, sub="olivia", groups=["chat"])
    token = deployment.signer.token(body)
    credentials = {"token": token} if how == "token" else {"user": "bearer", "password": token}
    nc = await login(deployment.url, **credentials)
    try:
        info = await user_info(nc)
        assert (info["user"], info["account"]) == ("olivia", "APP")
        # The grant ends with the token (in ns), not after the 600 s default TTL.
        assert info["expires"] / 1e9 == pytest.approx(body["exp"] - time.time(), abs=3)
        assert await round_trip(nc, "chat.olivia.x")
    finally:
        await nc.close()


async def test_oidc_bad_tokens(deployment):
    base = deployment.idp.base
    cases = {
        "expired": deployment.signer.token(claims(base, lifetime=-60, groups=["chat"])),
        "audience": deployment.signer.token(claims(base, audience="other", groups=["chat"])),
        "wrong-key": Signer("RSA", "rsa-real").token(claims(base, groups=["chat"])),
        "unsafe-name": deployment.signer.token(claims(base, sub="a.>", groups=["chat"])),
    }
    expected = {
        "expired": "token expired",
        "audience": "token audience not accepted",
        "wrong-key": "token signature invalid",
        "unsafe-name": "identity attribute 'user' is not safe in a subject",
    }
    for case, token in cases.items():
        name = f"{case}-{secrets.token_hex(3)}"
        await refused(deployment.url, token=token, name=name)
        assert (await deployment.errors.reason(name)).endswith(expected[case])


async def test_nkey(deployment):
    nc = await login(deployment.url, nkeys_seed_str=SENSOR_KEY.seed)
    try:
        info = await user_info(nc)
        assert (info["user"], info["account"]) == ("sensor-2", "APP")
    finally:
        await nc.close()
    name = f"stranger-{secrets.token_hex(3)}"
    await refused(deployment.url, nkeys_seed_str=KeyPair.create_user().seed, name=name)
    assert (await deployment.errors.reason(name)).endswith("unknown nkey")


# -- the TLS server: client certificates ---------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("real-pki"))


@pytest.fixture(scope="module")
async def tls_deployment(pki) -> AsyncIterator[tuple[str, Pki, AuthErrors]]:
    issuer = KeyPair.create_account()
    server_cert, server_key, _ = pki.issue("server", "localhost", server=True)
    service_cert, service_key, _ = pki.issue("service", "callout-service")
    config = CalloutServerConfig(
        issuer=issuer.public_key,
        accounts={"APP": {}},
        extra=(
            "tls {\n"
            f'  cert_file: "{server_cert}"\n'
            f'  key_file: "{server_key}"\n'
            f'  ca_file: "{pki.ca_path}"\n'
            "  verify: true\n"
            "  timeout: 2\n"
            "}\n"
        ),
    )
    lookup = FirstMatch(
        ClientCertificateLookup(
            users={
                "alice": Identity("alice", frozenset({"chat"})),
                "device-7": Identity("device-7", frozenset({"telemetry"})),
            },
            issuer="CN=Battery Test CA",
        )
    )
    pipeline = CalloutPipeline(SigningKeys(issuer), lookup, permissions())
    service_tls = pki.client_context(service_cert, service_key)
    url = f"tls://127.0.0.1:{config.port}"
    with LocalNatsServer(config.render(), port=config.port) as server:
        async with (
            running_service(url, config.auth_user, config.auth_password, pipeline, tls=service_tls),
            auth_errors(url, config, tls=service_tls) as errors,
        ):
            yield url, pki, errors
        assert server.is_running(), server.log()[-2000:]


async def test_tls_client_certificate(tls_deployment):
    url, pki, _ = tls_deployment
    cert, key, _ = pki.issue("alice-client", "alice")
    nc = await login(url, tls=pki.client_context(cert, key))
    try:
        info = await user_info(nc)
        assert (info["user"], info["account"]) == ("alice", "APP")
        assert await round_trip(nc, "chat.alice.tls")
    finally:
        await nc.close()


async def test_tls_unknown_certificate_is_refused(tls_deployment):
    url, pki, errors = tls_deployment
    cert, key, _ = pki.issue("eve-client", "eve")
    name = f"eve-{secrets.token_hex(3)}"
    await refused(url, tls=pki.client_context(cert, key), name=name)
    assert (await errors.reason(name)).endswith("certificate name is not a known user")
