"""A static table of users (password hashes) and tokens (SHA-256 digests).

For development and small deployments. The table never holds a plaintext
secret: passwords are stored as argon2id (or bcrypt) hashes, tokens as the
SHA-256 of the token. Needs the ``table`` extra
(``pip install faststream-callout[table]``).

File format (TOML; JSON with the same shape works too)::

    [users.alice]
    # python -m faststream_callout.batteries.table hash-password
    password = "$argon2id$v=19$m=65536,t=3,p=4$..."
    groups = ["chat", "admin"]
    attributes = { tenant = "acme" }

    [tokens.sensor-1]                                  # the identity's name
    sha256 = "9f2c..."                                 # or a list, to rotate tokens
    groups = ["telemetry"]

Security properties:

- Password checks run argon2/bcrypt in a small dedicated thread pool, off the
  event loop, with bounded concurrency (argon2 uses tens of MiB per check).
  The pool serves sources in turn (the throttle's source: a network), sources
  that logged the user in recently first, and holds a bounded queue: when it
  is full the newest check of the source with the most waiting is refused at
  once (``Throttled``, a signed denial), so a flood from one network neither
  times out everyone's logins nor delays other networks' for long.
- An unknown user costs the same as a wrong password: the password is checked
  against a dummy hash with the parameters of the slowest kind of hash in the
  table, so response times do not tell which users exist. Keep all hashes on
  the same scheme and parameters: a table that mixes them is logged (a user on
  a faster kind is recognisable by its response time).
- Names are matched folded (:func:`~faststream_callout.core.throttle.fold_name`:
  ``Alice``, ``ALICE`` and ``alice`` with a zero-width space are one user), the
  way the throttle counts them, so spelling variants share one budget.
- Tokens are compared by digest with :func:`hmac.compare_digest`. Tokens must
  be high-entropy (use :func:`new_token`): a fast hash protects random tokens,
  not guessable ones.
- Denial reasons and reprs never contain a password, token or hash.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from faststream_callout.batteries._common import (
    attributes_of,
    check_keys,
    extra_missing,
    load_document,
    logger,
    str_set,
)
from faststream_callout.batteries._pool import FairPool
from faststream_callout.batteries.compose import NotApplicable
from faststream_callout.core.errors import ConfigurationError, Denied
from faststream_callout.core.policy import Identity
from faststream_callout.core.throttle import fold_name, source_of
from faststream_callout.core.throttle_gate import admitted_attempt
from faststream_callout.protocol.claims import AuthorizationRequest

try:
    import argon2
    import argon2.exceptions
    import bcrypt
except ImportError as _error:  # pragma: no cover - exercised by a test with the extra hidden
    raise extra_missing("table", "faststream_callout.batteries.table", _error) from _error

__all__ = [
    "StaticTable",
    "TableToken",
    "TableUser",
    "hash_password",
    "hash_token",
    "main",
    "new_token",
]

PasswordScheme = Literal["argon2id", "bcrypt"]

_BCRYPT: Final = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_BCRYPT_MAX_BYTES: Final = 72
_USER_KEYS: Final = ("password", "groups", "attributes", "disabled")
_TOKEN_KEYS: Final = ("sha256", "groups", "attributes", "disabled")
# OWASP's floor for argon2id (19 MiB, t=2) and bcrypt (cost 10): warn below it.
_ARGON2_MIN_MEMORY_KIB: Final = 19 * 1024
_BCRYPT_MIN_COST: Final = 10


def hash_password(password: str, *, scheme: PasswordScheme = "argon2id") -> str:
    """Hash a password for the table: argon2id (RFC 9106 defaults) or bcrypt (cost 12).

    Raises:
        ValueError: an empty password, or one longer than bcrypt's 72 bytes with ``bcrypt``.

    """
    if not password:
        raise ValueError("the password must not be empty")
    if scheme == "argon2id":
        return argon2.PasswordHasher().hash(password)
    if scheme == "bcrypt":
        raw = password.encode("utf-8")
        if len(raw) > _BCRYPT_MAX_BYTES:
            raise ValueError("bcrypt uses only the first 72 bytes of a password; use argon2id")
        return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=12)).decode("ascii")
    raise ValueError("scheme must be 'argon2id' or 'bcrypt'")


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of ``token``: what the table stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(nbytes: int = 32) -> tuple[str, str]:
    """A fresh random token (URL-safe, ``nbytes`` of entropy) and its digest for the table."""
    if nbytes < 16:
        raise ValueError("a token needs at least 16 random bytes")
    token = secrets.token_urlsafe(nbytes)
    return token, hash_token(token)


def _hash_kind(password_hash: str) -> str | None:
    """A key naming the scheme and cost parameters of a supported hash, or ``None``."""
    if password_hash.startswith(("$argon2id$", "$argon2i$")):
        try:
            params = argon2.extract_parameters(password_hash)
        except argon2.exceptions.InvalidHashError:
            return None
        return (
            f"argon2:{params.type.name}:{params.version}:{params.time_cost}:"
            f"{params.memory_cost}:{params.parallelism}:{params.hash_len}:{params.salt_len}"
        )
    match = _BCRYPT.fullmatch(password_hash)
    if match is not None:
        return f"bcrypt:{int(match.group(1))}"
    return None


def _describe(kind: str) -> str:
    parts = kind.split(":")
    if parts[0] == "bcrypt":
        return f"bcrypt cost {parts[1]}"
    return f"argon2{parts[1].lower()} t={parts[3]} m={parts[4]} KiB p={parts[5]}"


def _weak(kind: str) -> bool:
    parts = kind.split(":")
    if parts[0] == "argon2":
        return int(parts[4]) < _ARGON2_MIN_MEMORY_KIB or int(parts[3]) < 2
    return int(parts[1]) < _BCRYPT_MIN_COST


def _dummy_hash(kind: str) -> str:
    """A hash of a random password with the cost parameters ``kind`` names."""
    secret = secrets.token_bytes(16)
    parts = kind.split(":")
    if parts[0] == "bcrypt":
        return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=int(parts[1]))).decode("ascii")
    type_, version, time_cost, memory, parallelism, hash_len, salt_len = parts[1:]
    hasher = argon2.PasswordHasher(
        time_cost=int(time_cost),
        memory_cost=int(memory),
        parallelism=int(parallelism),
        hash_len=int(hash_len),
        salt_len=int(salt_len),
        type=argon2.Type[type_],
    )
    del version  # argon2-cffi always writes the current version (0x13)
    return hasher.hash(secret)


_VERIFIER: Final = argon2.PasswordHasher()


def _verify(password_hash: str, password: bytes) -> bool:
    """Check ``password`` against a supported hash (blocking: run it in a thread)."""
    if password_hash.startswith("$argon2"):
        try:
            return _VERIFIER.verify(password_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False
    # bcrypt reads only the first 72 bytes; bcrypt>=5 raises instead of truncating.
    # Truncating keeps hashes made by other bcrypt implementations working.
    return bcrypt.checkpw(password[:_BCRYPT_MAX_BYTES], password_hash.encode("ascii"))


@dataclass(frozen=True, slots=True)
class TableUser:
    """A user who logs in with a password.

    Attributes:
        name: the user name (the CONNECT ``user``) and the identity's name.
        password_hash: an argon2id/argon2i or bcrypt hash (never shown in reprs).
        groups: the identity's groups (roles).
        attributes: the identity's attributes (for templates such as ``{tenant}``).
        disabled: refuse logins without removing the entry.

    """

    name: str
    password_hash: str = field(repr=False)
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, object] = field(default_factory=dict)
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class TableToken:
    """An identity that logs in with a token.

    Attributes:
        name: the identity's name.
        sha256: the SHA-256 hex digests of its valid tokens (several, to rotate).
        groups: the identity's groups (roles).
        attributes: the identity's attributes.
        disabled: refuse logins without removing the entry.

    """

    name: str
    sha256: tuple[str, ...] = field(repr=False)
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, object] = field(default_factory=dict)
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class _Contents:
    users: Mapping[str, TableUser]  # as written
    by_folded: Mapping[str, TableUser]  # fold_name(name) -> entry: what lookups use
    tokens: Mapping[bytes, TableToken]  # raw SHA-256 digest -> entry
    kinds: frozenset[str]  # of the password hashes


def _contents(users: Iterable[TableUser], tokens: Iterable[TableToken]) -> _Contents:
    by_name: dict[str, TableUser] = {}
    by_folded: dict[str, TableUser] = {}
    kinds: Counter[str] = Counter()
    for user in users:
        where = f"users.{user.name}"
        if not user.name:
            raise ConfigurationError("a user has an empty name")
        if user.name in by_name:
            raise ConfigurationError(f"{where}: defined twice")
        folded = fold_name(user.name)
        if not folded:
            raise ConfigurationError(f"{where}: the name has no visible characters")
        if folded in by_folded:
            raise ConfigurationError(
                f"{where}: the same name as users.{by_folded[folded].name} once case and "
                "Unicode variants are folded (logins match names folded)"
            )
        if not isinstance(user.password_hash, str):
            raise ConfigurationError(f"{where}: password must be a hash string")
        kind = _hash_kind(user.password_hash)
        if kind is None:
            # Never echo the value: it may be a plaintext password by mistake.
            raise ConfigurationError(
                f"{where}: password is not an argon2id or bcrypt hash; plaintext passwords "
                "are not accepted (python -m faststream_callout.batteries.table hash-password)"
            )
        if _weak(kind):
            logger.warning("%s: the password hash uses weak cost parameters; rehash it", where)
        kinds[kind] += 1
        by_name[user.name] = user
        by_folded[folded] = user
    by_digest: dict[bytes, TableToken] = {}
    names: set[str] = set()
    for token in tokens:
        where = f"tokens.{token.name}"
        if not token.name:
            raise ConfigurationError("a token has an empty name")
        if token.name in names:
            raise ConfigurationError(f"{where}: defined twice")
        names.add(token.name)
        if not token.sha256:
            raise ConfigurationError(f"{where}: needs at least one sha256 digest")
        for digest in token.sha256:
            if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest.lower()):
                raise ConfigurationError(
                    f"{where}: sha256 must be 64 hex digits (the SHA-256 of the token, "
                    "never the token itself: python -m faststream_callout.batteries.table "
                    "hash-token)"
                )
            raw = bytes.fromhex(digest)
            if raw in by_digest:
                raise ConfigurationError(f"{where}: the same token digest appears twice")
            by_digest[raw] = token
    if len(kinds) > 1:
        mix = ", ".join(
            f"{_describe(kind)} for {count} user{'s' if count > 1 else ''}"
            for kind, count in kinds.most_common()
        )
        logger.warning(
            "the table mixes password hash kinds (%s): response times tell them apart, and "
            "unknown users are checked against the slowest; rehash every password to one kind",
            mix,
        )
    return _Contents(by_name, by_folded, by_digest, frozenset(kinds))


class _Dummy:
    """The hash unknown users are checked against: one of the slowest kind in the table.

    Made in the background (one hash per kind, timed), so neither the table's
    construction nor the first unknown user is slower than the rest; a check
    arriving meanwhile waits for it in its worker thread.
    """

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self.kind: str | None = None
        self._hash = ""
        self._ready = threading.Event()
        if kinds:
            threading.Thread(
                target=self._prepare, name="callout-password-dummy", daemon=True
            ).start()
        else:
            self._ready.set()

    def _prepare(self) -> None:
        try:
            slowest = -1.0
            for kind in sorted(self.kinds):
                started = time.perf_counter()
                dummy = _dummy_hash(kind)  # hashing costs what verifying does
                took = time.perf_counter() - started
                if took > slowest:
                    slowest, self.kind, self._hash = took, kind, dummy
        finally:  # even after a bug: never leave a check waiting
            self._ready.set()

    def check(self, password: bytes) -> bool:
        """Spend what checking ``password`` against the slowest kind costs; always ``False``."""
        self._ready.wait()
        if self._hash:
            _verify(self._hash, password)
        return False


def _entries_from_mapping(
    data: Mapping[str, object], source: str
) -> tuple[list[TableUser], list[TableToken]]:
    check_keys(data, ("users", "tokens"), source)
    users: list[TableUser] = []
    tokens: list[TableToken] = []
    for section, keys in (("users", _USER_KEYS), ("tokens", _TOKEN_KEYS)):
        table = data.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{source}: [{section}] must be a table")
        for name, entry in table.items():
            where = f"{source}: {section}.{name}"
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{where} must be a table")
            check_keys(entry, keys, where)
            groups = str_set(entry.get("groups"), where)
            attributes = attributes_of(entry.get("attributes"), where)
            disabled = entry.get("disabled", False)
            if not isinstance(disabled, bool):
                raise ConfigurationError(f"{where}: disabled must be true or false")
            if section == "users":
                password = entry.get("password")
                if not isinstance(password, str):
                    raise ConfigurationError(f"{where}: needs a password hash")
                users.append(TableUser(str(name), password, groups, attributes, disabled))
            else:
                digests = entry.get("sha256")
                listed = [digests] if isinstance(digests, str) else digests
                if not isinstance(listed, list) or not all(isinstance(d, str) for d in listed):
                    raise ConfigurationError(f"{where}: sha256 must be a string or a list of them")
                tokens.append(
                    TableToken(
                        str(name), tuple(d.lower() for d in listed), groups, attributes, disabled
                    )
                )
    return users, tokens


class StaticTable:
    """An :class:`~faststream_callout.IdentityLookup` over a fixed table of users and tokens.

    A client sending ``auth_token`` is looked up by token; one sending ``user``
    or ``pass`` by user name and password. Unknown users and tokens, and
    clients sending neither, raise :class:`NotApplicable` (so
    :class:`FirstMatch` can ask another lookup); a wrong password or a
    disabled entry raises ``Denied``.

    Example:
        ``PolicyProvider(lookup=StaticTable.from_file("users.toml"), permissions=...)``

    Args:
        users: users with password hashes.
        tokens: identities with token digests.
        hash_workers: threads checking passwords concurrently (default: CPU
            count, at most 4); further checks queue.
        hash_queue: checks that may wait for a thread (default: 4 per thread,
            under a second with argon2's defaults); beyond it checks are shed
            with ``Throttled``, a signed denial, instead of timing out.
        max_password_bytes: longer passwords are refused without hashing.

    """

    def __init__(
        self,
        users: Iterable[TableUser] = (),
        tokens: Iterable[TableToken] = (),
        *,
        hash_workers: int | None = None,
        hash_queue: int | None = None,
        max_password_bytes: int = 1024,
    ) -> None:
        self._contents = _contents(users, tokens)
        self._path: Path | None = None
        workers = hash_workers or min(4, os.cpu_count() or 1)
        if workers < 1:
            raise ValueError("hash_workers must be at least 1")
        queue = 4 * workers if hash_queue is None else hash_queue
        if queue < 0:
            raise ValueError("hash_queue must not be negative")
        self._workers = workers
        self._queue = queue
        self._hash_pool: FairPool | None = None
        self._pool_lock = threading.Lock()
        self._dummy = _Dummy(self._contents.kinds)
        self.max_password_bytes = max_password_bytes

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, source: str = "table", **options: int
    ) -> StaticTable:
        """Build from a mapping shaped like the file (``{"users": {...}, "tokens": {...}}``)."""
        users, tokens = _entries_from_mapping(data, source)
        try:
            return cls(users, tokens, **options)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path, **options: int) -> StaticTable:
        """Load the table from a TOML (``.toml``) or JSON (``.json``) file.

        Raises:
            ConfigurationError: the file is unreadable or an entry is invalid; the
                message names the entry, never a secret.

        """
        table = cls.from_mapping(load_document(path), source=str(path), **options)
        table._path = Path(path)  # noqa: SLF001 - our own class
        return table

    def reload(self) -> None:
        """Re-read the file given to :meth:`from_file`; on error the old table stays."""
        if self._path is None:
            raise RuntimeError("reload() needs a table loaded with from_file()")
        users, tokens = _entries_from_mapping(load_document(self._path), str(self._path))
        try:
            contents = _contents(users, tokens)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self._path}: {exc}") from None
        self._contents = contents  # one assignment: lookups see the old or the new table
        if contents.kinds != self._dummy.kinds:
            self._dummy = _Dummy(contents.kinds)

    @property
    def users(self) -> Mapping[str, TableUser]:
        """The users by name."""
        return self._contents.users

    @property
    def token_count(self) -> int:
        """How many token digests the table holds."""
        return len(self._contents.tokens)

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """Identify the client by token or by user name and password."""
        opts = request.connect_opts
        if opts.auth_token:
            return self._by_token(opts.auth_token)
        if opts.user or opts.password:
            return await self._by_password(opts.user, opts.password, request.client_info.host)
        raise NotApplicable("no user/password or token presented")

    def _by_token(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        # The dict is keyed by the digest of a secret the attacker does not know:
        # its timing can only tell them about digests of their own guesses.
        entry = self._contents.tokens.get(digest)
        matched = entry is not None and any(
            hmac.compare_digest(bytes.fromhex(known), digest) for known in entry.sha256
        )
        if entry is None or not matched:
            raise NotApplicable("unknown token")
        if entry.disabled:
            raise Denied("token identity is disabled")
        return Identity(entry.name, entry.groups, MappingProxyType(dict(entry.attributes)))

    async def _by_password(self, user: str, password: str, host: str) -> Identity:
        raw = password.encode("utf-8", "surrogatepass")
        if len(raw) > self.max_password_bytes:
            raise Denied("password too long")
        contents = self._contents
        entry = contents.by_folded.get(fold_name(user))
        if entry is None:
            if contents.kinds:
                # Spend what a real check costs, so timing does not reveal who exists.
                await self._check(functools.partial(self._dummy.check, raw), host)
            raise NotApplicable("unknown user")
        if not await self._check(functools.partial(_verify, entry.password_hash, raw), host):
            raise Denied("wrong password")
        if entry.disabled:
            raise Denied("user is disabled")
        return Identity(entry.name, entry.groups, MappingProxyType(dict(entry.attributes)))

    def _pool(self) -> FairPool:
        with self._pool_lock:
            if self._hash_pool is None:
                self._hash_pool = FairPool(self._workers, self._queue, name="callout-password")
            return self._hash_pool

    async def _check(self, check: Callable[[], bool], host: str) -> bool:
        # Queued by the throttle's source when a throttle admitted the attempt.
        admitted = admitted_attempt()
        if admitted is None:
            return await self._pool().run(check, source=source_of(host))
        return await self._pool().run(
            check, source=admitted.attempt.source, trusted=admitted.trusted
        )

    def close(self) -> None:
        """Stop the password-checking threads (they also stop at interpreter exit)."""
        pool, self._hash_pool = self._hash_pool, None
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        source = f", from {str(self._path)!r}" if self._path else ""
        return f"StaticTable({len(self.users)} users, {self.token_count} tokens{source})"


# -- command line: hashes for the file ----------------------------------------------


def _read_secret(prompt: str, *, confirm: bool) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != first:
        raise SystemExit("the two entries differ")
    return first


def main(argv: list[str] | None = None) -> int:
    """``python -m faststream_callout.batteries.table {hash-password,hash-token,new-token}``.

    Secrets are read from the terminal without echo (or one line of stdin),
    never from the command line, where other users could see them.
    """
    parser = argparse.ArgumentParser(
        prog="python -m faststream_callout.batteries.table",
        description="Make entries for a StaticTable file.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser("hash-password", help="print the hash of a password")
    hashing.add_argument("--scheme", choices=["argon2id", "bcrypt"], default="argon2id")
    commands.add_parser("hash-token", help="print the sha256 of an existing token")
    commands.add_parser("new-token", help="print a new random token and its sha256")
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.command == "hash-password":
        password = _read_secret("password: ", confirm=True)
        try:
            out.write(hash_password(password, scheme=args.scheme) + "\n")
        except ValueError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
    elif args.command == "hash-token":
        token = _read_secret("token: ", confirm=False)
        if not token:
            sys.stderr.write("error: empty token\n")
            return 2
        out.write(hash_token(token) + "\n")
    else:
        token, digest = new_token()
        out.write(f"token:  {token}\nsha256: {digest}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
