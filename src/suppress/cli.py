"""The `suppress` command: dev, serve, worker, migrate, tenants, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from suppress.config import ConfigurationError, Settings
from suppress.errors import SuppressError
from suppress.migrate import migrate
from suppress.sql import load_queries
from suppress.tenants import create_api_key, create_tenant, resolve_tenant

log = logging.getLogger("suppress.cli")


@contextlib.asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(settings.require_database_url())
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(f"cannot connect to PostgreSQL: {exc}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def _migrate(settings: Settings) -> list[str]:
    async with _connection(settings) as conn:
        return await migrate(conn)


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate(Settings.from_env()))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_tenants_create(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _connection(Settings.from_env()) as conn:
            key = await create_tenant(conn, load_queries(), args.name)
            return {
                "tenant": key.tenant_id,
                "name": args.name.strip(),
                "api_key": key.api_key,
                "scopes": key.scopes,
            }

    out = asyncio.run(run())
    if args.json:
        print(json.dumps(out))
    else:
        print(f"tenant {out['tenant']} ({out['name']}) created")
        print(f"admin API key (shown once, store it now): {out['api_key']}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _connection(Settings.from_env()) as conn:
            queries = load_queries()
            tenant_id = await resolve_tenant(conn, queries, args.tenant)
            key = await create_api_key(conn, queries, tenant_id, args.scopes, label=args.label)
            return {
                "tenant": tenant_id,
                "key_id": key.key_id,
                "api_key": key.api_key,
                "scopes": key.scopes,
            }

    out = asyncio.run(run())
    if args.json:
        print(json.dumps(out))
    else:
        print(f"API key for tenant {out['tenant']} with scopes {','.join(out['scopes'])} (shown once):")
        print(out["api_key"])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from suppress.app import create_app

    settings = Settings.from_env()
    settings.require_secret()
    settings.require_database_url()
    settings.require_redis_url()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        proxy_headers=True,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from arq import run_worker
    from workers.settings import WorkerSettings

    settings = Settings.from_env()
    settings.require_database_url()
    settings.require_redis_url()
    run_worker(WorkerSettings)  # type: ignore[arg-type]
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from workers.settings import WorkerSettings

    from suppress.dev import run_dev

    data_dir = Path(args.data_dir) if args.data_dir else None
    return asyncio.run(
        run_dev(host=args.host, port=args.port, data_dir=data_dir, worker_settings=WorkerSettings)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suppress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="run everything locally: embedded PostgreSQL/Redis when none is configured"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--data-dir", help="where embedded servers and the dev secret live")
    dev.set_defaults(func=cmd_dev)

    serve = sub.add_parser(
        "serve", help="run the HTTP API (needs SUPPRESS_SECRET, _DATABASE_URL, _REDIS_URL)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run an arq worker")
    worker.set_defaults(func=cmd_worker)

    mig = sub.add_parser("migrate", help="apply pending schema migrations")
    mig.set_defaults(func=cmd_migrate)

    tenants = sub.add_parser("tenants", help="manage tenants")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    tc = tenants_sub.add_parser("create", help="create a tenant and print its admin API key")
    tc.add_argument("name")
    tc.add_argument("--json", action="store_true", help='print {"tenant": ..., "api_key": ...}')
    tc.set_defaults(func=cmd_tenants_create)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kc = keys_sub.add_parser("create", help="create an API key for a tenant")
    kc.add_argument("--tenant", required=True, help="tenant id or name")
    kc.add_argument("--scopes", required=True, help="comma separated: check,write,read,admin")
    kc.add_argument("--label")
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(func=cmd_keys_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `suppress` command."""
    logging.basicConfig(
        level=os.environ.get("SUPPRESS_LOG_LEVEL", "INFO"),
        format="%(levelname)s %(name)s: %(message)s",
    )
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SuppressError as exc:
        print(f"suppress: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
