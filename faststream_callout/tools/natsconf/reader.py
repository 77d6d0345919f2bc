"""Read nats-server configuration files (the format of nats-server's ``conf`` package).

Enough of the format to find what auth callout depends on: maps and arrays,
``key: value`` / ``key = value`` / ``key value``, ``#`` and ``//`` comments,
quoted and bare strings, numbers and booleans, ``$variables`` (from the file or
the environment), ``include`` files and ``(`` block strings ``)``. Option keys
are case-insensitive for nats-server; :func:`option` looks them up that way.

Configuration files hold passwords: error messages name the file and line,
never the text found there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from faststream_callout.core.errors import ConfigurationError

__all__ = ["NatsConfigError", "load", "option", "parse"]

Value = str | int | float | bool | list["Value"] | dict[str, "Value"]

_MAX_INCLUDE_DEPTH: Final = 10
_BOOLS: Final = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
_BARE_END: Final = frozenset("\n\r;,]} \t'")
_INTEGER: Final = re.compile(r"-?\d+([kKmMgG][bB]?)?")
_FLOAT: Final = re.compile(r"-?\d+\.\d+")
_SUFFIX: Final = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


class NatsConfigError(ConfigurationError):
    """A configuration file could not be read the way nats-server reads it."""


def option(mapping: object, *names: str) -> Value | None:
    """Return the value of the first of ``names`` in ``mapping``, case-insensitively.

    nats-server lower-cases option keys (``Authorization`` is ``authorization``) and
    accepts aliases (``auth_users`` or ``users``): pass them all.
    """
    if not isinstance(mapping, dict):
        return None
    lowered = {key.lower(): value for key, value in mapping.items()}
    for name in names:
        if name.lower() in lowered:
            found: Value = lowered[name.lower()]
            return found
    return None


def load(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> dict[str, Value]:
    """Parse the configuration file at ``path`` (and the files it includes)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NatsConfigError(f"cannot read {file}: {type(exc).__name__}") from None
    return _Parser(text, file, os.environ if environ is None else environ, 0).parse()


def parse(
    text: str, *, base_dir: str | os.PathLike[str] = ".", environ: Mapping[str, str] | None = None
) -> dict[str, Value]:
    """Parse configuration ``text``; ``include`` paths are relative to ``base_dir``."""
    source = Path(base_dir) / "<text>"
    return _Parser(text, source, os.environ if environ is None else environ, 0).parse()


class _Parser:
    """A recursive descent reader following nats-server's ``conf/lex.go`` states."""

    def __init__(self, text: str, path: Path, environ: Mapping[str, str], depth: int) -> None:
        self.text = text
        self.path = path
        self.environ = environ
        self.depth = depth
        self.pos = 0
        self.scopes: list[dict[str, Value]] = []

    # -- helpers -------------------------------------------------------------------

    def error(self, what: str) -> NatsConfigError:
        line = self.text.count("\n", 0, self.pos) + 1
        return NatsConfigError(f"{self.path.name} line {line}: {what}")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def comment_here(self) -> bool:
        return self.peek() == "#" or (self.peek() == "/" and self.peek(1) == "/")

    def skip_comment(self) -> None:
        while self.peek() and self.peek() not in "\r\n":
            self.pos += 1

    def skip_blank(self) -> None:
        """Whitespace, new lines and comments."""
        while True:
            self.skip(" \t\r\n")
            if not self.comment_here():
                return
            self.skip_comment()

    # -- structure -----------------------------------------------------------------

    def parse(self) -> dict[str, Value]:
        result: dict[str, Value] = {}
        self.scopes.append(result)
        while True:
            self.skip_blank()
            # A top-level "{ ... }" wrapper and stray terminators are ignored, as nats-server does.
            if self.peek() in ("{", "}", ",", ";") and self.peek():
                self.pos += 1
                continue
            if not self.peek():
                return result
            self.entry(result, top=True)

    def entry(self, target: dict[str, Value], *, top: bool) -> None:
        key, keyword = self.key()
        if keyword:
            self.include(target)
        else:
            self.skip(" \t\r\n")  # nats-server allows new lines between key and separator
            if self.peek() in (":", "="):
                self.pos += 1
            target[key] = self.value()
        self.value_end(top=top)

    def key(self) -> tuple[str, bool]:
        quote = self.peek()
        if quote in ('"', "'"):
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.error("unterminated quoted key")
            key = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return key, False
        if quote in (":", "="):
            raise self.error("unexpected key separator")
        start = self.pos
        while self.peek() and self.peek() not in " \t\r\n:=":
            self.pos += 1
        key = self.text[start : self.pos]
        keyword = key.lower() == "include" and self.peek() in (" ", "\t")
        return key, keyword

    def value_end(self, *, top: bool) -> None:
        self.skip(" \t")
        if self.comment_here():
            self.skip_comment()
        char = self.peek()
        if char in ("", "\n", "\r", ";", ","):
            if char:
                self.pos += 1
            return
        if char == "}":
            if top:
                self.pos += 1
            return  # a map's closing brace is consumed by the map
        raise self.error("expected a new line, ',' or ';' after a value")

    def include(self, target: dict[str, Value]) -> None:
        self.skip(" \t")
        quote = self.peek()
        if quote in ('"', "'"):
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.error("unterminated include path")
            name = self.text[self.pos + 1 : end]
            self.pos = end + 1
        else:
            start = self.pos
            while self.peek() and self.peek() not in " \t\r\n;}'":
                self.pos += 1
            name = self.text[start : self.pos]
        if not name:
            raise self.error("include without a path")
        if self.depth >= _MAX_INCLUDE_DEPTH:
            raise self.error("includes nested too deeply")
        file = self.path.parent / name
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise self.error(f"cannot read include {name}: {type(exc).__name__}") from None
        included = _Parser(text, file, self.environ, self.depth + 1)
        included.scopes = [*self.scopes]
        target.update(included.parse())

    def value(self) -> Value:
        self.skip(" \t")
        char = self.peek()
        if char == "[":
            self.pos += 1
            return self.array()
        if char == "{":
            self.pos += 1
            return self.mapping()
        if char == '"':
            self.pos += 1
            return self.double_quoted()
        if char == "'":
            end = self.text.find("'", self.pos + 1)
            if end < 0:
                raise self.error("unterminated string")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        if char == "(":
            return self.block()
        if char in ("", "\n", "\r"):
            raise self.error("expected a value")
        return self.bare()

    def array(self) -> list[Value]:
        items: list[Value] = []
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.pos += 1
                return items
            if not self.peek():
                raise self.error("unterminated array")
            items.append(self.value())
            self.skip(" \t")
            if self.comment_here():
                self.skip_comment()
            char = self.peek()
            if char in (",", "\n", "\r"):
                self.pos += 1
            elif char == "]":
                self.pos += 1
                return items
            else:
                raise self.error("expected ',' or ']' in an array")

    def mapping(self) -> dict[str, Value]:
        result: dict[str, Value] = {}
        self.scopes.append(result)
        try:
            while True:
                self.skip_blank()
                if self.peek() == "}":
                    self.pos += 1
                    return result
                if self.peek() in (",", ";"):
                    self.pos += 1
                    continue
                if not self.peek():
                    raise self.error("unterminated map")
                self.entry(result, top=False)
        finally:
            self.scopes.pop()

    def double_quoted(self) -> str:
        parts: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.error("unterminated string")
            self.pos += 1
            if char == '"':
                return "".join(parts)
            parts.append(self.escape() if char == "\\" else char)

    def escape(self) -> str:
        char = self.peek()
        self.pos += 1
        simple = {"t": "\t", "n": "\n", "r": "\r", '"': '"', "\\": "\\"}
        if char in simple:
            return simple[char]
        if char == "x":
            digits = self.text[self.pos : self.pos + 2]
            self.pos += 2
            try:
                return bytes.fromhex(digits).decode("latin-1")
            except ValueError:
                raise self.error("invalid \\x escape") from None
        raise self.error("invalid escape character")

    def block(self) -> str:
        # "(" ... ")" with the ")" alone on its own line.
        match = re.compile(r"\n\)(?=\n|$)").search(self.text, self.pos)
        if match is None:
            raise self.error("unterminated block string")
        value = self.text[self.pos + 1 : match.start()]
        self.pos = match.end()
        return value

    def bare(self) -> Value:
        parts: list[str] = []
        while self.peek() and self.peek() not in _BARE_END:
            char = self.peek()
            self.pos += 1
            parts.append(self.escape() if char == "\\" else char)
        if self.peek() == "'":
            self.pos += 1  # nats-server ends a bare string at a quote and drops the quote
        text = "".join(parts)
        if text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        if text.startswith("$"):
            return self.variable(text[1:])
        return _number(text)

    def variable(self, name: str) -> Value:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in self.environ:
            return _number(self.environ[name])
        raise self.error(f"variable reference ${name} can not be found")


def _number(text: str) -> Value:
    if _INTEGER.fullmatch(text):
        digits = text.rstrip("kKmMgGbB")
        suffix = text[len(digits) :].lower()
        return int(digits) * _SUFFIX.get(suffix, 1)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text
