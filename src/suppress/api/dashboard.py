"""GET /dashboard: list health for people, and its sign-in.

Who may look: a request with a `read` API key as Bearer header, or a browser holding a dashboard
session cookie. The sign-in form (the only POST that works without a session) exchanges a `read`
key for that cookie: HMAC-signed claims (key id, tenant, expiry; never the key), HttpOnly,
SameSite=Strict, Secure and `__Host-` prefixed when SUPPRESS_PUBLIC_URL is https. Every request
re-checks that the key still exists and is not revoked. Nothing on the dashboard changes state
except signing in and out, and those POSTs are refused when the browser says they come from
another site (Origin / Sec-Fetch-Site).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.params import QueryParameter

from suppress.api.auth import caller
from suppress.api.dashboard_pages import campaigns_csv, dashboard_page, login_page
from suppress.api.health import health_service
from suppress.api.pages import SECURITY_HEADERS
from suppress.config import derive_key
from suppress.cursors import b64url, unb64url
from suppress.errors import Forbidden, NotAuthenticated
from suppress.health import DEFAULT_DAYS, MAX_CAMPAIGNS, MAX_DAYS, Viewer
from suppress.tenants import Authenticator

SESSION_KEY_PURPOSE = "suppress dashboard sessions v1"
SESSION_SECONDS = 8 * 3600
DASHBOARD = "/dashboard"
LOGIN = "/dashboard/login"
_MAX_COOKIE = 512
# The pages' own forms must carry their Origin (a no-referrer policy would send `Origin: null`).
HEADERS = {**SECURITY_HEADERS, "Referrer-Policy": "same-origin"}

DaysParam = Annotated[int, QueryParameter(ge=1, le=MAX_DAYS, description="UTC days back, today included")]


class SessionClaims(msgspec.Struct, frozen=True, array_like=True):
    """What a session cookie says (signed): the key it was opened with, its tenant, its expiry."""

    key_id: int
    tenant_id: int
    expires: int


class DashboardSessions:
    """Issues and verifies the dashboard's session cookie."""

    def __init__(self, secret: str, *, secure: bool) -> None:
        self._key = derive_key(secret, SESSION_KEY_PURPOSE)
        self.secure = secure
        self.cookie_name = "__Host-suppress_dashboard" if secure else "suppress_dashboard"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, viewer: Viewer, now: datetime) -> str:
        """A signed cookie value for this viewer, valid for SESSION_SECONDS."""
        claims = SessionClaims(viewer.key_id, viewer.tenant_id, int(now.timestamp()) + SESSION_SECONDS)
        payload = msgspec.json.encode(claims)
        return f"v1.{b64url(payload)}.{b64url(self._mac(payload))}"

    def verify(self, value: str, now: datetime) -> SessionClaims | None:
        """The claims of a genuine, unexpired cookie; None for anything else."""
        if len(value) > _MAX_COOKIE:
            return None
        version, _, rest = value.partition(".")
        payload_text, _, mac_text = rest.partition(".")
        try:
            payload, mac = unb64url(payload_text), unb64url(mac_text)
        except (binascii.Error, ValueError):
            return None
        if version != "v1" or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            claims = msgspec.json.decode(payload, type=SessionClaims)
        except msgspec.DecodeError:
            return None
        return claims if claims.expires > now.timestamp() else None

    def cookie(self, value: str) -> Cookie:
        return Cookie(
            key=self.cookie_name,
            value=value,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="strict",
        )

    def clear(self) -> Cookie:
        return Cookie(
            key=self.cookie_name,
            value="",
            max_age=0,
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="strict",
        )


def _sessions(request: Request[Any, Any, Any]) -> DashboardSessions:
    sessions: DashboardSessions = request.app.state.dashboard_sessions
    return sessions


def _html(content: str, status: int = 200, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(content, status_code=status, media_type=MediaType.HTML, headers=HEADERS, cookies=cookies)


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(
        "",
        status_code=303,
        media_type=MediaType.TEXT,
        headers={**HEADERS, "Location": location},
        cookies=cookies,
    )


async def _viewer(request: Request[Any, Any, Any], now: datetime) -> tuple[Viewer | None, bool]:
    """Who is looking, and whether through a session cookie (Bearer callers get problem details)."""
    if request.headers.get("authorization"):
        principal = await caller(request, "read")
        return Viewer(
            key_id=principal.key_id, tenant_id=principal.tenant_id, tenant_name=principal.tenant_name
        ), False
    raw = request.cookies.get(_sessions(request).cookie_name)
    claims = _sessions(request).verify(raw, now) if raw else None
    if claims is None:
        return None, False
    return await health_service(request).viewer(claims.key_id, claims.tenant_id), True


def _same_site(request: Request[Any, Any, Any]) -> bool:
    """False when the browser says this POST was sent by another site (CSRF): Sec-Fetch-Site where
    the browser sends it, else the Origin header."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser form post from another page (e.g. curl)
    allowed = {request.headers.get("host", ""), urlsplit(request.app.state.settings.public_url).netloc}
    return urlsplit(origin).netloc in allowed - {""}


@get(DASHBOARD, summary="List health for people (HTML)", tags=["dashboard"], include_in_schema=False)
async def show_dashboard(request: Request[Any, Any, Any], days: DaysParam = DEFAULT_DAYS) -> Response[str]:
    now = datetime.now(UTC)
    viewer, session = await _viewer(request, now)
    if viewer is None:
        stale = _sessions(request).cookie_name in request.cookies
        return _redirect(LOGIN, [_sessions(request).clear()] if stale else None)
    report = await health_service(request).report(viewer.tenant_id, now, days=days)
    return _html(dashboard_page(report, now, session=session))


@get(
    "/dashboard/campaigns.csv",
    summary="The dashboard's campaign table as CSV",
    tags=["dashboard"],
    include_in_schema=False,
)
async def campaigns_download(
    request: Request[Any, Any, Any], days: DaysParam = DEFAULT_DAYS
) -> Response[str]:
    now = datetime.now(UTC)
    viewer, _ = await _viewer(request, now)
    if viewer is None:
        return _redirect(LOGIN)
    report = await health_service(request).report(viewer.tenant_id, now, days=days, campaigns=MAX_CAMPAIGNS)
    filename = f"campaigns-{now:%Y%m%d}.csv"
    return Response(
        "\ufeff" + campaigns_csv(report.campaigns),  # the BOM makes spreadsheets read UTF-8
        media_type="text/csv",  # Litestar adds the charset
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


@get(LOGIN, summary="Dashboard sign-in form", tags=["dashboard"], include_in_schema=False)
async def show_login(request: Request[Any, Any, Any]) -> Response[str]:
    viewer, _ = await _viewer(request, datetime.now(UTC))
    if viewer is not None:
        return _redirect(DASHBOARD)
    return _html(login_page())


@post(
    LOGIN, summary="Sign in to the dashboard with a read API key", tags=["dashboard"], include_in_schema=False
)
async def login(request: Request[Any, Any, Any]) -> Response[str]:
    if not _same_site(request):
        return _html(login_page("This sign-in came from another site and was refused."), 403)
    form = await request.form()
    api_key = form.get("api_key")
    authenticator: Authenticator = request.app.state.authenticator
    try:
        if not isinstance(api_key, str) or not api_key.strip():
            raise NotAuthenticated()
        principal = await authenticator.authenticate(f"Bearer {api_key.strip()}")
        principal.require("read")
    except NotAuthenticated:
        return _html(login_page("That API key is not valid."), 401)
    except Forbidden:
        return _html(login_page("That API key lacks the read scope."), 403)
    sessions = _sessions(request)
    viewer = Viewer(key_id=principal.key_id, tenant_id=principal.tenant_id, tenant_name=principal.tenant_name)
    return _redirect(DASHBOARD, [sessions.cookie(sessions.issue(viewer, datetime.now(UTC)))])


@post("/dashboard/logout", summary="Sign out of the dashboard", tags=["dashboard"], include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[str]:
    if not _same_site(request):
        return _html(login_page("This request came from another site and was refused."), 403)
    return _redirect(LOGIN, [_sessions(request).clear()])


routes = [show_dashboard, campaigns_download, show_login, login, logout]
