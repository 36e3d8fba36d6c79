"""The address policy of the image fetcher: which hosts and IP addresses are non-public.

IP literals are normalised the way the OS does (``inet_aton`` accepts legacy
numeric IPv4 forms), and IPv6 forms that embed an IPv4 address are judged by
that address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from chromagent_proxy.core.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Globally routable, yet reachable only from inside a cloud (metadata / wire servers).
_DENY_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "168.63.129.16/32",  # Azure wire server
        "192.0.0.0/24",  # IETF protocol assignments (Oracle metadata 192.0.0.192)
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (also ULA; listed to be explicit)
    )
)
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_TEREDO = ipaddress.ip_network("2001::/32")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_BLOCKED_NAMES = ("localhost", "metadata.google.internal", "metadata")
_HOST_RE = re.compile(
    r"^(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?$"
)
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def block_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from, or None for a public address."""
    if ip in _METADATA:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that embed an IPv4 address are judged by that address.
        if ip.ipv4_mapped is not None:
            return block_reason(ip.ipv4_mapped)
        if ip in _NAT64:
            return block_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            return block_reason(ip.sixtofour)
        if ip in _TEREDO or ip in _NAT64_LOCAL:
            return "tunnel address"
        if ip.is_site_local:
            return "site-local address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT address"
    if ip.is_private:
        return "private address"
    if ip.is_reserved:
        return "reserved address"
    if any(ip in net for net in _DENY_NETWORKS):
        return "cloud-internal address"
    if not ip.is_global:
        return "non-public address"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is an IP literal, in any form the OS accepts.

    ``2130706433``, ``0x7f.1``, ``017700000001`` and ``127.1`` all mean
    127.0.0.1 to ``inet_aton``; they are normalised the same way here.
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("invalid IPv6 address") from None
    labels = host.rstrip(".").split(".")
    if not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError:
        raise ValueError("invalid IPv4 address") from None


def valid_host_name(name: str) -> bool:
    """Is ``name`` (lower case) a syntactically valid DNS host name?"""
    return _HOST_RE.match(name) is not None


def is_local_name(name: str) -> bool:
    """Is ``name`` (lower case, no trailing dot) a name for this machine or a metadata service?"""
    return name in _BLOCKED_NAMES or name.endswith(".localhost")


def parse_networks(
    cidrs: Iterable[str], where: str = "config $.media.allowCidrs"
) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for i, c in enumerate(cidrs):
        try:
            out.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{where}[{i}]: {c!r} is not an IP address or CIDR range") from None
    return out
