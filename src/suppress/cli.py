"""The `suppress` command: dev, serve, worker, migrate, tenants, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from suppress.config import ConfigurationError, MissingSetting, Settings
from suppress.errors import SuppressError
from suppress.ledger import Checkpoint, checkpoint_out, ledger_key
from suppress.migrate import migrate
from suppress.sealer import Sealed, seal_all, seal_tenant
from suppress.sql import Queries, load_queries
from suppress.tenants import create_api_key, create_tenant, resolve_tenant
from suppress.verifier import VerifyResult, load_kept, verify_ledger

if TYPE_CHECKING:
    pass

log = logging.getLogger("suppress.cli")


def _settings() -> Settings:
    """The environment's settings; with no database named there, a running `suppress dev`'s."""
    from suppress.devstack import settings_file

    return Settings.from_env(settings_file.environ(os.environ))


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


@contextlib.asynccontextmanager
async def _tenant(tenant: str) -> AsyncIterator[tuple[asyncpg.Connection, Queries, int]]:
    """A connection, the queries, and the id of the tenant named (by id or name) on the command line."""
    async with _connection(_settings()) as conn:
        queries = load_queries()
        yield conn, queries, await resolve_tenant(conn, queries, tenant)


def _show(args: argparse.Namespace, out: dict[str, Any], *lines: str) -> int:
    """Print `out` as JSON with --json, else the lines for a person."""
    print(json.dumps(out) if args.json else "\n".join(lines))
    return 0


async def _migrate(settings: Settings) -> list[str]:
    async with _connection(settings) as conn:
        return await migrate(conn)


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate(_settings()))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_tenants_create(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _connection(_settings()) as conn:
            key = await create_tenant(conn, load_queries(), args.name)
            return {
                "tenant": key.tenant_id,
                "name": args.name.strip(),
                "api_key": key.api_key,
                "scopes": key.scopes,
            }

    out = asyncio.run(run())
    return _show(
        args,
        out,
        f"tenant {out['tenant']} ({out['name']}) created",
        f"admin API key (shown once, store it now): {out['api_key']}",
    )


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _tenant(args.tenant) as (conn, queries, tenant_id):
            key = await create_api_key(conn, queries, tenant_id, args.scopes, label=args.label)
            return {
                "tenant": tenant_id,
                "key_id": key.key_id,
                "api_key": key.api_key,
                "scopes": key.scopes,
            }

    out = asyncio.run(run())
    return _show(
        args,
        out,
        f"API key for tenant {out['tenant']} with scopes {','.join(out['scopes'])} (shown once):",
        out["api_key"],
    )


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    settings = _settings()
    key = ledger_key(settings.require_secret()) if settings.secret else None
    kept: dict[int, Checkpoint] = {}
    if args.checkpoints:
        try:
            kept = load_kept(Path(args.checkpoints).read_bytes())
        except (OSError, ValueError, msgspec.ValidationError) as exc:
            print(f"cannot use {args.checkpoints}: {exc}", file=sys.stderr)
            return 2
    if key is None and not kept:
        print(
            "warning: without SUPPRESS_SECRET or --checkpoints only the ledger's internal consistency "
            "is checked; a rewrite that recomputed every hash would pass",
            file=sys.stderr,
        )

    async def run() -> VerifyResult:
        async with _tenant(args.tenant) as (conn, queries, tenant_id):
            return await verify_ledger(conn, queries, tenant_id, key=key, kept=kept)

    result = asyncio.run(run())
    if args.json:
        print(msgspec.json.encode(result).decode())
    elif result.ok:
        checked = [c for c, on in (("checkpoint MACs", result.key_checked), ("kept checkpoints", kept)) if on]
        print(
            f"ledger intact: {result.events} sealed event(s) in {result.checkpoints} checkpoint(s), "
            f"{result.unsealed} not sealed yet"
            + (f", {result.legacy_events} in legacy chains" if result.legacy_events else "")
            + (f"; checked {' and '.join(checked)}" if checked else "")
        )
    else:
        where = (
            f"checkpoint {result.first_bad_checkpoint}" if result.first_bad_checkpoint else "legacy chains"
        )
        if result.first_bad_event is not None:
            where = f"event {result.first_bad_event} ({where})"
        print(f"ledger BROKEN at {where}: {result.problem}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_ledger_head(args: argparse.Namespace) -> int:
    async def run() -> Checkpoint | None:
        async with _tenant(args.tenant) as (conn, queries, tenant_id):
            row = await conn.fetchrow(queries.ledger_last_checkpoint, tenant_id)
            return None if row is None else checkpoint_out(row)

    print(msgspec.json.encode({"tenant": args.tenant, "checkpoint": asyncio.run(run())}).decode())
    return 0


def cmd_ledger_seal(args: argparse.Namespace) -> int:
    settings = _settings()
    key = ledger_key(settings.require_secret())

    async def run() -> list[Sealed]:
        if args.tenant:
            async with _tenant(args.tenant) as (conn, queries, tenant_id):
                return await seal_tenant(conn, queries, key, tenant_id)
        pool = await asyncpg.create_pool(settings.require_database_url(), min_size=1, max_size=1)
        try:
            return await seal_all(pool, load_queries(), key)
        finally:
            await pool.close()

    made = asyncio.run(run())
    for sealed in made:
        c = sealed.checkpoint
        print(f"tenant {c.tenant} checkpoint {c.seq}: {c.tree_size} event(s), root {c.root}")
    print(f"sealed {len(made)} checkpoint(s); webhook deliveries wait for a worker")
    return 0


# `serve --no-access-log`, handed to the processes `serve --workers N` spawns
ACCESS_LOG_ENV = "SUPPRESS_ACCESS_LOG"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from suppress.api.access import AccessLog
    from suppress.app import create_app
    from suppress.logs import access_logging

    settings = Settings.from_env()
    settings.require_secret()
    settings.require_database_url()
    settings.require_redis_url()
    access_logging(enabled=args.access_log)
    os.environ[ACCESS_LOG_ENV] = "1" if args.access_log else "0"  # for the spawned processes
    workers = args.workers or _cores()
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        # our access log names routes, not paths (tokens, addresses); uvicorn's is off, and
        # log_config=None keeps uvicorn on the redacting handler suppress.logs installed
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
    }
    if workers == 1:
        with _metrics_dir(make=False):  # one process: multiprocess mode only if the variable is set
            uvicorn.run(AccessLog(create_app(settings)), **options)
        return 0
    # N processes share the listening socket; uvicorn's supervisor starts them, restarts one that
    # dies, and on SIGTERM or SIGINT stops them all (each one gracefully: its lifespan flushes the
    # check counts) before it exits itself.
    with _metrics_dir():
        uvicorn.run("suppress.cli:serve_worker_app", factory=True, workers=workers, **options)
    return 0


def _cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _metrics_dir(make: bool = True) -> Iterator[None]:
    """A PROMETHEUS_MULTIPROC_DIR for this run, empty at start: the one set, or (with `make`) a
    temporary one.

    Files left by an earlier run would add that run's counts to this one's.
    """
    from suppress.metrics import MULTIPROCESS_ENV

    given = os.environ.get(MULTIPROCESS_ENV)
    if not given and not make:
        yield
        return
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        yield
        return
    made = tempfile.mkdtemp(prefix="suppress-metrics-")
    os.environ[MULTIPROCESS_ENV] = made
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(made, ignore_errors=True)


def serve_worker_app() -> Any:
    """The application of one `serve --workers N` process (a fresh interpreter, spawned)."""
    from suppress.api.access import AccessLog
    from suppress.app import create_app
    from suppress.logs import access_logging

    _die_with_parent()
    _configure_logging()  # the supervisor's own configuration does not reach a spawned process
    access_logging(enabled=os.environ.get(ACCESS_LOG_ENV, "1") != "0")
    return AccessLog(create_app(Settings.from_env()))


def _die_with_parent() -> None:
    """Linux: get SIGTERM (a graceful stop) when the supervisor dies, even by SIGKILL, so no
    process is left serving the port alone."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


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

    from suppress.devstack.runner import run_dev

    data_dir = Path(args.data_dir) if args.data_dir else None
    return asyncio.run(
        run_dev(
            host=args.host,
            port=args.port,
            data_dir=data_dir,
            worker_settings=WorkerSettings,
            verbose=args.verbose,
        )
    )


def cmd_import(args: argparse.Namespace) -> int:
    """Store a file as an import and run it here, with a progress bar, straight against the database.

    Direct rather than through the API: an operator loading a legacy list on the server needs
    neither a running API nor a worker, sees every batch land, and an interrupted run is resumable
    (`--resume ID`, or any worker picks it up once its lease runs out). Same storage, job and
    write path as POST /v1/imports.
    """
    from suppress.addresses import AddressHasher
    from suppress.config import DerivedKeys
    from suppress.db import create_pool
    from suppress.imports.records import ImportOptions
    from suppress.imports.runs import Progress, run_import
    from suppress.imports.uploads import Imports
    from suppress.progress import ProgressBar

    settings = _settings()
    hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
    path = Path(args.file) if args.file else None
    if path is None and args.resume is None:
        raise ConfigurationError("give a FILE to import, or --resume ID")
    fmt: Any = args.format or (path and _IMPORT_FORMATS_BY_SUFFIX.get(path.suffix.lower()))
    if path is not None and (not args.kind or not fmt):
        raise ConfigurationError("say --kind, and --format when the file name does not tell (.csv, .ndjson)")

    async def chunks(file: Path) -> AsyncIterator[bytes]:
        with file.open("rb") as handle:
            while piece := handle.read(1024 * 1024):
                yield piece

    async def run() -> int:
        pool = await create_pool(settings.require_database_url(), size=2)
        queries = load_queries()
        bar = ProgressBar(sys.stderr)
        try:
            async with _connection(settings) as conn:
                tenant_id = await resolve_tenant(conn, queries, args.tenant)
            service = Imports(pool, queries, None, max_bytes=settings.import_max_bytes)
            import_id = args.resume
            if path is not None:
                options = ImportOptions(
                    kind=args.kind,
                    format=fmt,
                    channel=args.channel,
                    reason=args.reason,
                    topic=args.topic,
                    list=args.list,
                    source=args.source,
                )
                import_id = await service.create(
                    tenant_id,
                    f"cli:{os.environ.get('USER', 'unknown')}",
                    options,
                    chunks(path),
                    filename=path.name,
                )
                print(f"stored {path.name} as import {import_id}", file=sys.stderr)

            def show(p: Progress) -> None:
                extra = f"unchanged {p.unchanged:,}  failed {p.failed:,}  line {p.lines_done:,}"
                bar.update(p.bytes_done / p.bytes_total, p.done, extra)

            try:
                result = await run_import(pool, queries, hasher, tenant_id, import_id, on_progress=show)
            except (KeyboardInterrupt, asyncio.CancelledError):
                bar.close()
                print(
                    f"interrupted; go on with: suppress import --resume {import_id} --tenant {args.tenant}",
                    file=sys.stderr,
                )
                return 130
            bar.close()
            view = await service.get(tenant_id, import_id, errors=10)
        finally:
            await pool.close()
        if result.status == "busy":
            print(f"import {import_id} is being run elsewhere (a worker holds it)", file=sys.stderr)
        out = {
            "import": view.id,
            "status": view.status,
            "done": view.done,
            "unchanged": view.unchanged,
            "failed": view.failed,
            "error": view.error,
            "first_errors": [{"line": e.line, "error": e.error} for e in view.errors],
        }
        print(json.dumps(out, indent=None if args.json else 2))
        return 0 if view.status == "done" else 1

    return asyncio.run(run())


_IMPORT_FORMATS_BY_SUFFIX = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suppress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="run everything locally: embedded PostgreSQL/Redis when none is configured"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--data-dir", help="where embedded servers and the dev secret live")
    dev.add_argument("--verbose", action="store_true", help="also log every job the worker runs")
    dev.set_defaults(func=cmd_dev)

    serve = sub.add_parser(
        "serve", help="run the HTTP API (needs SUPPRESS_SECRET, _DATABASE_URL, _REDIS_URL)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    serve.add_argument(
        "--workers",
        type=_positive,
        default=0,
        metavar="N",
        help="server processes sharing the port (default: one per core); /metrics sums them all",
    )
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

    ledger = sub.add_parser("ledger", help="the tamper-evident event ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    lv = ledger_sub.add_parser(
        "verify",
        help="re-derive a tenant's leaves, checkpoints and their MACs (with SUPPRESS_SECRET); "
        "exit 1 naming the first bad event",
    )
    lv.add_argument("--tenant", required=True, help="tenant id or name")
    lv.add_argument(
        "--checkpoints",
        metavar="FILE",
        help="checkpoints the tenant kept (JSON from GET /v1/ledger/checkpoints): verify against them",
    )
    lv.add_argument("--json", action="store_true")
    lv.set_defaults(func=cmd_ledger_verify)
    lh = ledger_sub.add_parser("head", help="print a tenant's newest checkpoint as JSON")
    lh.add_argument("--tenant", required=True, help="tenant id or name")
    lh.set_defaults(func=cmd_ledger_head)
    ls = ledger_sub.add_parser(
        "seal", help="seal unsealed events into checkpoints now (workers do it every second)"
    )
    ls.add_argument("--tenant", help="only this tenant (id or name)")
    ls.set_defaults(func=cmd_ledger_seal)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kc = keys_sub.add_parser("create", help="create an API key for a tenant")
    kc.add_argument("--tenant", required=True, help="tenant id or name")
    kc.add_argument("--scopes", required=True, help="comma separated: check,write,read,admin")
    kc.add_argument("--label")
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(func=cmd_keys_create)

    imp = sub.add_parser(
        "import",
        help="import a file of suppressions, consents or customers, with a progress bar (docs/imports.md)",
    )
    imp.add_argument("file", nargs="?", help="the file (CSV, NDJSON, or a provider's suppression export)")
    imp.add_argument("--tenant", required=True, help="tenant id or name")
    imp.add_argument("--kind", choices=["suppressions", "consents", "customers"])
    imp.add_argument(
        "--format",
        choices=["csv", "ndjson", "sendgrid", "mailgun", "ses"],
        help="default: from the file name",
    )
    imp.add_argument("--channel", default="email", choices=["email", "sms"], help="for rows that name none")
    imp.add_argument("--reason", help="suppression reason for rows that name none")
    imp.add_argument("--topic", help="topic for rows that name none")
    imp.add_argument("--list", help="which provider list the file holds (e.g. unsubscribes, spam_reports)")
    imp.add_argument("--source", help="consent source for rows that name none (default: import)")
    imp.add_argument("--resume", type=int, metavar="ID", help="go on with an interrupted import")
    imp.add_argument("--json", action="store_true", help="print the summary on one line")
    imp.set_defaults(func=cmd_import)
    return parser


def _configure_logging() -> None:
    from suppress.logs import configure

    configure(os.environ.get("SUPPRESS_LOG_LEVEL", "INFO"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `suppress` command."""
    _configure_logging()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except MissingSetting as exc:
        from suppress.devstack import settings_file

        print(f"suppress: {exc.detail}", file=sys.stderr)
        if args.func is not cmd_serve and args.func is not cmd_worker:
            print(
                "suppress: with no SUPPRESS_DATABASE_URL set, this command uses a running `suppress dev`'s "
                f"settings from {settings_file.path()}; there is none (start `suppress dev`, or set "
                "the SUPPRESS_* variables its banner prints)",
                file=sys.stderr,
            )
        return 2
    except SuppressError as exc:
        print(f"suppress: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
