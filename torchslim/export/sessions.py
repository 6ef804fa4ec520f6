"""The one place ONNX Runtime sessions are configured and created.

Every session torchslim opens (inference, verification at export, timing, profiling)
comes from :func:`create_session` with options from :func:`session_options`, so
provider checks, error messages and thread settings are the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from torchslim.errors import ConfigError, ModelError

CPU = ("CPUExecutionProvider",)


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers, best first."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def session_options(
    threads: int | None = None,
    *,
    spinning: bool | None = None,
    profile_prefix: str | os.PathLike | None = None,
):
    """Options for one session: ``threads`` intra-op threads (None: one per core), one inter-op
    thread, all graph optimisations, sequential execution, errors-only logging.

    ``spinning``: None keeps ORT's default (workers keep spinning after a run); True spins within a
    run and stops when it returns (several timed sessions in one process then do not steal each
    other's cores); False never spins. ``profile_prefix`` turns ORT's profiler on.
    """
    import onnxruntime as ort

    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.fspath(profile_prefix)
    return options


def providers_for(device: str) -> tuple[str, ...]:
    """The execution providers for a torch-style device name ("cpu", "cuda", "cuda:1")."""
    return ("CUDAExecutionProvider",) if device.startswith("cuda") else CPU


def create_session(
    model: bytes | str | os.PathLike,
    options=None,
    *,
    providers: Sequence[str] = CPU,
    where: str | None = None,
):
    """An ``onnxruntime.InferenceSession`` of ``model`` (a file or serialized bytes).

    A provider this build lacks is a :class:`ConfigError`; a model ORT cannot load is a
    :class:`ModelError` naming ``where`` (default: the file).
    """
    import onnxruntime as ort

    available = available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ConfigError(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available; available: {', '.join(available)}"
        )
    source = model if isinstance(model, bytes) else os.fspath(model)
    where = where or (f"ONNX model {source}" if not isinstance(model, bytes) else "ONNX model")
    try:
        return ort.InferenceSession(source, options or session_options(), providers=list(providers))
    except Exception as error:  # onnxruntime raises its own pybind exception types
        message = " ".join(str(error).split())  # one line: ORT's messages may span several
        raise ModelError(f"{where}: ONNX Runtime cannot load the model: {message}") from error


class TimingSession:
    """A session for timing: its workers spin during a run and stop when it returns.

    Interleaved timing keeps several sessions alive in one process; with ORT's default
    the idle sessions' spinning workers steal the cores of the one being timed, and with
    no spinning at all every node pays for waking the workers (see benchmarks/RESULTS.md).
    """

    def __init__(self, path: str | os.PathLike, threads: int, device: str = "cpu") -> None:
        options = session_options(threads, spinning=True)
        self.session = create_session(path, options, providers=providers_for(device))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
