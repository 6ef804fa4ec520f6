"""Every numeric and path flag of every command, given any value, either runs the command (exit 0, and
the value is really used where the JSON output shows it) or fails with one error line, the documented
exit code (README: 2 config, 3 data, 4 model, 5 pruning, 6 checkpoint) and no traceback.

Values are drawn per flag: below its range (zero, negative), inside it, far above it, not a number at
all, nan and infinities for floats; paths that are missing, a directory where a file belongs and a
file where a directory belongs, a path under a file, a file of garbage. A value outside a flag's
documented range that exits 0 fails the test (it was silently replaced), and so does a value inside it
that is refused. Informational log lines may come before an error line; an argparse rejection is the
only line. ``models`` has no such flags. ``demo`` only gets values it must refuse: an accepted one
would start its training job.

The CLI runs in this process (``torchslim.cli.main``) on ``tiny_net`` at 16x16 and a 32 + 16 image
dataset, so that all of this stays fast.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import count
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import TINY_MODEL
from tests.helpers.data import write_fashion_mnist
from tests.helpers.tiny_models import tiny_net
from torchslim.cli import main
from torchslim.pruning.counting import profile_model
from torchslim.sensitivity.table import ratio_key

TRAIN, VAL, SIZE, CLASSES = 32, 16, 16, 10
GROUPS = 3  # prunable groups of tiny_net
JUNK = ["1.5", "1e3", "ten", "", "0x10"]  # text that is no integer
PATH_KINDS = ("missing", "dir", "garbage", "under_file", "new", "good")


# ---------------------------------------------------------------- the world the commands run in


@dataclass
class World:
    root: Path
    data: str
    config: str
    run: str
    eval_model: str
    onnx: str
    weights: str
    table: str
    image: str
    cache: str
    fresh: count = field(default_factory=count)

    def path(self, kind: str, good: str | None = None) -> str:
        """A fresh path of ``kind`` (a command may write there); ``good``: the flag's valid input."""
        if kind == "good":
            return good
        place = self.root / "paths" / str(next(self.fresh))
        place.mkdir(parents=True)
        if kind in ("garbage", "under_file"):
            (place / "garbage.bin").write_bytes(b"\x89 this is not what the flag expects \x00\xff")
        if kind == "dir":
            (place / "empty").mkdir()
        return str(
            {
                "missing": place / "absent",
                "new": place / "new" / "out.file",
                "dir": place / "empty",
                "garbage": place / "garbage.bin",
                "under_file": place / "garbage.bin" / "below",
            }[kind]
        )


def _cli(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("flags")
    data = "fashion-mnist:" + str(write_fashion_mnist(root / "fmnist", TRAIN, VAL))
    torch.save(tiny_net().state_dict(), root / "weights.pth")
    config = root / "config.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "version": 1.0,
                "pruners": {"p": {"class": "StructurePruner", "criterions": {"*": "l1_norm"}, "round_to": 2}},
                "strategies": {
                    "u": {
                        "class": "UniformPruneStrategy",
                        "pruner": "p",
                        "start_epoch": 0,
                        "target_ratio": 0.3,
                        "pruned_params": ".*",
                    }
                },
                "compressor": {"epoch": 1, "checkpoint_path": str(root / "run"), "strategies": ["u"]},
                "train": {
                    "model": TINY_MODEL,
                    "data": data,
                    "batch_size": 16,
                    "lr": 0.05,
                    "input_size": SIZE,
                    "num_workers": 0,
                    "device": "cpu",
                },
            }
        )
    )
    assert _cli("compress", "--config", config, "--json") == 0  # a run: checkpoint, eval model, ONNX
    eval_model = root / "run" / "0" / "eval_model"
    table, image = root / "table.json", root / "image.png"
    common = ["--model", TINY_MODEL, "--data", data, "--val-limit", "8", "--ratios", "0.5", "--no-progress"]
    assert _cli("sensitivity", *common, "--output", table, "--plot", image, "--json") == 0
    cache_dir = root / "latency-cache"
    latency = ["--align", "latency", "--runtime", "eager", "--no-calibrate", "--threads", "1"]
    prune = ["prune", "--model", TINY_MODEL, "--input-size", SIZE, "--target-flops", "0.3", "--json"]
    assert _cli(*prune, *latency, "--latency-cache", cache_dir) == 0  # the latency table, measured once
    return World(
        root=root,
        data=data,
        config=str(config),
        run=str(root / "run"),
        eval_model=str(eval_model),
        onnx=str(eval_model / "model.onnx"),
        weights=str(root / "weights.pth"),
        table=str(table),
        image=str(image),
        cache=str(cache_dir),
    )


def bases(w: World) -> dict[str, list[str]]:
    """A valid, fast command line per command; a case appends its flag (the last spelling wins)."""
    tiny = ["--model", TINY_MODEL]  # built with 1000 classes unless told
    built = [*tiny, "--num-classes", CLASSES]
    prune = ["prune", *built, "--input-size", SIZE, "--target-flops", "0.3", "--round-to", "2", "--json"]
    sensitivity = ["sensitivity", *tiny, "--data", w.data, "--val-limit", "8", "--ratios", "0.5"]
    bench = ["bench", "latency", *built, "--input-size", SIZE, "--runtime", "eager", "--rounds", "1"]
    latency = ["--align", "latency", "--runtime", "eager", "--no-calibrate", "--threads", "1"]
    return {
        "flops": ["flops", *built, "--input-size", SIZE, "--per-layer", "--json"],
        "params": ["params", *built, "--json"],
        "prune": prune,
        "prune --data": [*prune, "--data", w.data, "--batch-size", "8"],
        "prune --align latency": [*prune, *latency, "--latency-cache", w.cache],
        "sensitivity": [*sensitivity, "--input-size", SIZE, "--no-progress", "--json"],
        "sensitivity --merge": ["sensitivity", "--output", w.path("new"), "--json"],
        "bench": [*bench, "--warmup", "0", "--threads", "1", "--json"],
        "bench --target-flops": [*bench, "--warmup", "0", "--threads", "1", "--json", "--target-flops", "0.3"]
        + ["--round-to", "2"],
        "compress": ["compress", "--config", w.config, "--dry-run", "--json"],
        "eval": ["eval", "--model-path", w.eval_model, *tiny, "--data", w.data, "--json"],
        "infer": ["infer", "--model-path", w.eval_model, "--data", w.data, "--runs", "1", "--warmup", "0"]
        + ["--json"],
        "report": ["report", "--run", w.run, *tiny, "--no-timing", "--json"],
        "report --timing": ["report", "--run", w.run, *tiny, "--rounds", "1", "--threads", "1", "--json"],
        "demo": ["demo", *tiny, "--data", w.data, "--output", w.path("new"), "--json"],
        "quantize": ["quantize", "--model-path", w.eval_model, *tiny, "--data", w.data]
        + ["--output", w.path("new"), "--calibration-images", "4", "--json"],
    }


# ---------------------------------------------------------------- drawn values: (text, inside the range?)


def integers(low: int, high: int | None = None, *, cheap: int = 8, huge: bool = True, only_bad=False):
    """Below ``low``, from ``low`` to ``cheap`` (kept small: the command really runs), above ``high``
    (or, without ``high``, huge values where they cost nothing), and text that is no integer."""
    bad = [st.integers(max_value=low - 1).map(lambda v: (str(v), False)), st.sampled_from(JUNK).map(_bad)]
    if high is not None:
        bad.append(st.integers(min_value=high + 1).map(lambda v: (str(v), False)))
    if only_bad:
        return st.one_of(bad)
    good = [st.integers(low, cheap).map(lambda v: (str(v), True))]
    if high is None and huge:  # beyond 2**63 is refused
        good.append(st.integers(10**6, 10**30).map(lambda v: (str(v), v <= sys.maxsize)))
    return st.one_of(good + bad)


def floats(accepts: Callable[[float], bool], inside: st.SearchStrategy[float]):
    """Any float (nan and infinities included), floats inside the range, and text that is no number."""
    anything = st.floats(allow_nan=True, allow_infinity=True).map(lambda v: (repr(v), accepts(v)))
    return st.one_of(
        inside.map(lambda v: (repr(v), True)), anything, st.sampled_from(["ten", "", "1/2"]).map(_bad)
    )


def _bad(text: str) -> tuple[str, bool]:
    return text, False


class PathKind(str):
    """A drawn kind of path, made a real path of the world in the test."""


def paths(*valid: str, kinds: tuple[str, ...] | None = None):
    """A kind of path, valid when it is one of ``valid``; ``good`` only where the flag has a good input."""
    kinds = kinds or tuple(kind for kind in PATH_KINDS if kind != "good" or kind in valid)
    return st.sampled_from(kinds).map(lambda kind: (PathKind(kind), kind in valid))


fraction = floats(lambda v: 0 < v < 1, st.floats(0.05, 0.6))
non_negative = floats(lambda v: v >= 0 and math.isfinite(v), st.floats(0.0, 2.0))
positive = floats(lambda v: v > 0 and math.isfinite(v), st.floats(0.001, 2.0))
input_size = integers(1, 4096, cheap=64)
num_classes = integers(1, 100_000, cheap=64)
threads = integers(1, 1024, cheap=2)
timing_batch = integers(1, 1024, cheap=3)
shards = st.one_of(
    st.tuples(st.integers(-2, 4), st.integers(-2, 4)).map(
        lambda kn: (f"{kn[0]}/{kn[1]}", 1 <= kn[0] <= kn[1])
    ),
    st.sampled_from(["1", "1/", "a/b", "1/2/3", ""]).map(_bad),
)


# ---------------------------------------------------------------- what an accepted value must have done


@cache
def macs(size: int, classes: int = CLASSES) -> int:
    return profile_model(tiny_net(classes), size).macs


@cache
def params(classes: int) -> int:
    return sum(p.numel() for p in tiny_net(classes).parameters())


def train_batches(batch_size: int) -> int:
    """Training batches of the tiny set (the loader drops a last partial batch when there are several)."""
    return TRAIN // batch_size if TRAIN > batch_size else 1


def number(text: str) -> float:
    return float(text)


def is_file(text: str) -> bool:
    return Path(text).is_file()


USED: dict[str, Callable[[dict, str], bool]] = {
    "flops --input-size": lambda out, v: out["input_size"] == int(v),
    "flops --num-classes": lambda out, v: out["layers"][-1]["output_shape"] == [int(v)],
    "flops --model-path": lambda out, v: out["model_path"] == v,
    "params --num-classes": lambda out, v: (
        {p["name"]: p["shape"] for p in out["params"]}["fc.weight"] == [int(v), 32]
    ),
    "prune --input-size": lambda out, v: out["macs_before"] == macs(int(v)),
    "prune --num-classes": lambda out, v: out["params_before"] == params(int(v)),
    "prune --target-flops": lambda out, v: abs(out["flops_reduction"] - number(v)) < 0.05,
    "prune --round-to": lambda out, v: (
        out["round_to"] == int(v)
        and all(after % int(v) == 0 or after == before for before, after in out["channels"].values())
    ),
    "prune --output": lambda out, v: out["output"] == v and is_file(f"{v}/manifest.json"),
    "prune --data --bn-batches": lambda out, v: out["bn_batches"] == min(int(v), train_batches(8)),
    "prune --data --reconstruct-batches": lambda out, v: (
        out.get("reconstruction_batches", 0) == min(int(v), train_batches(8))
    ),
    "prune --data --val-limit": lambda out, v: out["val_images"] == min(int(v), VAL),
    "prune --data --batch-size": lambda out, v: out["bn_batches"] == min(20, train_batches(int(v))),
    "prune --align latency --latency-batch-size": lambda out, v: out["latency"]["batch_size"] == int(v),
    "prune --align latency --threads": lambda out, v: out["latency"]["threads"] == int(v),
    "sensitivity --val-limit": lambda out, v: out["samples"] == min(int(v), VAL),
    "sensitivity --ratios": lambda out, v: all(
        list(g) == [ratio_key(number(v))] for g in out["groups"].values()
    ),
    "sensitivity --bn-batches": lambda out, v: out["recalibrated"] == (int(v) > 0),
    "sensitivity --input-size": lambda out, v: out["data"].endswith(f" at {int(v)}px"),
    "sensitivity --output": lambda out, v: out["output"] == v and is_file(v),
    "sensitivity --plot": lambda out, v: Path(v).read_bytes().startswith(b"\x89PNG"),
    "sensitivity --shard": lambda out, v: (
        sum(bool(g) for g in out["groups"].values())
        == len(range(int(v.split("/")[0]) - 1, GROUPS, int(v.split("/")[1])))
    ),
    "bench --batch-size": lambda out, v: out["batch_size"] == int(v),
    "bench --threads": lambda out, v: out["threads"] == int(v),
    "bench --rounds": lambda out, v: out["rounds"] == int(v),
    "bench --target-flops --target-flops": lambda out, v: abs(out["macs_ratio"] - (1 - number(v))) < 0.05,
    "bench --model-path": lambda out, v: out["macs_ratio"] < 1,
    "compress --input-size": lambda out, v: out["strategies"][0]["macs_before"] == macs(int(v)),
    "compress --num-classes": lambda out, v: out["strategies"][0]["macs_before"] == macs(SIZE, int(v)),
    "eval --val-limit": lambda out, v: out["samples"] == min(int(v), VAL),
    "eval --model-path": lambda out, v: Path(out["model_path"]) in (Path(v), Path(v) / "eval_model"),
    "infer --limit": lambda out, v: out["batch_size"] == min(int(v), VAL),
    "infer --top-k": lambda out, v: all(
        len(p["classes"]) == min(int(v), CLASSES) for p in out["predictions"]
    ),
    "infer --images": lambda out, v: [p["image"] for p in out["predictions"]] == [v],
    "report --output": lambda out, v: out["report"] == v and is_file(v),
    "report --timing --threads": lambda out, v: out["rows"][0]["torch_ms"] is not None,
    "report --timing --rounds": lambda out, v: out["rows"][0]["torch_ms"] is not None,
}


# ---------------------------------------------------------------- the flags


@dataclass(frozen=True)
class Case:
    base: str
    flag: str
    values: st.SearchStrategy
    good: str | None = None  # World attribute: the valid existing input of a path flag
    codes: frozenset[int] = frozenset({2})  # exit codes for values outside the range
    valid_codes: frozenset[int] = frozenset()  # exit codes a value inside the range may still have
    names: tuple[str, ...] = ()  # what an exit-2 message may name besides the flag
    examples: int = 5

    @property
    def id(self) -> str:
        return f"{self.base} {self.flag}"


def model_cases(base: str) -> list[Case]:
    """The flags of ``add_model_arguments``."""
    return [
        Case(base, "--input-size", input_size),
        Case(base, "--num-classes", num_classes),
        Case(base, "--pretrained", paths("good"), good="weights", codes=frozenset({4})),
        Case(base, "--model-path", paths("good"), good="eval_model", codes=frozenset({4})),
    ]


WRITABLE = ("missing", "dir", "under_file", "new")  # no existing file: an accepted one would be overwritten
LATENCY_CACHE = ("garbage", "under_file", "good")  # a new cache would be measured again: slow
UNREACHABLE = frozenset({5})  # a pruning target some settings cannot meet
CASES = [
    *model_cases("flops"),
    *model_cases("params"),
    *[c for c in model_cases("prune") if c.flag != "--model-path"],
    Case("prune", "--target-flops", fraction, valid_codes=UNREACHABLE),
    Case("prune", "--round-to", integers(1, cheap=32), valid_codes=UNREACHABLE),
    Case("prune", "--output", paths("new", "dir", "missing")),
    Case("prune --data", "--bn-batches", integers(0), examples=4),
    Case("prune --data", "--reconstruct-batches", integers(0), examples=4),
    Case("prune --data", "--val-limit", integers(1), examples=4),
    Case("prune --data", "--batch-size", integers(1), examples=4),
    Case("prune --align latency", "--latency-batch-size", timing_batch, examples=3),
    Case("prune --align latency", "--threads", threads, examples=3),
    Case("prune --align latency", "--speed-slack", non_negative, examples=3),
    Case("prune --align latency", "--latency-cache", paths("good", kinds=LATENCY_CACHE), good="cache"),
    Case("sensitivity", "--val-limit", integers(1)),
    Case("sensitivity", "--batch-size", integers(1)),
    Case("sensitivity", "--ratios", fraction, valid_codes=UNREACHABLE),  # the table keeps 4 decimals
    Case("sensitivity", "--criterion-batches", integers(1)),
    Case("sensitivity", "--bn-batches", integers(0)),
    Case("sensitivity", "--input-size", input_size),
    Case("sensitivity", "--num-classes", num_classes),
    Case("sensitivity", "--shard", shards),
    Case("sensitivity", "--model-path", paths("good"), good="eval_model", codes=frozenset({4})),
    Case("sensitivity", "--output", paths("new", "missing"), codes=frozenset({2, 5})),  # 5: not a table
    Case("sensitivity", "--plot", paths("new", "missing", kinds=WRITABLE)),
    Case("sensitivity --merge", "--merge", paths("good"), good="table", codes=frozenset({5})),
    Case("bench", "--batch-size", timing_batch),
    Case("bench", "--threads", threads),
    Case("bench", "--rounds", integers(1, cheap=3, huge=False)),
    Case("bench", "--warmup", integers(0, cheap=2, huge=False)),
    Case("bench", "--input-size", input_size),
    Case("bench", "--num-classes", num_classes),
    Case("bench", "--model-path", paths("good"), good="eval_model", codes=frozenset({4})),
    Case("bench", "--pretrained", paths("good"), good="weights", codes=frozenset({4})),
    Case("bench --target-flops", "--target-flops", fraction, valid_codes=UNREACHABLE),
    Case("bench --target-flops", "--round-to", integers(1, cheap=32), valid_codes=UNREACHABLE),
    Case("compress", "--batch-size", integers(1)),
    Case("compress", "--lr", positive),
    Case("compress", "--l2-decay", non_negative),
    Case(
        "compress",
        "--momentum-rate",
        floats(lambda v: 0 <= v < 1, st.floats(0.0, 0.99)),
        names=("train.momentum_rate",),
    ),
    Case("compress", "--num-epochs", integers(0)),
    Case("compress", "--step-epochs", integers(1)),
    Case("compress", "--train-limit", integers(1)),
    Case("compress", "--val-limit", integers(1)),
    Case("compress", "--num-classes", num_classes),
    Case("compress", "--input-size", input_size),
    Case("compress", "--num-workers", integers(0, 1024, cheap=2)),
    Case("compress", "--seed", integers(0, 2**32 - 1, cheap=2**32 - 1)),
    Case("compress", "--config", paths("good"), good="config", names=("config",)),
    Case("compress", "--pretrained-model", paths("good"), good="weights", codes=frozenset({4})),
    Case("compress", "--checkpoint-path", paths(*WRITABLE, kinds=WRITABLE)),  # a dry run writes nothing
    Case("eval", "--val-limit", integers(1)),
    Case("eval", "--batch-size", integers(1)),
    Case("eval", "--model-path", paths("good"), good="eval_model", codes=frozenset({4})),
    Case("eval", "--model-path", paths("good"), good="onnx", codes=frozenset({4})),
    Case("infer", "--limit", integers(1)),
    Case("infer", "--top-k", integers(1)),
    Case("infer", "--warmup", integers(0, cheap=2, huge=False)),
    Case("infer", "--runs", integers(1, cheap=2, huge=False)),
    Case("infer", "--threads", threads),
    Case("infer", "--images", paths("good"), good="image", codes=frozenset({3})),
    Case("infer", "--model-path", paths("good"), good="eval_model", codes=frozenset({4})),
    Case("report", "--output", paths("new", "missing", kinds=WRITABLE), examples=3),
    Case("report", "--run", paths("good"), good="run", codes=frozenset({6}), examples=3),
    Case("report --timing", "--threads", threads, examples=3),
    Case("report --timing", "--rounds", integers(1, cheap=2, huge=False), examples=3),
    *[
        Case("demo", flag, integers(1, only_bad=True))
        for flag in ("--train-limit", "--val-limit", "--baseline-epochs", "--finetune-epochs")
    ],
    Case("demo", "--output", paths(kinds=("garbage", "under_file"))),
    Case("quantize", "--calibration-images", integers(1), examples=3),
    Case("quantize", "--model-path", paths("good"), good="eval_model", codes=frozenset({4}), examples=3),
    Case("quantize", "--output", paths("missing", "dir", "new", kinds=WRITABLE), examples=4),
]
assert len({case.id + str(case.good) for case in CASES}) == len(CASES)


# ---------------------------------------------------------------- the property


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared machine: one thread is the fastest and the fairest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}[{c.good}]" if c.good else c.id for c in CASES])
def test_a_flag_value_runs_or_fails_in_one_line(case: Case, world: World, capsys):
    @settings(
        max_examples=case.examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(drawn=case.values)
    def check(drawn: tuple[str, bool]) -> None:
        text, valid = drawn
        if isinstance(text, PathKind):
            text = world.path(text, getattr(world, case.good) if case.good else None)
        argv = [*bases(world)[case.base], f"{case.flag}={text}"]
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        where = f"{' '.join(map(str, argv))}\nexit {code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
        assert "Traceback" not in err, where
        if code == 0:
            assert valid, f"a value outside the documented range was accepted:\n{where}"
            lines = out.strip().splitlines()
            assert len(lines) == 1, where
            used = USED.get(case.id)
            assert used is None or used(json.loads(lines[0]), text), f"the value was not used:\n{where}"
            return
        allowed = case.valid_codes if valid else case.codes | {2}
        assert code in allowed, f"exit {code}, expected one of {sorted(allowed | {0})}:\n{where}"
        _assert_one_error_line(err, case, code, text, where)

    check()


def _assert_one_error_line(err: str, case: Case, code: int, text: str, where: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], where
    prefix, message = errors[0].split(": error: ", 1)
    assert prefix.startswith(f"torchslim {case.base.split()[0]}"), where
    if message.startswith(case.flag):  # argparse refused the value: nothing else was done or said
        assert len(lines) == 1, where
    if code == 2:
        assert any(name in message for name in (case.flag, *case.names, text)), where


UNPADDED = """
from torch import nn


def unpadded(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(1), nn.LazyLinear(num_classes))
"""


@pytest.mark.parametrize(
    "command",
    [["flops"], ["params"], ["prune", "--target-flops", "0.3"], ["bench", "latency"]],
    ids=["flops", "params", "prune", "bench"],
)
def test_an_input_size_too_small_for_the_model_is_a_model_error(command, tmp_path, capsys):
    """Two unpadded 3x3 convolutions need 5x5 images: 4 is refused in one line naming the size, 5 runs."""
    (tmp_path / "unpadded.py").write_text(UNPADDED)
    argv = [*command, "--model", f"{tmp_path / 'unpadded.py'}:unpadded", "--json"]
    assert main([*argv, "--input-size", "4"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot run on 4x4 images (--input-size)" in err[0], err
    if command == ["flops"]:
        assert main([*argv, "--input-size", "5"]) == 0
        assert json.loads(capsys.readouterr().out)["input_size"] == 5
