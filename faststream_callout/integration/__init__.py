"""The integration layer.

FastStream router, the callout of an existing app, Dishka providers, observers, cache,
sessions, feedback, discovery.

Names are imported on first use, so importing one part does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faststream_callout._lazy import lazy_exports

if TYPE_CHECKING:
    from faststream_callout.integration.app import (
        AuthCallout,
        CalloutStartError,
    )
    from faststream_callout.integration.cache import (
        CacheStats,
        DecisionCache,
    )
    from faststream_callout.integration.discovery import (
        CalloutService,
        discovery_router,
    )
    from faststream_callout.integration.feedback import (
        ServerFeedback,
        feedback_router,
    )
    from faststream_callout.integration.metrics import (
        PrometheusMetrics,
    )
    from faststream_callout.integration.observers import (
        Instrument,
        ObserverProvider,
        observe,
    )
    from faststream_callout.integration.providers import (
        CalloutProvider,
        PolicyProvider,
    )
    from faststream_callout.integration.router import (
        AUTH_CALLOUT_SUBJECT,
        CalloutMessage,
        Dispatch,
        callout_router,
    )
    from faststream_callout.integration.sessions import (
        KickResult,
        KickStatus,
        RevocationGuard,
        RevocationList,
        Session,
        SessionRegistry,
        kick,
        revoke_users,
    )

__all__ = [
    "AUTH_CALLOUT_SUBJECT",
    "AuthCallout",
    "CacheStats",
    "CalloutMessage",
    "CalloutProvider",
    "CalloutService",
    "CalloutStartError",
    "DecisionCache",
    "Dispatch",
    "Instrument",
    "KickResult",
    "KickStatus",
    "ObserverProvider",
    "PolicyProvider",
    "PrometheusMetrics",
    "RevocationGuard",
    "RevocationList",
    "ServerFeedback",
    "Session",
    "SessionRegistry",
    "callout_router",
    "discovery_router",
    "feedback_router",
    "kick",
    "observe",
    "revoke_users",
]

_WHERE = {
    "AuthCallout": "app",
    "CalloutStartError": "app",
    "AUTH_CALLOUT_SUBJECT": "router",
    "CalloutMessage": "router",
    "Dispatch": "router",
    "callout_router": "router",
    "CalloutProvider": "providers",
    "PolicyProvider": "providers",
    "CacheStats": "cache",
    "DecisionCache": "cache",
    "KickResult": "sessions",
    "KickStatus": "sessions",
    "RevocationGuard": "sessions",
    "RevocationList": "sessions",
    "Session": "sessions",
    "SessionRegistry": "sessions",
    "kick": "sessions",
    "revoke_users": "sessions",
    "Instrument": "observers",
    "ObserverProvider": "observers",
    "observe": "observers",
    "ServerFeedback": "feedback",
    "feedback_router": "feedback",
    "CalloutService": "discovery",
    "discovery_router": "discovery",
    "PrometheusMetrics": "metrics",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
