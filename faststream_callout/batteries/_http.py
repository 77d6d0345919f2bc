"""GET a JWKS or OIDC discovery document with httpx, under the rules keys are fetched by.

https only (plain http to loopback hosts only), never redirected from https to http
nor to a URL those rules refuse, at most ``max_bytes`` of body, no compression, no
proxies or ``.netrc`` from the environment (pass your own ``fetch`` callable to
:class:`~faststream_callout.batteries.oidc.JWKSCache` for those). It runs on the event
loop: the caller's ``asyncio.timeout`` bounds the whole exchange (connect, TLS,
headers, body), and cancelling it stops the fetch.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

__all__ = ["FetchError", "check_url", "http_get", "is_loopback"]

_MAX_REDIRECTS: Final = 3
_USER_AGENT: Final = "faststream-callout"


class FetchError(Exception):
    """A document could not be fetched; the message is safe to log."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, what: str) -> str:
    """Refuse URLs that are not https (plain http only to loopback) or are malformed.

    Keys fetched over plain http from another host could be swapped by anyone
    on the path, who could then sign tokens.
    """
    if not isinstance(url, str) or any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{what} must be a URL without whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an https:// URL")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not carry credentials")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{what} must use https (plain http is allowed only to localhost)")
    return url


async def http_get(
    url: str,
    *,
    max_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
    accept: str = "application/json",
) -> bytes:
    """GET ``url`` and return the body of a 200 response.

    Bound the time with ``asyncio.timeout`` around the call.

    Raises:
        FetchError: anything but a 200 with a body of at most ``max_bytes``.

    """
    # The system's trust store, as ssl's own default; httpx's would be certifi's.
    verify = ssl_context or ssl.create_default_context()
    headers = {"User-Agent": _USER_AGENT, "Accept": accept, "Accept-Encoding": "identity"}
    async with httpx.AsyncClient(
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        timeout=None,  # noqa: S113 - the caller's asyncio.timeout bounds the whole fetch
        headers=headers,
    ) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            location = await _get_once(client, url, max_bytes)
            if isinstance(location, bytes):
                return location
            target = urljoin(url, location)
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                raise FetchError("redirect from https to http refused")
            try:
                url = check_url(target, what="redirect target")
            except ValueError as exc:
                raise FetchError(str(exc)) from None
    raise FetchError("too many redirects")


async def _get_once(client: httpx.AsyncClient, url: str, max_bytes: int) -> bytes | str:
    """The body of a 200 response, or the ``Location`` of a redirect."""
    where = _host_port(url)
    try:
        async with client.stream("GET", url) as response:
            status = response.status_code
            if response.is_redirect and response.headers.get("location"):
                return response.headers["location"]
            if status != 200:
                raise FetchError(f"HTTP status {status}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise FetchError("compressed response refused (identity was asked for)")
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"response of {length} bytes exceeds the {max_bytes}-byte limit")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"response exceeds the {max_bytes}-byte limit")
            return bytes(body)
    except httpx.ConnectError as exc:
        raise FetchError(f"cannot connect to {where} ({_cause(exc)})") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"reading from {where} failed ({_cause(exc)})") from None


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _cause(exc: httpx.HTTPError) -> str:
    """The kind of failure (``SSLCertVerificationError``), not its text.

    The text may quote what the server sent.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError | OSError):
            return type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__
