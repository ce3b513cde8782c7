"""The API keeps its OpenAPI contract: Schemathesis drives a real `suppress serve` from
/schema/openapi.json (coverage, fuzzing and stateful phases) and every answer must be documented —
status, content type and body schema — and none may be a 5xx.

The server gets a database and a Redis of its own: what the generated requests register (webhooks
to made-up hosts, imports, provider configurations) must never reach a worker of another test.
The seed is random and printed; rerun a failure with SUPPRESS_CONTRACT_SEED=<seed>.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser

from suppress.sql import Queries
from suppress.tenants import create_tenant
from tests.conftest import migrated_database
from tests.live import open_page, serving

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
PHASES = ("coverage", "fuzzing", "stateful")
# Cases per operation and phase: the whole run stays around a minute on two shared cores.
MAX_EXAMPLES = 15
RUN_TIMEOUT_S = 540


@pytest.fixture(scope="module")
async def contract_database(server_database_url: str) -> AsyncIterator[str]:
    async with migrated_database(server_database_url, "suppress_contract") as url:
        yield url


@pytest.fixture(scope="module")
def contract_server(
    contract_database: str, private_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("contract") / "serve.log"
    with serving(contract_database, private_redis, log_path) as base:
        yield base


@pytest.fixture(scope="module")
async def contract_key(contract_server: str, contract_database: str, queries: Queries) -> str:
    """A tenant with a topic, a suppression and a customer to find; returns its admin key (every scope)."""
    conn = await asyncpg.connect(contract_database)
    try:
        key = (await create_tenant(conn, queries, "contract")).api_key
    finally:
        await conn.close()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=contract_server, headers=auth, timeout=10) as http:
        for path, body in (
            ("/v1/topics", {"name": "newsletter", "soft_opt_in": True}),
            ("/v1/suppressions", {"channel": "email", "address": "ola@example.no", "reason": "manual"}),
            (
                "/v1/customers",
                {
                    "customer_ref": "c-1",
                    "event": "purchase",
                    "addresses": [
                        {"channel": "email", "address": "kari@example.no", "collected_in_sale": True}
                    ],
                },
            ),
        ):
            response = await http.post(path, json=body)
            assert response.status_code < 300, response.text
    return key


def _say(config: pytest.Config, line: str) -> None:
    """A line in the run's own output, captured or not (CI's log shows the seed of every run)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def test_the_api_answers_as_its_openapi_document_says(
    contract_server: str, contract_key: str, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    seed = int(os.environ.get("SUPPRESS_CONTRACT_SEED") or secrets.randbelow(2**31))
    _say(pytestconfig, f"schemathesis seed: {seed} (rerun with SUPPRESS_CONTRACT_SEED={seed})")
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{contract_server}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {contract_key}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "30",
    ]
    env = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    summary = run.stdout[-25_000:] + run.stderr[-3_000:]
    assert run.returncode == 0, f"schemathesis seed {seed} (SUPPRESS_CONTRACT_SEED={seed}):\n{summary}"
    assert "Tested: " in run.stdout, summary
    # The run's size, for the log: "N generated, N passed".
    _say(pytestconfig, next((line.strip() for line in run.stdout.splitlines() if " generated, " in line), ""))


async def test_the_schema_page_renders_offline_in_a_browser(server: str, browser: Browser) -> None:
    """Swagger UI comes from this service: Chromium asks no other host and shows the operations."""
    requested: list[str] = []
    async with open_page(browser) as page:
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(f"{server}/schema")
        await page.locator(".opblock").first.wait_for()
        operations = await page.locator(".opblock").count()
        title = await page.locator(".info .title").inner_text()
    assert operations >= 40, operations
    assert title.startswith("suppress")
    foreign = [url for url in requested if not url.startswith(server) and not url.startswith("data:")]
    assert not foreign, foreign
    assert f"{server}/schema/assets/swagger-ui-bundle.js" in requested
