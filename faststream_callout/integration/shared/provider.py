"""Turn the shared stores on in a Dishka container: one provider, listed after the policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dishka import Provider, Scope

from faststream_callout.core.pipeline import CalloutPipeline
from faststream_callout.core.policy import IdentityLookup
from faststream_callout.core.throttle import MemoryStore, NoThrottle, Throttle
from faststream_callout.integration.cache import DecisionCache
from faststream_callout.integration.observers import observe
from faststream_callout.integration.sessions import SessionRegistry
from faststream_callout.integration.shared.invalidations import SharedInvalidations
from faststream_callout.integration.shared.revocations import SharedRevocationList
from faststream_callout.integration.shared.state import SharedSettings, SharedState
from faststream_callout.integration.shared.throttle import SharedThrottleStore

__all__ = ["SharedStateProvider"]

_F = TypeVar("_F", bound=Callable[..., Any])


class SharedStateProvider(Provider):
    """Provides a :class:`SharedState` (APP scope) and wires its stores into the pipeline.

    List it after :class:`~faststream_callout.CalloutProvider` and your policy::

        container = make_async_container(CalloutProvider(), Policy(), SharedStateProvider())

    With the default :class:`SharedSettings` it:

    - wraps the provided :class:`~faststream_callout.IdentityLookup` in the shared
      revocation list's guard (a revoked identity is denied by every instance);
    - observes the pipeline with the shared :class:`SessionRegistry`;
    - when the provided lookup is a :class:`DecisionCache`, attaches it to the
      shared invalidations;
    - moves the provided :class:`~faststream_callout.core.throttle.Throttle`'s
      counts to the shared bucket, keeping its policy (``MemoryThrottle`` by
      default; a ``NoThrottle`` or a throttle on a store of your own is kept);
    - provides :class:`SharedState`, :class:`SharedRevocationList`,
      :class:`SessionRegistry`, :class:`SharedInvalidations` and
      :class:`SharedThrottleStore` for your code
      (``await container.get(SharedRevocationList)``), per the settings.

    The state connects when the pipeline is first resolved (``AuthCallout`` does
    that at start, before it serves) and closes with the container. It logs in
    with the arguments, else the callout service's own variables (``NATS_URL``,
    ``CALLOUT_USER``/``CALLOUT_PASSWORD`` or ``CALLOUT_CREDS``).

    Args:
        settings: which stores are shared, their buckets and bounds.
        url: the server(s), comma-separated.
        user: the login in config mode (an ``auth_users`` user of the callout account).
        password: its password.
        creds: a creds file, the login in operator mode.
        environ: where the variables are read; ``os.environ`` by default.

    """

    def __init__(
        self,
        settings: SharedSettings | None = None,
        *,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        creds: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope=Scope.APP)
        chosen = settings or SharedSettings()

        async def shared_state() -> AsyncIterator[SharedState]:
            state = await SharedState.connect(
                url, user=user, password=password, creds=creds, settings=chosen, environ=environ
            )
            try:
                yield state
            finally:
                await state.close()

        def shared_lookup(lookup: IdentityLookup, state: SharedState) -> IdentityLookup:
            if chosen.invalidations is not None and isinstance(lookup, DecisionCache):
                state.invalidations.attach(lookup)
            if chosen.revocations is not None:
                return state.revocations.guard(lookup)
            return lookup

        def shared_throttle(throttle: Throttle, state: SharedState) -> Throttle:
            if isinstance(throttle, NoThrottle) or not isinstance(throttle.store, MemoryStore):
                return throttle  # off, or counting in a store of its own
            return state.throttle(throttle.policy)

        def shared_sessions(pipeline: CalloutPipeline, state: SharedState) -> CalloutPipeline:
            return observe(pipeline, state.sessions)

        self.provide(_named(shared_state), provides=SharedState)
        self.decorate(_named(shared_lookup), provides=IdentityLookup)
        if chosen.revocations is not None:
            self.provide(_named(_revocations), provides=SharedRevocationList)
        if chosen.sessions is not None:
            self.provide(_named(_sessions), provides=SessionRegistry)
            self.decorate(_named(shared_sessions), provides=CalloutPipeline)
        if chosen.invalidations is not None:
            self.provide(_named(_invalidations), provides=SharedInvalidations)
        if chosen.throttle is not None:
            self.provide(_named(_throttle_store), provides=SharedThrottleStore)
            self.decorate(_named(shared_throttle), provides=Throttle)


def _revocations(state: SharedState) -> SharedRevocationList:
    return state.revocations


def _sessions(state: SharedState) -> SessionRegistry:
    return state.sessions


def _invalidations(state: SharedState) -> SharedInvalidations:
    return state.invalidations


def _throttle_store(state: SharedState) -> SharedThrottleStore:
    return state.throttle_store


def _named(factory: _F) -> _F:
    # Dishka names factories in its errors (and AuthCallout names the failing one).
    name = factory.__name__.lstrip("_")
    factory.__qualname__ = factory.__name__ = f"SharedStateProvider.{name}"
    return factory
