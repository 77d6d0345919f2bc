"""A clock the test moves by hand, for code that takes ``clock=`` (seconds, float)."""

from __future__ import annotations


class ManualClock:
    """Returns ``now`` when called; time passes only through :meth:`advance`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
