"""The policy core stays pure: no policycore module imports I/O, concurrency or wire libraries.

Two independent checks: an AST walk over every module of ``policycore`` (direct imports, including
imports inside functions and ``TYPE_CHECKING`` blocks) and the import-linter contracts in
pyproject.toml (which also see indirect imports through other packages).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "policycore"
FORBIDDEN = frozenset(
    {
        *("asyncio", "socket", "selectors", "subprocess", "threading", "multiprocessing", "concurrent"),
        *("time", "grpc", "google", "aiokafka", "aetcd", "etcd3", "aiomqtt", "paho", "aiohttp"),
        *("pyroute2", "nftables", "psutil"),
    }
)
"""I/O, concurrency, clock and wire libraries (``google``: protobuf; ``aetcd``, ``etcd3``: etcd clients)."""
FORBIDDEN_FIRST_PARTY = frozenset(
    {"wire", "iokit", "controller", "node_agent", "lab", "loadtest", "kalikoctl"}
)


def imported_roots(source: str) -> set[str]:
    """The top-level package of every module an absolute import statement in ``source`` names."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_checker_sees_every_import_form() -> None:
    source = (
        "import os, asyncio.tasks\n"
        "from time import monotonic\n"
        "from . import sibling\n"
        "def f():\n    import grpc\n"
        "if TYPE_CHECKING:\n    from google.protobuf import message\n"
    )
    assert imported_roots(source) == {"os", "asyncio", "time", "grpc", "google"}


def test_policycore_has_modules_to_check() -> None:
    names = {p.relative_to(CORE).as_posix() for p in core_modules()}
    assert {"ir.py", "diff.py", "model/resources.py", "selector/parser.py"} <= names


@pytest.mark.parametrize("module", core_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_forbidden_import(module: Path) -> None:
    roots = imported_roots(module.read_text(encoding="utf-8"))
    assert roots & FORBIDDEN == set(), f"{module.name} imports I/O or concurrency"
    assert roots & FORBIDDEN_FIRST_PARTY == set(), f"{module.name} imports an outer layer"


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "lint-imports is installed with the dev extra"
    result = subprocess.run(
        [lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert "The policy core is pure" in result.stdout
