"""A cluster of local nats-servers: N routed nodes on 127.0.0.1, JetStream optional.

Nodes can be killed (SIGKILL: a crash, no leadership handed over) and restarted
with their JetStream data, to test what a node loss does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Self

from faststream_callout.testing.local_server import LocalNatsServer, Routes, free_port
from faststream_callout.testing.processes import DeploymentError

__all__ = ["NatsCluster"]


class NatsCluster:
    """Routed :class:`LocalNatsServer` nodes ``node-1`` ... ``node-N``, stopped by PID.

    Every node gets free client, route and monitoring ports, so one
    configuration text serves them all (its ``listen`` line is overridden): in
    config mode the same accounts and users everywhere, and a service may log
    in on any node.

    Args:
        config: the configuration text of every node, or ``index -> text`` (0-based).
        size: the number of nodes.
        name: the cluster's name.
        jetstream: enable JetStream on every node (a JetStream cluster; accounts
            still need ``jetstream: enabled`` in config mode).
        binary: the nats-server binary; default ``find_nats_server()``.

    """

    def __init__(
        self,
        config: str | Callable[[int], str] = "",
        *,
        size: int = 3,
        name: str = "callout-cluster",
        jetstream: bool = False,
        binary: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.name = name
        self.jetstream = jetstream
        self.down: set[int] = set()
        """Indexes of the nodes :meth:`kill` stopped and :meth:`restart` has not started."""
        route_ports = tuple(free_port() for _ in range(size))
        self.servers = [
            LocalNatsServer(
                config(index) if callable(config) else config,
                binary=binary,
                monitor_port=free_port(),
                name=f"node-{index + 1}",
                jetstream=jetstream,
                routes=Routes(name, port, route_ports),
            )
            for index, port in enumerate(route_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """The client URL of every node."""
        return [server.url for server in self.servers]

    def start(self, *, within: float = 20) -> Self:
        """Start every node; wait for the routes (and with JetStream, a meta leader)."""
        started = time.monotonic()
        try:
            for server in self.servers:
                server.start()
            self.wait_for_routes(within)
            if self.jetstream:
                self.wait_for_jetstream(within - (time.monotonic() - started))
        except BaseException:
            self.close()
            raise
        return self

    @property
    def running(self) -> list[LocalNatsServer]:
        """The nodes that are not :attr:`down`."""
        return [server for index, server in enumerate(self.servers) if index not in self.down]

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (0-based) and reap it; its files stay for :meth:`restart`.

        Raises:
            DeploymentError: it is not running.

        """
        server = self.servers[index]
        process = server.process
        if process is None or process.poll() is not None:
            raise DeploymentError(f"{server.name} is not running")
        process.kill()
        process.wait(timeout=10)
        server.stop()  # forgets the reaped process
        self.down.add(index)

    def restart(self, index: int, *, within: float = 20) -> float:
        """Start node ``index`` again (same ports, same JetStream data); return the seconds taken.

        Waits for its routes and, with JetStream, for it to know the meta leader.
        """
        started = time.monotonic()
        self.servers[index].start()
        self.down.discard(index)
        self.wait_for_routes(within)
        if self.jetstream:
            self.wait_for_jetstream(within - (time.monotonic() - started))
        return time.monotonic() - started

    def wait_for_routes(self, timeout: float = 10) -> float:
        """Wait until every running node routes to every other; return the seconds waited.

        Raises:
            DeploymentError: a node died, or the routes were not up in time.

        """
        started = time.monotonic()
        while True:
            self.check_running()
            running = self.running
            names = {server.name for server in running}
            peers = [
                {
                    route.get("remote_name")
                    for route in server.monitor("/routez").get("routes") or []
                }
                for server in running
            ]
            if all(
                seen >= names - {server.name} for seen, server in zip(peers, running, strict=True)
            ):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise DeploymentError(f"cluster routes not up after {timeout}s: {peers}")
            time.sleep(0.05)

    def wait_for_jetstream(self, timeout: float = 20) -> float:
        """Wait until every running node knows the JetStream meta leader; return the seconds.

        Raises:
            DeploymentError: a node died, or no leader was elected in time.

        """
        started = time.monotonic()
        while True:
            self.check_running()
            leaders = [
                (server.monitor("/jsz").get("meta_cluster") or {}).get("leader")
                for server in self.running
            ]
            if all(leaders):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise DeploymentError(f"no JetStream meta leader after {timeout}s: {leaders}")
            time.sleep(0.05)

    def check_running(self) -> None:
        """Raise :class:`DeploymentError` (with its log) if a node died (killed ones aside)."""
        for server in self.running:
            server.check_running()

    def close(self) -> None:
        """Stop every node by PID and remove its files."""
        for server in self.servers:
            server.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NatsCluster({self.name!r}, {', '.join(map(repr, self.servers))})"
