"""What the commands share: the program name, one-line errors, output, key checks."""

from __future__ import annotations

import sys
from typing import Final

from faststream_callout.protocol.nkeys import KeyKind, is_public_key

__all__ = ["PROG", "CliError", "err", "out", "public_key"]

PROG: Final = "faststream-callout"


class CliError(Exception):
    """A problem to report in one line, without a traceback (exit status 2)."""


def public_key(value: str, kind: KeyKind, option: str) -> str:
    """``value`` if it is a public key of ``kind``; never echoes what may be a seed."""
    if value.startswith("S"):
        raise CliError(f"{option} looks like a seed; give the public key (never share seeds)")
    if not is_public_key(value, kind):
        raise CliError(f"{option} is not a public {kind.name.lower()} key ({kind.letter}...)")
    return value


def out(text: str, *, end: str = "\n") -> None:
    """Write to stdout, flushed (the output of ``dev`` interleaves with the app's)."""
    sys.stdout.write(text + end)
    sys.stdout.flush()


def err(text: str) -> None:
    """Write a line to stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
