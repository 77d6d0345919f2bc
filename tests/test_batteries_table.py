"""StaticTable: argon2id/bcrypt passwords, hashed tokens, files, timing, threads."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import threading
import time

import argon2
import bcrypt
import pytest
from batteries_support import make_request

from faststream_callout import ConfigurationError, Denied
from faststream_callout.batteries import NotApplicable
from faststream_callout.batteries import table as table_module
from faststream_callout.batteries.table import (
    StaticTable,
    TableToken,
    TableUser,
    hash_password,
    hash_token,
    main,
    new_token,
)

# Cheap parameters keep the suite fast; production hashes use the library defaults.
FAST_ARGON2 = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ALICE_PW = "correct horse battery staple"
BOB_PW = "bob-Passw0rd!"
SENSOR_TOKEN, SENSOR_DIGEST = new_token()


def fast_bcrypt(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"alice": FAST_ARGON2.hash(ALICE_PW), "bob": fast_bcrypt(BOB_PW)}


@pytest.fixture
def table(hashes) -> StaticTable:
    table = StaticTable(
        [
            TableUser("alice", hashes["alice"], frozenset({"chat"}), {"tenant": "acme"}),
            TableUser("bob", hashes["bob"], frozenset({"reader"})),
            TableUser("carl", hashes["alice"], disabled=True),
        ],
        [
            TableToken("sensor-1", (SENSOR_DIGEST,), frozenset({"telemetry"})),
            TableToken("old", (hash_token("retired-token-0123456789"),), disabled=True),
        ],
    )
    yield table
    table.close()


# -- lookups -------------------------------------------------------------------------------


async def test_argon2id_password(table):
    identity = await table.lookup(make_request(user="alice", password=ALICE_PW))
    assert identity.name == "alice"
    assert identity.groups == {"chat"}
    assert identity.attributes["tenant"] == "acme"


async def test_bcrypt_password(table):
    assert (await table.lookup(make_request(user="bob", password=BOB_PW))).name == "bob"


@pytest.mark.parametrize("password", ["wrong", "", ALICE_PW.upper(), ALICE_PW + " "])
async def test_wrong_password_is_denied(table, password):
    with pytest.raises(Denied) as caught:
        await table.lookup(make_request(user="alice", password=password))
    assert not isinstance(caught.value, NotApplicable)
    assert caught.value.reason == "wrong password"


async def test_unknown_user_is_not_applicable(table):
    with pytest.raises(NotApplicable, match="unknown user"):
        await table.lookup(make_request(user="mallory", password=ALICE_PW))


async def test_disabled_user_is_denied_after_the_check(table):
    with pytest.raises(Denied, match="disabled"):
        await table.lookup(make_request(user="carl", password=ALICE_PW))
    with pytest.raises(Denied, match="wrong password"):
        await table.lookup(make_request(user="carl", password="nope"))


async def test_token(table):
    identity = await table.lookup(make_request(token=SENSOR_TOKEN))
    assert identity.name == "sensor-1"
    assert identity.groups == {"telemetry"}
    with pytest.raises(NotApplicable, match="unknown token"):
        await table.lookup(make_request(token=SENSOR_TOKEN + "x"))
    with pytest.raises(Denied, match="disabled"):
        await table.lookup(make_request(token="retired-token-0123456789"))


async def test_token_with_lone_surrogate_does_not_crash(table):
    with pytest.raises(NotApplicable):
        await table.lookup(make_request(token="\ud800abc"))


async def test_nothing_presented_is_not_applicable(table):
    with pytest.raises(NotApplicable, match="no user/password or token"):
        await table.lookup(make_request())


async def test_too_long_password_is_refused_without_hashing(table, monkeypatch):
    monkeypatch.setattr(table_module, "_verify", lambda *a: pytest.fail("hashed"))
    with pytest.raises(Denied, match="too long"):
        await table.lookup(make_request(user="alice", password="x" * 2000))


async def test_bcrypt_reads_72_bytes_like_every_bcrypt():
    long_password = "p" * 80
    legacy = bcrypt.hashpw(long_password[:72].encode(), bcrypt.gensalt(rounds=4)).decode()
    table = StaticTable([TableUser("old", legacy)])
    try:
        assert (await table.lookup(make_request(user="old", password=long_password))).name == "old"
    finally:
        table.close()


# -- timing and threads -----------------------------------------------------------------------


async def test_unknown_users_are_checked_against_a_dummy_with_the_same_parameters(
    table, monkeypatch
):
    seen: list[str] = []
    real = table_module._verify

    def spy(password_hash: str, password: bytes) -> bool:
        seen.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(table_module, "_verify", spy)
    with pytest.raises(NotApplicable):
        await table.lookup(make_request(user="nobody", password="guess"))
    assert len(seen) == 1
    dummy = seen[0]
    assert dummy != table.users["alice"].password_hash
    # The table's most common kind (two argon2 entries, one bcrypt): same parameters.
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(
        table.users["alice"].password_hash
    )


async def test_unknown_and_known_users_take_comparable_time():
    hasher = argon2.PasswordHasher(time_cost=2, memory_cost=8 * 1024, parallelism=1)
    table = StaticTable([TableUser("alice", hasher.hash("pw"))], hash_workers=1)
    try:
        await asyncio.gather(  # warm up: threads and the dummy hash
            *(table.lookup(make_request(user=u, password="x")) for u in ("alice", "nobody")),
            return_exceptions=True,
        )

        async def timed(user: str) -> float:
            start = time.perf_counter()
            with pytest.raises(Denied):
                await table.lookup(make_request(user=user, password="guess"))
            return time.perf_counter() - start

        known = statistics.median([await timed("alice") for _ in range(7)])
        unknown = statistics.median([await timed("nobody") for _ in range(7)])
    finally:
        table.close()
    assert 0.5 < unknown / known < 2.0, (known, unknown)


async def test_checks_run_off_the_event_loop_with_bounded_concurrency(hashes, monkeypatch):
    active = 0
    most = 0
    threads: set[str] = set()
    lock = threading.Lock()
    real = table_module._verify

    def spy(password_hash: str, password: bytes) -> bool:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            threads.add(threading.current_thread().name)
        try:
            time.sleep(0.02)
            return real(password_hash, password)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(table_module, "_verify", spy)
    table = StaticTable([TableUser("alice", hashes["alice"])], hash_workers=2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.002)

    ticking = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(
            *(table.lookup(make_request(user="alice", password=ALICE_PW)) for _ in range(6))
        )
    finally:
        ticking.cancel()
        table.close()
    assert all(r.name == "alice" for r in results)
    assert most == 2
    assert all(name.startswith("callout-password") for name in threads)
    assert ticks >= 10  # the loop kept running while passwords were checked


# -- files ------------------------------------------------------------------------------------


OLD_TOKEN = "old-token-xxxxxxxxxxxxxxxx"
NEW_TOKEN = "new-token-xxxxxxxxxxxxxxxx"


def write_toml(tmp_path, hashes) -> object:
    path = tmp_path / "users.toml"
    path.write_text(
        f"""
[users.alice]
password = "{hashes["alice"]}"
groups = ["chat", "admin"]
attributes = {{ tenant = "acme", level = 3 }}

[users.bob]
password = "{hashes["bob"]}"

[tokens.sensor-1]
sha256 = "{SENSOR_DIGEST}"
groups = ["telemetry"]

[tokens.rotating]
sha256 = ["{hash_token(OLD_TOKEN)}", "{hash_token(NEW_TOKEN)}"]
"""
    )
    return path


async def test_from_toml_file(tmp_path, hashes):
    table = StaticTable.from_file(write_toml(tmp_path, hashes))
    try:
        alice = await table.lookup(make_request(user="alice", password=ALICE_PW))
        assert alice.groups == {"chat", "admin"}
        assert dict(alice.attributes) == {"tenant": "acme", "level": 3}
        for token in (OLD_TOKEN, NEW_TOKEN):
            assert (await table.lookup(make_request(token=token))).name == "rotating"
        assert repr(table).startswith("StaticTable(2 users, 3 tokens, from ")
    finally:
        table.close()


async def test_from_json_file(tmp_path, hashes):
    path = tmp_path / "users.json"
    path.write_text(
        json.dumps(
            {
                "users": {"alice": {"password": hashes["alice"], "groups": ["chat"]}},
                "tokens": {"sensor-1": {"sha256": SENSOR_DIGEST}},
            }
        )
    )
    table = StaticTable.from_file(path)
    try:
        assert (await table.lookup(make_request(user="alice", password=ALICE_PW))).name == "alice"
        assert (await table.lookup(make_request(token=SENSOR_TOKEN))).name == "sensor-1"
    finally:
        table.close()


SECRET_PLAINTEXT = "hunter2-plaintext-secret"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f'[users.alice]\npassword = "{SECRET_PLAINTEXT}"\n', "users.alice: password is not"),
        ('[users.alice]\npassword = "$argon2id$v=19$garbage"\n', "users.alice: password is not"),
        ("[users.alice]\ngroups = []\n", "users.alice: needs a password hash"),
        (
            f'[users.alice]\npassword = "$2b$04$abc"\npasword = "{SECRET_PLAINTEXT}"\n',
            "unknown key",
        ),
        ('[users.alice]\npassword = "x"\ngroups = "chat"\n', "groups must be a list"),
        (f'[tokens.t]\nsha256 = "{SECRET_PLAINTEXT}"\n', "tokens.t: sha256 must be 64 hex"),
        ("[tokens.t]\nsha256 = []\n", "tokens.t: needs at least one"),
        (
            f'[tokens.a]\nsha256 = "{SENSOR_DIGEST}"\n[tokens.b]\nsha256 = "{SENSOR_DIGEST}"\n',
            "tokens.b: the same token digest",
        ),
        ('[users.alice]\npassword = "x"\ndisabled = "yes"\n', "disabled must be true or false"),
        ("[users]\nalice = 1\n", "users.alice must be a table"),
        ("[admins]\n", "unknown key"),
        ("users = [", "invalid TOML"),
    ],
)
def test_file_errors_name_the_entry_and_never_echo_secrets(tmp_path, body, message):
    path = tmp_path / "users.toml"
    path.write_text(body)
    with pytest.raises(ConfigurationError) as caught:
        StaticTable.from_file(path)
    text = str(caught.value)
    assert message in text
    assert str(path) in text
    assert SECRET_PLAINTEXT not in text


def test_file_format_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        StaticTable.from_file(tmp_path / "missing.toml")
    path = tmp_path / "users.yaml"
    path.write_text("users: {}")
    with pytest.raises(ConfigurationError, match="unknown format"):
        StaticTable.from_file(path)
    path = tmp_path / "users.json"
    path.write_text('{"users": {"alice": {"password": "' + SECRET_PLAINTEXT + '"}')
    with pytest.raises(ConfigurationError, match="invalid JSON") as caught:
        StaticTable.from_file(path)
    assert SECRET_PLAINTEXT not in str(caught.value)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="top level"):
        StaticTable.from_file(path)


async def test_reload_swaps_and_keeps_the_old_table_on_error(tmp_path, hashes):
    path = write_toml(tmp_path, hashes)
    table = StaticTable.from_file(path)
    try:
        path.write_text(f'[users.carol]\npassword = "{hashes["bob"]}"\n')
        table.reload()
        assert set(table.users) == {"carol"}
        assert (await table.lookup(make_request(user="carol", password=BOB_PW))).name == "carol"
        path.write_text('[users.dave]\npassword = "plain"\n')
        with pytest.raises(ConfigurationError):
            table.reload()
        assert set(table.users) == {"carol"}
    finally:
        table.close()
    with pytest.raises(RuntimeError):
        StaticTable().reload()


def test_weak_parameters_are_logged(caplog):
    with caplog.at_level("WARNING", logger="faststream_callout.batteries"):
        StaticTable([TableUser("a", FAST_ARGON2.hash("x"))])
    assert "weak cost parameters" in caplog.text


# -- helpers ----------------------------------------------------------------------------------


def test_hash_password_defaults_to_argon2id():
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(hashed, "s3cret")
    assert bcrypt.checkpw(b"s3cret", hash_password("s3cret", scheme="bcrypt").encode())
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("x" * 73, scheme="bcrypt")
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_tokens():
    token, digest = new_token()
    assert len(token) >= 40
    assert digest == hash_token(token)
    assert len(digest) == 64
    with pytest.raises(ValueError):
        new_token(8)


def run_cli(monkeypatch, capsys, argv: list[str], stdin: str = "") -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    return code, capsys.readouterr().out


def test_cli(monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, ["hash-password"], "pw-from-stdin\n")
    assert code == 0
    assert out.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(out.strip(), "pw-from-stdin")
    code, out = run_cli(monkeypatch, capsys, ["hash-password", "--scheme", "bcrypt"], "pw\n")
    assert code == 0
    assert out.startswith("$2b$12$")
    code, out = run_cli(monkeypatch, capsys, ["hash-token"], "my-token\n")
    assert out.strip() == hash_token("my-token")
    code, out = run_cli(monkeypatch, capsys, ["new-token"])
    token_line, digest_line = out.splitlines()
    assert hash_token(token_line.split()[-1]) == digest_line.split()[-1]
    code, _ = run_cli(monkeypatch, capsys, ["hash-password"], "\n")
    assert code == 2


def test_reprs_hold_no_secrets(table, hashes):
    text = repr(table) + repr(table.users["alice"]) + repr(TableToken("t", (SENSOR_DIGEST,)))
    assert hashes["alice"] not in text
    assert SENSOR_DIGEST not in text
    assert "password_hash" not in text
    assert "sha256" not in text
