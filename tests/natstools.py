"""Helpers for tests with real nats-py clients."""

from __future__ import annotations

# The nats-py 2.16 flush race workaround lives in the library now (the pytest
# plugin's probes need it); this name stays for the existing tests.
from faststream_callout.testing.probes import settle

__all__ = ["settle"]
