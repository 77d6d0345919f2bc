"""Real nats-servers and real nats-py clients logging in through every battery.

The batteries run in config and operator mode (callout_env.py; xkey, a matter
of transport, is left to test_real_server.py): the static table (argon2id password, token), OIDC
tokens (as token and as password) and nkeys, composed with ByCredential and
FirstMatch. A config-mode server of its own with ``tls { verify: true }``
serves client certificates. Each allowed login proves nats-server accepted the
grant; each denial is checked against the reason nats-server publishes on
``$SYS.ACCOUNT.CLIENT.AUTH.ERR``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import argon2
import nats
import pytest
from batteries_support import JWKSServer, Pki, Signer, claims, jwks_server
from callout_env import (
    CALLOUT_ERROR,
    OPERATOR,
    AuthErrors,
    CalloutEnv,
    auth_errors,
    client_name,
    config_server,
    environments,
    login,
    refused,
    run_in,
    user_info,
)
from nats.aio.client import Client
from nats.aio.msg import Msg

from faststream_callout import CalloutPipeline, Identity, KeyPair, ResponsePermission
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
from faststream_callout.testing import CalloutDeployment, can_publish, settle

pytestmark = run_in(*environments(xkey=False))

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


# -- table, OIDC, nkey in both modes -------------------------------------------------------


@dataclass
class Batteries:
    callout: CalloutDeployment
    idp: JWKSServer
    signer: Signer


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[JWKSServer, Signer]]:
    signer = Signer("RSA", "rsa-real")
    with jwks_server(keys=[signer.jwk]) as server:
        yield server, signer


@pytest.fixture(scope="module")
async def batteries(callout_env: CalloutEnv, idp) -> AsyncIterator[Batteries]:
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
    async with callout_env.serve(lookup, permissions()) as callout:
        yield Batteries(callout, jwks, signer)
    table.close()


async def test_table_argon2id_password(batteries: Batteries) -> None:
    async with batteries.callout.connect(user="alice", password=ALICE_PASSWORD) as nc:
        info = await user_info(nc)
        assert info["user"] == "alice"
        assert await batteries.callout.account_of(nc) == "APP"
        assert sorted(info["permissions"]["publish"]["allow"]) == sorted(
            ["chat.alice.>", "svc.echo", USER_INFO]
        )
        assert 590 < info["expires"] / 1e9 <= 600  # the default TTL: no grant lives forever
        assert await round_trip(nc, "chat.alice.room")
        assert not await can_publish(nc, "chat.bob.room")


async def test_table_wrong_password_and_unknown_user(batteries: Batteries) -> None:
    refusal = await batteries.callout.expect_denied(user="alice", password="wrong")
    assert refusal.reason == CALLOUT_ERROR + "wrong password"
    refusal = await batteries.callout.expect_denied(user="nobody", password="wrong")
    assert "unknown user" in refusal.reason


async def test_table_token(batteries: Batteries) -> None:
    async with batteries.callout.connect(token=SENSOR_TOKEN) as nc:
        info = await user_info(nc)
        assert info["user"] == "sensor-1"
        assert await batteries.callout.account_of(nc) == "APP"
        assert sorted(info["permissions"]["publish"]["allow"]) == sorted(
            ["telemetry.sensor-1", USER_INFO]
        )
    await batteries.callout.expect_denied(token=SENSOR_TOKEN[:-1] + "x")


async def test_roles_without_pub_publish_nothing_but_replies(batteries: Batteries) -> None:
    async def echo(msg: Msg) -> None:
        await msg.respond(b"echo:" + msg.data)

    callout = batteries.callout
    async with (
        callout.connect(token=RESPONDER_TOKEN) as responder,
        callout.connect(token=READER_TOKEN) as reader,
        callout.connect(user="alice", password=ALICE_PASSWORD) as alice,
    ):
        await responder.subscribe("svc.echo", cb=echo)
        await settle(responder)
        reply = await alice.request("svc.echo", b"hi", timeout=2)
        assert reply.data == b"echo:hi"  # the reply was allowed
        assert not await can_publish(responder, "chat.responder.x")
        # A role with subscriptions only: everything it publishes is refused,
        # not left to the account's (open) defaults.
        sub = await reader.subscribe("chat.>")
        await settle(reader)
        await alice.publish("chat.alice.news", b"x")
        assert (await sub.next_msg(timeout=2)).data == b"x"
        assert not await can_publish(reader, "chat.reader.x")


@pytest.mark.parametrize("how", ["token", "password"])
async def test_oidc_token(batteries: Batteries, how: str) -> None:
    body = claims(batteries.idp.base, lifetime=120, sub="olivia", groups=["chat"])
    token = batteries.signer.token(body)
    credentials = {"token": token} if how == "token" else {"user": "bearer", "password": token}
    async with batteries.callout.connect(**credentials) as nc:
        info = await user_info(nc)
        assert info["user"] == "olivia"
        assert await batteries.callout.account_of(nc) == "APP"
        # The grant ends with the token (in ns), not after the 600 s default TTL.
        assert info["expires"] / 1e9 == pytest.approx(body["exp"] - time.time(), abs=3)
        assert await round_trip(nc, "chat.olivia.x")


async def test_oidc_bad_tokens(batteries: Batteries) -> None:
    base, signer = batteries.idp.base, batteries.signer
    cases = {
        "expired": signer.token(claims(base, lifetime=-60, groups=["chat"])),
        "audience": signer.token(claims(base, audience="other", groups=["chat"])),
        "wrong-key": Signer("RSA", "rsa-real").token(claims(base, groups=["chat"])),
        "unsafe-name": signer.token(claims(base, sub="a.>", groups=["chat"])),
    }
    expected = {
        "expired": "token expired",
        "audience": "token audience not accepted",
        "wrong-key": "token signature invalid",
        "unsafe-name": "identity attribute 'user' is not safe in a subject",
    }
    for case, token in cases.items():
        refusal = await batteries.callout.expect_denied(token=token)
        assert refusal.reason.endswith(expected[case]), (case, refusal.reason)


# A client signs the server's nonce with its nkey. Operator mode always sends one;
# config mode only when nkey users are configured, which LocalCalloutServer does not do.
@run_in(OPERATOR)
async def test_nkey(batteries: Batteries) -> None:
    async with batteries.callout.connect(nkey_seed=SENSOR_KEY.seed) as nc:
        assert (await user_info(nc))["user"] == "sensor-2"
        assert await batteries.callout.account_of(nc) == "APP"
    refusal = await batteries.callout.expect_denied(nkey_seed=KeyPair.create_user().seed)
    assert refusal.reason.endswith("unknown nkey")


# -- a TLS server of its own: client certificates ----------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("real-pki"))


@pytest.fixture(scope="module")
async def tls_deployment(pki) -> AsyncIterator[tuple[str, Pki, AuthErrors]]:
    server_cert, server_key, _ = pki.issue("server", "localhost", server=True)
    service_cert, service_key, _ = pki.issue("service", "callout-service")
    tls_block = (
        "tls {\n"
        f'  cert_file: "{server_cert}"\n'
        f'  key_file: "{server_key}"\n'
        f'  ca_file: "{pki.ca_path}"\n'
        "  verify: true\n"
        "  timeout: 2\n"
        "}\n"
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
    service_tls = pki.client_context(service_cert, service_key)
    with config_server(scheme="tls", accounts={"APP": {}}, extra=tls_block) as server:
        pipeline = CalloutPipeline(server.keys, lookup, permissions())
        async with (
            server.serve(pipeline, tls=service_tls),
            auth_errors(server.url, tls=service_tls, **server.service_login) as errors,
        ):
            yield server.url, pki, errors


async def test_tls_client_certificate(tls_deployment) -> None:
    url, pki, _ = tls_deployment
    cert, key, _ = pki.issue("alice-client", "alice")
    nc = await login(url, tls=pki.client_context(cert, key))
    try:
        info = await user_info(nc)
        assert (info["user"], info["account"]) == ("alice", "APP")
        assert await round_trip(nc, "chat.alice.tls")
    finally:
        await nc.close()


async def test_tls_unknown_certificate_is_refused(tls_deployment) -> None:
    url, pki, errors = tls_deployment
    cert, key, _ = pki.issue("eve-client", "eve")
    name = client_name("eve")
    await refused(url, tls=pki.client_context(cert, key), name=name)
    assert (await errors.reason(name)).endswith("certificate name is not a known user")
