"""Fixtures for tests that need the real thing: a `suppress serve` process and headless Chromium.

Registered for every test module by `pytest_plugins` in tests/conftest.py; a module that uses
`server`, `http` or `browser` gets one of each for the whole module.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from suppress.config import ENV_VARS, Settings
from suppress.devstack.embedded import EmbeddedRedis, free_port
from tests.conftest import TEST_SECRET, Tenant

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # the machine's network is closed: without these Chromium keeps dialling out and failing
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 10_000
PHONE: ViewportSize = {"width": 375, "height": 740}


# -- the server and the browser, once per module -----------------------------------------------


@pytest.fixture(scope="module")
def private_redis(embedded_root: Path) -> Iterator[str]:
    """A Redis of the module's own, for real `serve` and `worker` processes: their queued jobs
    (cron jobs enqueued as a worker stopped, say) never reach the suite's in-process workers."""
    server = EmbeddedRedis(embedded_root / f"redis-{secrets.token_hex(3)}")
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def serving(
    database_url: str, redis_url: str, log_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`python -m suppress.cli serve` on a free port of 127.0.0.1 until the context ends (SIGINT,
    then SIGKILL after 30 s); yields its base URL once /readyz answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    environment.update(
        SUPPRESS_DATABASE_URL=database_url,
        SUPPRESS_REDIS_URL=redis_url,
        SUPPRESS_SECRET=TEST_SECRET,
        SUPPRESS_PUBLIC_URL=base,
        **(env or {}),
    )
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "suppress.cli", "serve", "--port", str(port), "--no-access-log", *args],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(proc, base, log_path)
            yield base
        finally:
            stop_process(proc)


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m suppress.cli serve` on a free port; yields its base URL."""
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    with serving(settings.require_database_url(), settings.require_redis_url(), log_path) as base:
        yield base


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log_path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`suppress serve` exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"`suppress serve` not ready within {seconds:.0f} s:\n{log_path.read_text()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a graceful stop), then SIGKILL if it is still running after 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "the browser tests need `chromium` on PATH (.ci/run installs Debian's: "
            "apt-get install chromium); Playwright must not download one"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def open_page(browser: Browser, **context_options: Any) -> AsyncIterator[Page]:
    """A page in a fresh browser context (own cookies, locale, viewport), closed afterwards."""
    context = await browser.new_context(**context_options)
    try:
        context.set_default_timeout(STEP_TIMEOUT_MS)
        yield await context.new_page()
    finally:
        await context.close()


async def api(http: httpx.AsyncClient, tenant: Tenant, path: str, body: Any, scope: str = "admin") -> Any:
    response = await http.post(path, json=body, headers=tenant.auth(scope))
    assert response.status_code < 300, response.text
    return response.json()


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the tests -----------------------------------------------------------------------------------
