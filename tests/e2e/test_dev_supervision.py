"""`suppress dev` keeps its worker alive: a real `suppress dev` process reaches the session's Redis
through a FaultProxy (tests/faultproxy.py) this test controls. First the proxy answers LOADING, as
a Redis restarted with a large dump does: dev waits it out and starts. Then Redis drops: /readyz
says so, the in-process worker fails, and once Redis is back the worker is started again (logged)
and runs an import uploaded after the outage."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from suppress.config import ENV_VARS, Settings
from suppress.devstack.embedded import free_port
from tests.conftest import TEST_SECRET, Tenant
from tests.faultproxy import FaultProxy
from tests.live import stop_process


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="suppress-dev-supervision-"))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _readyz(base: str) -> dict[str, str]:
    try:
        body: dict[str, str] = httpx.get(f"{base}/readyz", timeout=3).json()
        return body
    except (httpx.TransportError, ValueError):
        return {}


def _until(what: str, predicate: object, seconds: float, log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"{what}: `suppress dev` exited with {proc.returncode}\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def test_dev_waits_for_a_loading_redis_and_restarts_its_worker_after_redis_drops(
    settings: Settings, tenant: Tenant, folder: Path, private_redis: str
) -> None:
    redis = urlsplit(private_redis)
    proxy = FaultProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        SUPPRESS_DATABASE_URL=settings.require_database_url(),
        SUPPRESS_REDIS_URL=f"redis://127.0.0.1:{proxy.port}{redis.path}",
        SUPPRESS_SECRET=TEST_SECRET,
        SUPPRESS_LOG_LEVEL="INFO",
    )
    log = folder / "dev.log"
    proxy.set("loading")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suppress.cli",
                "dev",
                "--port",
                str(port),
                "--data-dir",
                str(folder / "d"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        # Redis is loading its dump: dev waits (and says so) instead of failing
        _until("dev notices the loading Redis", lambda: "loading" in log.read_text(), 60, log, proc)
        time.sleep(2)
        assert proc.poll() is None, log.read_text()
        proxy.set("forward")
        _until("ready with a worker", lambda: _readyz(base).get("worker") == "ok", 90, log, proc)

        # Redis drops: not ready, and the worker goes down with it
        proxy.set("stopped")
        _until(
            "/readyz reports Redis",
            lambda: _readyz(base).get("redis", "").startswith("unavailable"),
            10,
            log,
            proc,
        )
        _until(
            "the worker's failure is logged", lambda: "the worker failed" in log.read_text(), 30, log, proc
        )
        time.sleep(3)
        proxy.set("forward")
        _until("the worker runs again", lambda: _readyz(base).get("worker") == "ok", 60, log, proc)
        assert "starting it again" in log.read_text()

        # and does its work: an import uploaded now is run to the end
        made = httpx.post(
            f"{base}/v1/imports",
            params={"kind": "suppressions", "format": "csv"},
            content=b"address,reason\nsupervised@example.org,manual\n",
            headers={**tenant.auth("write"), "content-type": "text/csv"},
            timeout=10,
        )
        assert made.status_code == 202, made.text
        status = f"{base}/v1/imports/{made.json()['id']}"

        def done() -> bool:
            return bool(httpx.get(status, headers=tenant.auth("read"), timeout=5).json()["status"] == "done")

        _until("the import is run", done, 60, log, proc)
    finally:
        stop_process(proc)
        proxy.close()
