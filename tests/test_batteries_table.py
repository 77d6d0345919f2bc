"""StaticTable: argon2id/bcrypt passwords, hashed tokens, files, timing, threads."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import threading
import time
from collections.abc import Callable

import argon2
import bcrypt
import pytest
from batteries_support import make_request

from faststream_callout import ConfigurationError, Denied
from faststream_callout.batteries import NotApplicable
from faststream_callout.batteries import table as table_module
from faststream_callout.batteries._pool import FairPool
from faststream_callout.batteries.table import (
    StaticTable,
    TableToken,
    TableUser,
    hash_password,
    hash_token,
    main,
    new_token,
)
from faststream_callout.core.throttle import SHED_REASON, Throttled

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


def spy_on_checks(monkeypatch) -> list[str]:
    """The hashes the table checks passwords against, in order."""
    seen: list[str] = []
    real = table_module._verify

    def spy(password_hash: str, password: bytes) -> bool:
        seen.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(table_module, "_verify", spy)
    return seen


async def test_unknown_users_are_checked_against_a_dummy_with_the_same_parameters(
    hashes, monkeypatch
):
    seen = spy_on_checks(monkeypatch)
    table = StaticTable([TableUser("alice", hashes["alice"]), TableUser("a2", hashes["alice"])])
    try:
        with pytest.raises(NotApplicable):
            await table.lookup(make_request(user="nobody", password="guess"))
    finally:
        table.close()
    assert len(seen) == 1
    dummy = seen[0]
    assert dummy != table.users["alice"].password_hash
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(hashes["alice"])


async def test_a_mixed_table_is_logged_and_unknown_users_cost_the_slowest_kind(monkeypatch, caplog):
    """Issue 14, item 7: a bcrypt user in an argon2 table answered 2.5x slower than the rest."""
    cheap = FAST_ARGON2.hash("pw")  # about a millisecond
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=11)).decode()  # over 50 ms
    with caplog.at_level("WARNING", logger="faststream_callout.batteries"):
        table = StaticTable(
            [TableUser("a1", cheap), TableUser("a2", cheap), TableUser("b", slow)], hash_workers=1
        )
    warning = [r.getMessage() for r in caplog.records if "mixes" in r.getMessage()]
    assert warning == [
        (
            "the table mixes password hash kinds (argon2id t=1 m=1024 KiB p=1 for 2 users, "
            "bcrypt cost 11 for 1 user): response times tell them apart, and unknown users "
            "are checked against the slowest; rehash every password to one kind"
        )
    ]
    seen = spy_on_checks(monkeypatch)

    async def timed(user: str) -> float:
        start = time.perf_counter()
        with pytest.raises(Denied):
            await table.lookup(make_request(user=user, password="guess"))
        return time.perf_counter() - start

    try:
        await timed("nobody")  # warm up: the dummy is made in the background
        assert seen[0].startswith("$2b$11$")  # the dummy is of the slowest kind: bcrypt
        bcrypt_user = statistics.median([await timed("b") for _ in range(3)])
        unknown = statistics.median([await timed("nobody") for _ in range(3)])
        argon2_user = statistics.median([await timed("a1") for _ in range(3)])
    finally:
        table.close()
    assert 0.5 < unknown / bcrypt_user < 2.0, (bcrypt_user, unknown)
    assert argon2_user < unknown  # the tell the warning is about


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
    # Three threads: one is kept for returning users (none here), two run these.
    table = StaticTable([TableUser("alice", hashes["alice"])], hash_workers=3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.002)

    ticking = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(  # from six addresses: one source uses one thread
            *(
                table.lookup(make_request(user="alice", password=ALICE_PW, host=f"10.0.0.{n}"))
                for n in range(6)
            )
        )
    finally:
        ticking.cancel()
        table.close()
    assert all(r.name == "alice" for r in results)
    assert most == 2
    assert all(name.startswith("callout-password") for name in threads)
    assert ticks >= 10  # the loop kept running while passwords were checked


async def test_names_are_matched_folded_like_the_throttle_counts_them(hashes):
    table = StaticTable([TableUser("Alice", hashes["alice"])])
    try:
        for spelling in ("Alice", "alice", "ALICE", "alice\u200b", "\uff41lice"):
            identity = await table.lookup(make_request(user=spelling, password=ALICE_PW))
            assert identity.name == "Alice"  # as written in the table
        with pytest.raises(NotApplicable):
            await table.lookup(make_request(user="alic", password=ALICE_PW))
    finally:
        table.close()
    with pytest.raises(ConfigurationError, match=r"users.bob: the same name as users.BOB"):
        StaticTable([TableUser("BOB", hashes["bob"]), TableUser("bob", hashes["bob"])])
    with pytest.raises(ConfigurationError, match="no visible characters"):
        StaticTable([TableUser("\u200b", hashes["bob"])])


# -- the hash queue: fair between sources, bounded ---------------------------------------------


class Blocked:
    """Jobs for a pool of one thread: the first holds the thread until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.order: list[str] = []

    def job(self, name: str) -> Callable[[], str]:
        def run() -> str:
            if name.startswith(("first", "hold")):
                self.release.wait(5)
            self.order.append(name)
            return name

        return run


async def submit(pool: FairPool, jobs: Blocked, name: str, source: str, **how: bool) -> str:
    try:
        return await pool.run(jobs.job(name), source=source, **how)
    except Throttled as exc:
        return f"{name} {exc.reason}"


async def test_the_hash_queue_serves_trusted_checks_first_then_sources_in_turn():
    pool, jobs = FairPool(1, 10, name="test-pool"), Blocked()
    tasks = [asyncio.create_task(submit(pool, jobs, "first", "A"))]
    await asyncio.sleep(0.05)  # running
    tasks += [
        asyncio.create_task(submit(pool, jobs, name, name[0].upper()))
        for name in ("a1", "a2", "a3", "b1", "b2", "c1")
    ]
    tasks.append(asyncio.create_task(submit(pool, jobs, "t1", "D", trusted=True)))
    await asyncio.sleep(0.01)
    jobs.release.set()
    await asyncio.gather(*tasks)
    pool.close()
    assert jobs.order == ["first", "t1", "a1", "b1", "c1", "a2", "b2", "a3"]
    with pytest.raises(RuntimeError):
        await pool.run(jobs.job("late"), source="A")


async def test_a_thread_is_kept_for_returning_users():
    pool, jobs = FairPool(2, 10, name="test-pool"), Blocked()
    held = [asyncio.create_task(submit(pool, jobs, f"hold-{s}", s)) for s in "ABC"]
    await asyncio.sleep(0.05)
    assert pool.queued == 2  # one untrusted check runs, the other thread is kept
    started = time.perf_counter()
    assert await submit(pool, jobs, "returning", "D", trusted=True) == "returning"
    assert time.perf_counter() - started < 0.5  # at once, on the kept thread
    jobs.release.set()
    await asyncio.gather(*held)
    pool.close()
    assert jobs.order[0] == "returning"


async def test_a_full_hash_queue_sheds_the_newest_of_the_longest():
    pool, jobs = FairPool(1, 3, name="test-pool"), Blocked()
    tasks = [asyncio.create_task(submit(pool, jobs, "first", "A"))]
    await asyncio.sleep(0.05)  # running: the queue is empty again
    for name in ("a1", "a2", "a3", "b1", "c1"):
        tasks.append(asyncio.create_task(submit(pool, jobs, name, name[0].upper())))
        await asyncio.sleep(0)
    tasks.append(asyncio.create_task(submit(pool, jobs, "t1", "D", trusted=True)))
    await asyncio.sleep(0.01)
    # Full at three: b1 pushed out a3, c1 pushed out a2, the trusted t1 pushed out
    # c1 (among equals the newest source goes).
    assert pool.queued == 3
    tasks[4].cancel()  # b1: a cancelled check leaves the queue at once
    await asyncio.sleep(0.01)
    assert pool.queued == 2
    jobs.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    pool.close()
    shed = SHED_REASON
    assert results[:4] == ["first", "a1", f"a2 {shed}", f"a3 {shed}"]
    assert isinstance(results[4], asyncio.CancelledError)
    assert results[5:] == [f"c1 {shed}", "t1"]
    assert jobs.order == ["first", "t1", "a1"]


async def test_a_full_table_queue_sheds_at_once(hashes, monkeypatch):
    gate = threading.Event()
    real = table_module._verify

    def blocked(password_hash: str, password: bytes) -> bool:
        gate.wait(5)
        return real(password_hash, password)

    monkeypatch.setattr(table_module, "_verify", blocked)
    table = StaticTable([TableUser("alice", hashes["alice"])], hash_workers=1, hash_queue=2)
    try:
        checks = [
            asyncio.create_task(table.lookup(make_request(user="alice", password=ALICE_PW)))
            for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(Throttled, match="service busy"):
            await table.lookup(make_request(user="nobody", password="x"))
        assert time.perf_counter() - started < 0.05
        gate.set()
        assert [i.name for i in await asyncio.gather(*checks)] == ["alice"] * 3
    finally:
        gate.set()
        table.close()
    with pytest.raises(ValueError, match="hash_queue"):
        StaticTable(hash_queue=-1)


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
