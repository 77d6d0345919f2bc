"""Shared fixtures: generated keys, a pipeline over the shared test policies, real nats-servers.

The real-server environments (config or operator mode, with or without xkey) are
described in callout_env.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TypeAlias

import pytest
from callout_env import CONFIG, ENVIRONMENTS, CalloutEnv, Environment, ServerPool
from policies import TableLookup, TablePermissions

from faststream_callout import KeyPair, SigningKeys
from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.testing import CalloutDeployment


@pytest.fixture(scope="session")
def issuer() -> KeyPair:
    return KeyPair.create_account()


@pytest.fixture(scope="session")
def signing_keys(issuer: KeyPair) -> SigningKeys:
    return SigningKeys(issuer)


@pytest.fixture(scope="session")
def pipeline(signing_keys: SigningKeys) -> CalloutPipeline:
    return CalloutPipeline(signing_keys, TableLookup(), TablePermissions())


# -- real nats-servers ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def callout_servers() -> Iterator[ServerPool]:
    """One nats-server per environment for the whole session, stopped by PID at its end."""
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "environments(*environments): run callout_env in these (callout_env.run_in)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test using ``callout_env`` runs once per environment (all, or its run_in() ones)."""
    if "callout_env" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("environments")
    chosen = marker.args if marker is not None else ENVIRONMENTS
    metafunc.parametrize("callout_env", chosen, ids=str, indirect=True, scope="module")


@pytest.fixture(scope="module")
def callout_env(request: pytest.FixtureRequest, callout_servers: ServerPool) -> CalloutEnv:
    """A real nats-server in one environment (see pytest_generate_tests)."""
    environment: Environment = request.param
    return CalloutEnv(environment, callout_servers.get(environment))


@pytest.fixture(scope="module")
async def table_callout(callout_env: CalloutEnv) -> AsyncIterator[CalloutDeployment]:
    """The table policies (policies.TableLookup, TablePermissions) serving in ``callout_env``."""
    async with callout_env.serve(TableLookup(), TablePermissions()) as deployment:
        yield deployment


# tests/test_cli.py checks its commands against the table policies in config mode.
RealServer: TypeAlias = CalloutEnv


@pytest.fixture(scope="module")
def real_server(callout_servers: ServerPool) -> RealServer:
    """The config-mode environment."""
    return CalloutEnv(CONFIG, callout_servers.get(CONFIG))


@pytest.fixture(scope="module")
async def callout_service(real_server: RealServer) -> AsyncIterator[CalloutDeployment]:
    """The table policies serving on ``real_server``."""
    async with real_server.serve(TableLookup(), TablePermissions()) as deployment:
        yield deployment
