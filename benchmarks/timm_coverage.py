"""Coverage of timm's zoo: how many architectures torchslim prunes (oracle-verified) against Torch-Pruning.

A sample of timm models, the smallest one (or two) of each architecture module, random init, at a small
input (64 px unless the model's config fixes its size). Each model is pruned to -30% MACs by torchslim
(``prune(..., verify=True)``) and by Torch-Pruning (MagnitudePruner, L1, the classifier ignored, one
ratio bisected to the same target, the same ``round_to``), each tool in a process of its own with a time
limit. Per model and tool the outcome is cached in ``benchmarks/cache/timm_coverage/``, so an interrupted
run resumes; the results go to ``benchmarks/results/timm_coverage.json`` and RESULTS.md
(``benchmarks/md_timm.py``).

    nice -n 15 python benchmarks/timm_coverage.py                      # every module
    nice -n 15 python benchmarks/timm_coverage.py --modules ghostnet,resnet,convnext
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
from common import CACHE, ROOT, log, machine_info, write_result

WORKER = ROOT / "timm_worker.py"
TOOLS = ("torchslim", "torch_pruning")
RESULT_NAME = "timm_coverage"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modules", help="Comma-separated timm modules (default: all of timm.list_modules())."
    )
    parser.add_argument("--per-module", type=int, default=1, help="Smallest models per module (default 1).")
    parser.add_argument("--target", type=float, default=0.3, help="MACs fraction to remove (default 0.3).")
    parser.add_argument("--round-to", type=int, default=8, help="Channel alignment, both tools (default 8).")
    parser.add_argument("--timeout", type=int, default=600, help="Seconds per model and tool (default 600).")
    parser.add_argument("--tools", default=",".join(TOOLS), help="Comma-separated subset of the tools.")
    parser.add_argument("--force", action="store_true", help="Run again even where a cached result exists.")
    parser.add_argument(
        "--include-test-models",
        action="store_true",
        help="Also sample timm's test_* models (tiny configurations made for timm's own tests).",
    )
    return parser.parse_args(argv)


def smallest_models(module: str, count: int, include_test: bool = False) -> list[str]:
    """The ``count`` models of ``module`` with the fewest parameters (built on the meta device: no memory,
    no arithmetic); cached per timm version, as counting every model takes minutes."""
    path = CACHE / f"timm_sample-{timm.__version__}.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    if module not in known:
        sizes = {}
        for name in timm.list_models(module=module):
            try:
                with torch.device("meta"):
                    sizes[name] = sum(p.numel() for p in timm.create_model(name).parameters())
            except Exception:  # a model that cannot be built on meta is built by nobody here
                continue
        known[module] = sorted(sizes, key=lambda n: (sizes[n], n))
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
    names = [n for n in known[module] if include_test or not n.startswith("test_")]
    return names[:count]


def _cache_file(tool: str, name: str, args: argparse.Namespace) -> Path:
    return CACHE / "timm_coverage" / tool / f"{name}-t{args.target}-r{args.round_to}.json"


def cached(tool: str, name: str, args: argparse.Namespace) -> dict | None:
    path = _cache_file(tool, name, args)
    return json.loads(path.read_text()) if path.is_file() else None


def run_one(tool: str, name: str, args: argparse.Namespace) -> dict:
    """One worker process; its JSON line, or what went wrong with it (crashed, hung)."""
    cache = _cache_file(tool, name, args)
    if cache.is_file() and not args.force:
        return json.loads(cache.read_text())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT.parent)}
    command = [sys.executable, str(WORKER), tool, name, "--target", str(args.target)]
    command += ["--round-to", str(args.round_to)]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=ROOT
        )
        record = _worker_record(done)
    except subprocess.TimeoutExpired:
        record = {"outcome": "hung", "reason": f"no result within {args.timeout} s"}
    record.update(tool=tool, name=name, wall_seconds=time.perf_counter() - started)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(record, indent=1))
    return record


def _worker_record(done: subprocess.CompletedProcess) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"outcome": "crashed", "reason": f"exit {done.returncode}: {errors[-1] if errors else ''}"[:400]}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    modules = args.modules.split(",") if args.modules else timm.list_modules()
    tools = [t for t in args.tools.split(",") if t]
    machine = machine_info(threads=1)
    rows = []
    for module in modules:
        for name in smallest_models(module, args.per_module, args.include_test_models):
            row = {"name": name, "module": module}
            for tool in TOOLS:  # the tools not asked for keep their cached results
                record = run_one(tool, name, args) if tool in tools else cached(tool, name, args)
                if record is not None:
                    row[tool] = record
                    log(f"{module:24s} {name:32s} {tool:14s} {record['outcome']:8s} {_note(record)}")
            rows.append(row)
    payload = {
        "machine": machine,
        "timm": timm.__version__,
        "settings": {"target": args.target, "round_to": args.round_to, "timeout": args.timeout},
        "modules": len(modules),
        "wall_seconds": time.perf_counter() - started,
        "tool_seconds": {t: sum(r[t].get("wall_seconds", 0.0) for r in rows if t in r) for t in TOOLS},
        "models": rows,
    }
    log(f"wrote {write_result(RESULT_NAME, payload)}")
    return 0


def _note(record: dict) -> str:
    if record["outcome"] == "pruned":
        return f"-{record['macs_removed']:.1%} MACs in {record.get('wall_seconds', 0):.0f} s"
    return str(record.get("reason", ""))[:150]


if __name__ == "__main__":
    sys.exit(main())
