"""Run the benchmark suite (P1-P4) and write benchmarks/RESULTS.md: ``make bench``.

    python benchmarks/run_all.py                 # everything (P3, P4, round_to sweep, P2, P2 x3,
                                                 # candidates, P1, P1 seeds, P1 like for like, Q,
                                                 # ExecuTorch vs ONNX Runtime, ViT round_to, small ViT)
    python benchmarks/run_all.py --only p2 p3    # some of them; RESULTS.md keeps the others' last results
    python benchmarks/run_all.py --quick         # a smoke run: results-quick/ and RESULTS-quick.md

Needs Torch-Pruning 1.6.1 (``pip install torch-pruning==1.6.1``, the ``bench`` extra),
Fashion-MNIST for P1 and the ``executorch`` extra for the ExecuTorch step. The Fashion-MNIST
baselines, Torch-Pruning's bisected ratios, the ExecuTorch/ONNX exports and the latency table are
cached (benchmarks/cache/, ~/.cache/torchslim).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402
import executorch_bench  # noqa: E402
import latency  # noqa: E402
import latency_candidates  # noqa: E402
import p2_repeats  # noqa: E402
import quantization  # noqa: E402
import small_vit  # noqa: E402
import throughput  # noqa: E402
import tool_cost  # noqa: E402
import vit_round_to  # noqa: E402
from common import ROOT, log, use_results_dir  # noqa: E402
from results_md import write_readme, write_results_md  # noqa: E402

STEPS = (
    "p3",
    "p4",
    "sweep",
    "p2",
    "p2repeats",
    "candidates",
    "p1",
    "p1seeds",
    "p1like",
    "quant",
    "executorch",
    "vitroundto",
    "smallvit",
)
# benchmarks/p1_like_for_like.py trains on one thread: two processes, one per core, split by model.
P1_LIKE_PROCESSES = (["mobilenet_v2", "mobilenet_v1"], ["resnet34"])
# Every P1 row RESULTS.md shows: the three models, torchslim's other criteria and both latency-aware plans.
P1_FULL = [
    "--models",
    "mobilenet_v2",
    "resnet34",
    "mobilenet_v1",
    "--extra-criteria",
    "bn_scale",
    "l1_group",
    "fpgm",
    "taylor",
    "--latency-aware",
    "--latency-scored",
]


def p1_seeds(quick: bool) -> None:
    """ResNet34's P1 starts fine-tuned with seeds 1 and 2, one process per seed (P1 trains on one thread)."""
    import subprocess

    if quick:  # it fine-tunes the full run's starts; there is no quick version of them
        log("p1seeds: skipped with --quick")
        return

    script = str(Path(__file__).resolve().parent / "accuracy_seeds.py")
    runs = [
        subprocess.Popen([sys.executable, script, "--models", "resnet34", "--seeds", str(seed)])
        for seed in (1, 2)
    ]
    failed = [run.args for run in runs if run.wait() != 0]
    if failed:
        raise SystemExit(f"P1 seeds failed: {failed[0]}")


def p1_like_for_like(quick: bool) -> None:
    """The like-for-like P1 in two processes (resumable: a rerun continues where a run stopped)."""
    import subprocess

    script = str(Path(__file__).resolve().parent / "p1_like_for_like.py")
    if quick:
        commands = [[sys.executable, script, "--smoke", "--results-dir", str(ROOT / "results-quick")]]
    else:
        commands = [[sys.executable, script, "--models", *models] for models in P1_LIKE_PROCESSES]
    runs = [subprocess.Popen(command) for command in commands]
    failed = [run.args for run in runs if run.wait() != 0]
    if failed:
        raise SystemExit(f"P1 like for like failed: {failed[0]}")


SMALL_VIT_QUICK = ["--seeds", "0", "--epochs", "1", "--finetune-epochs", "1", "--train-limit", "2000"]
SMALL_VIT_QUICK += ["--val-images", "500", "--test-limit", "500", "--timing-rounds", "5"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    args = parser.parse_args(argv)
    quick = args.quick
    report = ROOT / ("RESULTS-quick.md" if quick else "RESULTS.md")
    if quick:  # chance-level P1 numbers must never mix with, or replace, the real ones
        use_results_dir(ROOT / "results-quick")
    runs = {
        "p3": lambda: tool_cost.main(
            ["--repeats", "2" if quick else "5", "--tp-repeats", "1" if quick else "2"]
        ),
        "p4": lambda: throughput.main(["--rounds", "2" if quick else "10"]),
        "sweep": lambda: latency.main(["--round-to-sweep", "--rounds", "6" if quick else "40"]),
        "p2": lambda: latency.main(["--rounds", "6" if quick else "40"]),
        "p2repeats": lambda: p2_repeats.main(
            ["--repeats", "1", "--rounds", "4", "--profile-runs", "4"] if quick else []
        ),
        "candidates": lambda: latency_candidates.main(["--rounds", "6", "--repeats", "1"] if quick else []),
        "p1": lambda: accuracy.main(
            P1_FULL
            + (
                [
                    "--train-limit",
                    "2000",
                    "--val-limit",
                    "1000",
                    "--finetune-epochs",
                    "1",
                    "--baseline-epochs",
                    "1",
                ]
                if quick
                else []
            )
        ),
        "p1seeds": lambda: p1_seeds(quick),
        "p1like": lambda: p1_like_for_like(quick),
        "quant": lambda: quantization.main(["--smoke"] if quick else []),
        "executorch": lambda: executorch_bench.main(["--quick"] if quick else []),
        "vitroundto": lambda: vit_round_to.main(["--repeats", "1", "--rounds", "4"] if quick else []),
        "smallvit": lambda: small_vit.main(SMALL_VIT_QUICK if quick else []),
    }
    for step in STEPS:
        if step in args.only:
            started = time.perf_counter()
            log(f"== {step} ==")
            runs[step]()
            log(f"== {step} done in {time.perf_counter() - started:.0f} s ==")
            write_results_md(report)
    log(f"wrote {write_results_md(report)}")
    if not quick:
        log(f"wrote {write_readme()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
