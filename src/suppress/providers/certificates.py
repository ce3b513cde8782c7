"""HTTPS fetches for Amazon SNS: signing certificates (fetched once per URL, then cached until they
expire) and subscription confirmations. The fetcher is injectable, so tests serve the fixture's
certificate and no test touches the network. Callers validate every URL before it gets here."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Final, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from suppress.outbound import public_client
from suppress.providers.model import ProviderRejected

USER_AGENT: Final = "suppress-providers"
MAX_RESPONSE_BYTES: Final = 64 * 1024
MIN_RSA_BITS: Final = 2048


class FetchFailed(Exception):
    """The URL answered, but not with a 200 and a small body: retrying will not help."""


class FetchUnavailable(Exception):
    """The URL could not be reached now (timeout, connection error, 408, 429, 5xx)."""


class UrlFetcher(Protocol):
    """GETs a URL and returns its body; raises FetchFailed or FetchUnavailable."""

    async def fetch(self, url: str) -> bytes: ...

    async def aclose(self) -> None: ...


class HttpsFetcher:
    """The production fetcher: public addresses only, verified TLS, no redirects, a short timeout,
    a small body."""

    def __init__(self, *, timeout: float = 5.0, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._max_bytes = max_bytes
        # The URLs are pinned to Amazon's SNS hosts; the address filter is the second line.
        self._client = public_client(allow_private=False, timeout=timeout, headers={"User-Agent": USER_AGENT})

    async def fetch(self, url: str) -> bytes:
        try:
            async with self._client.stream("GET", url) as response:
                status = response.status_code
                if status in (408, 429) or status >= 500:
                    raise FetchUnavailable(f"HTTP {status}")
                if status != 200:
                    raise FetchFailed(f"HTTP {status}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > self._max_bytes:
                        raise FetchFailed(f"response larger than {self._max_bytes} bytes")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise FetchUnavailable(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self._client.aclose()


class SnsCertificates:
    """The public keys of SNS signing certificates by URL: fetched once, kept until the
    certificate's own expiry (at most `max_entries` URLs)."""

    def __init__(self, fetcher: UrlFetcher, *, max_entries: int = 64) -> None:
        self._fetcher = fetcher
        self._max_entries = max_entries
        self._keys: dict[str, tuple[RSAPublicKey, datetime]] = {}
        # One lock for all fetches: they are rare, and concurrent requests wait for one fetch.
        self._lock = asyncio.Lock()

    async def public_key(self, url: str, now: datetime) -> RSAPublicKey:
        """The RSA key of the certificate at `url`; ProviderRejected when it is unusable,
        FetchUnavailable when it cannot be fetched now."""
        cached = self._keys.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._lock:
            cached = self._keys.get(url)
            if cached is not None and cached[1] > now:
                return cached[0]
            try:
                pem = await self._fetcher.fetch(url)
            except FetchFailed as exc:
                raise ProviderRejected(f"the signing certificate could not be fetched ({exc})") from None
            key, not_after = _rsa_key(pem, now)
            if len(self._keys) >= self._max_entries:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = (key, not_after)
            return key


def _rsa_key(pem: bytes, now: datetime) -> tuple[RSAPublicKey, datetime]:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ProviderRejected("the signing certificate is not a PEM X.509 certificate") from None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ProviderRejected("the signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise ProviderRejected("the signing certificate does not hold an RSA key of 2048 bits or more")
    return key, certificate.not_valid_after_utc
