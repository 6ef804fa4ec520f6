"""Layer reconstruction: refit the layers that lost input channels so they reproduce the unpruned outputs.

BN re-estimation repairs the statistics, but a layer that lost input channels still computes another
function; its inputs are correlated, so much of what the removed channels carried can be re-expressed
through the kept ones. Each conv (``groups == 1``) or linear layer that lost inputs is refitted, in the
order the layers run, by ridge least squares on a few training batches:

    W = argmin || Y_unpruned - X_pruned W ||^2 + lambda || W - W_kept ||^2

with inputs from the *pruned* network (earlier errors are compensated) and outputs of the unpruned one,
accumulated as second moments on output positions sampled from all images. Both networks are stepped
node by node together (:mod:`.lockstep`), so the whole refit costs one forward pass of each, whatever
the number of layers. The intercept goes into the bias, or into the running mean of the batch norm
the layer feeds. The architecture never changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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

from .lockstep import ImageCost, Lockstep

DEFAULT_RECONSTRUCTION_BATCHES = 10
DEFAULT_ROWS_PER_LAYER = 40960  # output positions each layer is fitted on
DEFAULT_MEMORY_BUDGET = 2**30  # bytes of activations both models may hold while stepping (see lockstep)
DEFAULT_WORK_BUDGET = 2**39  # multiply-adds of both models' forward passes over the images used
DEFAULT_RIDGE = 1e-2
_CHUNK = 32  # images per forward call
_MOMENT_BLOCK = 8192  # rows whose products are summed in float32 before joining the float64 sums
_MOMENT_BUDGET = 2**33  # multiply-adds of one layer's second moments (see rows_for)


@dataclass
class ReconstructionReport:
    """What reconstruction did: the layers refitted and their relative output error before / after."""

    batches: int = 0
    seconds: float = 0.0
    layers: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (error before, after)
    images: int = 0

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
        """Add one block of rows. Its products are taken in float32 (fast) on the block's centred
        values, so they lose no precision to large means; its mean goes back in exactly, in float64."""
        x, y = x.float(), y.float()
        block_x, block_y = x.mean(0), y.mean(0)
        x, y = x - block_x, y - block_y
        rows = x.shape[0]
        mx, my = block_x.double().cpu(), block_y.double().cpu()
        self.n += rows
        self.sx += rows * mx
        self.sy += rows * my
        self.sxx += (x.T @ x).double().cpu() + rows * torch.outer(mx, mx)
        self.sxy += (x.T @ y).double().cpu() + rows * torch.outer(mx, my)
        self.syy += (y * y).sum(0).double().cpu() + rows * my * my

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
        var_y = (self.syy / n - my * my).sum().clamp_min(1e-12)  # summed over the outputs
        lam = ridge * cxx.diagonal().mean().clamp_min(1e-12)
        w = _solve_positive_definite(cxx + lam * torch.eye(cxx.shape[0], dtype=cxx.dtype), cxy + lam * w0)

        def error(weights: torch.Tensor, cxx_weights: torch.Tensor) -> float:
            """Centred residual variance over output variance."""
            residual = var_y - 2 * (weights * cxy).sum() + (weights * cxx_weights).sum()
            return float(residual.clamp_min(0) / var_y)

        # (cxx + lam I) w = cxy + lam w0 gives cxx w without a second product with cxx
        return w, my - mx @ w, error(w0, cxx @ w0), error(w, cxy + lam * (w0 - w))


def _solve_positive_definite(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve by Cholesky (half the work of LU); a ridge-shifted covariance is positive definite, and
    when rounding says otherwise the general solver takes over."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.solve(matrix, rhs)


def rows_for(features: int, rows_per_layer: int) -> int:
    """How many output positions a layer with ``features`` inputs is fitted on.

    The second moments cost rows x features^2 multiply-adds: ``rows_per_layer`` rows
    while that stays under ``_MOMENT_BUDGET``, fewer for the widest layers, but never
    fewer than one per feature (with the ridge to the kept weights the fit stays well posed)."""
    affordable = _MOMENT_BUDGET // max(features * features, 1)
    return int(min(rows_per_layer, max(affordable, features)))


@dataclass(frozen=True)
class _FitSettings:
    rows_per_layer: int
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
    rows_per_layer: int = DEFAULT_ROWS_PER_LAYER,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    work_budget: int = DEFAULT_WORK_BUDGET,
    ridge: float = DEFAULT_RIDGE,
    device: str | torch.device = "cpu",
    seed: int = 0,
    distributed: bool = False,
) -> ReconstructionReport:
    """Refit, in place, every layer of ``pruned`` that lost input channels (see the module docstring).

    ``group_set`` and ``mask`` are the analysis and plan that turned ``original``
    into ``pruned`` (:class:`torchslim.pruning.PruneResult` holds both). Both models
    run in eval mode on the images of the first ``num_batches`` of ``loader``, at most
    as many as fit in ``memory_budget`` bytes of activations (both models' live tensors
    are held for all images at once) and as cost ``work_budget`` multiply-adds of forward
    passes (so the cost at 224x224 stays bounded); their modes are restored afterwards. Each layer is
    fitted on at most ``rows_per_layer`` output positions drawn at random from all images.
    A refit is kept only where it lowers the layer's output error on the data it was
    fitted on. With ``distributed`` and an initialised process group, the statistics are
    summed over ranks before each solve, so every rank writes the same weights (every rank
    must call this). ``DistributedDataParallel`` wrappers are looked through.
    """
    started = time.perf_counter()
    original, pruned = _unwrap(original), _unwrap(pruned)
    names = refittable_layers(original, pruned)
    if not names or num_batches <= 0:
        return ReconstructionReport()
    kept_out = kept_output_channels(group_set, mask)
    names = [n for n in names if n in kept_out]  # layers the trace saw (it knows their kept outputs)
    device = torch.device(device)
    with eval_mode(original), eval_mode(pruned):
        stepper = Lockstep(original, pruned)
        budget = _ImageBudget(memory_budget, work_budget)
        batches, images = _draw_images(loader, num_batches, stepper, budget, device)
        if not images or not names:
            return ReconstructionReport()
        settings = _FitSettings(
            rows_per_layer, ridge, torch.Generator().manual_seed(seed), _multi_rank(distributed), device
        )
        layers = _refit_in_order(original, pruned, stepper, _chunks(images), names, kept_out, settings)
    count = sum(len(chunk) for chunk in images)
    return ReconstructionReport(batches, time.perf_counter() - started, layers, count)


def _multi_rank(distributed: bool) -> bool:
    return distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass(frozen=True)
class _ImageBudget:
    memory: int  # bytes of live activations
    work: int  # multiply-adds of forward passes

    def images(self, cost: ImageCost) -> int:
        return max(1, min(self.memory // max(cost.live_bytes, 1), self.work // max(cost.macs, 1)))


def _draw_images(
    loader: Any, num_batches: int, stepper: Lockstep, budget: _ImageBudget, device: torch.device
) -> tuple[int, list[torch.Tensor]]:
    """The first ``num_batches`` batches' images, cut to what ``budget`` allows; how many batches
    were drawn. Batches are drawn only while images are still wanted."""
    drawn: list[torch.Tensor] = []
    limit = None
    with torch.random.fork_rng(devices=[]):  # augmentations drawn here leave a seeded run's RNG as it was
        for batch in islice(loader, num_batches):
            images = (batch[0] if isinstance(batch, list | tuple) else batch).to(device)
            if limit is None:
                limit = budget.images(stepper.image_cost(images[:1]))
            drawn.append(images[: limit - sum(len(d) for d in drawn)])
            if sum(len(d) for d in drawn) >= limit:
                break
    return len(drawn), [d for d in drawn if len(d)]


def _chunks(batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The images regrouped in chunks of at most ``_CHUNK`` (one op's temporaries stay small)."""
    images = torch.cat(batches) if len(batches) > 1 else batches[0]
    return list(images.split(_CHUNK))


def _refit_in_order(
    original: nn.Module,
    pruned: nn.Module,
    stepper: Lockstep,
    chunks: list[torch.Tensor],
    names: list[str],
    kept_out: dict[str, np.ndarray],
    settings: _FitSettings,
) -> dict[str, tuple[float, float]]:
    """Refit ``names`` one at a time in the order they run, each on inputs already corrected upstream;
    each layer's error (before, after)."""
    originals, pruneds = dict(original.named_modules()), dict(pruned.named_modules())
    layers = {}
    for stop in stepper.stops(chunks, set(names)):
        layer, keep = pruneds[stop.name], kept_out[stop.name]
        moments = _Moments(_feature_count(layer), len(keep))
        pairs = list(_sampled_rows(layer, stop.inputs, stop.outputs, keep, settings))
        if pairs:  # in blocks: float32 products, few float64 conversions of the moment matrices
            inputs, outputs = torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])
            for x, y in zip(inputs.split(_MOMENT_BLOCK), outputs.split(_MOMENT_BLOCK), strict=True):
                moments.add(x, y)
        if settings.sum_over_ranks:
            moments.sum_over_ranks(settings.device)
        norm = pruneds.get(stop.norm) if stop.norm else None
        original_norm = originals.get(stop.norm) if stop.norm else None
        layers[stop.name] = _refit(layer, moments, settings.ridge, norm, original_norm, keep)
    return layers


def _sampled_rows(
    module: nn.Module,
    inputs: list[torch.Tensor],
    outputs: list[torch.Tensor],
    keep: np.ndarray,
    settings: _FitSettings,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk, matching (rows, features) inputs and (rows, kept outputs) at sampled output positions.

    A row is one output position: for a convolution its input patch (in the weight's
    channel, kernel-row, kernel-column order) and its output channels. At most
    ``settings.rows_per_layer`` positions are drawn, uniformly from all images, and only
    their patches are gathered (a full unfold at 224x224 would not fit in memory).
    """
    per_chunk = [_positions(module, y) for y in outputs]
    total = sum(per_chunk)
    count = min(total, rows_for(_feature_count(module), settings.rows_per_layer))
    chosen = torch.randperm(total, generator=settings.generator)[:count].sort().values
    keep_index = torch.from_numpy(keep)
    start = 0
    for x, y, positions in zip(inputs, outputs, per_chunk, strict=True):
        local = chosen[(chosen >= start) & (chosen < start + positions)] - start
        start += positions
        if len(local):
            local = local.to(y.device)
            yield input_rows(module, x, local), _output_rows(module, y, local)[:, keep_index.to(y.device)]


def _positions(module: nn.Module, y: torch.Tensor) -> int:
    """Rows one chunk offers: output positions of a convolution, or vectors of a linear layer."""
    return y.numel() // y.shape[1 if isinstance(module, nn.Conv2d) else -1]


def _output_rows(module: nn.Module, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return y.reshape(-1, y.shape[-1])[rows]
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])[rows]


def input_rows(module: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The input vectors (linear) or patches (convolution) that produced the output rows ``rows``."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])[rows]
    out_h, out_w = _output_size(module, x)
    image, position = rows // (out_h * out_w), rows % (out_h * out_w)
    pad_h, pad_w = module.padding
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h)).permute(0, 2, 3, 1).contiguous()  # one row per pixel
    height, width = padded.shape[1], padded.shape[2]
    pixels = padded.view(-1, padded.shape[3])
    top = image * height + (position // out_w) * module.stride[0]
    left = (position % out_w) * module.stride[1]
    (kernel_h, kernel_w), (dil_h, dil_w) = module.kernel_size, module.dilation
    offsets = torch.tensor(
        [i * dil_h * width + j * dil_w for i in range(kernel_h) for j in range(kernel_w)], device=x.device
    )
    corners = top * width + left  # each row's top-left input pixel
    taps = pixels.index_select(0, (corners[:, None] + offsets).reshape(-1))  # (rows * taps, channels)
    return taps.view(len(rows), len(offsets), -1).transpose(1, 2).reshape(len(rows), -1)


def _output_size(module: nn.Conv2d, x: torch.Tensor) -> tuple[int, int]:
    sizes = []
    for axis in range(2):
        span = module.dilation[axis] * (module.kernel_size[axis] - 1) + 1
        sizes.append((x.shape[2 + axis] + 2 * module.padding[axis] - span) // module.stride[axis] + 1)
    return sizes[0], sizes[1]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


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
