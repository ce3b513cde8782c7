"""The `suppress` command, run as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from suppress.config import ENV_VARS
from suppress.devstack.embedded import free_port


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suppress.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(extra)
    return env


def test_tenants_and_keys_create(database_url: str) -> None:
    env = clean_env(SUPPRESS_DATABASE_URL=database_url)
    made = run("tenants", "create", "cli tenant", "--json", env=env)
    assert made.returncode == 0, made.stderr
    tenant = json.loads(made.stdout)
    assert set(tenant) >= {"tenant", "api_key"} and tenant["api_key"].startswith("sk_")
    key = run("keys", "create", "--tenant", "cli tenant", "--scopes", "check,read", "--json", env=env)
    assert key.returncode == 0, key.stderr
    assert json.loads(key.stdout)["scopes"] == ["check", "read"]
    assert tenant["api_key"] not in key.stdout
    again = run("tenants", "create", "cli tenant", env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = run("keys", "create", "--tenant", str(tenant["tenant"]), "--scopes", "check,root", env=env)
    assert bad.returncode == 2 and "scopes" in bad.stderr
    nobody = run("keys", "create", "--tenant", "no such tenant", "--scopes", "read", env=env)
    assert nobody.returncode == 2 and "no tenant" in nobody.stderr


def test_migrate_is_idempotent(database_url: str) -> None:
    result = run("migrate", env=clean_env(SUPPRESS_DATABASE_URL=database_url))
    assert result.returncode == 0 and "applied 0 migration(s)" in result.stdout


@pytest.mark.parametrize("secret", [None, "too-short"])
def test_serve_refuses_without_a_proper_secret(database_url: str, secret: str | None) -> None:
    env = clean_env(SUPPRESS_DATABASE_URL=database_url, SUPPRESS_REDIS_URL="redis://127.0.0.1:1/0")
    if secret:
        env["SUPPRESS_SECRET"] = secret
    result = run("serve", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == 2
    assert "SUPPRESS_SECRET" in result.stderr
    if secret:
        assert secret not in result.stderr


def test_missing_database_is_a_clear_error() -> None:
    result = run("migrate", env=clean_env(SUPPRESS_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"))
    assert result.returncode == 2 and "cannot connect to PostgreSQL" in result.stderr


@pytest.fixture
def dev_data_dir() -> Iterator[Path]:
    # not pytest's tmp_path: as root, the embedded servers' own user must be able to reach it
    path = Path(tempfile.mkdtemp(prefix="suppress-dev-test-"))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_dev_runs_everything_with_nothing_configured(dev_data_dir: Path) -> None:
    """The README's promise: `suppress dev` with no servers configured serves /readyz and checks,
    and the other commands reach it with no SUPPRESS_* connection settings."""
    port = free_port()
    env = clean_env(SUPPRESS_DEV_DATA_DIR=str(dev_data_dir))  # its default folder, for both sides
    proc = subprocess.Popen(
        [sys.executable, "-m", "suppress.cli", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops everything" in line for line in output) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
        banner = "".join(output)
        match = re.search(r"demo API key (sk_\S+)", banner)
        assert match, banner
        key = match.group(1)
        settings = dev_data_dir / "dev-settings.json"
        assert f"settings     {settings}" in banner
        assert f"secret       {dev_data_dir / 'secret'}" in banner
        assert re.search(r"^  export SUPPRESS_DATABASE_URL=postgresql://\S+$", banner, re.M), banner
        assert f'export SUPPRESS_SECRET="$(cat {dev_data_dir / "secret"})"' in banner
        assert settings.stat().st_mode & 0o777 == 0o600
        assert "SUPPRESS_SECRET" not in settings.read_text()  # where it lives, never the secret
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        response = httpx.post(
            f"{base}/v1/checks",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "channel": "email",
                "purpose": "marketing",
                "topic": "newsletter",
                "recipients": ["ola.nordmann@example.no", "nils@example.no", "nobody@example.no"],
            },
        )
        assert response.status_code == 200, response.text
        reasons = [r["reason"] for r in response.json()["results"]]
        assert reasons == [None, "unsubscribed", "no_basis"]
        assert response.json()["results"][0]["unsubscribe_url"].startswith(base + "/u/")
        assert (dev_data_dir / "secret").stat().st_mode & 0o777 == 0o600

        made = run("keys", "create", "--tenant", "demo", "--scopes", "check", "--json", env=env)
        assert made.returncode == 0, made.stderr
        new_key = json.loads(made.stdout)["api_key"]
        works = httpx.post(
            f"{base}/v1/checks",
            headers={"Authorization": f"Bearer {new_key}"},
            json={"channel": "email", "purpose": "marketing", "recipients": ["nobody@example.no"]},
        )
        assert works.status_code == 200, works.text
        assert run("ledger", "verify", "--tenant", "demo", env=env).returncode == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=30)  # reads what is left and closes the pipe
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    log = "".join(output) + rest
    assert "stopped" in rest, log
    assert "embedded postgres stopped" in rest
    assert "apply_effects" not in log  # no line per routine job without --verbose
    assert "POST /v1/checks" in log  # requests still show
    assert not settings.exists()
    gone = run("keys", "create", "--tenant", "demo", "--scopes", "check", env=env)
    assert gone.returncode == 2
    assert "SUPPRESS_DATABASE_URL is not set" in gone.stderr and str(settings) in gone.stderr
