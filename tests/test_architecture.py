"""The package's shape: layers that import only downward, a small root, and modules and functions a
reader can hold in their head. The import contracts themselves live in pyproject.toml."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "torchslim"
ROOT_MODULES = {"__init__.py", "__main__.py", "_version.py", "errors.py", "registry.py"}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def test_import_contracts_hold():
    """import-linter: no package imports from a layer above it, and no cycles between siblings."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys, importlinter.cli as c; sys.exit(c.lint_imports(no_cache=True))"],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_package_root_holds_only_the_base_modules():
    files = {p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py"}
    assert files == ROOT_MODULES


def _modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def _long_functions(path: Path, base: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(base)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_no_module_is_over_the_limit(package):
    long = [
        f"{p.relative_to(REPO)} ({n} lines)"
        for p in _modules(package)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_no_function_is_over_the_limit(package):
    long = [entry for path in _modules(package) for entry in _long_functions(path)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_size_check_sees_a_long_function(tmp_path):
    """The function check above must be able to fail: one line over the limit is reported."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "long.py"
    source.write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert _long_functions(source, tmp_path) == [f"long.py:5 long ({MAX_FUNCTION_LINES + 1} lines)"]
