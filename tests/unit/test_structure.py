"""The layering rules of DESIGN §3, and that every job the service enqueues is registered."""

from __future__ import annotations

import ast
from pathlib import Path

from workers.settings import WorkerSettings

from suppress import queue

SRC = Path(__file__).resolve().parents[2] / "src" / "suppress"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _modules() -> dict[str, set[str]]:
    return {str(p.relative_to(SRC)): _imports(p) for p in SRC.rglob("*.py")}


def test_core_never_imports_litestar() -> None:
    offenders = [
        name
        for name, imports in _modules().items()
        if not (name.startswith("api/") or name in {"app.py", "cli.py"})
        and any(i == "litestar" or i.startswith("litestar.") for i in imports)
    ]
    assert offenders == []


def test_only_queue_imports_arq() -> None:
    offenders = [
        name
        for name, imports in _modules().items()
        if name not in {"queue.py", "cli.py"} and any(i == "arq" or i.startswith("arq.") for i in imports)
    ]
    assert offenders == []


def test_service_never_imports_workers() -> None:
    offenders = [
        name
        for name, imports in _modules().items()
        if name != "cli.py" and any(i == "workers" or i.startswith("workers.") for i in imports)
    ]
    assert offenders == []


def test_policy_and_tokens_are_pure() -> None:
    impure = {"asyncpg", "litestar", "arq", "httpx", "redis", "socket", "time"}
    for name in ("policy.py", "tokens.py"):
        imports = {i.split(".")[0] for i in _imports(SRC / name)}
        assert not imports & impure, name
        text = (SRC / name).read_text()
        assert "datetime.now(" not in text and "time.time(" not in text


def test_api_modules_hold_no_sql() -> None:
    for path in (SRC / "api").glob("*.py"):
        text = path.read_text().upper()
        assert "SELECT " not in text and "INSERT " not in text, path.name


def test_every_enqueued_job_is_registered_in_the_worker() -> None:
    registered = {getattr(f, "name", None) or getattr(f, "__name__", None) for f in WorkerSettings.functions}
    assert registered >= queue.ENQUEUED_JOBS


def test_no_test_hides_behind_xfail_or_skip() -> None:
    """A test that meets a bug, or misses something it needs, fails and says why."""
    tests = SRC.parents[1] / "tests"
    words = ("xfail", "skip" + "if", "pytest.skip", "mark.skip", "importorskip")
    found = [
        f"{path.relative_to(tests)}:{n}"
        for path in tests.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(word in line for word in words) and path.name != "test_structure.py"
    ]
    assert not found, found
