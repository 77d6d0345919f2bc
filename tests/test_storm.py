"""A login storm against a real nats-server and the service in its own process.

The small, in-suite version of ``benchmarks/storm.py`` (its policy, service and
driver: benchmarks/storm_*.py): 200 clients connect at
once (a third of them with invalid credentials of four kinds) and stay
connected until all are done. Every valid client must get in with exactly its
grant (checked through ``$SYS.REQ.USER.INFO``, and by publishing once where it
may and once where it may not, watched from each account); every invalid one
must be refused; no connect may hang; and nats-server's own connection list
(``/connz``) must hold exactly the valid clients, each in its account. The
server keeps its default 2 s ``authorization.timeout``.
"""

from __future__ import annotations

import pytest
from storm_driver import raised_fd_limit, run_storm
from storm_policy import callout_config, storm_credentials
from storm_service import StormService

from faststream_callout import KeyPair
from faststream_callout.testing.local_server import LocalNatsServer, free_port

CLIENTS = 200


@pytest.fixture
def storm_issuer() -> KeyPair:
    return KeyPair.create_account()


async def test_storm_of_concurrent_logins(storm_issuer, tmp_path):
    config = callout_config(storm_issuer, timeout=2)
    server = LocalNatsServer.from_config(config, monitor_port=free_port()).start()
    service = StormService(
        url=server.url,
        config=config,
        issuer=storm_issuer,
        name="storm-service",
        workdir=tmp_path,
        max_workers=64,
    )
    try:
        await service.start()
        credentials = storm_credentials(CLIENTS, invalid_every=3)
        with raised_fd_limit(4 * CLIENTS):
            result = await run_storm(
                server.url,
                credentials,
                connect_timeout=10,
                hang_after=20,
                auth_timeout=2,
                audit=server,
            )
        print(f"\nstorm of {CLIENTS}:\n{result.summary()}")

        assert result.wrong_grants == []
        assert result.hangs == 0
        assert result.other_errors == []
        assert result.admitted_valid == result.valid
        assert result.refused_invalid == result.invalid
        assert result.checked_publishes == result.valid  # one allowed publish each, nothing else
        assert result.audited == result.valid  # nats-server lists exactly the valid ones
        assert result.half_open == 0
        assert result.perfect

        # The service saw every login exactly once (and the two watchers).
        outcomes = [line.outcome for line in service.decisions()]
        assert outcomes.count("allowed") == result.valid + 2
        assert outcomes.count("denied") == result.invalid
        assert len(outcomes) == CLIENTS + 2
        assert service.is_running()
        server.check_running()
    finally:
        service.stop()
        server.close()
