"""Testing tools.

FakeServer, local nats-servers and clusters, callout deployments, service processes,
login attempts, permission probes and the pytest plugin.

Names are imported on first use; ``import faststream_callout`` never loads this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faststream_callout._lazy import lazy_exports

if TYPE_CHECKING:
    from faststream_callout.testing.cluster import NatsCluster
    from faststream_callout.testing.deployment import (
        CalloutDeployment,
        LocalCalloutServer,
        LoginRefused,
        run_deployment,
    )
    from faststream_callout.testing.fake_server import (
        FakeServer,
        MintedRequest,
        Verdict,
    )
    from faststream_callout.testing.local_server import (
        CalloutServerConfig,
        LocalNatsServer,
        OperatorServerConfig,
        check_config,
        find_nats_server,
        free_port,
        nats_server_version,
    )
    from faststream_callout.testing.logins import LoginAttempt, attempt_login
    from faststream_callout.testing.probes import (
        PermissionMismatch,
        Probe,
        can_publish,
        can_subscribe,
        expect_permissions,
        settle,
    )
    from faststream_callout.testing.processes import DeploymentError, ServiceProcess

__all__ = [
    "CalloutDeployment",
    "CalloutServerConfig",
    "DeploymentError",
    "FakeServer",
    "LocalCalloutServer",
    "LocalNatsServer",
    "LoginAttempt",
    "LoginRefused",
    "MintedRequest",
    "NatsCluster",
    "OperatorServerConfig",
    "PermissionMismatch",
    "Probe",
    "ServiceProcess",
    "Verdict",
    "attempt_login",
    "can_publish",
    "can_subscribe",
    "check_config",
    "expect_permissions",
    "find_nats_server",
    "free_port",
    "nats_server_version",
    "run_deployment",
    "settle",
]

_WHERE = {
    "FakeServer": "fake_server",
    "MintedRequest": "fake_server",
    "Verdict": "fake_server",
    "CalloutServerConfig": "local_server",
    "LocalNatsServer": "local_server",
    "OperatorServerConfig": "local_server",
    "check_config": "local_server",
    "find_nats_server": "local_server",
    "free_port": "local_server",
    "nats_server_version": "local_server",
    "NatsCluster": "cluster",
    "DeploymentError": "processes",
    "ServiceProcess": "processes",
    "LoginAttempt": "logins",
    "attempt_login": "logins",
    "CalloutDeployment": "deployment",
    "LocalCalloutServer": "deployment",
    "LoginRefused": "deployment",
    "run_deployment": "deployment",
    "PermissionMismatch": "probes",
    "Probe": "probes",
    "can_publish": "probes",
    "can_subscribe": "probes",
    "expect_permissions": "probes",
    "settle": "probes",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
