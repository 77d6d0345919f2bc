"""Benchmark 3: a connect storm through the callout vs the same server with static users.

    uv run --group bench python benchmarks/connect_storm.py [--clients 2000] [--repeat 3]

``--clients`` users ``u<i>`` with random passwords (generated per run), every
client a valid login. Variants, each on a fresh nats-server, alternating,
``--repeat`` times:

- ``static``: the users and their permissions in the server configuration; no
  callout. nats-server's own password check: the baseline.
- ``ours``: auth callout answered by ``callout_router`` (a dict lookup that
  checks the password, then a fixed grant), the service in its own process.
- ``theirs``: the same through nats-callout 0.1.1 under FastStream (the
  service of benchmarks/versus_nats_callout.py with the same dict check).

Before each storm one login checks the grant through ``$SYS.REQ.USER.INFO``
(user, account, exact publish/subscribe allow lists) and one wrong password must
be refused; these also warm the service up. Then every client connects at once
(``asyncio.gather`` of ``nats.connect``, no reconnects, generous timeout), from
this process (``--client raw``: the protocol by hand, cheaper for the driver);
every connection stays open until the last connect resolved, then all close.
A connect that nats-server's first PING cut short in nats-py is completed by
the server's PONG (see ``complete_half_open_connects``). CPU time (utime + stime from ``/proc/<pid>/stat``) of
nats-server, the service and this driver is read just before the storm and
just after the last connect resolved, so start-up and closing are excluded.

Reported per variant (median of the runs): auths/s (clients / time until the
last connect resolved), p50/p99 connect latency, failures (refused, hung,
other), CPU ms per login of nats-server, the service and the driver; then the
ratios. ``--profile pyinstrument`` (or ``cprofile``) runs one extra ``ours``
storm with the service under that profiler and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hmac
import io
import json
import os
import pstats
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from nats.aio.client import Client
from storm_driver import raised_fd_limit

from faststream_callout import (
    CalloutPipeline,
    Denied,
    Grant,
    Identity,
    KeyPair,
    Permission,
    SigningKeys,
)
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer, free_port
from faststream_callout.testing.logins import (
    AUTH_VIOLATION,
    attempt_login,
    resolve_half_open,
    user_info,
)
from faststream_callout.testing.probes import settle
from faststream_callout.testing.processes import ServiceProcess
from faststream_callout.tools.natsconf.render import quote

ACCOUNT = "APP"
PROFILE_LINES = 40
# The same grant everywhere; USER.INFO lets the pre-storm check read it back.
GRANT = Grant(
    account=ACCOUNT,
    pub=Permission(allow=["chat.>", "$SYS.REQ.USER.INFO"]),
    sub=Permission(allow=["chat.>", "_INBOX.>"]),
)
VARIANTS = ("static", "ours", "theirs")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the service process -------------------------------------------------------------


class DictLookup:
    """An in-memory user table: the password must match (constant-time compare)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users

    def lookup(self, request):
        opts = request.connect_opts
        expected = self.users.get(opts.user)
        if (
            expected is None
            or not opts.password
            or not hmac.compare_digest(opts.password, expected)
        ):
            raise Denied("bad credentials")
        return Identity(opts.user)


class FixedGrant:
    def build(self, identity, request):
        return GRANT


async def serve(kind: str, users: Mapping[str, str]) -> None:
    from faststream.nats import NatsBroker, NatsMessage
    from faststream.nats.security import NatsUserPassword

    from faststream_callout import callout_router

    env = os.environ
    seed = env["BENCH_ISSUER_SEED"]
    broker = NatsBroker(
        env["BENCH_URL"],
        security=NatsUserPassword(
            username=env["BENCH_AUTH_USER"], password=env["BENCH_AUTH_PASSWORD"]
        ),
        logger=None,
    )
    if kind == "ours":
        pipeline = CalloutPipeline(
            SigningKeys(KeyPair.from_seed(seed)), DictLookup(users), FixedGrant()
        )
        broker.include_router(callout_router(pipeline))
    else:
        from versus_nats_callout import SUBJECT, their_service

        service = their_service(seed, users, GRANT)

        @broker.subscriber(SUBJECT, queue="nats-callout")
        async def handle(message: NatsMessage) -> str:
            return await service(message.body)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await broker.start()
    await settle(broker.connection)
    how, _, path = env.get("BENCH_PROFILE", "").partition(":")
    profiler = start_profiler(how)
    print("READY", flush=True)
    await stop.wait()
    if profiler is not None:
        stop_profiler(profiler, path)
    await broker.stop()


def start_profiler(how: str) -> cProfile.Profile | Any | None:
    if how == "cprofile":
        # CPU time, not wall time: the machine is shared, and idle waits are no cost.
        # Its per-call timer inflates Python-level calls (2-3x in total).
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        return profiler
    if how == "pyinstrument":
        from pyinstrument import Profiler

        # Samples the stack every 0.5 ms, whatever task runs: low overhead.
        sampler = Profiler(interval=0.0005, async_mode="disabled")
        sampler.start()
        return sampler
    return None


def stop_profiler(profiler: cProfile.Profile | Any, path: str) -> None:
    if isinstance(profiler, cProfile.Profile):
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(PROFILE_LINES)
        stats.sort_stats("cumulative").print_stats(PROFILE_LINES)
        Path(path).write_text(out.getvalue())
    else:
        profiler.stop()
        flat = profiler.output_text(flat=True, show_all=True)
        tree = profiler.output_text(show_all=False)
        Path(path).write_text("\n".join(flat.splitlines()[: PROFILE_LINES + 8]) + "\n\n" + tree)


# -- the driver -------------------------------------------------------------------------


def cpu_ticks(pid: int, *, system: bool = False) -> int:
    """utime + stime (or stime only) of process ``pid`` (all its threads), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    stime = int(fields[12])  # fields 14 (utime) and 15 (stime) of proc(5)
    return stime if system else int(fields[11]) + stime


def static_config(port: int, users: Mapping[str, str]) -> str:
    def quoted(values: list[str]) -> str:
        return ", ".join(map(quote, values))

    permissions = (
        f"permissions: {{ publish: {{ allow: [{quoted(GRANT.pub.allow)}] }}, "
        f"subscribe: {{ allow: [{quoted(GRANT.sub.allow)}] }} }}"
    )
    entries = ",\n".join(
        f"    {{ user: {quote(u)}, password: {quote(p)}, {permissions} }}" for u, p in users.items()
    )
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"accounts {{\n  {ACCOUNT}: {{ users: [\n{entries}\n  ] }}\n  SYS: {{}}\n}}\n"
        "system_account: SYS\n"
    )


@dataclass
class Run:
    variant: str
    clients: int
    admitted: int = 0
    refused: int = 0
    hung: int = 0
    other: list[str] = field(default_factory=list)
    phase: float = 0.0  # start -> the last connect resolved
    latencies: list[float] = field(default_factory=list)  # admitted clients
    server_cpu: float = 0.0  # seconds during the storm
    service_cpu: float = float("nan")
    service_sys: float = float("nan")  # of which in the kernel (stime)
    driver_cpu: float = 0.0

    @property
    def auths_per_second(self) -> float:
        return self.clients / self.phase

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies) or [float("nan")]
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def per_login_ms(self, seconds: float) -> float:
        return seconds / self.clients * 1000

    @property
    def failures(self) -> int:
        return self.clients - self.admitted


async def check_grant(url: str, users: Mapping[str, str], variant: str) -> None:
    """One right login gets exactly GRANT; one wrong password is refused."""
    name, password = next(iter(users.items()))
    attempt = await attempt_login(url, user=name, password=password, connect_timeout=10)
    assert attempt.client is not None, f"{name} refused before the storm: {attempt.error!r}"
    try:
        info = await user_info(attempt.client)
    finally:
        await attempt.client.close()
    seen = info.get("permissions") or {}
    got = (
        info.get("user"),
        info.get("account"),
        sorted((seen.get("publish") or {}).get("allow") or []),
        sorted((seen.get("subscribe") or {}).get("allow") or []),
    )
    want = (name, ACCOUNT, sorted(GRANT.pub.allow), sorted(GRANT.sub.allow))
    if variant == "theirs" and str(got[0]).startswith("U"):
        # nats-callout 0.1.1 leaves the user JWT's name empty: nats-server then
        # names the connection by the user's public nkey, not the login name.
        got = (name, *got[1:])
    assert got == want, f"{variant}: wrong grant: {got} != {want}"
    wrong = await attempt_login(url, user=name, password=password + "x", connect_timeout=10)
    assert wrong.client is None, "wrong password let in"
    assert wrong.refused, f"wrong password not refused: {wrong.error!r}"


def complete_half_open_connects() -> None:
    """Let nats-py finish a connect that the server's first PING cut short (driver only).

    nats-server PINGs a new client after 2 s even while its callout is pending;
    nats-py 2.16's ``connect()`` reads that PING where it expects the PONG and
    returns a client stuck CONNECTING (see ``faststream_callout.testing.logins.resolve_half_open``).
    A storm of 2,000 on 2 cores takes longer than that, so here the PONG that
    answers the connect's PING completes the connect, and its arrival time is
    the login's latency. A refusal still closes the client (``-ERR``).
    """
    original = Client._process_pong

    async def process_pong(self: Client) -> None:
        if self._status == Client.CONNECTING and not self._pongs:
            self._status = Client.CONNECTED
            self._bench_admitted_at = time.monotonic()  # type: ignore[attr-defined]
            return
        await original(self)

    Client._process_pong = process_pong  # type: ignore[method-assign]


async def nats_py_login(url: str, name: str, password: str, within: float) -> Outcome:
    attempt = await attempt_login(
        url, user=name, password=password, connect_timeout=within, name=name
    )
    client = attempt.client
    if client is not None and not client.is_connected:  # half-open: wait for PONG or -ERR
        deadline = time.monotonic() + within
        while not (client.is_connected or client.is_closed) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if client.is_connected:
            attempt.latency = client._bench_admitted_at - attempt.started  # type: ignore[attr-defined]
        else:
            await resolve_half_open(attempt, within=0)  # closed by -ERR: a refusal
    if attempt.client is not None and attempt.client.is_connected:
        return Outcome("admitted", attempt.latency, attempt.client.close)
    if attempt.client is not None:
        return Outcome(f"half-open after {within} s", attempt.latency, attempt.client.close)
    if attempt.refused:
        return Outcome("refused", attempt.latency)
    if isinstance(attempt.error, TimeoutError):
        return Outcome("hung", attempt.latency)
    return Outcome(repr(attempt.error), attempt.latency)


async def raw_login(url: str, name: str, password: str, within: float) -> Outcome:
    """The NATS protocol by hand: INFO, CONNECT + PING, then PONG (in) or -ERR (refused)."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    started = time.monotonic()
    connect = json.dumps(
        {
            "verbose": False,
            "pedantic": False,
            "user": name,
            "pass": password,
            "name": name,
            "lang": "python-raw",
            "version": "0",
            "protocol": 1,
            "headers": True,
        }
    )
    writer = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, int(port))
            info = await reader.readline()
            if not info.startswith(b"INFO "):
                raise ConnectionError(f"no INFO: {info[:40]!r}")
            writer.write(f"CONNECT {connect}\r\nPING\r\n".encode())
            while True:
                line = await reader.readline()
                if line.startswith(b"PING"):  # the server's first PING, before the callout answered
                    writer.write(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    close = writer.close
                    writer = None
                    return Outcome("admitted", time.monotonic() - started, close)
                elif line.startswith(b"-ERR") and AUTH_VIOLATION in line.decode().lower():
                    return Outcome("refused", time.monotonic() - started)
                else:
                    raise ConnectionError(f"unexpected {line[:60]!r}")
    except TimeoutError:
        return Outcome("hung", time.monotonic() - started)
    except (OSError, ConnectionError) as exc:
        return Outcome(repr(exc), time.monotonic() - started)
    finally:
        if writer is not None:
            writer.close()


@dataclass
class Outcome:
    kind: str  # admitted, refused, hung, or what went wrong
    latency: float
    close: Callable[[], object] | None = None


async def storm(
    url: str,
    users: Mapping[str, str],
    variant: str,
    pids: dict[str, int],
    args: argparse.Namespace,
) -> Run:
    run = Run(variant, len(users))
    login = raw_login if args.client == "raw" else nats_py_login
    before = {role: cpu_ticks(pid) for role, pid in pids.items()}
    service_sys = cpu_ticks(pids["service"], system=True) if "service" in pids else 0
    driver_before = time.process_time()
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(login(url, name, password, args.connect_timeout) for name, password in users.items())
    )
    run.phase = time.monotonic() - started
    after = {role: cpu_ticks(pid) for role, pid in pids.items()}
    run.driver_cpu = time.process_time() - driver_before
    run.server_cpu = (after["server"] - before["server"]) / CLK_TCK
    if "service" in pids:
        run.service_cpu = (after["service"] - before["service"]) / CLK_TCK
        run.service_sys = (cpu_ticks(pids["service"], system=True) - service_sys) / CLK_TCK
    for name, outcome in zip(users, outcomes, strict=True):
        if outcome.kind == "admitted":
            run.admitted += 1
            run.latencies.append(outcome.latency)
        elif outcome.kind == "refused":
            run.refused += 1
        elif outcome.kind == "hung":
            run.hung += 1
        else:
            run.other.append(f"{name}: {outcome.kind}")
    closing = [outcome.close() for outcome in outcomes if outcome.close is not None]
    await asyncio.gather(*(c for c in closing if asyncio.iscoroutine(c)), return_exceptions=True)
    return run


def start_service(
    kind: str,
    config: CalloutServerConfig,
    seed: str,
    users_path: Path,
    *,
    workdir: Path,
    profile: str = "",
) -> ServiceProcess:
    service = ServiceProcess(
        [sys.executable, __file__, "--serve", kind],
        name=f"{kind}-{secrets.token_hex(3)}",
        workdir=workdir,
        env={
            "BENCH_URL": config.url,
            "BENCH_AUTH_USER": config.auth_user,
            "BENCH_AUTH_PASSWORD": config.auth_password,
            "BENCH_ISSUER_SEED": seed,
            "BENCH_USERS": str(users_path),
            "BENCH_PROFILE": profile,
        },
    )
    asyncio.run(service.start())
    return service


def one_run(
    variant: str,
    users: Mapping[str, str],
    workdir: Path,
    args: argparse.Namespace,
    profile: str = "",
) -> Run:
    issuer = KeyPair.create_account()  # generated per run, never stored
    users_path = workdir / "users.json"
    if variant == "static":
        port = free_port()
        server = LocalNatsServer(static_config(port, users), port=port)
        config = None
    else:
        config = CalloutServerConfig(
            issuer=issuer.public_key,
            accounts={ACCOUNT: {}},
            timeout=args.auth_timeout,
            server_name="connect-storm",
        )
        server = LocalNatsServer.from_config(config)
    service = None
    with server:
        assert server.pid is not None
        pids = {"server": server.pid}
        try:
            if config is not None:
                service = start_service(
                    variant, config, issuer.seed, users_path, workdir=workdir, profile=profile
                )
                pids["service"] = service.pid
            asyncio.run(check_grant(server.url, users, variant))
            run = asyncio.run(storm(server.url, users, variant, pids, args))
            assert server.is_running(), server.log()[-2000:]
            assert service is None or service.is_running(), f"{variant} service died"
        finally:
            if service is not None:
                service.stop(timeout=15)  # the profile is written on SIGTERM
    return run


HEADER = (
    f"{'variant':<7} {'auths/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'failed':>7} "
    f"{'server ms/login':>15} {'service ms/login':>16} {'driver ms/login':>15}"
)


def row(variant: str, runs: list[Run]) -> str:
    def med(values) -> float:
        return statistics.median(values)

    return (
        f"{variant:<7} {med(r.auths_per_second for r in runs):>8.0f} "
        f"{med(r.pct(50) for r in runs) * 1000:>7.0f} {med(r.pct(99) for r in runs) * 1000:>7.0f} "
        f"{sum(r.failures for r in runs):>7} "
        f"{med(r.per_login_ms(r.server_cpu) for r in runs):>15.3f} "
        f"{med(r.per_login_ms(r.service_cpu) for r in runs):>16.3f} "
        f"{med(r.per_login_ms(r.driver_cpu) for r in runs):>15.3f}"
    )


def summary(runs: dict[str, list[Run]]) -> None:
    """The medians and the ratios the issue asks for."""

    def med(variant: str, value: Callable[[Run], float]) -> float:
        return statistics.median(value(r) for r in runs[variant])

    def rate(run: Run) -> float:
        return run.auths_per_second

    def server_ms(run: Run) -> float:
        return run.per_login_ms(run.server_cpu)

    def service_ms(run: Run) -> float:
        return run.per_login_ms(run.service_cpu)

    callouts = [v for v in ("ours", "theirs") if v in runs]
    if "static" in runs:
        for variant in callouts:
            print(
                f"static / {variant} auths/s: {med('static', rate) / med(variant, rate):.2f}x "
                "(the callout's overhead)"
            )
        static = med("static", server_ms)
        for variant in callouts:
            server = med(variant, server_ms)
            print(
                f"nats-server CPU per login: {server:.3f} ms with the callout ({variant}), "
                f"{static:.3f} ms static: callout work {server - static:.3f} ms"
            )
    if "ours" in runs:
        ours = med("ours", service_ms)
        kernel = med("ours", lambda run: run.per_login_ms(run.service_sys))
        verdict = "meets" if ours <= 0.15 else "misses"
        print(
            f"our service CPU per login: {ours:.3f} ms, {kernel:.3f} of it in the kernel "
            f"({verdict} the 0.15 ms target)"
        )
        if "theirs" in runs:
            theirs = med("theirs", service_ms)
            print(
                f"nats-callout service CPU per login: {theirs:.3f} ms ({theirs / ours:.2f}x ours)"
            )


def storms(args: argparse.Namespace, variants: list[str]) -> dict[str, list[Run]]:
    users = {f"u{i}": secrets.token_urlsafe(12) for i in range(args.clients)}
    runs: dict[str, list[Run]] = {v: [] for v in variants}
    with (
        tempfile.TemporaryDirectory(prefix="connect-storm-") as tmp,
        raised_fd_limit(2 * args.clients + 1024) as fd_limit,
    ):
        workdir = Path(tmp)
        users_path = workdir / "users.json"
        users_path.touch(mode=0o600)  # passwords: owner-only before writing
        users_path.write_text(json.dumps(users))
        print(f"fd limit {fd_limit}")
        print(HEADER)
        for number in range(args.repeat):
            # Rotate the order so no variant always runs first (or last) in a round.
            shift = number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                run = one_run(variant, users, workdir, args)
                runs[variant].append(run)
                print(row(variant, [run]), f" (run {number + 1}, load {os.getloadavg()[0]:.2f})")
                if run.failures:
                    print(
                        f"  ! {variant}: {run.refused} refused, {run.hung} hung, "
                        f"{len(run.other)} other"
                    )
                for problem in run.other[:5]:
                    print(f"  ! {variant}: {problem}")
        if args.profile:
            path = workdir / "ours.profile.txt"
            run = one_run("ours", users, workdir, args, profile=f"{args.profile}:{path}")
            print(f"\nours under {args.profile} (the profiler costs CPU too):")
            print(HEADER)
            print(row("ours", [run]))
            print(path.read_text())
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--auth-timeout", type=float, default=10.0, help="authorization.timeout")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument(
        "--profile",
        choices=["pyinstrument", "cprofile"],
        help="one more storm with our service under this profiler",
    )
    parser.add_argument(
        "--client",
        choices=["nats-py", "raw"],
        default="nats-py",
        help="nats-py clients, or the protocol by hand (less driver CPU)",
    )
    parser.add_argument("--serve", choices=["ours", "theirs"])
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, json.loads(Path(os.environ["BENCH_USERS"]).read_text())))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    if args.client == "nats-py":
        complete_half_open_connects()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.clients} clients "
        f"({args.client}), {args.repeat} runs per variant; load average at start "
        f"{os.getloadavg()}"
    )
    runs = storms(args, variants)
    print(f"\nmedian of {args.repeat}; load average at end {os.getloadavg()}")
    print(HEADER)
    for variant in variants:
        print(row(variant, runs[variant]))
    summary(runs)
    failed = sum(r.failures for rs in runs.values() for r in rs)
    print("\nresult:", "OK" if not failed else f"FAILED ({failed} logins did not get in)")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
