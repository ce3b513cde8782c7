"""No token, address or API key in the logs of a full run.

A real `suppress dev` (API + in-process worker), and a real `suppress serve` next to a real
`suppress worker`, each logging at INFO (the worker's every job, the dev one with --verbose), go
through a day's work: checks, unsubscribe page views and one-click unsubscribes, the page's forms,
recipient reads, access exports, suppressions lifted, erasure, and an import the worker runs to
the end. Then their whole output is searched for every address, unsubscribe token and API key the
run used, as written and URL-encoded: none may appear. (The dev banner prints the demo tenant's
key on purpose; this run's keys are others.)
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from suppress.config import ENV_VARS, Settings
from suppress.devstack.embedded import free_port
from tests.conftest import TEST_SECRET, Tenant


class Run:
    """The processes of one run, their shared log file, and the base URL."""

    def __init__(self, mode: str, settings: Settings, redis_url: str, folder: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"{mode}.log"
        env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        env.update(
            SUPPRESS_DATABASE_URL=settings.require_database_url(),
            SUPPRESS_REDIS_URL=redis_url,
            SUPPRESS_SECRET=TEST_SECRET,
            SUPPRESS_PUBLIC_URL=self.base,
            SUPPRESS_LOG_LEVEL="INFO",
            SUPPRESS_DEV_DATA_DIR=str(folder / "dev"),
        )
        cli = [sys.executable, "-m", "suppress.cli"]
        if mode == "dev":
            commands = [
                [*cli, "dev", "--port", str(self.port), "--data-dir", str(folder / "dev"), "--verbose"]
            ]
        else:
            commands = [[*cli, "serve", "--port", str(self.port)], [*cli, "worker"]]
        self.procs: list[subprocess.Popen[bytes]] = []
        with self.log_path.open("ab") as log:
            for command in commands:
                self.procs.append(
                    subprocess.Popen(
                        command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                    )
                )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                pytest.fail(f"a process exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).json().get("worker") == "ok":
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        pytest.fail(f"not ready within 90 s:\n{self.log()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="suppress-logs-test-"))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _until(what: str, predicate: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.2)


def _workload(base: str, tenant: Tenant) -> set[str]:
    """A day's work against the running service; returns every secret and address it used."""
    tag = secrets.token_hex(4)
    emails = [f"log.{tag}.{n}@example.org" for n in range(4)]
    number = f"+4791{secrets.randbelow(10**6):06d}"
    imported = [f"imported.{tag}.{n}@example.net" for n in range(3)]
    used = {*emails, number, *imported, *tenant.keys.values()}

    with httpx.Client(base_url=base, timeout=30) as http:

        def call(method: str, path: str, scope: str = "admin", **kwargs: object) -> httpx.Response:
            headers = {**tenant.auth(scope), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
            response = http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
            return response

        call("POST", "/v1/topics", json={"name": "news", "soft_opt_in": False})
        for address in emails:
            call(
                "POST",
                "/v1/consents",
                "write",
                json={"channel": "email", "address": address, "source": "form"},
            )
        call("POST", "/v1/consents", "write", json={"channel": "sms", "address": number, "source": "form"})
        results = call(
            "POST",
            "/v1/checks",
            "check",
            json={
                "channel": "email",
                "purpose": "marketing",
                "topic": "news",
                "campaign": "c1",
                "recipients": emails,
            },
        ).json()["results"]
        sms = call(
            "POST",
            "/v1/checks",
            "check",
            json={"channel": "sms", "purpose": "marketing", "recipients": [number]},
        ).json()["results"]
        links = [r["unsubscribe_url"] for r in results + sms]
        for url in links:
            used.add(url.rsplit("/", 1)[1])
        # the recipient's side: page views, one-click, the page's forms
        for url in links:
            assert http.get(url).status_code == 200
        for url in links[:2]:
            assert http.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert http.post(links[2], data={"action": "all"}).status_code == 200
        assert http.post(links[2], data={"action": "undo", "scope": "all"}).status_code == 200
        assert http.get(f"{base}/u/{links[0].rsplit('/', 1)[1][:-3]}abc").status_code == 400  # a broken link
        # the sender's side: reads, exports, a lifted suppression, erasure
        for channel, address in (("email", emails[0]), ("email", emails[3]), ("sms", number)):
            call("GET", f"/v1/recipients/{channel}/{quote(address, safe='')}", "read")
            call("GET", f"/v1/recipients/{channel}/{quote(address, safe='')}/export", "read")
        call(
            "POST",
            "/v1/suppressions",
            "write",
            json={"channel": "email", "address": emails[3], "reason": "manual"},
        )
        call(
            "DELETE",
            f"/v1/suppressions/email/{quote(emails[3], safe='')}",
            "write",
            params={"reason": "manual"},
        )
        call("POST", f"/v1/recipients/email/{quote(emails[1], safe='')}/erase")
        call("POST", f"/v1/recipients/sms/{quote(number, safe='')}/restrict", "write")
        # a recipient never seen
        missing = f"nobody.{tag}@example.org"
        used.add(missing)
        http.get(f"/v1/recipients/email/{quote(missing, safe='')}", headers=tenant.auth("read"))
        # an import the worker runs
        body = "address,reason\n" + "".join(f"{a},hard_bounced\n" for a in imported)
        made = call(
            "POST",
            "/v1/imports",
            "write",
            params={"kind": "suppressions", "format": "csv"},
            content=body.encode(),
            headers={"content-type": "text/csv"},
        ).json()
        _until(
            "the import is done",
            lambda: call("GET", f"/v1/imports/{made['id']}", "read").json()["status"] == "done",
        )
    return used


def _leaks(text: str, used: set[str]) -> list[str]:
    lowered = text.lower()
    found = []
    for value in used:
        for form in {value, quote(value, safe=""), quote(value, safe="@+")}:
            if form.lower() in lowered:
                found.append(form)
    return sorted(found)


@pytest.mark.parametrize("mode", ["dev", "serve"])
async def test_no_token_address_or_key_in_the_logs_of_a_full_run(
    mode: str, settings: Settings, tenant: Tenant, folder: Path, db: asyncpg.Connection, private_redis: str
) -> None:
    run = Run(mode, settings, private_redis, folder)
    try:
        run.wait_ready()
        used = _workload(run.base, tenant)
        # the worker has carried out the run's effects (webhooks none, health counts, sealing)
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT count(*) FROM pending_effects WHERE tenant_id = $1", tenant.id):
            assert time.monotonic() < deadline, "effects still pending after 60 s"
            await asyncio.sleep(0.2)
    finally:
        run.stop()
    text = run.log()
    # the run was logged: one line per request, by route
    assert re.search(r"POST /u/\{token\} 200", text), text[-3000:]
    assert re.search(r"GET /v1/recipients/\{channel\}/\{address\} 200", text), text[-3000:]
    assert re.search(r"POST /v1/recipients/\{channel\}/\{address\}/erase 200", text), text[-3000:]
    assert re.search(r"run_import|import \d+/\d+: done", text), text[-3000:]
    assert _leaks(text, used) == [], f"found in the {mode} log:\n{text[-5000:]}"
