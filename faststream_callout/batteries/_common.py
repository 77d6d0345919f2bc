"""Helpers shared by the batteries: awaiting ports, loading files, the extras message."""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from faststream_callout.core.errors import ConfigurationError
from faststream_callout.core.policy import resolve

__all__ = [
    "EXPIRES_AT",
    "attributes_of",
    "check_keys",
    "extra_missing",
    "load_document",
    "logger",
    "resolve",
    "str_set",
]

logger: Final = logging.getLogger("faststream_callout.batteries")

#: Identity attribute holding the Unix time the presented credential expires
#: (token ``exp``, certificate ``notAfter``). Permission builders should not
#: issue a user JWT that outlives it; :class:`RoleBasedPermissions` does not.
EXPIRES_AT: Final = "expires_at"


_DISTRIBUTIONS: Final = {"jwt": "PyJWT", "argon2": "argon2-cffi"}


def extra_missing(extra: str, module: str, error: ImportError) -> ImportError:
    """The ImportError raised when a battery's optional dependencies are missing."""
    root = (error.name or "").partition(".")[0]
    missing = f" ({_DISTRIBUTIONS.get(root, root)} is not installed)" if root else ""
    message = (
        f"{module} needs the '{extra}' extra{missing}: "
        f"pip install faststream-callout[{extra}]  (or: uv add 'faststream-callout[{extra}]')"
    )
    return ImportError(message, name=error.name)


def load_document(path: str | Path) -> dict[str, object]:
    """Read a TOML (``.toml``) or JSON (``.json``) file into a dict.

    Raises:
        ConfigurationError: the file cannot be read or parsed; the message names
            the file and the position, never the content.

    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigurationError(f"{file}: unknown format; use a .toml or .json file")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        if suffix == ".toml":
            data: object = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file}: not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib messages name a line and column, not the text.
        raise ConfigurationError(f"{file}: invalid TOML ({exc})") from None
    except json.JSONDecodeError as exc:
        # Only the position: JSONDecodeError.msg is generic, the document is not echoed.
        raise ConfigurationError(
            f"{file}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{file}: the top level must be a table/object")
    return data


def str_set(value: object, where: str, what: str = "groups") -> frozenset[str]:
    """A set of non-empty strings from a list of strings (file entries)."""
    if value is None:
        return frozenset()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{where}: {what} must be a list of strings")
    items = list(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"{where}: {what} must be a list of non-empty strings")
    return frozenset(items)


def attributes_of(value: object, where: str) -> dict[str, object]:
    """The ``attributes`` table of a file entry: string keys, any JSON/TOML values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigurationError(f"{where}: attributes must be a table with string keys")
    return dict(value)


def check_keys(entry: Mapping[str, object], allowed: Iterable[str], where: str) -> None:
    """Refuse unknown keys in a file entry (a typo like ``pasword`` must not pass silently)."""
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
