"""The guarded fetcher: downloads user-supplied image URLs without server-side request forgery.

Every hop (the first URL and each redirect target) is parsed once with yarl
(the parser aiohttp itself uses), its host resolved here, and every address
checked against the non-public ranges (the policy is in addresses.py). The
request then goes out on a private ``ClientSession`` whose resolver only hands aiohttp the addresses this module
pinned for the current task, so there is no second DNS lookup that a rebinding
name could answer differently. IP literals never reach a resolver in aiohttp,
so they are checked while parsing, including the legacy numeric IPv4 forms
(``2130706433``, ``0x7f.1``, ``017700000001``) that ``inet_aton`` accepts.

Errors are 400 ``invalid_request_error`` naming the image part; messages say
why but never echo fetched bytes or the internal address a name resolved to
(that goes to the log only).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from chromagent_proxy.core.errors import ConfigError, InvalidRequest
from chromagent_proxy.media.addresses import (
    IPAddress,
    block_reason,
    is_local_name,
    parse_ip_literal,
    parse_networks,
    valid_host_name,
)
from chromagent_proxy.media.images import MEDIA_TYPES, ImageBudget, sniff

if TYPE_CHECKING:
    from chromagent_proxy.core.config import MediaConfig

log = logging.getLogger("chromagent_proxy.media.fetcher")

# (host, port) -> addresses as strings; injectable so tests need no DNS.
Resolver = Callable[[str, int], Awaitable[list[str]]]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192
CHUNK = 64 * 1024


async def system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# The addresses checked for the host this task is about to connect to.
_PINNED: contextvars.ContextVar[tuple[str, tuple[IPAddress, ...]] | None] = contextvars.ContextVar(
    "chromagent_image_pin", default=None
)


class PinnedResolver(AbstractResolver):
    """Answers aiohttp only with the pre-checked addresses of the current task's host.

    Anything else (no pin, another host) fails closed: the fetcher session can
    never reach an address this module has not checked.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pin = _PINNED.get()
        if pin is None or pin[0] != host.rstrip(".").lower():
            raise OSError(f"image fetcher: host {host!r} was not checked")
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in pin[1]
        ]

    async def close(self) -> None:
        return None


def _bad(message: str, param: str, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


class GuardedFetcher:
    """``ImageFetcher`` for backends that need image bytes inline (see media.collect_images)."""

    def __init__(self, config: MediaConfig, *, resolver: Resolver | None = None) -> None:
        for key, value, least in (
            ("maxBytes", config.max_bytes, 1),
            ("connectTimeoutMs", config.connect_timeout_ms, 1),
            ("totalTimeoutMs", config.total_timeout_ms, 1),
            ("maxRedirects", config.max_redirects, 0),
        ):
            if value < least:
                raise ConfigError(f"config $.media.{key}: must be at least {least} (got {value})")
        self.max_bytes = config.max_bytes
        self.connect_timeout = config.connect_timeout_ms / 1000
        self.total_timeout = config.total_timeout_ms / 1000
        self.max_redirects = config.max_redirects
        self._allow_names: set[str] = set()
        self._allow_suffixes: list[str] = []
        for h in config.allow_hosts:
            h = h.strip().rstrip(".").lower()
            if h.startswith("*."):
                self._allow_suffixes.append(h[1:])
            elif h:
                self._allow_names.add(h)
        self._allow_nets = parse_networks(config.allow_cidrs)
        self._resolve = resolver or system_resolve
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            resolver=PinnedResolver(), use_dns_cache=False, limit=64, limit_per_host=8
        )
        # Its own session: no proxy env vars, no cookies, no credentials or provider headers.
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=self.total_timeout, sock_connect=self.connect_timeout
            ),
            headers={
                "User-Agent": "chromagent-proxy-image-fetcher",
                "Accept": ",".join(MEDIA_TYPES),
                "Accept-Encoding": "identity",
            },
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- policy
    def _host_allowed(self, name: str) -> bool:
        return name in self._allow_names or any(name.endswith(s) for s in self._allow_suffixes)

    def _ip_allowed(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._allow_nets)

    def parse(self, raw: str, param: str) -> URL:
        """Strict URL check: http(s), a host, no user info, no parser-differential characters."""
        if len(raw) > MAX_URL_LENGTH:
            raise _bad("image URL is too long", param, "invalid_image_url")
        if "\\" in raw or any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
            raise _bad(
                "image URL contains characters that are not allowed", param, "invalid_image_url"
            )
        try:
            url = URL(raw)
        except ValueError:
            raise _bad("image URL is not a valid URL", param, "invalid_image_url") from None
        if url.scheme not in DEFAULT_PORTS:
            raise _bad("image URL must use http or https", param, "invalid_image_url")
        if url.user is not None or url.password is not None:
            raise _bad("image URL must not contain user info", param, "invalid_image_url")
        if not url.raw_host:
            raise _bad("image URL has no host", param, "invalid_image_url")
        return url.with_fragment(None)

    async def check(self, url: URL, param: str) -> tuple[IPAddress, ...]:
        """The addresses of ``url``'s host, each one allowed; a 400 if any is not."""
        host = url.raw_host or ""
        try:
            literal = parse_ip_literal(host)
        except ValueError:
            raise _bad(
                "image URL host is not a valid address", param, "invalid_image_url"
            ) from None
        name_allowed = False
        canonical = True
        if literal is not None:
            addrs: tuple[IPAddress, ...] = (literal,)
            canonical = isinstance(literal, ipaddress.IPv6Address) or host == str(literal)
        else:
            name = host.rstrip(".").lower()
            if not valid_host_name(name):
                raise _bad("image URL host is not a valid host name", param, "invalid_image_url")
            name_allowed = self._host_allowed(name)
            if not name_allowed and is_local_name(name):
                log.info("image fetch blocked: host %s is a local name", name)
                raise _blocked(param)
            addrs = await self._lookup(name, url.port or DEFAULT_PORTS[url.scheme], param)
        for ip in addrs:
            if name_allowed or self._ip_allowed(ip):
                continue
            reason = block_reason(ip)
            if reason is not None:
                log.info("image fetch blocked: %s resolves to %s (%s)", host, ip, reason)
                raise _blocked(param)
        if literal is not None and not canonical:
            # aiohttp refuses these forms itself; say so clearly instead of failing later.
            raise _bad(
                "image URL host must be a dotted-quad IP address", param, "invalid_image_url"
            )
        port = url.port or DEFAULT_PORTS[url.scheme]
        if port not in (80, 443) and not (
            name_allowed or all(self._ip_allowed(ip) for ip in addrs)
        ):
            raise _bad(
                "image URL port is not allowed (only 80 and 443 outside media.allowHosts/allowCidrs)",
                param,
                "image_fetch_blocked",
            )
        return addrs

    async def _lookup(self, name: str, port: int, param: str) -> tuple[IPAddress, ...]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                found = await self._resolve(name, port)
        except TimeoutError:
            raise _bad("image host name lookup timed out", param, "image_fetch_timeout") from None
        except OSError:
            raise _bad(
                "image host name could not be resolved", param, "image_fetch_failed"
            ) from None
        addrs: list[IPAddress] = []
        for a in found:
            try:
                addrs.append(ipaddress.ip_address(a))
            except ValueError:
                raise _bad(
                    "image host resolved to an invalid address", param, "image_fetch_failed"
                ) from None
        if not addrs:
            raise _bad("image host name could not be resolved", param, "image_fetch_failed")
        return tuple(addrs)

    # -- fetching
    async def fetch(
        self, url: str, param: str, budget: ImageBudget | None = None
    ) -> tuple[bytes, str]:
        """(bytes, media type from the file signature) of the image at ``url``; 400 otherwise.

        Every byte read is taken from ``budget`` (the request's ``media.maxTotalBytes``).
        """
        if self._session is None:
            await self.start()
        try:
            async with asyncio.timeout(self.total_timeout):
                return await self._fetch(url, param, budget)
        except TimeoutError:
            raise _bad(
                f"image download timed out (limit {self.total_timeout:g} s)",
                param,
                "image_fetch_timeout",
            ) from None

    async def _fetch(self, raw: str, param: str, budget: ImageBudget | None) -> tuple[bytes, str]:
        assert self._session is not None
        url = self.parse(raw, param)
        for _hop in range(self.max_redirects + 1):
            addrs = await self.check(url, param)
            token = _PINNED.set(((url.raw_host or "").rstrip(".").lower(), addrs))
            try:
                async with self._session.get(url, allow_redirects=False) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        url = self._redirect_target(url, resp, param)
                        continue
                    if resp.status != 200:
                        raise _bad(
                            f"image URL returned HTTP {resp.status}", param, "image_fetch_failed"
                        )
                    data = await self._read(resp, param, budget)
            except aiohttp.ConnectionTimeoutError:
                raise _bad(
                    f"connecting to the image host timed out (limit {self.connect_timeout:g} s)",
                    param,
                    "image_fetch_timeout",
                ) from None
            except aiohttp.ServerTimeoutError:
                raise _bad("image download timed out", param, "image_fetch_timeout") from None
            except aiohttp.ClientConnectorError:
                raise _bad(
                    "could not connect to the image host", param, "image_fetch_failed"
                ) from None
            except aiohttp.ClientError:
                raise _bad("image download failed", param, "image_fetch_failed") from None
            finally:
                _PINNED.reset(token)
            media_type = sniff(data)
            if media_type is None:
                raise _bad(
                    "image URL did not return a supported image (png, jpeg, gif or webp)",
                    param,
                    "invalid_image",
                )
            return data, media_type
        raise _bad(
            f"image URL redirected more than {self.max_redirects} times",
            param,
            "image_fetch_failed",
        )

    def _redirect_target(self, url: URL, resp: aiohttp.ClientResponse, param: str) -> URL:
        location = resp.headers.get("Location")
        if not location:
            raise _bad(
                f"image URL returned HTTP {resp.status} without a Location",
                param,
                "image_fetch_failed",
            )
        if "\\" in location:
            raise _bad("image URL redirected to an invalid URL", param, "invalid_image_url")
        try:
            target = url.join(URL(location))
        except ValueError:
            raise _bad(
                "image URL redirected to an invalid URL", param, "invalid_image_url"
            ) from None
        return self.parse(str(target), param)

    async def _read(
        self, resp: aiohttp.ClientResponse, param: str, budget: ImageBudget | None
    ) -> bytes:
        limit = self.max_bytes
        declared = resp.content_length
        if declared is not None:
            if declared > limit:
                raise _too_large(limit, param)
            if budget is not None:
                budget.take(declared, param)  # refused before a byte is read
        # Chunks joined once at the end: the image is held once, not in a growing
        # bytearray plus a bytes() copy of it.
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, param)
            if budget is not None and declared is None:
                budget.take(len(chunk), param)
            chunks.append(chunk)
        return b"".join(chunks)


def _blocked(param: str) -> InvalidRequest:
    return _bad(
        "image URL is not allowed: it points to a non-public address",
        param,
        "image_fetch_blocked",
    )


def _too_large(limit: int, param: str) -> InvalidRequest:
    return _bad(f"image is larger than {limit} bytes", param, "image_too_large")


def make_fetcher(config: MediaConfig, **kw: Any) -> GuardedFetcher | None:
    """The gateway's fetcher, or None when ``media.remoteFetch`` is off."""
    return GuardedFetcher(config, **kw) if config.remote_fetch else None
