"""Several callout accounts and key rotation against a real nats-server (operator mode).

Every key and JWT is generated here. One FastStream app with one broker per
callout account serves both accounts with one container; then the callout
account's signing key and xkey are rotated through account JWT updates
(``$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE``, which the memory resolver accepts)
while logins keep coming, and not one is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from callout_env import nats_server, service, service_broker, write_secret
from dishka import make_async_container
from faststream import FastStream
from faststream.nats.security import NatsCredentials
from policies import Passwords

from faststream_callout import (
    CalloutPipeline,
    CalloutProvider,
    CalloutSettings,
    Grant,
    Identity,
    KeyPair,
    Permission,
    PolicyProvider,
    SigningKeys,
    XKeyPair,
)
from faststream_callout.core import Keyring
from faststream_callout.core.pipeline import Decision, Outcome
from faststream_callout.protocol.claims import AuthorizationRequest
from faststream_callout.protocol.nkeys import decode_seed
from faststream_callout.protocol.operator import (
    ExternalAuthorization,
    account_jwt,
    creds,
    operator_jwt,
    user_jwt,
)
from faststream_callout.testing.local_server import LocalNatsServer, OperatorServerConfig
from faststream_callout.testing.logins import attempt_login, quiet, user_info
from faststream_callout.testing.probes import settle

DENY_ALL = Permission(deny=[">"])
USER_INFO = "$SYS.REQ.USER.INFO"


class CountingKey(KeyPair):
    """An in-memory key that counts its signatures."""

    def __init__(self, key: KeyPair) -> None:
        super().__init__(key.kind, decode_seed(key.seed)[1])
        self.signatures = 0

    def sign(self, data: bytes) -> bytes:
        self.signatures += 1
        return super().sign(data)


class CountingXKey(XKeyPair):
    """An xkey that counts the requests it opened."""

    def __init__(self) -> None:
        super().__init__(XKeyPair.generate()._private.encode())
        self.opened = 0

    def open(self, sealed: bytes, sender: str) -> bytes:
        plaintext = super().open(sealed, sender)
        self.opened += 1
        return plaintext


@dataclass
class CalloutAccount:
    """A callout account: its key, signing keys, xkey, service user and target account."""

    name: str
    key: KeyPair = field(default_factory=KeyPair.create_account)
    signing_keys: list[KeyPair] = field(default_factory=list)
    xkey: XKeyPair | None = None
    service_user: KeyPair = field(default_factory=KeyPair.create_user)
    target: KeyPair = field(default_factory=KeyPair.create_account)

    def jwt(self, operator: KeyPair) -> str:
        auth = ExternalAuthorization(
            auth_users=[self.service_user.public_key],
            allowed_accounts=[self.target.public_key],
            xkey=self.xkey.public_key if self.xkey else "",
        )
        return account_jwt(
            self.key.public_key,
            operator,
            name=self.name,
            signing_keys=[k.public_key for k in self.signing_keys],
            authorization=auth,
        )

    def sentinel(self) -> tuple[str, KeyPair]:
        user = KeyPair.create_user()
        token = user_jwt(
            user.public_key,
            self.key,
            name="sentinel",
            bearer_token=True,
            pub=DENY_ALL,
            sub=DENY_ALL,
        )
        return token, user


@dataclass
class World:
    """An operator, its system account and some callout accounts, on one nats-server."""

    accounts: list[CalloutAccount]
    workdir: Path
    operator: KeyPair = field(default_factory=KeyPair.create_operator)
    system: KeyPair = field(default_factory=KeyPair.create_account)
    server: LocalNatsServer | None = None

    def config(self) -> OperatorServerConfig:
        jwts = {
            self.system.public_key: account_jwt(self.system.public_key, self.operator, name="SYS")
        }
        for account in self.accounts:
            jwts[account.key.public_key] = account.jwt(self.operator)
            jwts[account.target.public_key] = account_jwt(
                account.target.public_key, self.operator, name=f"{account.name}-APP"
            )
        return OperatorServerConfig(
            operator_jwt=operator_jwt(self.operator, system_account=self.system.public_key),
            system_account=self.system.public_key,
            account_jwts=jwts,
            default_sentinel=self.accounts[0].sentinel()[0],  # clients of the first account
        )

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def creds_file(self, name: str, token: str, user: KeyPair) -> str:
        return str(write_secret(self.workdir / f"{name}.creds", creds(token, user)))

    def service_security(self, account: CalloutAccount) -> NatsCredentials:
        """The FastStream login of ``account``'s callout service."""
        token = user_jwt(account.service_user.public_key, account.key, name=f"{account.name}-svc")
        path = self.creds_file(f"{account.name}-service", token, account.service_user)
        return NatsCredentials(credentials=path)

    def sentinel_creds(self, account: CalloutAccount) -> str:
        return self.creds_file(f"{account.name}-sentinel", *account.sentinel())

    async def update(self, account: CalloutAccount) -> None:
        """Push ``account``'s JWT as it is now, from the system account; wait for the ack."""
        admin = KeyPair.create_user()
        admin_creds = self.creds_file(
            "sys-admin", user_jwt(admin.public_key, self.system, name="admin"), admin
        )
        client = await nats.connect(self.url, user_credentials=admin_creds, error_cb=quiet)
        try:
            subject = f"$SYS.REQ.ACCOUNT.{account.key.public_key}.CLAIMS.UPDATE"
            reply = await client.request(subject, account.jwt(self.operator).encode(), timeout=5)
            assert b'"jwt updated"' in reply.data, reply.data
        finally:
            await client.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


@contextlib.contextmanager
def running(world: World) -> Iterator[World]:
    with nats_server(world.config()) as world.server:
        yield world


def lookup() -> Passwords:
    """``<user>-pw`` as a password, or the token ``tok-bob`` (with a sentinel JWT)."""
    return Passwords(tokens={"tok-bob": "bob"})


class Placement:
    """Users land in the target account of the callout account that asked.

    With ``home`` set, users whose name starts with ``home`` stay in the callout
    account itself (their user JWT is then signed by its signing key).
    """

    def __init__(self, targets: dict[str, str], home: str = "") -> None:
        self.targets = targets
        self.home = home

    def build(self, identity: Identity, request: AuthorizationRequest) -> Grant:
        account = self.targets[request.callout_account]
        if self.home and identity.name.startswith(self.home):
            account = request.callout_account
        return Grant(
            account=account,
            pub=Permission(allow=[USER_INFO]),
            sub=Permission(allow=["_INBOX.>"]),
            ttl=60,
        )


async def login_account(url: str, **options: Any) -> str:
    """Log in, return the account nats-server placed the client in; raise if refused."""
    attempt = await attempt_login(url, **options)
    if attempt.client is None:
        raise AssertionError(f"refused: {attempt.error!r}")
    try:
        return str((await user_info(attempt.client))["account"])
    finally:
        await attempt.client.close()


# --- one app, two callout accounts -----------------------------------------------------


async def test_one_app_serves_two_callout_accounts(workdir: Path) -> None:
    first = CalloutAccount("AUTH1", xkey=XKeyPair.generate())
    first.signing_keys.append(KeyPair.create_account())
    second = CalloutAccount("AUTH2", xkey=XKeyPair.generate())
    world = World([first, second], workdir)
    decisions: list[Decision] = []
    keys = Keyring(
        SigningKeys.operator(
            first.key.public_key,
            signing_key=first.signing_keys[0],
            accounts={first.target.public_key: first.target},
            xkey=first.xkey,
        ),
        SigningKeys.operator(
            second.key, accounts={second.target.public_key: second.target}, xkey=second.xkey
        ),
    )
    targets = {a.key.public_key: a.target.public_key for a in (first, second)}
    container = make_async_container(
        CalloutProvider(),
        PolicyProvider(keys=keys, lookup=lookup(), permissions=Placement(targets)),
    )
    with running(world):
        # One broker per callout account's login, one container: the app of the README.
        brokers = [
            service_broker(world.url, world.service_security(account), container)
            for account in (first, second)
        ]
        app = FastStream(*brokers, on_shutdown=[container.close])
        await app.start()
        (await container.get(CalloutPipeline)).observers.append(decisions.append)
        for broker in brokers:
            await settle(broker.connection)
        try:
            # AUTH1 clients get the default sentinel; AUTH2 clients bring theirs.
            assert await login_account(world.url, user="ann", password="ann-pw") == (
                first.target.public_key
            )
            sentinel = world.sentinel_creds(second)
            assert await login_account(world.url, user_credentials=sentinel, token="tok-bob") == (
                second.target.public_key
            )
            refused = await attempt_login(world.url, user_credentials=sentinel, token="nope")
            assert refused.refused, refused.error
        finally:
            await app.stop()
    assert [(d.outcome, d.request.callout_account if d.request else "") for d in decisions] == [
        (Outcome.ALLOWED, first.key.public_key),
        (Outcome.ALLOWED, second.key.public_key),
        (Outcome.DENIED, second.key.public_key),
    ]


# --- rotation under load -------------------------------------------------------------------

LOGINS = 200
WORKERS = 4


@pytest.mark.parametrize("with_xkey", [False, True], ids=["plain", "xkey"])
async def test_rotate_signing_key_and_xkey_while_logins_run(workdir: Path, with_xkey: bool) -> None:
    old_key, new_key = CountingKey(KeyPair.create_account()), CountingKey(KeyPair.create_account())
    old_xkey, new_xkey = (CountingXKey(), CountingXKey()) if with_xkey else (None, None)
    auth = CalloutAccount("AUTH", signing_keys=[old_key], xkey=old_xkey)
    world = World([auth], workdir)

    def keys_of(signing_key: KeyPair, xkey: XKeyPair | None) -> SigningKeys:
        return SigningKeys.operator(
            auth.key.public_key,
            signing_key=signing_key,
            accounts={auth.target.public_key: auth.target},
            xkey=xkey,
        )

    keys = Keyring(
        keys_of(old_key, old_xkey),
        # Not in the account JWT yet: the next signing key waits, the next xkey is
        # accepted already, before the account JWT names it.
        next_keys=[keys_of(new_key, new_xkey)],
    )
    decisions: list[Decision] = []
    # "home-*" users stay in the callout account: the server checks their user JWT's
    # signer against its signing keys, with or without xkey. (With xkey, it does not
    # check the signer of the sealed response.) Strict mode would refuse that placement.
    pipeline = CalloutPipeline(
        keys,
        lookup(),
        Placement({auth.key.public_key: auth.target.public_key}, home="home"),
        CalloutSettings(strict=False),
        observers=[decisions.append],
    )

    async def step_1_list_both() -> None:
        auth.signing_keys = [old_key, new_key]
        auth.xkey = new_xkey
        await world.update(auth)

    async def step_2_switch() -> None:
        keys.rotate()

    async def step_3_drop_the_old_key() -> None:
        auth.signing_keys = [new_key]
        await world.update(auth)

    async def step_4_retire() -> None:
        keys.retire()

    steps = {40: step_1_list_both, 80: step_2_switch, 120: step_3_drop_the_old_key}
    steps[160] = step_4_retire
    refused: list[str] = []
    done = 0
    step_lock = asyncio.Lock()

    async def worker(index: int) -> None:
        nonlocal done
        for n in range(index, LOGINS, WORKERS):
            name = f"home-{n}" if n % 2 else f"u{n}"
            expected = auth.key.public_key if n % 2 else auth.target.public_key
            try:
                account = await login_account(world.url, user=name, password=f"{name}-pw")
                if account != expected:
                    refused.append(f"{name} placed in {account}")
            except AssertionError as exc:
                refused.append(f"{name}: {exc}")
            async with step_lock:
                done += 1
                step = steps.pop(done, None)
                if step is not None:
                    await step()

    with running(world):
        assert world.server is not None
        async with service(world.url, world.service_security(auth), pipeline):
            await asyncio.gather(*(worker(i) for i in range(WORKERS)))
            assert not steps, f"steps not reached: {sorted(steps)}"
            assert refused == [], (refused[:5], world.server.log()[-3000:])
            assert len(decisions) == LOGINS
            assert all(d.outcome is Outcome.ALLOWED for d in decisions)
            # Both keys really signed, and (with xkey) both xkeys really opened requests.
            assert old_key.signatures > 0
            assert new_key.signatures > 0
            if old_xkey is not None and new_xkey is not None:
                assert old_xkey.opened > 0
                assert new_xkey.opened > 0
                assert keys.xkeys == (new_xkey,)
            # Control: the server now refuses what the old keys sign or can open.
            assert keys.next_keys == ()
            pipeline.keys = keys_of(old_key, old_xkey)
            control = await attempt_login(world.url, user="home-x", password="home-x-pw")
            assert control.refused, control.error
