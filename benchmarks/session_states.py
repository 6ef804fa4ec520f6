"""Slow sessions: why one model in a timing process can run 2-4x slower than in the next process.

Issue 20's timings are bimodal. In a P2 run, in one of three fresh timing processes, one model's
ONNX Runtime session ran over 2x slower than the unpruned model for its whole life. The
machine state around it was normal: copy bandwidth and steal time did not change. This
benchmark opens the same models in many fresh processes, in each of several session modes. It
times them interleaved and records per session its median, the CPU time the process used per
wall-clock second of its runs (2.0 = both threads busy) and where its threads ran. A session
whose median is over ``SLOW`` times the fastest process's median for the same model and mode is
*slow*. The modes:

* ``timing``: torchslim's TimingSession (workers spin during a run and stop when it returns);
* ``no-spin``: workers never spin (each node wakes them);
* ``default``: ORT's default (workers keep spinning after a run);
* ``alone``: TimingSession, but each session is timed alone, then closed, with no other
  session open in the process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import fresh_model, log, machine_info, ts_prune, write_result

from torchslim.export.sessions import create_session, session_options
from torchslim.latency.compare import export_for_timing, in_fresh_process

MODES = ("timing", "no-spin", "default", "alone")
SLOW = 1.3
INPUT = 224
SPINNING = {"timing": True, "no-spin": False, "default": None, "alone": True}


def _session(path: Path, threads: int, mode: str):
    return create_session(path, session_options(threads, spinning=SPINNING[mode]))


def _thread_cpus() -> list[int]:
    """The CPU each thread of this process last ran on (/proc/self/task/*/stat, field 39)."""
    cpus = []
    for task in sorted(os.listdir("/proc/self/task")):
        try:
            fields = Path(f"/proc/self/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpus.append(int(fields[36]))
    return cpus


def _time(run, feed, samples: dict, label: str) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    run(feed)
    samples[label].append((time.perf_counter() - wall, time.process_time() - cpu))


def time_process(paths: dict[str, Path], mode: str, batch: int, threads: int, rounds: int) -> dict:
    """Per model of one fresh process: median ms and CPU seconds per wall second of its runs."""
    torch.set_num_threads(threads)
    feed = np.random.randn(batch, 3, INPUT, INPUT).astype(np.float32)
    samples: dict[str, list] = {label: [] for label in paths}

    def runner(session):
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})

    if mode == "alone":
        for label, path in paths.items():
            run = runner(_session(path, threads, mode))
            for _ in range(3):
                run(feed)
            for _ in range(rounds):
                _time(run, feed, samples, label)
    else:
        runs = {label: runner(_session(path, threads, mode)) for label, path in paths.items()}
        for run in runs.values():
            for _ in range(3):
                run(feed)
        labels = list(paths)
        for index in range(rounds):
            for label in labels[index % len(labels) :] + labels[: index % len(labels)]:
                _time(runs[label], feed, samples, label)
    result = {}
    for label, values in samples.items():
        wall, cpu = np.asarray(values).T
        result[label] = {
            "median_ms": float(np.median(wall) * 1000),
            "cpu_per_wall": float(cpu.sum() / wall.sum()),
        }
    result["_thread_cpus"] = _thread_cpus()
    return result


def build(name: str, workdir: str) -> dict[str, Path]:
    """The unpruned model and four torchslim -50% MACs variants (round_to 32, 16, 8, 4), as ONNX: five
    sessions in a process, as in a P2 timing process."""
    base = fresh_model(name)
    models = {"unpruned": base}
    for round_to in (32, 16, 8, 4):
        models[f"torchslim r{round_to}"] = ts_prune(base, INPUT, 0.5, round_to=round_to).model
    return {
        label: export_for_timing(model, INPUT, Path(workdir) / f"{name}-{index}.onnx")
        for index, (label, model) in enumerate(models.items())
    }


def summarise(processes: list[dict]) -> dict:
    """Per model: each process's median, the slow ones, and CPU per wall second, slow vs not."""
    labels = [k for k in processes[0] if not k.startswith("_")]
    summary = {}
    for label in labels:
        medians = np.asarray([p[label]["median_ms"] for p in processes])
        cpu = np.asarray([p[label]["cpu_per_wall"] for p in processes])
        slow = medians > SLOW * medians.min()
        summary[label] = {
            "medians_ms": medians.tolist(),
            "slow": int(slow.sum()),
            "cpu_per_wall_slow": float(cpu[slow].mean()) if slow.any() else None,
            "cpu_per_wall_normal": float(cpu[~slow].mean()),
        }
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v1")
    parser.add_argument("--processes", type=int, default=12, help="fresh processes per mode and batch")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="session_states")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    payload = {"benchmark": "slow sessions", "machine": machine_info(args.threads), "settings": vars(args)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchslim-sessions-") as workdir:
        paths = in_fresh_process(build, args.model, workdir)
        payload["runs"] = {}
        for batch in args.batches:
            rounds = args.rounds if batch == 1 else max(5, args.rounds // 4)
            for _ in range(args.processes):  # modes interleaved, so a slow stretch of the machine hits all
                for mode in args.modes:
                    key = f"{mode} b{batch}"
                    result = in_fresh_process(time_process, paths, mode, batch, args.threads, rounds)
                    payload["runs"].setdefault(key, []).append(result)
            for mode in args.modes:
                key = f"{mode} b{batch}"
                summary = summarise(payload["runs"][key])
                payload.setdefault("summary", {})[key] = summary
                log(f"{key}: " + ", ".join(f"{k} {v['slow']} slow" for k, v in summary.items()))
    payload["seconds"] = time.perf_counter() - started
    payload["machine_after"] = machine_info(args.threads)
    write_result(args.output, payload)
    return payload


if __name__ == "__main__":
    main()
