"""The application `suppress serve` runs, plus one bench-only route, served the same way.

    uv run python -m bench.health_server --port 8001

GET /bench/select-1 authenticates the caller exactly as GET /v1/health does (Bearer key, `read`
scope) and runs `SELECT 1` on the same pool: the floor a health read is measured against, so the
difference is what the health read itself costs (its SELECTs, building and encoding the report).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from litestar import Request, get

from suppress.api.auth import caller
from suppress.app import create_app
from suppress.config import Settings


@get("/bench/select-1", include_in_schema=False)
async def select_one(request: Request[Any, Any, Any]) -> dict[str, int]:
    await caller(request, "read")
    value: int = await request.app.state.pool.fetchval("SELECT 1")
    return {"ok": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings.from_env()
    app = create_app(settings)
    app.register(select_one)
    # the same options as `suppress serve` (src/suppress/cli.py), without the access log
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=True
    )


if __name__ == "__main__":
    main()
