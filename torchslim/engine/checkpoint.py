"""Atomic, pickle-free checkpoints.

One checkpoint directory (``root/<epoch>/`` by convention) holds ``<name>.pt`` per state dict
(``torch.save``, loaded only with ``weights_only=True``: optimizer states are nested dicts that
safetensors cannot hold), ``meta.json`` and ``MANIFEST.json`` (format, version, the sha256 and size
of every other file), written last.

Everything is written into ``<directory>.tmp-<pid>``, fsynced and renamed into place (an existing
directory is first moved aside to ``.old-<pid>``), so a kill leaves the old or the new complete
checkpoint. Dead writers' leftovers are never listed and are cleaned up by the next save or by
:func:`find_latest_checkpoint`; liveness is judged by pid, so use one writer process per root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchslim.errors import CheckpointError

FORMAT = "torchslim.checkpoint"
VERSION = 1
MANIFEST = "MANIFEST.json"
META = "meta.json"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_EPOCH_DIR = re.compile(r"^[0-9]+$")
_LEFTOVER = re.compile(r"^(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>[0-9]+)$")

OnCorrupt = Callable[[Path, CheckpointError], None]


# --------------------------------------------------------------------- saving


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    tensors: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
) -> Path:
    """Write named state dicts and JSON ``meta`` atomically to ``directory``.

    ``tensors`` maps a name (letters, digits, ``_ . -``) to a state dict that
    ``torch.load(weights_only=True)`` can read back — tensors, numbers,
    strings, None and dicts / lists / tuples of those. Anything else raises
    ``TypeError`` here rather than at resume time. Replaces an existing
    checkpoint at ``directory``. Raises :class:`CheckpointError` when the
    file system refuses.
    """
    directory = Path(directory)
    blobs = {f"{name}.pt": _serialize(name, state) for name, state in tensors.items()}
    try:
        meta_bytes = json.dumps(meta, indent=2, sort_keys=True).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint meta is not JSON-serializable: {e}") from e
    parent = directory.parent
    tmp = parent / f"{directory.name}.tmp-{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(parent, lambda target: target == directory.name)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {fname: _write_file(tmp / fname, data) for fname, data in blobs.items()}
        files[META] = _write_file(tmp / META, meta_bytes)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "state_dicts": {name: f"{name}.pt" for name in tensors},
            "files": files,
        }
        _write_file(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())  # keeps state-dict order
        _fsync_dir(tmp)
        _install(tmp, directory)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {directory}: {e}") from e
    return directory


def _serialize(name: str, state: Mapping[str, Any]) -> bytes:
    """``torch.save`` bytes of ``state``, checked to load back with weights_only."""
    if not _NAME.match(name):
        raise ValueError(f"invalid checkpoint entry name {name!r}: use letters, digits, '_', '.', '-'")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        raise TypeError(
            f"state dict {name!r} cannot be loaded with weights_only=True: {_first_line(e)}"
        ) from e
    return data


def _write_file(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _install(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` to ``directory``, moving an existing one aside first."""
    if not os.path.lexists(directory):
        os.replace(tmp, directory)
        _fsync_dir(directory.parent)
        return
    old = directory.parent / f"{directory.name}.old-{os.getpid()}"
    if os.path.lexists(old):
        shutil.rmtree(old)
    os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except OSError:
        os.replace(old, directory)
        raise
    _fsync_dir(directory.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False  # our own leftovers: saves in one process run one at a time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(root: Path, wanted: Callable[[str], bool]) -> None:
    """Remove dead writers' temp dirs; rename an orphaned ``.old`` back into place.

    Only directories named ``<target>.tmp-<pid>`` / ``<target>.old-<pid>`` with
    ``wanted(target)`` are touched, so unrelated files next to a checkpoint stay.
    """
    for entry in root.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or not wanted(match["target"]) or entry.is_symlink() or not entry.is_dir():
            continue
        if _pid_alive(int(match["pid"])):
            continue
        target = root / match["target"]
        if match["kind"] == "old" and not os.path.lexists(target):
            os.replace(entry, target)
        else:
            shutil.rmtree(entry)


# -------------------------------------------------------------------- loading


def verify_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256; return the manifest.

    Raises :class:`CheckpointError` naming the path and what is wrong.
    """
    return _read_verified(Path(directory), keep=False)[0]


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dicts, meta)`` of a checkpoint, verified and loaded on the CPU.

    Every file is checked against the manifest first, and state dicts are read
    with ``torch.load(weights_only=True)``, so a pickled object that would run
    code is refused. Any problem raises :class:`CheckpointError`.
    """
    directory = Path(directory)
    manifest, contents = _read_verified(directory, keep=True)
    try:
        meta = json.loads(contents[META])
    except ValueError as e:
        raise CheckpointError(f"checkpoint file {directory / META} is not valid JSON: {e}") from e
    tensors = {}
    for name, fname in manifest["state_dicts"].items():
        try:
            tensors[name] = torch.load(io.BytesIO(contents[fname]), weights_only=True, map_location="cpu")
        except Exception as e:
            raise CheckpointError(
                f"checkpoint file {directory / fname} cannot be loaded safely (weights_only): "
                f"{_first_line(e)}"
            ) from e
    return tensors, meta


def _read_verified(directory: Path, *, keep: bool) -> tuple[dict[str, Any], dict[str, bytes]]:
    manifest = _read_manifest(directory)
    contents = {}
    for fname, info in manifest["files"].items():
        path = directory / fname
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {path} is missing") from None
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint file {path}: {e}") from e
        if len(data) != info["size"]:
            raise CheckpointError(
                f"checkpoint file {path} has {len(data)} bytes but the manifest says {info['size']} "
                "(truncated?)"
            )
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise CheckpointError(
                f"checkpoint file {path} is corrupt: its sha256 does not match the manifest"
            )
        if keep:
            contents[fname] = data
    return manifest, contents


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {directory} is incomplete or not a checkpoint: no {MANIFEST}"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchslim checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has format version {manifest.get('version')!r}; this torchslim reads {VERSION}"
        )
    files, state_dicts = manifest.get("files"), manifest.get("state_dicts")
    if not isinstance(files, dict) or not isinstance(state_dicts, dict) or META not in files:
        raise CheckpointError(f"{path} is malformed: it must list 'files' (with {META}) and 'state_dicts'")
    for fname, info in files.items():
        if not _NAME.match(fname) or fname == MANIFEST:
            raise CheckpointError(f"{path} lists an invalid file name {fname!r}")
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("size"), int)
            or not isinstance(info.get("sha256"), str)
        ):
            raise CheckpointError(f"{path} has a malformed entry for {fname!r}")
    for name, fname in state_dicts.items():
        if fname not in files:
            raise CheckpointError(f"{path} maps state dict {name!r} to {fname!r}, which it does not list")
    return manifest


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ------------------------------------------------------------------- finding


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """``root/<epoch>/`` directories (name all digits), sorted by epoch number.

    Temp and set-aside directories (``*.tmp-*``, ``*.old-*``) are never listed;
    listed ones are not verified.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _EPOCH_DIR.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name))


def find_latest_checkpoint(root: str | os.PathLike, *, on_corrupt: OnCorrupt | None = None) -> Path | None:
    """The newest checkpoint under ``root`` that verifies, or None.

    Newer ones that fail verification are skipped and reported through
    ``on_corrupt(path, error)``, or as a warning when no callback is given.
    Dead writers' leftovers are cleaned up first (best effort).
    """
    root = Path(root)
    if root.is_dir():
        try:
            _clean_leftovers(root, _EPOCH_DIR.match)
        except OSError:
            pass  # a read-only root can still be searched
    for path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            if on_corrupt is not None:
                on_corrupt(path, e)
            else:
                warnings.warn(f"skipping corrupt checkpoint {path}: {e}", stacklevel=2)
            continue
        return path
    return None


def check_writable(root: str | os.PathLike, *, min_free_bytes: int = 64 * 2**20) -> None:
    """Fail early, before training, if checkpoints cannot be written to ``root``.

    Creates ``root``, writes and deletes a probe file, and checks that at
    least ``min_free_bytes`` are free. Raises :class:`CheckpointError`.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        _write_file(probe, b"torchslim")
        probe.unlink()
        free = shutil.disk_usage(root).free
    except OSError as e:
        raise CheckpointError(f"checkpoint directory {root} is not writable: {e.strerror or e}") from e
    if free < min_free_bytes:
        raise CheckpointError(
            f"checkpoint directory {root} has {free / 2**20:.1f} MiB free; "
            f"need at least {min_free_bytes / 2**20:.1f} MiB"
        )


# ------------------------------------------------------------------ RNG state


def capture_rng_state() -> dict[str, torch.Tensor]:
    """All global RNG states as tensors, so they survive ``weights_only`` loading.

    Covers torch's CPU generator, every CUDA device's generator (when CUDA is
    initialized), numpy's legacy global ``RandomState`` and Python's ``random``.
    """
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{index}"] = cuda_state
    _, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    state["numpy_pos"] = torch.tensor(pos, dtype=torch.int64)
    state["numpy_has_gauss"] = torch.tensor(has_gauss, dtype=torch.int64)
    state["numpy_gauss"] = torch.tensor(cached_gauss, dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    state["python_version"] = torch.tensor(version, dtype=torch.int64)
    state["python_state"] = torch.tensor(internal, dtype=torch.int64)
    state["python_has_gauss"] = torch.tensor(gauss_next is not None)
    state["python_gauss"] = torch.tensor(0.0 if gauss_next is None else gauss_next, dtype=torch.float64)
    return state


def restore_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    """Restore what :func:`capture_rng_state` captured.

    CUDA states are restored for the devices present in both the state and
    this machine. Raises :class:`CheckpointError` for a malformed state.
    """
    try:
        torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                if f"torch_cuda_{index}" in state:
                    torch.cuda.set_rng_state(state[f"torch_cuda_{index}"].to(torch.uint8), index)
        np.random.set_state(
            (
                "MT19937",
                state["numpy_keys"].numpy().astype(np.uint32),
                int(state["numpy_pos"]),
                int(state["numpy_has_gauss"]),
                float(state["numpy_gauss"]),
            )
        )
        gauss = float(state["python_gauss"]) if bool(state["python_has_gauss"]) else None
        random.setstate((int(state["python_version"]), tuple(state["python_state"].tolist()), gauss))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"saved RNG state is malformed: {_first_line(e)}") from e
