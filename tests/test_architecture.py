"""The package's shape: layers that import only downward, a small root, and modules and functions a
reader can hold in their head. The import contracts themselves live in pyproject.toml."""

from __future__ import annotations

import ast
import importlib
import importlib.util
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


def test_a_plain_prune_never_imports_the_latency_package():
    """Latency-aware planning plugs into the planner; the default MACs path does not load it."""
    script = (
        "import sys, torch, torchslim\n"
        "from torchslim.models import build_model\n"
        "torchslim.prune(build_model('mobilenet_v1', num_classes=10), torch.randn(1, 3, 32, 32), "
        "target_flops=0.5)\n"
        "print(sorted(m for m in sys.modules if m.startswith('torchslim.')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert "torchslim.pruning.prune" in loaded
    assert not [m for m in loaded if m.startswith("torchslim.latency")]


def _torchslim_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("torchslim")
        ):
            for alias in node.names:
                yield node.lineno, node.module, alias.name


SCRIPTS = sorted(p for folder in ("benchmarks", "scripts", "examples") for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_import_only_what_exists(path):
    """Benchmarks and examples import inside functions too; a moved name must not wait for a run to fail."""
    missing = []
    for line, module, name in _torchslim_imports(path):
        try:
            imported = importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{path.name}:{line} {module} ({error})")
            continue
        if not hasattr(imported, name) and not _is_submodule(module, name):
            missing.append(f"{path.name}:{line} {module}.{name}")
    assert not missing


def _is_submodule(module: str, name: str) -> bool:
    return importlib.util.find_spec(f"{module}.{name}") is not None
