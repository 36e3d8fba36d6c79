"""The guarded image fetcher against a local server that counts TCP connections."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from chromagent_proxy.addresses import block_reason, parse_ip_literal
from chromagent_proxy.config import MediaConfig
from chromagent_proxy.errors import InvalidRequest
from chromagent_proxy.fetcher import GuardedFetcher, PinnedResolver
from tests.support.image_server import PNG, CountingServer, redirect, reply, stall

PARAM = "messages[0].content[1].image_url"


class MapResolver:
    """Test DNS: a fixed map, counting lookups; unknown names fail like NXDOMAIN."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return self.table[host]


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    srv = await CountingServer().start()
    srv.routes["/img.png"] = reply(200, PNG, content_type="text/plain")
    yield srv
    await srv.close()


@pytest.fixture
async def other() -> AsyncIterator[CountingServer]:
    srv = await CountingServer().start()
    srv.routes["/img.png"] = reply(200, PNG)
    yield srv
    await srv.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every connection the fetcher's aiohttp connector opens (host of each)."""
    seen: list[str] = []
    original = aiohttp.TCPConnector._create_connection

    async def spy(self: aiohttp.TCPConnector, req: Any, *a: Any, **kw: Any) -> Any:
        seen.append(str(req.url.host))
        return await original(self, req, *a, **kw)

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", spy)
    yield seen


def make(resolver: MapResolver | None = None, **media: Any) -> GuardedFetcher:
    dns = resolver or MapResolver({"localhost": ["127.0.0.1", "::1"]})
    return GuardedFetcher(MediaConfig(**media), resolver=dns)


async def fetch(fetcher: GuardedFetcher, url: str) -> tuple[bytes, str]:
    try:
        return await fetcher.fetch(url, PARAM)
    finally:
        await fetcher.close()


async def expect_400(fetcher: GuardedFetcher, url: str, code: str, words: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        await fetch(fetcher, url)
    err = info.value
    assert err.status == 400 and err.type == "invalid_request_error"
    assert err.param == PARAM
    assert err.code == code, err.message
    assert words in err.message
    return err


# -- blocked targets: a 400, and no connection anywhere


BLOCKED = [
    "http://127.0.0.1:{port}/img.png",
    "http://localhost:{port}/img.png",
    "http://LocalHost.:{port}/img.png",
    "http://sub.localhost:{port}/img.png",
    "http://[::1]:{port}/img.png",
    "http://10.0.0.1/img.png",
    "http://172.16.0.1/img.png",
    "http://192.168.1.1/img.png",
    "http://100.64.0.1/img.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://0.0.0.0:{port}/img.png",
    "http://[::]:{port}/img.png",
    "http://2130706433:{port}/img.png",
    "http://0x7f.1:{port}/img.png",
    "http://0x7f000001:{port}/img.png",
    "http://017700000001:{port}/img.png",
    "http://0177.0.0.1:{port}/img.png",
    "http://127.1:{port}/img.png",
    "http://[::ffff:127.0.0.1]:{port}/img.png",
    "http://[::ffff:7f00:1]:{port}/img.png",
    "http://[64:ff9b::7f00:1]/img.png",
    "http://[2002:7f00:1::1]/img.png",
    "http://[fe80::1%25lo]:{port}/img.png",
    "http://224.0.0.1/img.png",
    "http://evil.test:{port}/img.png",
    "http://mixed.test/img.png",
]


@pytest.mark.parametrize("template", BLOCKED)
async def test_blocked_target_gets_400_and_no_connection(
    server: CountingServer, connects: list[str], template: str
) -> None:
    dns = MapResolver(
        {
            "localhost": ["127.0.0.1", "::1"],
            "evil.test": ["127.0.0.1"],  # a public-looking name that resolves to loopback
            "mixed.test": ["8.8.8.8", "127.0.0.1"],  # one bad address is enough
            "metadata.google.internal": ["169.254.169.254"],
        }
    )
    url = template.format(port=server.port)
    await expect_400(make(dns), url, "image_fetch_blocked", "non-public address")
    assert server.connections == 0
    assert connects == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "http or https"),
        ("gopher://example.com/", "http or https"),
        ("ftp://example.com/a.png", "http or https"),
        ("http://user:pass@example.com/a.png", "user info"),
        ("http://example.com\\@127.0.0.1/a.png", "not allowed"),
        ("http://exa mple.com/a.png", "not allowed"),
        ("http://127.0.0.%31/a.png", "host"),
        ("http:///a.png", "no host"),
        ("http://999.1.1.1.1/a.png", "host"),
    ],
)
async def test_malformed_urls_are_rejected_before_any_lookup(
    connects: list[str], url: str, words: str
) -> None:
    dns = MapResolver({})
    await expect_400(make(dns), url, "invalid_image_url", words)
    assert dns.calls == [] and connects == []


async def test_non_default_port_on_public_host_is_refused(connects: list[str]) -> None:
    dns = MapResolver({"cdn.example": ["93.184.216.34"]})
    await expect_400(make(dns), "http://cdn.example:8080/a.png", "image_fetch_blocked", "port")
    assert connects == []


async def test_redirect_from_allowed_host_to_blocked_target(
    server: CountingServer, other: CountingServer, connects: list[str]
) -> None:
    dns = MapResolver({"images.test": ["127.0.0.1"], "internal.test": ["10.1.2.3"]})
    server.routes["/to-loopback"] = redirect(other.url())
    server.routes["/to-metadata"] = redirect("http://169.254.169.254/latest/meta-data/")
    server.routes["/to-name"] = redirect("http://internal.test/x.png")
    server.routes["/to-file"] = redirect("file:///etc/passwd")
    for path in ("/to-loopback", "/to-metadata", "/to-name"):
        fetcher = make(dns, allow_hosts=["images.test"])
        await expect_400(
            fetcher, f"http://images.test:{server.port}{path}", "image_fetch_blocked", "non-public"
        )
    fetcher = make(dns, allow_hosts=["images.test"])
    await expect_400(
        fetcher, f"http://images.test:{server.port}/to-file", "invalid_image_url", "http"
    )
    assert other.connections == 0
    assert [r.path for r in server.requests] == [
        "/to-loopback",
        "/to-metadata",
        "/to-name",
        "/to-file",
    ]
    assert set(connects) == {"images.test"}


async def test_relative_redirects_are_followed_up_to_the_limit(server: CountingServer) -> None:
    dns = MapResolver({"images.test": ["127.0.0.1"]})
    server.routes["/r1"] = redirect("/r2", 301)
    server.routes["/r2"] = redirect(f"http://images.test:{server.port}/r3", 307)
    server.routes["/r3"] = redirect("img.png", 308)
    data, media_type = await fetch(
        make(dns, allow_hosts=["*.test"]), f"http://images.test:{server.port}/r1"
    )
    assert (data, media_type) == (PNG, "image/png")

    server.routes["/loop"] = redirect("/loop")
    server.requests.clear()
    await expect_400(
        make(dns, allow_hosts=["images.test"]),
        f"http://images.test:{server.port}/loop",
        "image_fetch_failed",
        "more than 3",
    )
    assert len(server.requests) == 4  # the first request and 3 redirects, no more


# -- allowed fetches


async def test_allowed_cidr_fetch_returns_sniffed_bytes_without_credentials(
    server: CountingServer, other: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Proxy env vars must be ignored: "other" would see the request if they were used.
    monkeypatch.setenv("HTTP_PROXY", other.url("/"))
    monkeypatch.setenv("http_proxy", other.url("/"))
    server.routes["/cookie.png"] = reply(200, PNG, headers={"Set-Cookie": "sid=secret; Path=/"})
    fetcher = make(allow_cidrs=["127.0.0.0/8"])
    try:
        assert await fetcher.fetch(server.url("/cookie.png"), PARAM) == (PNG, "image/png")
        # Content-Type said text/plain: the signature decides.
        assert await fetcher.fetch(server.url(), PARAM) == (PNG, "image/png")
    finally:
        await fetcher.close()
    assert other.connections == 0
    second = server.requests[1].headers
    for h in ("cookie", "authorization", "proxy-authorization"):
        assert h not in second
    assert second["user-agent"] == "chromagent-proxy-image-fetcher"
    assert second["accept-encoding"] == "identity"


async def test_allowed_host_name_and_mapped_loopback_in_cidr(server: CountingServer) -> None:
    dns = MapResolver({"store.internal": ["127.0.0.1"]})
    got = await fetch(make(dns, allow_hosts=["store.internal"]), server.url(host="store.internal"))
    assert got == (PNG, "image/png")
    got = await fetch(make(allow_cidrs=["127.0.0.1/32"]), server.url(host="[::ffff:127.0.0.1]"))
    assert got == (PNG, "image/png")


async def test_one_lookup_per_hop_and_connection_goes_to_the_checked_address(
    server: CountingServer, connects: list[str]
) -> None:
    """DNS rebinding: the name answers loopback (allowed here) once, then 10.0.0.1.

    The fetcher must resolve once and connect to the address it checked; a
    second lookup (by aiohttp) would get the other answer.
    """

    class Rebinding(MapResolver):
        async def __call__(self, host: str, port: int) -> list[str]:
            self.calls.append(host)
            return ["127.0.0.1"] if len(self.calls) == 1 else ["10.0.0.1"]

    dns = Rebinding({})
    got = await fetch(make(dns, allow_cidrs=["127.0.0.1/32"]), server.url(host="rebind.test"))
    assert got == (PNG, "image/png")
    assert dns.calls == ["rebind.test"]
    assert server.connections == 1


async def test_pinned_resolver_fails_closed() -> None:
    resolver = PinnedResolver()
    with pytest.raises(OSError, match="not checked"):
        await resolver.resolve("example.com", 80)


# -- what comes back is checked


async def test_oversize_with_content_length_is_refused_before_reading(
    server: CountingServer,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
    server.routes["/big"] = stall(head, PNG[:8])  # would hang if the body were awaited
    started = time.monotonic()
    await expect_400(
        make(allow_cidrs=["127.0.0.1/32"], max_bytes=1000),
        server.url("/big"),
        "image_too_large",
        "1000 bytes",
    )
    assert time.monotonic() - started < 1


async def test_oversize_without_content_length_is_cut_at_the_cap(server: CountingServer) -> None:
    server.routes["/big"] = reply(200, PNG + b"\x00" * 5000, content_length=False)
    server.routes["/ok"] = reply(200, PNG + b"\x00" * 900, content_length=False)
    fetcher = make(allow_cidrs=["127.0.0.1/32"], max_bytes=1000)
    await expect_400(fetcher, server.url("/big"), "image_too_large", "larger than 1000 bytes")
    data, _ = await fetch(make(allow_cidrs=["127.0.0.1/32"], max_bytes=1000), server.url("/ok"))
    assert len(data) == len(PNG) + 900


async def test_slow_body_hits_the_total_timeout(server: CountingServer) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n"
    server.routes["/slow"] = stall(head, PNG[:10])
    started = time.monotonic()
    await expect_400(
        make(allow_cidrs=["127.0.0.1/32"], total_timeout_ms=300),
        server.url("/slow"),
        "image_fetch_timeout",
        "timed out",
    )
    assert time.monotonic() - started < 2


async def test_slow_dns_hits_the_connect_timeout() -> None:
    class Hanging(MapResolver):
        async def __call__(self, host: str, port: int) -> list[str]:
            await asyncio.sleep(30)
            return []

    started = time.monotonic()
    await expect_400(
        make(Hanging({}), connect_timeout_ms=200),
        "http://slow.test/a.png",
        "image_fetch_timeout",
        "timed out",
    )
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"<html><body>not an image</body></html>", "image/png"),
        (b"%PDF-1.7\n", "image/jpeg"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"", "image/png"),
    ],
)
async def test_wrong_signature_is_refused(server: CountingServer, body: bytes, ctype: str) -> None:
    server.routes["/fake.png"] = reply(200, body, content_type=ctype)
    err = await expect_400(
        make(allow_cidrs=["127.0.0.1/32"]),
        server.url("/fake.png"),
        "invalid_image",
        "png, jpeg, gif or webp",
    )
    assert body[:10].decode() not in err.message or not body


@pytest.mark.parametrize("status", [404, 403, 410, 500])
async def test_http_status_is_reported(server: CountingServer, status: int) -> None:
    server.routes["/s"] = reply(status, b"secret internal page", content_type="text/html")
    err = await expect_400(
        make(allow_cidrs=["127.0.0.1/32"]), server.url("/s"), "image_fetch_failed", f"HTTP {status}"
    )
    assert "secret" not in err.message


async def test_unresolvable_host_and_refused_connection() -> None:
    await expect_400(
        make(MapResolver({})), "https://nope.test/a.png", "image_fetch_failed", "resolved"
    )
    # A port nobody listens on, allowed by CIDR.
    sock_srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = sock_srv.sockets[0].getsockname()[1]
    sock_srv.close()
    await sock_srv.wait_closed()
    await expect_400(
        make(allow_cidrs=["127.0.0.1/32"]),
        f"http://127.0.0.1:{port}/a.png",
        "image_fetch_failed",
        "connect",
    )


# -- address classification


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.31.255.255", "192.168.0.1", "100.64.0.1",
        "100.127.255.255", "100.100.100.200", "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3",
        "224.0.0.1", "224.0.1.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.192",
        "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "168.63.129.16",
        "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "fec0::1", "ff02::1", "ff0e::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
        "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "2002:7f00:1::1",
        "2002:a00:1::", "2001::1", "2001:db8::1", "100::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert block_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    assert block_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("8.8.8.8", "8.8.8.8"),
        ("example.com", None),
        ("cafe.be", None),
        ("1.2.3.com", None),
    ],
)
def test_ip_literal_forms_are_normalised_like_the_os(host: str, expected: str | None) -> None:
    ip = parse_ip_literal(host)
    assert (str(ip) if ip else None) == expected


def test_bad_allow_cidr_is_a_config_error() -> None:
    from chromagent_proxy.errors import ConfigError

    with pytest.raises(ConfigError, match=r"media\.allowCidrs\[1\]"):
        GuardedFetcher(MediaConfig(allow_cidrs=["10.0.0.0/8", "not-a-net"]))


@pytest.mark.parametrize(
    ("media", "where"),
    [({"max_bytes": 0}, "maxBytes"), ({"total_timeout_ms": 0}, "totalTimeoutMs"),
     ({"connect_timeout_ms": -1}, "connectTimeoutMs"), ({"max_redirects": -1}, "maxRedirects")],
)  # fmt: skip
def test_bad_limits_are_config_errors(media: dict[str, Any], where: str) -> None:
    from chromagent_proxy.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"media\.{where}"):
        GuardedFetcher(MediaConfig(**media))


async def test_zero_redirects_means_none_followed(server: CountingServer) -> None:
    server.routes["/hop"] = redirect("/img.png")
    await expect_400(
        make(allow_cidrs=["127.0.0.1/32"], max_redirects=0),
        server.url("/hop"),
        "image_fetch_failed",
        "more than 0",
    )
    assert [r.path for r in server.requests] == ["/hop"]
