"""Layer reconstruction: refit the layers that lost input channels so they reproduce the unpruned outputs.

BN re-estimation repairs the statistics, but a layer that lost input channels still computes another
function; its inputs are correlated, so much of what the removed channels carried can be re-expressed
through the kept ones. Each conv (``groups == 1``) or linear layer that lost inputs is refitted, in the
order the layers run, by ridge least squares on a few training batches:

    W = argmin || Y_unpruned - X_pruned W ||^2 + lambda || W - W_kept ||^2

with inputs from the *pruned* network (earlier errors are compensated) and outputs of the unpruned one,
accumulated as second moments on sampled output positions. The intercept goes into the bias, or into
the running mean of the batch norm the layer feeds. The architecture never changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchslim.graph import DENSE_ROLES, GroupSet
from torchslim.nn import eval_mode

DEFAULT_RECONSTRUCTION_BATCHES = 10
DEFAULT_POSITIONS_PER_BATCH = 4096
DEFAULT_RIDGE = 1e-2


@dataclass
class ReconstructionReport:
    """What reconstruction did: the layers refitted and their relative output error before / after."""

    batches: int = 0
    seconds: float = 0.0
    layers: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (error before, after)

    @property
    def mean_error_before(self) -> float:
        return float(np.mean([b for b, _ in self.layers.values()])) if self.layers else 0.0

    @property
    def mean_error_after(self) -> float:
        return float(np.mean([a for _, a in self.layers.values()])) if self.layers else 0.0


def kept_output_channels(group_set: GroupSet, mask: np.ndarray) -> dict[str, np.ndarray]:
    """For each conv / linear layer of the traced model, the output positions a plan keeps."""
    kept = {}
    for use in group_set.graph.uses_of(*DENSE_ROLES):
        if use.out_ids is not None and use.module not in kept:
            kept[use.module] = np.nonzero(group_set.kept(use.out_ids, mask))[0]
    return kept


def refittable_layers(original: nn.Module, pruned: nn.Module) -> list[str]:
    """Dense convs and linears (same name in both models) whose input channels pruning reduced."""
    originals = dict(original.named_modules())
    names = []
    for name, module in pruned.named_modules():
        if not _refittable(module):
            continue
        before = originals.get(name)
        if (
            before is not None
            and type(before) is type(module)
            and before.weight.shape[1] > module.weight.shape[1]
        ):
            names.append(name)
    return names


def _refittable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


class _Moments:
    """Running sums for a centred least-squares fit of outputs ``y`` on inputs ``x`` (float64)."""

    def __init__(self, features: int, outputs: int) -> None:
        self.n = 0
        self.sx = torch.zeros(features, dtype=torch.float64)
        self.sy = torch.zeros(outputs, dtype=torch.float64)
        self.sxx = torch.zeros(features, features, dtype=torch.float64)
        self.sxy = torch.zeros(features, outputs, dtype=torch.float64)
        self.syy = torch.zeros(outputs, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # Products of one batch in float32 (fast), sums over batches in float64.
        x, y = x.float(), y.float()
        self.n += x.shape[0]
        self.sx += x.sum(0).double().cpu()
        self.sy += y.sum(0).double().cpu()
        self.sxx += (x.T @ x).double().cpu()
        self.sxy += (x.T @ y).double().cpu()
        self.syy += (y * y).sum(0).double().cpu()

    def sum_over_ranks(self, device: torch.device) -> None:
        """Replace this rank's sums by the sums over all ranks (one all_reduce)."""
        parts = [
            self.sx,
            self.sy,
            self.sxx.flatten(),
            self.sxy.flatten(),
            self.syy,
            torch.tensor([float(self.n)]),
        ]
        flat = torch.cat([p.double() for p in parts]).to(device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.cpu()
        offset = 0
        for tensor in (self.sx, self.sy, self.sxx, self.sxy, self.syy):
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()
        self.n = int(flat[offset])

    def fit(self, w0: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Ridge-to-``w0`` solution (features x outputs), its intercept, and the relative errors of both."""
        n = max(self.n, 1)
        mx, my = self.sx / n, self.sy / n
        cxx = self.sxx / n - torch.outer(mx, mx)
        cxy = self.sxy / n - torch.outer(mx, my)
        var_y = (self.syy / n - my * my).sum().clamp_min(1e-12)
        lam = ridge * cxx.diagonal().mean().clamp_min(1e-12)
        eye = torch.eye(cxx.shape[0], dtype=cxx.dtype)
        w = torch.linalg.solve(cxx + lam * eye, cxy + lam * w0)

        def error(weights: torch.Tensor) -> float:  # centred residual variance over output variance
            residual = (
                (self.syy / n - my * my).sum() - 2 * (weights * cxy).sum() + (weights * (cxx @ weights)).sum()
            )
            return float(residual.clamp_min(0) / var_y)

        return w, my - mx @ w, error(w0), error(w)


_UNFOLD_BUDGET = 2**25  # elements of one unfolded input (128 MiB in float32): bounds memory at 224x224


def _rows(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    keep: np.ndarray,
    limit: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matching (positions, features) inputs and (positions, kept outputs) of a batch, at most ``limit`` rows.

    For a convolution every output position is one row: its input patch and its
    output channels. Images are subsampled first so the unfolded input stays small.
    """
    if isinstance(module, nn.Linear):
        inputs, outputs = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    else:
        positions = y.shape[-2] * y.shape[-1]
        images = max(1, min(x.shape[0], _UNFOLD_BUDGET // max(positions * _feature_count(module), 1)))
        x, y = x[:images], y[:images]
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        inputs = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        outputs = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
    outputs = outputs[:, torch.from_numpy(keep).to(outputs.device)]
    if inputs.shape[0] > limit:
        rows = torch.randperm(inputs.shape[0], generator=generator)[:limit].to(inputs.device)
        inputs, outputs = inputs[rows], outputs[rows]
    return inputs, outputs


@dataclass(frozen=True)
class _FitSettings:
    positions_per_batch: int
    ridge: float
    generator: torch.Generator
    sum_over_ranks: bool
    device: torch.device


@torch.no_grad()
def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    loader: Any,
    *,
    group_set: GroupSet,
    mask: np.ndarray,
    num_batches: int = DEFAULT_RECONSTRUCTION_BATCHES,
    positions_per_batch: int = DEFAULT_POSITIONS_PER_BATCH,
    ridge: float = DEFAULT_RIDGE,
    device: str | torch.device = "cpu",
    seed: int = 0,
    distributed: bool = False,
) -> ReconstructionReport:
    """Refit, in place, every layer of ``pruned`` that lost input channels (see the module docstring).

    ``group_set`` and ``mask`` are the analysis and plan that turned ``original``
    into ``pruned`` (:class:`torchslim.pruning.PruneResult` holds both). Both models
    run in eval mode on the first ``num_batches`` of ``loader`` (held in memory
    meanwhile); their modes are restored afterwards. A refit is kept only where it
    lowers the layer's output error on the data it was fitted on. With ``distributed``
    and an initialised process group, the statistics are summed over ranks before each
    solve, so every rank writes the same weights (every rank must call this).
    ``DistributedDataParallel`` wrappers are looked through.
    """
    started = time.perf_counter()
    original, pruned = _unwrap(original), _unwrap(pruned)
    names = refittable_layers(original, pruned)
    if not names or num_batches <= 0:
        return ReconstructionReport()
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # augmentations drawn here leave a seeded run's RNG as it was
        batches = [
            (b[0] if isinstance(b, list | tuple) else b).to(device) for b in islice(loader, num_batches)
        ]
    kept_out = kept_output_channels(group_set, mask)
    names = [n for n in names if n in kept_out]  # layers the trace saw (it knows their kept outputs)
    if not batches or not names:
        return ReconstructionReport()
    multi_rank = distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    settings = _FitSettings(
        positions_per_batch, ridge, torch.Generator().manual_seed(seed), multi_rank, device
    )
    with eval_mode(original), eval_mode(pruned):
        layers = _refit_in_order(original, pruned, names, batches, kept_out, settings)
    return ReconstructionReport(len(batches), time.perf_counter() - started, layers)


def _refit_in_order(
    original: nn.Module,
    pruned: nn.Module,
    names: list[str],
    batches: list[torch.Tensor],
    kept_out: dict[str, np.ndarray],
    settings: _FitSettings,
) -> dict[str, tuple[float, float]]:
    """Refit ``names`` one at a time in the order they run, so each sees inputs already corrected
    upstream (a forward pass stops at the layer it feeds); each layer's error (before, after)."""
    originals, pruneds = dict(original.named_modules()), dict(pruned.named_modules())
    order, norms = _execution_order(pruned, names, batches[0][:1])
    layers = {}
    for name in order:
        layer, keep = pruneds[name], kept_out[name]
        moments = _Moments(_feature_count(layer), len(keep))
        for images in batches:
            x = _run_until(pruned, layer, images, want="input")
            y = _run_until(original, originals[name], images, want="output")
            moments.add(*_rows(layer, x, y, keep, settings.positions_per_batch, settings.generator))
        if settings.sum_over_ranks:
            moments.sum_over_ranks(settings.device)
        norm = norms.get(name)
        original_norm = originals.get(norm[0]) if norm else None
        layers[name] = _refit(layer, moments, settings.ridge, norm and norm[1], original_norm, keep)
    return layers


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted tensor is captured."""


def _run_until(model: nn.Module, layer: nn.Module, images: torch.Tensor, *, want: str) -> torch.Tensor:
    """Forward ``images`` through ``model`` only as far as ``layer``; return its input or output."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured.append(args[0] if want == "input" else output)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"layer {layer!r} did not run in the forward pass")
    return captured[0]


def _execution_order(
    model: nn.Module, names: list[str], images: torch.Tensor
) -> tuple[list[str], dict[str, tuple[str, nn.Module]]]:
    """The order ``names`` run in, and for each the batch norm that directly normalises its output, if any."""
    modules = dict(model.named_modules())
    order: list[str] = []
    produced: dict[int, str] = {}
    norms: dict[str, tuple[str, nn.Module]] = {}

    def on_layer(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if name not in order:
                order.append(name)
            produced[id(output)] = name

        return hook

    def on_norm(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            source = produced.get(id(args[0]))
            if source is not None and source not in norms:
                norms[source] = (name, module)

        return hook

    handles = [modules[n].register_forward_hook(on_layer(n)) for n in names]
    handles += [
        m.register_forward_hook(on_norm(n))
        for n, m in modules.items()
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)
    ]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return order, norms


def _feature_count(module: nn.Module) -> int:
    return module.weight[0].numel()


def _refit(
    module: nn.Module,
    moments: _Moments,
    ridge: float,
    norm: nn.Module | None,
    original_norm: nn.Module | None,
    kept: np.ndarray,
) -> tuple[float, float]:
    """Write the fitted weights into ``module`` when they lower the error; return the error (before, after).

    The fitted intercept goes into the bias, or, for a layer without one that feeds a
    batch norm, into that norm's running mean (whose statistics become the unpruned
    norm's again, since the layer's outputs now match the unpruned ones).
    """
    w0 = module.weight.detach().reshape(module.weight.shape[0], -1).T.double().cpu()
    w, intercept, before, after = moments.fit(w0, ridge)
    if not after < before or not torch.isfinite(w).all():
        return before, before
    module.weight.copy_(w.T.reshape(module.weight.shape).to(module.weight))
    if module.bias is not None:
        module.bias.copy_(intercept.to(module.bias))
    elif norm is not None and original_norm is not None and norm.running_mean is not None:
        keep = torch.from_numpy(kept)  # the norm reads the layer's output, so it kept the layer's channels
        norm.running_mean.copy_(
            (original_norm.running_mean[keep].double().cpu() - intercept).to(norm.running_mean)
        )
        norm.running_var.copy_(original_norm.running_var[keep].to(norm.running_var))
    return before, after
