"""Shared state: several callout instances with one memory, through JetStream KV.

Everything that guards logins is per process unless shared here: the
revocation list, the session registry (so ``kick_user`` reaches every
instance's sessions), decision-cache invalidations and the throttle's counts.
Each store keeps the policy of its in-memory class. The first three keep a
local copy that logins read without a round trip; a watch on its bucket keeps
the copy current, and the copy knows its age (see
:mod:`~faststream_callout.integration.shared.mirror`). The throttle reads and
writes its bucket at each login (see
:mod:`~faststream_callout.integration.shared.throttle`).

Turn it on with :class:`SharedStateProvider` (Dishka) or :class:`SharedState`
(without). The buckets live in the callout account, which needs JetStream.
"""

from __future__ import annotations

from faststream_callout.integration.shared.buckets import Bucket, StoreUnavailable
from faststream_callout.integration.shared.invalidations import SharedInvalidations
from faststream_callout.integration.shared.mirror import BucketMirror
from faststream_callout.integration.shared.provider import SharedStateProvider
from faststream_callout.integration.shared.revocations import SharedRevocationList
from faststream_callout.integration.shared.sessions import SharedSessions
from faststream_callout.integration.shared.state import SharedSettings, SharedState
from faststream_callout.integration.shared.throttle import SharedThrottleStore

__all__ = [
    "Bucket",
    "BucketMirror",
    "SharedInvalidations",
    "SharedRevocationList",
    "SharedSessions",
    "SharedSettings",
    "SharedState",
    "SharedStateProvider",
    "SharedThrottleStore",
    "StoreUnavailable",
]
