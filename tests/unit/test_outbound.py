"""The address rules of outbound requests (pure): which addresses are public, and how a URL host
in any IPv4 notation is read."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from suppress.outbound import (
    NON_PUBLIC_V4,
    NON_PUBLIC_V6,
    NonPublicTarget,
    embedded_ipv4,
    failure_category,
    ip_literal,
    is_public,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.31.255.255", "192.168.0.1", "169.254.169.254",
        "100.64.0.1", "100.127.255.255", "0.0.0.0", "224.0.0.251", "239.255.255.250", "240.0.0.1",
        "255.255.255.255", "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1", "192.0.0.8",
        "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
        "2001:db8::1", "100::1", "2001::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1",
        "::a9fe:a9fe", "2002:7f00:1::1", "2002:c0a8:101::", "64:ff9b::127.0.0.1", "64:ff9b::a00:1",
        "64:ff9b:1::1", "::ffff:0:0", "3fff::1",
    ],
)  # fmt: skip
def test_non_public_addresses(text: str) -> None:
    assert not is_public(ipaddress.ip_address(text))


@pytest.mark.parametrize(
    "text",
    ["93.184.215.14", "8.8.8.8", "1.1.1.1", "100.128.0.1", "100.63.255.255", "172.32.0.1",
     "2606:4700:4700::1111", "2a00:1450:4001:81c::200e", "::ffff:8.8.8.8", "2002:808:808::1",
     "64:ff9b::8.8.8.8"],
)  # fmt: skip
def test_public_addresses(text: str) -> None:
    assert is_public(ipaddress.ip_address(text))


non_public_v4 = st.sampled_from(NON_PUBLIC_V4).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(V4)
)
non_public_v6 = st.sampled_from(NON_PUBLIC_V6).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(V6)
)


@given(non_public_v4)
def test_every_address_of_the_non_public_v4_blocks_is_refused(address: V4) -> None:
    assert not is_public(address)


@given(non_public_v6)
def test_every_address_of_the_non_public_v6_blocks_is_refused(address: V6) -> None:
    assert not is_public(address)


@given(st.integers(0, 2**32 - 1).map(V4))
def test_every_ipv6_form_of_an_ipv4_address_is_judged_as_that_address(address: V4) -> None:
    n = int(address)
    forms = [
        V6((0xFFFF << 32) | n),  # mapped ::ffff:a.b.c.d
        V6((0x2002 << 112) | (n << 80)),  # 6to4 2002:aabb:ccdd::
        V6((0x64FF9B << 96) | n),  # NAT64 64:ff9b::a.b.c.d
    ]
    for form in forms:
        assert embedded_ipv4(form) == address
        assert is_public(form) == is_public(address), form
    compatible = V6(n)  # ::a.b.c.d, deprecated: refused whatever it carries
    assert embedded_ipv4(compatible) == address and not is_public(compatible)


@given(st.integers(0, 2**32 - 1).map(V4))
def test_every_ipv4_notation_reads_as_the_address(address: V4) -> None:
    n = int(address)
    a, b, c, d = address.packed
    notations = [
        str(address),
        str(address) + ".",
        str(n),
        hex(n),
        "0X" + format(n, "X"),
        "0" + format(n, "o"),
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"0{a:o}.0x{b:x}.{c}.0{d:o}",
        f"0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}",
    ]
    for text in notations:
        assert ip_literal(text) == address, text


@pytest.mark.parametrize("text", ["example.com", "hooks.example.test", "0x7f.example", "1.2.3.example"])
def test_names_are_not_literals(text: str) -> None:
    assert ip_literal(text) is None


@pytest.mark.parametrize(
    "text", ["1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.16777216", "08.1.1.1", "0x1g.1", "4294967296"]
)
def test_numbers_that_are_no_address_are_refused(text: str) -> None:
    with pytest.raises(NonPublicTarget):
        ip_literal(text)


def test_failure_categories_do_not_tell_ports_apart() -> None:
    request = httpx.Request("POST", "https://hooks.example.test/")
    refused = httpx.ConnectError("[Errno 111] Connection refused", request=request)
    unreachable = httpx.ConnectError("[Errno 113] No route to host", request=request)
    filtered = httpx.ConnectTimeout("timed out", request=request)
    assert {failure_category(e) for e in (refused, unreachable, filtered)} == {
        "could not connect to the host"
    }
    assert failure_category(httpx.ReadTimeout("slow", request=request)) == "timed out"
    assert (
        failure_category(httpx.RemoteProtocolError("bad", request=request)) == "the answer was not valid HTTP"
    )
    assert "Errno" not in failure_category(OSError(111, "Connection refused"))
