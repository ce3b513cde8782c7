"""Outbound HTTP for tenants goes to the public internet only (no SSRF).

A URL a tenant gives (a webhook) is checked twice: when it is registered (`check_target`: an IP
literal in any notation, a special-use name, or a name that resolves to a non-public address is a
422 naming the rule), and when each request is made. At request time `PublicBackend` resolves the
host once, refuses unless every answer is a public address, and connects to the address it checked:
there is no second lookup for a DNS rebinding to switch, while the Host header and the TLS server
name stay the URL's. Non-public means loopback, private, link-local, CGNAT (100.64/10), multicast,
reserved, documentation, benchmarking, unspecified and the like, IPv4 or IPv6, with IPv4 embedded in
IPv6 (mapped, 6to4, NAT64) judged as the IPv4 address it carries (IPv4-compatible ::a.b.c.d, deprecated
and never routed, is refused whatever it carries).

`SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1` turns the filter off, for development and tests only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import httpcore
import httpx
import idna

from suppress.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (as text); an OSError when it does not resolve
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Where a registration gives up waiting for DNS (the request-time check still applies).
REGISTRATION_LOOKUP_SECONDS: Final = 2.0

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# IANA special-purpose registries: every block that is not reachable as a global unicast address.
NON_PUBLIC_V4: Final = tuple(
    _V4(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # CGNAT shared address space
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata: 169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
NON_PUBLIC_V6: Final = tuple(
    _V6(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
        "::/8",  # reserved (what is left after IPv4-compatible and mapped are taken out)
    )
)
_IPV4_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
# Names that never point at the public internet, whatever a resolver answers for them.
SPECIAL_USE_SUFFIXES: Final = (
    "localhost",
    "local",
    "internal",
    "intranet",
    "private",
    "corp",
    "home",
    "lan",
    "localdomain",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
    "onion",
)

NON_PUBLIC_RULE: Final = (
    "webhooks are sent to the public internet only: not to loopback, private, link-local, CGNAT, "
    "multicast, reserved or unspecified addresses"
)


class NonPublicTarget(InvalidInput):
    """The URL does not point at the public internet."""

    code = "non_public_url"


class BlockedAddress(httpcore.ConnectError):
    """The host resolved to an address outbound requests may not go to; nothing was connected."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: mapped, compatible, 6to4 or NAT64 (64:ff9b::/96)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address: one an outbound request may go to."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(str(address).split("%")[0])  # a scope is link-local anyway
        if address in _IPV4_COMPATIBLE:
            return False  # deprecated (RFC 4291) and never routed: whatever it embeds
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
        return not any(address in net for net in NON_PUBLIC_V6) and address.is_global
    return not any(address in net for net in NON_PUBLIC_V4) and address.is_global


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 host as browsers and inet_aton read it: decimal, 0x hex or 0 octal."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10) if part.isascii() and part.isdigit() else None
    except ValueError:
        return None


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL host names literally, in any notation a resolver accepts: IPv6, dotted
    IPv4, and the short, decimal, hex and octal forms (127.1, 2130706433, 0x7f000001, 0177.0.0.1).
    None for a domain name; NonPublicTarget for a host that looks like a number but is none."""
    host = host.strip("[]")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise NonPublicTarget("url's host is not a valid IPv6 address") from None
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if _ipv4_number(parts[-1]) is None:
        return None  # a name: it does not end in a number
    numbers = [_ipv4_number(p) for p in parts]
    if len(numbers) > 4 or any(n is None for n in numbers):
        raise NonPublicTarget("url's host is neither a domain name nor an IPv4 address")
    *front, last = typing.cast(list[int], numbers)
    if any(n > 255 for n in front) or last >= 256 ** (5 - len(numbers)):
        raise NonPublicTarget("url's host is neither a domain name nor an IPv4 address")
    value = last
    for i, n in enumerate(front):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _normalised_name(host: str) -> str:
    """The host as a resolver sees it: lower case; IDNA (UTS 46: full-width forms folded) for
    non-ASCII names, as httpx encodes them."""
    if host.isascii():
        return host.rstrip(".").lower()
    try:
        return idna.encode(host.rstrip("."), uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        raise NonPublicTarget("url's host is not a valid domain name") from None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (both families)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _checked(addresses: list[str]) -> list[IPAddress]:
    parsed = [ipaddress.ip_address(a) for a in addresses]
    if not parsed or not all(is_public(a) for a in parsed):
        raise BlockedAddress("the host does not resolve to public addresses only")
    return parsed


async def check_target(url: str, resolve: Resolver, *, allow_private: bool) -> None:
    """Refuse (NonPublicTarget) a URL whose host is, or resolves to, a non-public address, or is a
    special-use name. A name that does not resolve now is let through: each request checks again."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = ip_literal(host) if ":" in host else None
    if literal is None:
        name = _normalised_name(host)
        literal = ip_literal(name)
        if literal is None:
            if "." not in name:
                raise NonPublicTarget(
                    f"url's host must be a fully qualified public domain name; {NON_PUBLIC_RULE}"
                )
            if any(name == s or name.endswith("." + s) for s in SPECIAL_USE_SUFFIXES):
                raise NonPublicTarget(f"url's host is a special-use name; {NON_PUBLIC_RULE}")
            try:
                async with asyncio.timeout(REGISTRATION_LOOKUP_SECONDS):
                    answers = await resolve(name, parts.port or 443)
            except (OSError, TimeoutError):
                return
            try:
                _checked(answers)
            except (BlockedAddress, ValueError):
                raise NonPublicTarget(
                    f"url's host resolves to a non-public address; {NON_PUBLIC_RULE}"
                ) from None
            return
    if not is_public(literal):
        raise NonPublicTarget(f"url's host is a non-public address; {NON_PUBLIC_RULE}")


class PublicBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the address filter: resolve once, check every answer, connect
    to a checked address. TLS is then started by httpcore with the URL's host as server name."""

    def __init__(self, resolve: Resolver, *, allow_private: bool) -> None:
        self._resolve = resolve
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                answers = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"name resolution failed: {exc}") from None
        try:
            addresses = (
                [ipaddress.ip_address(a) for a in answers] if self._allow_private else _checked(answers)
            )
        except ValueError:
            raise BlockedAddress("the resolver answered something that is not an address") from None
        if not addresses:
            raise httpcore.ConnectError("the host has no address")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not an outbound target")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a PublicBackend (no proxies: a proxy would connect for us)."""

    def __init__(self, resolve: Resolver, *, allow_private: bool, max_connections: int = 100) -> None:
        super().__init__(trust_env=False)
        # httpx offers no parameter for the network backend: its pool is rebuilt around ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),  # certifi's CAs, as httpx uses
            max_connections=max_connections,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=PublicBackend(resolve, allow_private=allow_private),
        )


def public_client(
    *,
    resolve: Resolver | None = None,
    allow_private: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An httpx client that reaches public addresses only and never follows redirects."""
    return httpx.AsyncClient(
        transport=PublicTransport(resolve or system_resolver, allow_private=allow_private),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers=headers,
    )


def failure_category(exc: BaseException) -> str:
    """What a tenant is told about a failed request: a category that says what to look at, never
    which internal port answered how (a refused, an unreachable and a blocked address read alike)."""
    if isinstance(exc, httpx.ConnectError) and _caused_by(exc, ssl.SSLError):
        return "the TLS handshake failed (certificate or protocol)"
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return "could not connect to the host"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return "the answer was not valid HTTP"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "the URL cannot be requested"
    return "the request failed"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
