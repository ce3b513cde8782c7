"""`suppress serve --workers N`: N processes serving one port, /metrics summed over them, and a stop
(SIGTERM, SIGINT, or the supervisor killed) that ends every process after its last counts flush."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from suppress.config import ENV_VARS, Settings
from suppress.devstack.embedded import free_port
from tests.conftest import TEST_SECRET
from tests.live import _wait_ready

pytestmark = pytest.mark.e2e


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    metrics_dir: Path
    log: Path
    env: dict[str, str]

    def workers(self) -> list[int]:
        """The supervisor's spawned server processes."""
        found: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            for pid in task.read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    found.append(int(pid))
        return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(settings: Settings, tmp_path: Path, *extra: str) -> Served:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        SUPPRESS_DATABASE_URL=settings.require_database_url(),
        SUPPRESS_REDIS_URL=settings.require_redis_url(),
        SUPPRESS_SECRET=TEST_SECRET,
        SUPPRESS_PUBLIC_URL=base,
        SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS="3600",  # only a graceful stop flushes in these tests
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "suppress.cli", "serve", "--port", str(port), "--no-access-log", *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, base, metrics_dir, log, env)
    _wait_ready(proc, base, log, seconds=90)
    return served


@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    s = _start(settings, tmp_path, "--workers", "2")
    try:
        yield s
    finally:
        for pid in [*s.workers(), s.proc.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        s.proc.wait(timeout=30)


def _api_key(env: dict[str, str]) -> tuple[int, str]:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "suppress.cli",
            "tenants",
            "create",
            f"workers-{os.getpid()}-{time.time_ns()}",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(made.stdout)
    return out["tenant"], out["api_key"]


def _check(base: str, key: str, i: int) -> None:
    """One check on a connection of its own, so any process may accept it."""
    response = httpx.post(
        f"{base}/v1/checks",
        json={
            "channel": "email",
            "purpose": "marketing",
            "campaign": "spread",
            "recipients": [f"w{i}@example.no"],
        },
        headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def _checks_until_every_worker_answered(served: Served, key: str, workers: int) -> int:
    """Checks until each process has counted one (each writes its own counter file); how many."""
    made = 0
    while made < 400:
        _check(served.base, key, made)
        made += 1
        pids = {p.stem.rsplit("_", 1)[1] for p in served.metrics_dir.glob("counter_*.db")}
        if len(pids) >= workers:
            return made
    pytest.fail(f"{made} checks on fresh connections never reached {workers} processes")


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in /metrics:\n{text}")


def test_workers_start_n_serving_processes_and_metrics_sum_over_them(served: Served) -> None:
    workers = served.workers()
    assert len(workers) == 2, served.log.read_text()
    assert not (served.metrics_dir / "counter_1.db").exists()  # the earlier run's file was cleaned
    _, key = _api_key(served.env)
    made = _checks_until_every_worker_answered(served, key, 2)
    assert {int(p.stem.rsplit("_", 1)[1]) for p in served.metrics_dir.glob("counter_*.db")} == set(workers)
    # whichever process answers the scrape, it reports every process's checks
    for _ in range(6):
        text = httpx.get(f"{served.base}/metrics", headers={"Connection": "close"}, timeout=10).text
        assert _metric(text, 'suppress_checks_total{channel="email",purpose="marketing"}') == made
        assert (
            _metric(
                text, 'suppress_check_recipients_total{allowed="false",channel="email",outcome="no_basis"}'
            )
            == made
        )


def _counted(database_url: str, tenant_id: int) -> int:
    async def fetch() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            n: int = await conn.fetchval(
                "SELECT coalesce(sum(recipients), 0) FROM check_counts WHERE tenant_id = $1", tenant_id
            )
            return n
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "supervisor killed"])
def test_a_stop_ends_every_process_after_flushing_its_counts(
    served: Served, database_url: str, stop: str
) -> None:
    workers = served.workers()
    assert len(workers) == 2
    tenant_id, key = _api_key(served.env)
    made = _checks_until_every_worker_answered(served, key, 2)
    assert _counted(database_url, tenant_id) == 0  # the next flush is an hour away
    if stop == "supervisor killed":
        served.proc.kill()
    else:
        served.proc.send_signal(getattr(signal, stop))
    returncode = served.proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), served.log.read_text()
    if stop != "supervisor killed":
        assert returncode == 0, served.log.read_text()
    # every process flushed what it had counted on its way out
    assert _counted(database_url, tenant_id) == made, served.log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.base}/healthz", timeout=2)


def test_workers_must_be_a_positive_number(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    for bad in ("0", "-1", "two"):
        result = subprocess.run(
            [sys.executable, "-m", "suppress.cli", "serve", "--workers", bad],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2 and "--workers" in result.stderr


def test_one_worker_with_a_metrics_dir_set_counts_only_this_run(settings: Settings, tmp_path: Path) -> None:
    s = _start(settings, tmp_path, "--workers", "1")
    try:
        assert s.workers() == []  # serves in the process itself
        assert not (s.metrics_dir / "counter_1.db").exists()  # the earlier run's file was cleaned
        _, key = _api_key(s.env)
        for i in range(3):
            _check(s.base, key, i)
        text = httpx.get(f"{s.base}/metrics", timeout=10).text
        assert _metric(text, 'suppress_checks_total{channel="email",purpose="marketing"}') == 3
    finally:
        s.proc.send_signal(signal.SIGTERM)
        # uvicorn, serving alone, re-raises the signal it stopped for once it has shut down
        assert s.proc.wait(timeout=60) in (0, -signal.SIGTERM)
