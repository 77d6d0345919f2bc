"""The ``faststream-callout`` command line (placeholder until the CLI lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``faststream-callout`` command."""
    del argv
    sys.stderr.write("faststream-callout: no commands yet\n")
    return 2
