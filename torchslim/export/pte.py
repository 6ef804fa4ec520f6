"""Running ExecuTorch programs (``.pte`` files): loading, the thread pool, batches of any size.

ExecuTorch is an optional extra (``pip install 'torchslim[executorch]'``). Every entry point calls
:func:`require_executorch` first, so a missing extra is one line saying how to get it, not an
ImportError from deep inside.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from torchslim.errors import ModelError
from torchslim.export.onnx_export import quiet_loggers

__all__ = [
    "EXTRA_HINT",
    "PTE_FILE",
    "PteModel",
    "executorch_available",
    "executorch_version",
    "require_executorch",
    "set_executorch_threads",
]

PTE_FILE = "model.pte"
EXTRA_HINT = "pip install 'torchslim[executorch]' (make setup installs it)"


def executorch_available() -> bool:
    return importlib.util.find_spec("executorch") is not None


def require_executorch(what: str) -> None:
    """A ModelError (exit 4) saying how to install the extra when ExecuTorch is missing."""
    if not executorch_available():
        raise ModelError(f"{what} needs ExecuTorch, which is not installed: {EXTRA_HINT}")


def executorch_version() -> str:
    from importlib.metadata import version

    return f"executorch-{version('executorch')}"


def set_executorch_threads(threads: int | None) -> None:
    """Size ExecuTorch's one process-wide thread pool, which XNNPACK's kernels share (``None``: leave
    it; it starts with one thread per core). It is global, and a program loaded before a change of size
    must not run after it (its delegate keeps the old pool): set the size first, then load."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    # the first call probes the CPU and logs what it found; the module warns that its API is experimental
    with _quiet_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the runtime's C++ log lines (CPU probing, thread-pool resets) written straight to fd 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_method(data: bytes | Path, where: str):
    """The ``forward`` method of a program held in ``data`` (bytes or a file); a ModelError naming
    ``where`` when the runtime cannot read it."""
    require_executorch(f"running {where}")
    # importing the runtime warns about torch internals and that its API is experimental
    with quiet_loggers(("torch",)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.runtime import Runtime

    try:
        with _quiet_stderr():
            program = Runtime.get().load_program(data)
            method = program.load_method("forward")
    except Exception as e:  # the runtime reports a bad file as a RuntimeError with an error code
        raise ModelError(f"{where}: not a readable ExecuTorch program ({_first_line(e)})") from e
    if method is None:
        raise ModelError(f"{where}: the ExecuTorch program has no 'forward' method")
    return method


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class PteModel:
    """An ExecuTorch program of an image classifier, called like :class:`~torchslim.export.OrtModel`.

    The program has a fixed input shape (``input_shape``; ExecuTorch plans its memory for it). A batch
    of another size runs in pieces of that batch, the last one padded, so ``infer`` and ``eval`` take
    any number of images. ``threads`` sizes the process-wide thread pool (see
    :func:`set_executorch_threads`).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ExecuTorch program not found: {self.path}")
        # before loading: XNNPACK's delegate keeps the pool it was loaded with, and a pool reset under a
        # loaded program leaves it pointing at freed threads
        set_executorch_threads(threads)
        self.method = load_method(self.path, str(self.path))
        meta = self.method.metadata
        if meta.num_inputs() != 1:
            raise ModelError(f"{self.path}: the program has {meta.num_inputs()} inputs; expected exactly one")
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in meta.input_tensor_meta(0).sizes())
        if len(self.input_shape) != 4 or self.input_shape[1] != 3:
            raise ModelError(
                f"{self.path}: not an image classifier: its input has shape {list(self.input_shape)} "
                "(expected N x 3 x H x W)"
            )
        self.threads = threads

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """One call on a batch of exactly the program's shape (no copies; for timing)."""
        try:
            return self.method.execute([x])[0]
        except Exception as e:
            raise ModelError(
                f"ExecuTorch program {self.path} failed on an input of shape {tuple(x.shape)} "
                f"(expects {list(self.input_shape)}): {_first_line(e)}"
            ) from e

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits of a float32 N x 3 x H x W batch of any N."""
        batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise ModelError(
                f"ExecuTorch program {self.path} expects images of shape {list(self.input_shape[1:])}, "
                f"got {list(batch.shape[1:])}"
            )
        outputs = []
        for start in range(0, len(batch), self.batch_size):
            piece = batch[start : start + self.batch_size]
            short = self.batch_size - len(piece)
            if short:
                piece = torch.cat([piece, piece.new_zeros((short, *piece.shape[1:]))])
            outputs.append(self.run_tensor(piece.contiguous())[: self.batch_size - short])
        return torch.cat(outputs).numpy()

    def __repr__(self) -> str:
        return f"PteModel({str(self.path)!r}, input_shape={self.input_shape}, threads={self.threads})"
