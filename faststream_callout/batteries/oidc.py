"""Bearer JWT / OIDC access tokens, verified against the issuer's JWKS.

The client sends an access token from your identity provider as its NATS token
(or password); :class:`OIDCLookup` verifies it with PyJWT against the keys the
issuer publishes, checks issuer, audience, expiry and the algorithm allow-list,
and maps claims to an :class:`~faststream_callout.Identity`. Needs the ``oidc``
extra (``pip install faststream-callout[oidc]``: PyJWT, cryptography and httpx).

Keys (:class:`JWKSCache`) are fetched with httpx without blocking the event loop
(https only, plain http to localhost only, never redirected from https to http), with a
timeout and a size limit, cached for a TTL, refetched when a token names an unknown ``kid`` (at
most once per ``min_refresh_interval``, so tokens with random ``kid`` s cannot
hammer the provider), one fetch at a time however many logins wait for it. If
no keys can be had, logins are denied (fail closed); keys already fetched stay
usable for ``stale_if_error`` seconds past their TTL while the provider is down.

Only asymmetric algorithms are accepted. ``none`` and the HMAC algorithms are
refused outright: with keys from a JWKS, an ``HS256`` token "signed" with a
public key is the classic key-confusion forgery. Each key is bound to one
algorithm family (RSA to ``RS*``/``PS*``, P-256 to ``ES256`` ...); a JWK's own
``alg`` must match the token's.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from faststream_callout.batteries._common import EXPIRES_AT, extra_missing, logger
from faststream_callout.batteries.compose import NotApplicable
from faststream_callout.core.errors import CalloutError, ConfigurationError, Denied
from faststream_callout.core.policy import Identity
from faststream_callout.protocol.claims import AuthorizationRequest

try:
    import jwt as pyjwt
    from jwt.algorithms import has_crypto

    if not has_crypto:
        raise ImportError("cryptography is not installed", name="cryptography")
    from faststream_callout.batteries._http import FetchError, check_url, http_get
except ImportError as _error:
    raise extra_missing("oidc", "faststream_callout.batteries.oidc", _error) from _error

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "Fetch",
    "JWKSCache",
    "KeysUnavailableError",
    "OIDCLookup",
    "TokenSource",
]

#: Every algorithm OIDCLookup can verify. Symmetric (HS*) and ``none`` are never accepted.
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: The default allow-list: what identity providers sign access tokens with.
DEFAULT_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "EdDSA")

#: Fetches a URL and returns the body of a 200 response; raise on anything else.
Fetch = Callable[[str], Awaitable[bytes]]
TokenSource = Literal["token", "password", "jwt"]

_MAX_KEYS: Final = 100
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class KeysUnavailableError(CalloutError):
    """No key set fresh enough to verify with: never fetched, or stale past ``stale_if_error``."""


def _compatible(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether the key type can verify ``alg`` at all (the algorithm family binding)."""
    kty = jwk.get("kty")
    if alg.startswith(("RS", "PS")):
        return kty == "RSA"
    if alg in _CURVES:
        return kty == "EC" and jwk.get("crv") == _CURVES[alg]
    if alg == "EdDSA":
        return kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448")
    return False


def _parse_jwks(body: bytes) -> tuple[Mapping[str, Any], ...]:
    """The usable public signature keys of a JWKS document."""
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")  # noqa: TRY004 - one except path
    keys: list[Mapping[str, Any]] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            continue
        if _PRIVATE_MEMBERS & jwk.keys():
            # A published private or symmetric key: anyone could sign with it.
            logger.error("JWKS key #%d holds private or symmetric key material: ignored", index)
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        if "kid" in jwk and not isinstance(jwk["kid"], str):
            continue
        keys.append(MappingProxyType(dict(jwk)))
        if len(keys) >= _MAX_KEYS:
            logger.warning("JWKS has more than %d signature keys; the rest are ignored", _MAX_KEYS)
            break
    return tuple(keys)


class _SingleFlight:
    """One refresh at a time, and none sooner than ``min_interval`` after the last start."""

    __slots__ = ("_clock", "_last_start", "_task", "min_interval")

    def __init__(self, min_interval: float, clock: Callable[[], float]) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._task: asyncio.Task[bool] | None = None
        self._last_start: float | None = None

    async def run(self, work: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
        """Join the running refresh or start one; ``False`` when rate-limited or failed."""
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            now = self._clock()
            if self._last_start is not None and now - self._last_start < self.min_interval:
                return False
            self._last_start = now
            task = self._task = asyncio.ensure_future(work())
        # Shielded: a login giving up (its deadline) must not cancel it for the others.
        return await asyncio.shield(task)


@dataclass(slots=True)
class _KeySet:
    keys: tuple[Mapping[str, Any], ...]
    fetched_at: float
    built: dict[tuple[int, str], pyjwt.PyJWK | None] = field(default_factory=dict)


class JWKSCache:
    """The signing keys of an issuer, fetched from its ``jwks_uri`` and cached.

    Args:
        url: the JWKS URL; https (plain http only to localhost).
        ttl: seconds a fetched key set is used before it is refetched.
        min_refresh_interval: the least time between two fetches, whatever
            happens (unknown ``kid`` s, failures).
        timeout: seconds one fetch may take, all included.
        stale_if_error: seconds past ``ttl`` a key set stays usable while
            refetching fails; 0 to deny as soon as it is stale.
        max_bytes: the largest JWKS document accepted.
        fetch: an ``async (url) -> bytes`` used instead of the built-in httpx fetch
            (proxies, custom TLS, an existing HTTP session).
        ssl_context: TLS settings for the built-in fetch (a private CA).
        clock: monotonic seconds; injectable for tests.

    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        timeout: float = 1.0,
        stale_if_error: float = 600.0,
        max_bytes: int = 256 * 1024,
        fetch: Fetch | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self.url = check_url(url, what="jwks_uri")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if ttl <= 0 or timeout <= 0 or min_refresh_interval < 0 or stale_if_error < 0:
            raise ConfigurationError("ttl and timeout must be positive, the others >= 0")
        self.ttl = ttl
        self.timeout = timeout
        self.stale_if_error = stale_if_error
        self.max_bytes = max_bytes
        self._fetch = fetch
        self._ssl_context = ssl_context
        self._clock = clock
        self._set: _KeySet | None = None
        self._flight = _SingleFlight(min_refresh_interval, clock)
        self.fetches = 0  # fetch attempts, for monitoring and tests

    @property
    def key_ids(self) -> list[str]:
        """The ``kid`` s of the cached keys (empty before the first fetch)."""
        current = self._set
        return [str(k.get("kid", "")) for k in current.keys] if current else []

    async def refresh(self) -> bool:
        """Fetch the keys now (unless rate-limited); whether a fresh set was stored.

        Call it at start-up (``on_startup``) so the first login does not wait.
        """
        return await self._flight.run(self._fetch_and_store)

    async def candidates(self, kid: str | None, alg: str) -> list[pyjwt.PyJWK]:
        """The keys that may have signed a token with this ``kid`` and ``alg``.

        Raises:
            KeysUnavailableError: no key set is fresh enough to use.

        """
        current = self._set
        if current is None or self._clock() - current.fetched_at >= self.ttl:
            await self.refresh()
            current = self._set
            if current is None or self._clock() - current.fetched_at >= (
                self.ttl + self.stale_if_error
            ):
                raise KeysUnavailableError
        found = self._match(current, kid, alg)
        if not found and await self.refresh() and self._set is not None:
            found = self._match(self._set, kid, alg)  # a rotated key, newly published
        return found

    def _match(self, keyset: _KeySet, kid: str | None, alg: str) -> list[pyjwt.PyJWK]:
        found: list[pyjwt.PyJWK] = []
        for index, jwk in enumerate(keyset.keys):
            if kid is not None and jwk.get("kid") != kid:
                continue
            if "alg" in jwk and jwk["alg"] != alg:
                continue
            if not _compatible(jwk, alg):
                continue
            slot = (index, alg)
            if slot not in keyset.built:
                try:
                    keyset.built[slot] = pyjwt.PyJWK(dict(jwk), algorithm=alg)
                except (pyjwt.PyJWKError, pyjwt.InvalidKeyError, ValueError, TypeError):
                    logger.warning("JWKS key #%d cannot be used for %s: ignored", index, alg)
                    keyset.built[slot] = None
            built = keyset.built[slot]
            if built is not None:
                found.append(built)
        return found

    async def _fetch_and_store(self) -> bool:
        self.fetches += 1
        try:
            async with asyncio.timeout(self.timeout):
                if self._fetch is not None:
                    body = await self._fetch(self.url)
                else:
                    body = await http_get(
                        self.url, max_bytes=self.max_bytes, ssl_context=self._ssl_context
                    )
            if len(body) > self.max_bytes:
                raise FetchError(f"response exceeds the {self.max_bytes}-byte limit")
            keys = _parse_jwks(body)
        except TimeoutError:
            logger.warning("JWKS fetch from %s timed out after %.1fs", self.url, self.timeout)
            return False
        except (FetchError, ValueError) as exc:
            logger.warning("JWKS fetch from %s failed: %s", self.url, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a custom fetch may raise anything; deny, log
            logger.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
            return False
        self._set = _KeySet(keys, self._clock())
        logger.info("JWKS from %s: %d signature key(s)", self.url, len(keys))
        return True

    def __repr__(self) -> str:
        return f"JWKSCache({self.url!r}, {len(self.key_ids)} keys, ttl={self.ttl})"


def _claim(claims: Mapping[str, Any], path: str) -> object:
    """A claim by name, or by a dotted path into nested objects (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: object) -> list[str]:
    """A claim as a list of strings: a space-separated string or a list of strings."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str) and item]
    return []


_REASONS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (pyjwt.ExpiredSignatureError, "token expired"),
    (pyjwt.ImmatureSignatureError, "token not yet valid"),
    (pyjwt.InvalidAudienceError, "token audience not accepted"),
    (pyjwt.InvalidIssuerError, "token issuer not accepted"),
    (pyjwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (pyjwt.InvalidKeyError, "token signing key not accepted"),
    (pyjwt.InvalidIssuedAtError, "token issued-at is invalid"),
    (pyjwt.DecodeError, "malformed token"),
)


class OIDCLookup:
    """An :class:`~faststream_callout.IdentityLookup` for bearer JWT / OIDC access tokens.

    Example:
        ``OIDCLookup(issuer="https://idp.example.com/realms/app", audience="nats")``
        discovers the JWKS from ``/.well-known/openid-configuration``; pass
        ``jwks_uri=`` to skip discovery.

    The identity is named by ``name_claim`` (``sub``), its groups come from
    ``groups_claims``, and its attributes hold ``expires_at`` (the token's
    ``exp``: grants must not outlive the token), ``issuer``, ``subject``,
    ``scopes``, ``claims`` (all verified claims) and the ``attribute_claims``.

    Args:
        issuer: the exact ``iss`` tokens must carry (and the discovery base URL).
        audience: the ``aud`` (or one of several) tokens must be for. Required:
            a token minted for another application must not open NATS.
        jwks_uri: the JWKS URL; ``None`` discovers it from the issuer.
        jwks: a ready :class:`JWKSCache`, instead of ``jwks_uri``.
        algorithms: the allowed ``alg`` s, asymmetric only.
        sources: where the client puts the token, tried in order: ``"token"``
            (``auth_token``), ``"password"`` (``pass``), ``"jwt"``.
        password_user: with the ``"password"`` source, only a CONNECT ``user``
            equal to this is taken as carrying a token (``None``: any user).
        leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        name_claim: the claim naming the identity.
        groups_claims: claims (or dotted paths) with the identity's groups:
            lists of strings or space-separated strings (``scope``).
        attribute_claims: identity attribute -> claim (or dotted path).
        required_claims: claims that must be present besides ``exp``, ``iss``, ``aud``.
        required_scopes: scopes (``scope``/``scp``) the token must all carry.
        token_types: accepted ``typ`` headers (e.g. ``{"at+jwt"}`` for RFC 9068
            access tokens); ``None`` accepts any.
        check: a last check on the verified claims, returning a denial reason or ``None``.
        max_token_bytes: larger tokens are refused unparsed.
        timeout: for discovery and the :class:`JWKSCache` built here, as are the next five.
        jwks_ttl: see :class:`JWKSCache`.
        min_refresh_interval: see :class:`JWKSCache`.
        stale_if_error: see :class:`JWKSCache`.
        fetch: see :class:`JWKSCache`.
        ssl_context: see :class:`JWKSCache`.

    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Collection[str],
        jwks_uri: str | None = None,
        jwks: JWKSCache | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        sources: Sequence[TokenSource] = ("token",),
        password_user: str | None = None,
        leeway: float = 10.0,
        name_claim: str = "sub",
        groups_claims: Sequence[str] = ("groups",),
        attribute_claims: Mapping[str, str] | None = None,
        required_claims: Collection[str] = (),
        required_scopes: Collection[str] = (),
        token_types: Collection[str] | None = None,
        check: Callable[[Mapping[str, Any]], str | None] | None = None,
        max_token_bytes: int = 16 * 1024,
        timeout: float = 1.0,
        jwks_ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        stale_if_error: float = 600.0,
        fetch: Fetch | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not issuer:
            raise ConfigurationError("issuer is required")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ConfigurationError("audience is required: the aud your tokens are minted for")
        allowed = list(algorithms)
        refused = [a for a in allowed if a not in ASYMMETRIC_ALGORITHMS]
        if refused or not allowed:
            raise ConfigurationError(
                f"algorithms {refused or allowed} not allowed: only asymmetric algorithms "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); 'none' and HS* never, since "
                "keys from a JWKS are public"
            )
        if not sources or not set(sources) <= {"token", "password", "jwt"}:
            raise ConfigurationError("sources must be some of 'token', 'password', 'jwt'")
        if isinstance(groups_claims, str):
            groups_claims = (groups_claims,)
        if leeway < 0 or leeway > 300:
            raise ConfigurationError("leeway must be between 0 and 300 seconds")
        if jwks is not None and jwks_uri is not None:
            raise ConfigurationError("give jwks_uri or jwks, not both")
        cache_options: dict[str, Any] = {
            "ttl": jwks_ttl,
            "min_refresh_interval": min_refresh_interval,
            "timeout": timeout,
            "stale_if_error": stale_if_error,
            "fetch": fetch,
            "ssl_context": ssl_context,
        }
        if jwks is None and jwks_uri is not None:
            jwks = JWKSCache(jwks_uri, **cache_options)
        if jwks is None:
            try:
                check_url(issuer, what="issuer (for discovery)")
            except ValueError as exc:
                raise ConfigurationError(f"{exc}; or pass jwks_uri") from None
        self.issuer = issuer
        self.audience = tuple(audiences)
        self.algorithms = tuple(allowed)
        self.sources = tuple(sources)
        self.password_user = password_user
        self.leeway = leeway
        self.name_claim = name_claim
        self.groups_claims = tuple(groups_claims)
        self.attribute_claims = dict(attribute_claims or {})
        self.required_scopes = frozenset(required_scopes)
        self.token_types = None if token_types is None else frozenset(_typ(t) for t in token_types)
        self.max_token_bytes = max_token_bytes
        self._check = check
        self._require = list(dict.fromkeys(["exp", "iss", "aud", *required_claims]))
        self._jwks = jwks
        self._cache_options = cache_options
        self._discovery = _SingleFlight(min_refresh_interval, time.monotonic)
        self._timeout = timeout
        self._fetch = fetch
        self._ssl_context = ssl_context

    @property
    def jwks(self) -> JWKSCache | None:
        """The key cache (``None`` until discovery has found the ``jwks_uri``)."""
        return self._jwks

    async def prefetch(self) -> bool:
        """Discover (if needed) and fetch the keys now; whether keys are available.

        Use as a start-up hook so the first logins do not wait for the provider.
        """
        jwks = await self._keys()
        return jwks is not None and (bool(jwks.key_ids) or await jwks.refresh())

    # -- the lookup -------------------------------------------------------------------

    def _token(self, request: AuthorizationRequest) -> str | None:
        opts = request.connect_opts
        for source in self.sources:
            if source == "token" and opts.auth_token:
                return opts.auth_token
            if source == "jwt" and opts.jwt:
                return opts.jwt
            if (
                source == "password"
                and opts.password
                and (self.password_user is None or opts.user == self.password_user)
            ):
                return opts.password
        return None

    async def lookup(self, request: AuthorizationRequest) -> Identity:
        """Verify the presented token and map its claims to an identity."""
        token = self._token(request)
        if token is None:
            raise NotApplicable("no bearer token presented")
        if len(token) > self.max_token_bytes:
            raise Denied("token too large")
        if not _COMPACT_JWS.fullmatch(token):
            raise NotApplicable("credential is not a JWT")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.DecodeError:
            raise NotApplicable("credential is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Denied("token algorithm not allowed")
        if self.token_types is not None and _typ(header.get("typ")) not in self.token_types:
            raise Denied("token type not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Denied("malformed token")
        claims = await self._verify(token, kid, alg)
        return self._identity(claims)

    async def _verify(self, token: str, kid: str | None, alg: str) -> dict[str, Any]:
        jwks = await self._keys()
        if jwks is None:
            raise Denied("identity provider keys unavailable")
        try:
            keys = await jwks.candidates(kid, alg)
        except KeysUnavailableError:
            raise Denied("identity provider keys unavailable") from None
        if not keys:
            raise Denied("token signed by an unknown key")
        for key in keys:
            try:
                claims: dict[str, Any] = pyjwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=list(self.audience),
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={
                        "require": self._require,
                        "verify_signature": True,
                        "verify_exp": True,
                        "verify_nbf": True,
                        "verify_iat": True,
                        "verify_aud": True,
                        "verify_iss": True,
                        "enforce_minimum_key_length": True,
                    },
                )
            except pyjwt.InvalidSignatureError:
                continue  # without a kid several keys may fit: try the next
            except pyjwt.MissingRequiredClaimError as exc:
                raise Denied(f"token lacks the {exc.claim!r} claim") from None
            except pyjwt.PyJWTError as exc:
                raise Denied(_reason(exc)) from None
            return claims
        raise Denied("token signature invalid")

    def _identity(self, claims: dict[str, Any]) -> Identity:
        scopes = frozenset(_strings(claims.get("scope")) + _strings(claims.get("scp")))
        if not self.required_scopes <= scopes:
            raise Denied("token lacks a required scope")
        if self._check is not None:
            problem = self._check(MappingProxyType(claims))
            if problem:
                raise Denied(problem)
        name = _claim(claims, self.name_claim)
        if not isinstance(name, str) or not name:
            raise Denied(f"token has no usable {self.name_claim!r} claim")
        groups = frozenset(
            group for path in self.groups_claims for group in _strings(_claim(claims, path))
        )
        attributes: dict[str, object] = {
            EXPIRES_AT: float(claims["exp"]),
            "issuer": claims.get("iss"),
            "subject": claims.get("sub"),
            "scopes": scopes,
            "claims": MappingProxyType(claims),
        }
        for attribute, path in self.attribute_claims.items():
            value = _claim(claims, path)
            if value is not None:
                attributes[attribute] = value
        return Identity(name, groups, MappingProxyType(attributes))

    async def _keys(self) -> JWKSCache | None:
        if self._jwks is None:
            await self._discovery.run(self._discover)
        return self._jwks

    async def _discover(self) -> bool:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with asyncio.timeout(self._timeout):
                if self._fetch is not None:
                    body = await self._fetch(url)
                else:
                    body = await http_get(url, max_bytes=64 * 1024, ssl_context=self._ssl_context)
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")  # noqa: TRY004 - one except path
            if document.get("issuer") != self.issuer:
                # OpenID Connect Discovery 4.3: it must be exactly our issuer.
                raise ValueError("its issuer is not the configured issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("it has no jwks_uri")  # noqa: TRY004 - one except path
            self._jwks = JWKSCache(jwks_uri, **self._cache_options)
        except TimeoutError:
            logger.warning("OIDC discovery at %s timed out", url)
            return False
        except (FetchError, ValueError, ConfigurationError) as exc:
            logger.warning("OIDC discovery at %s failed: %s", url, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a custom fetch may raise anything
            logger.warning("OIDC discovery at %s failed: %s", url, type(exc).__name__)
            return False
        logger.info("OIDC discovery: %s publishes its keys at %s", self.issuer, jwks_uri)
        return True

    def __repr__(self) -> str:
        return (
            f"OIDCLookup(issuer={self.issuer!r}, audience={list(self.audience)!r}, "
            f"algorithms={list(self.algorithms)!r}, sources={list(self.sources)!r})"
        )


def _typ(value: object) -> str:
    # RFC 8725 3.11: compare media types case-insensitively, "application/" optional.
    text = value.lower() if isinstance(value, str) else ""
    return text.removeprefix("application/")


def _reason(error: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "invalid token"
