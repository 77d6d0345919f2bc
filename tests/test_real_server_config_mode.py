"""Config mode only: statically configured users, and the example that runs a local server.

What config mode shares with operator mode is in test_real_server.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from callout_env import CALLOUT_ERROR, AuthErrors, auth_errors, client_name, config_server, refused
from nats_versions import running_version
from policies import TableLookup, TablePermissions

from faststream_callout import CalloutPipeline

REPO = Path(__file__).resolve().parent.parent
STATIC_USER = "dave"
STATIC_PASSWORD = "dave-static-pw"


@pytest.fixture(scope="module")
async def static_user_server() -> AsyncIterator[tuple[str, AuthErrors]]:
    """dave is a statically configured APP user, deliberately not in auth_users and
    unknown to TableLookup: the callout still decides about him (SPEC 1.2)."""
    with config_server(accounts={"APP": {STATIC_USER: STATIC_PASSWORD}}) as server:
        pipeline = CalloutPipeline(server.keys, TableLookup(), TablePermissions())
        async with (
            server.serve(pipeline),
            auth_errors(server.url, **server.service_login) as errors,
        ):
            yield server.url, errors


async def test_static_user_still_goes_to_the_callout(
    static_user_server: tuple[str, AuthErrors],
) -> None:
    """dave's static password is right, but the callout (which does not know him) decides."""
    url, errors = static_user_server
    name = client_name("static")
    await refused(url, user=STATIC_USER, password=STATIC_PASSWORD, name=name)
    event = await errors.event(name)
    if running_version() >= (2, 11, 0):  # 2.10 leaves name_tag out of the event
        assert event["client"]["name_tag"] == "APP"  # static auth had succeeded first
    assert event["reason"] == CALLOUT_ERROR + "bad credentials"


async def test_example_run_local_once() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/run_local.py",
        "--once",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()  # our own child, by its handle
        await process.wait()
        raise
    output = stdout.decode(errors="replace")
    assert process.returncode == 0, output + stderr.decode(errors="replace")
    assert "all logins behaved as expected" in output, output
