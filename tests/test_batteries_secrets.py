"""No battery puts a secret in a denial reason, a log record or a repr; extras are optional."""

from __future__ import annotations

import base64
import importlib
import logging
import subprocess
import sys

import argon2
import pytest
from batteries_support import Pki, Signer, claims, jwks_server

from faststream_callout import CalloutPipeline, Identity, KeyPair, SigningKeys
from faststream_callout import batteries as batteries_package
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
from faststream_callout.protocol.claims import ClientTLS
from faststream_callout.testing import FakeServer

PASSWORD = "Pa55-" + "w0rd-alice-9f3k"
WRONG_PASSWORD = "my-other-bank-password-77"  # what users mistype is a secret too
TOKEN, TOKEN_DIGEST = new_token()
WRONG_TOKEN = "tok-" + "z" * 40


async def test_denials_and_logs_carry_no_secrets(tmp_path, caplog):
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    password_hash = hasher.hash(PASSWORD)
    sensor = KeyPair.create_user()
    stranger = KeyPair.create_user()
    signer = Signer("RSA", "k1")
    pki = Pki(tmp_path)
    _, _, eve_cert = pki.issue("eve", "eve")
    issuer = KeyPair.create_account()
    server = FakeServer.config_mode(issuer.public_key, accounts=["APP"])
    with jwks_server(keys=[signer.jwk]) as idp:
        good_jwt = signer.token(claims(idp.base, groups=["chat"], sub="a.>"))
        expired_jwt = signer.token(claims(idp.base, lifetime=-100, groups=["chat"]))
        forged_jwt = Signer("RSA", "k1").token(claims(idp.base, groups=["chat"]))
        table = StaticTable(
            [TableUser("alice", password_hash, frozenset({"chat"}))],
            [TableToken("sensor", (TOKEN_DIGEST,), frozenset({"nothing"}))],
        )
        lookup = ByCredential(
            password=FirstMatch(
                table,
                OIDCLookup(
                    issuer=idp.base, audience="nats", jwks_uri=idp.jwks_uri, sources=("password",)
                ),
            ),
            token=FirstMatch(
                table, OIDCLookup(issuer=idp.base, audience="nats", jwks_uri=idp.jwks_uri)
            ),
            nkey=NKeyLookup({sensor.public_key: Identity("sensor")}),
            tls=ClientCertificateLookup(users={"alice": Identity("alice")}),
        )
        rules = RoleBasedPermissions({"chat": PermissionSet(pub=["chat.{user}.>"])}, account="APP")
        pipeline = CalloutPipeline(SigningKeys(issuer), lookup, rules)
        nonce = "bm9uY2Utb25l"
        bad_sig = base64.b64encode(stranger.sign(nonce.encode())).decode()
        stranger_sig = base64.b64encode(stranger.sign(nonce.encode())).decode()
        attempts = [
            {"user": "alice", "password": WRONG_PASSWORD},
            {"user": "mallory", "password": WRONG_PASSWORD},
            {"user": "alice", "password": PASSWORD},  # allowed, but nothing may leak either
            {"token": WRONG_TOKEN},
            {"token": TOKEN},  # known token, role without permissions: denied
            {"token": expired_jwt},
            {"token": forged_jwt},
            {"token": good_jwt},  # sub "a.>" is refused by the template check
            {"user": "bearer", "password": expired_jwt},
            {"nkey": sensor.public_key, "sig": bad_sig, "nonce": nonce},
            {"nkey": stranger.public_key, "sig": stranger_sig, "nonce": nonce},
            {"tls": ClientTLS(version="1.3", certs=[pki.pem(eve_cert).decode()])},
        ]
        reasons: list[str] = []
        with caplog.at_level(logging.DEBUG):
            for attempt in attempts:
                minted = server.request(**attempt)
                decision = await pipeline.decide(minted.body)
                reasons.append(decision.reason)
                reasons.append(server.check(minted, decision.reply).error)
        table.close()
    secrets = [
        PASSWORD,
        WRONG_PASSWORD,
        password_hash,
        TOKEN,
        TOKEN_DIGEST,
        WRONG_TOKEN,
        sensor.seed,
        stranger.seed,
        bad_sig,
        stranger_sig,
        *(jwt for jwt in (good_jwt, expired_jwt, forged_jwt)),
        *(jwt.rsplit(".", 1)[1] for jwt in (good_jwt, expired_jwt, forged_jwt)),
    ]
    records = [
        " ".join([r.getMessage(), repr(r.args), repr(getattr(r, "callout", "")), r.exc_text or ""])
        for r in caplog.records
    ]
    texts = reasons + records + [repr(lookup), repr(rules), repr(table)]
    assert sum(1 for r in reasons if r) >= len(attempts) * 2 - 2  # one was allowed
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret leaked into: {text[:200]!r}"
    # Sanity: the reasons say something useful.
    assert "wrong password" in reasons
    assert "token expired" in reasons
    assert "nkey signature does not verify" in reasons


def test_extras_are_optional_and_named_when_missing():
    script = (
        "import sys\n"
        "for m in ('jwt', 'argon2', 'bcrypt', 'cryptography'): sys.modules[m] = None\n"
        "import faststream_callout, faststream_callout.batteries as b\n"
        "b.FirstMatch, b.ByCredential, b.RoleBasedPermissions, b.NKeyLookup\n"
        "for name in ('StaticTable', 'OIDCLookup', 'ClientCertificateLookup'):\n"
        "    try:\n"
        "        getattr(b, name)\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, extra, dist in zip(
        lines, ("table", "oidc", "tls"), ("argon2-cffi", "PyJWT", "cryptography"), strict=True
    ):
        assert f"pip install faststream-callout[{extra}]" in line
        assert f"({dist} is not installed)" in line


@pytest.mark.parametrize(
    ("module", "blocked", "extra", "attribute"),
    [
        ("table", "bcrypt", "table", "StaticTable"),
        ("oidc", "jwt", "oidc", "OIDCLookup"),
        ("tls", "cryptography", "tls", "ClientCertificateLookup"),
    ],
)
def test_missing_extra_in_process(monkeypatch, module, blocked, extra, attribute):
    for name in list(sys.modules):
        if name == blocked or name.startswith(blocked + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)
    monkeypatch.delitem(sys.modules, f"faststream_callout.batteries.{module}", raising=False)
    monkeypatch.delitem(vars(batteries_package), attribute, raising=False)
    with pytest.raises(ImportError, match=rf"pip install faststream-callout\[{extra}\]"):
        importlib.import_module(f"faststream_callout.batteries.{module}")
    with pytest.raises(ImportError, match=rf"\[{extra}\]"):
        getattr(batteries_package, attribute)
