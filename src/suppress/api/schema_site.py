"""/schema: the OpenAPI document and the Swagger UI page that shows it, served offline.

The viewer's JavaScript, CSS and icon come from the `swagger-ui-bundle-v2` package and are served by
this service under /schema/assets: the page references no other host, so it works on a machine
without internet access or behind a strict proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

SCHEMA_PATH: Final = "/schema"
ASSETS_PATH: Final = f"{SCHEMA_PATH}/assets"
# The files the page loads, and their media types; nothing else in the package is served.
ASSETS: Final[dict[str, str]] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_ASSET_DIR: Final = Path(str(swagger_ui_path))


@get("/assets/{name:str}", include_in_schema=False, sync_to_thread=False, cache=False)
def schema_asset(name: FromPath[str]) -> Response[bytes]:
    """One of the viewer's files, from the installed package; cached by browsers for a day."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no asset {name!r}")
    return Response(
        (_ASSET_DIR / name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )


def openapi_config() -> OpenAPIConfig:
    """/schema (Swagger UI, also at /schema/swagger) and /schema/openapi.json."""
    return OpenAPIConfig(
        title="suppress",
        version="1.0.0",
        description=(
            "Marketing suppression and unsubscribe service: pre-send checks with the legal "
            "basis, one-click unsubscribe, consents, customer relationships and list health. "
            "Every error is an RFC 9457 problem document (`application/problem+json`, schema "
            "`Problem`) with a stable `code`."
        ),
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(type="http", scheme="bearer", description="API key, `sk_...`")
            }
        ),
        security=[{"BearerAuth": []}],
        openapi_router=Router(SCHEMA_PATH, route_handlers=[schema_asset], include_in_schema=False),
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
            ),
            JsonRenderPlugin(path="/openapi.json"),
        ],
    )
