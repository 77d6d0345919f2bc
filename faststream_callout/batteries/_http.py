"""A minimal asyncio HTTP/1.1 GET client for JWKS and OIDC discovery documents.

No HTTP client library is a dependency, and ``urllib`` blocks: a thread stuck
on a slow identity provider cannot be cancelled. This client runs on the event
loop, so the caller's timeout bounds the whole exchange (connect, TLS, headers,
body), and it reads at most ``max_bytes``. It speaks just enough HTTP/1.1:
``Content-Length``, chunked and close-delimited bodies, and a few redirects
(never from https to http). No proxies, no compression, no keep-alive: pass
your own ``fetch`` callable to :class:`~faststream_callout.batteries.oidc.JWKSCache`
when you need those.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from typing import Final
from urllib.parse import urljoin, urlsplit

__all__ = ["FetchError", "check_url", "http_get", "is_loopback"]

_MAX_HEADER_LINES: Final = 100
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
    for _ in range(_MAX_REDIRECTS + 1):
        status, location, body = await _get_once(url, max_bytes, ssl_context, accept)
        if status in (301, 302, 303, 307, 308) and location:
            target = urljoin(url, location)
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                raise FetchError("redirect from https to http refused")
            check_url(target, what="redirect target")
            url = target
            continue
        if status != 200:
            raise FetchError(f"HTTP status {status}")
        return body
    raise FetchError("too many redirects")


async def _get_once(
    url: str, max_bytes: int, ssl_context: ssl.SSLContext | None, accept: str
) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    context = (ssl_context or ssl.create_default_context()) if secure else None
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if secure else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot connect to {host}:{port} ({type(exc).__name__})") from None
    try:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {_USER_AGENT}\r\n"
            f"Accept: {accept}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        status, headers = await _read_head(reader)
        if status in (301, 302, 303, 307, 308):
            return status, headers.get("location", ""), b""
        if status != 200:
            return status, "", b""
        return status, "", await _read_body(reader, headers, max_bytes)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise FetchError(f"reading from {host}:{port} failed ({type(exc).__name__})") from None
    except ValueError:
        raise FetchError(f"malformed HTTP response from {host}:{port}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    version, _, rest = line.decode("latin-1").partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x response")
    status = int(rest.split(" ", 1)[0])
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return status, headers
        if not line:
            raise ValueError("headers not terminated")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise ValueError("bad header line")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many header lines")


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], max_bytes: int
) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, max_bytes)
    length = headers.get("content-length")
    if length is not None:
        size = int(length)
        if size < 0 or size > max_bytes:
            raise FetchError(f"response of {size} bytes exceeds the {max_bytes}-byte limit")
        return await reader.readexactly(size)
    body = await reader.read(max_bytes + 1)
    while len(body) <= max_bytes:
        more = await reader.read(max_bytes + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > max_bytes:
        raise FetchError(f"response exceeds the {max_bytes}-byte limit")
    return body


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readline()
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, then the final empty line.
            for _ in range(_MAX_HEADER_LINES):
                if await reader.readline() in (b"\r\n", b"\n", b""):
                    return bytes(body)
            raise ValueError("too many trailer lines")
        if size < 0 or len(body) + size > max_bytes:
            raise FetchError(f"response exceeds the {max_bytes}-byte limit")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("bad chunk terminator")
