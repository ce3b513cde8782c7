"""Limits on dashboard sign-in attempts, per client address, counted in Redis.

Each attempt takes one from the client's allowance for a fixed window (INCR, the first one sets
the expiry: atomic, so parallel attempts cannot slip past); a successful sign-in gives its attempt
back, so only failures add up. IPv6 clients count per /64, the block one host usually holds. When
Redis cannot answer, attempts are let through (and logged): the key check itself still applies.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import Final

from redis.asyncio import Redis

log = logging.getLogger(__name__)

LOGIN_ATTEMPTS: Final = 10
LOGIN_WINDOW_SECONDS: Final = 15 * 60
_KEY_PREFIX: Final = "suppress:dashboard-login:"
# -> {attempts in this window, milliseconds until it ends}
_TAKE: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""

# a key that has expired meanwhile is left alone (DECR would recreate it without an expiry)
_GIVE_BACK: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def client_key(host: str | None) -> str:
    """What attempts are counted by: the IPv4 address, the IPv6 /64, or the host as given."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginLimiter:
    """At most `attempts` failed sign-ins per client per `window` seconds."""

    def __init__(
        self, redis: Redis, *, attempts: int = LOGIN_ATTEMPTS, window: int = LOGIN_WINDOW_SECONDS
    ) -> None:
        self._redis = redis
        self._attempts = attempts
        self._window = window

    async def take(self, host: str | None) -> int | None:
        """Count an attempt; None to go ahead, or the seconds until the client may try again."""
        key = _KEY_PREFIX + client_key(host)
        try:
            count, ttl_ms = await self._redis.eval(_TAKE, 1, key, str(self._window * 1000))  # type: ignore[misc]
        except Exception as exc:  # Redis trouble: let the attempt through rather than lock everyone out
            log.warning("sign-in limiter unavailable (%s); attempt not counted", type(exc).__name__)
            return None
        if int(count) <= self._attempts:
            return None
        return max(1, math.ceil(int(ttl_ms) / 1000)) if int(ttl_ms) > 0 else self._window

    async def give_back(self, host: str | None) -> None:
        """A successful sign-in: its attempt does not count against the client."""
        try:
            await self._redis.eval(_GIVE_BACK, 1, _KEY_PREFIX + client_key(host))  # type: ignore[misc]
        except Exception as exc:
            log.warning("sign-in limiter unavailable (%s)", type(exc).__name__)
