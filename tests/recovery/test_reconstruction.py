"""Layer reconstruction after pruning: exact where the cut channels are recoverable, only the refitted
layers change, it lowers the error on a real pruned net, and the compressor records it per pruning step."""

from __future__ import annotations

import copy
import json

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import TINY_MODEL
from tests.helpers.configs import compression_config, write_config
from tests.helpers.tiny_models import TinyNet
from torchslim.cli.compress_cmd import summary_table
from torchslim.cli.main import main
from torchslim.compress.compressor import CompressionSummary, ModelStats
from torchslim.graph import apply_plan, removed_mask
from torchslim.pruning.prune import analyze, prune
from torchslim.recovery import reconstruction
from torchslim.recovery.lockstep import Lockstep
from torchslim.recovery.reconstruction import (
    input_rows,
    kept_output_channels,
    reconstruct,
    refittable_layers,
    rows_for,
)


class TwoConvs(nn.Module):
    """conv (with bias) -> ReLU -> 3x3 conv without bias -> BN: the second conv reads what the first loses."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.second = nn.Conv2d(8, 6, 3, padding=0, bias=False)
        self.norm = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.second(self.first(x).relu()))


def recoverable_model() -> TwoConvs:
    """Channel 6 duplicates channel 0 and channel 7 is the constant 1: both are linear in what is kept."""
    torch.manual_seed(0)
    model = TwoConvs()
    with torch.no_grad():
        model.first.weight[6] = model.first.weight[0]
        model.first.bias[6] = model.first.bias[0]
        model.first.weight[7] = 0.0
        model.first.bias[7] = 1.0
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    return model.eval()


def images(count: int = 64, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def cut_units(model: nn.Module, units: list[int]):
    """Prune exactly ``units`` of the first conv's output group; return (pruned copy, group_set, mask)."""
    group_set = analyze(model, images(1))
    (index,) = [i for i, g in enumerate(group_set.groups) if "first" in g.name]
    mask = removed_mask(group_set, {index: np.array(units)})
    return apply_plan(copy.deepcopy(model), group_set, mask), group_set, mask


def test_recoverable_channels_are_reconstructed_exactly_including_the_intercept():
    model = recoverable_model()
    pruned, group_set, mask = cut_units(model, [6, 7])
    data = images()
    with torch.no_grad():
        expected = model(data)
        assert (pruned(data) - expected).abs().max() > 0.1  # the cut really changed the output

    report = reconstruct(model, pruned, [data[:32], data[32:]], group_set=group_set, mask=mask, ridge=1e-9)

    assert list(report.layers) == ["second"] and report.batches == 2
    before, after = report.layers["second"]
    assert before > 1e-3 and after < 1e-6  # zero up to the float32 products of the moments
    with torch.no_grad():
        # no bias on `second`: the constant channel's contribution went into the norm's running mean
        torch.testing.assert_close(pruned(data), expected, atol=1e-4, rtol=1e-4)
    assert not pruned.training and not model.training


def test_only_the_refitted_layer_and_its_norm_statistics_change():
    model = recoverable_model().train()
    pruned, group_set, mask = cut_units(model, [6, 7])
    pruned.train()
    untouched = copy.deepcopy(pruned.state_dict())
    shapes = {k: v.shape for k, v in untouched.items()}

    reconstruct(model, pruned, [images()], group_set=group_set, mask=mask)

    state = pruned.state_dict()
    assert {k: v.shape for k, v in state.items()} == shapes  # the architecture is what pruning made it
    changed = {k for k, v in state.items() if not torch.equal(v, untouched[k])}
    # running_var is the unpruned norm's again: unchanged here, as pruning cut none of the norm's channels
    assert changed == {"second.weight", "norm.running_mean"}
    torch.testing.assert_close(pruned.norm.running_var, model.norm.running_var)
    assert pruned.training and model.training  # modes as they were
    for key, value in recoverable_model().state_dict().items():  # the unpruned model is only read
        if "running" not in key:
            assert torch.equal(model.state_dict()[key], value), key


def test_nothing_pruned_or_no_batches_changes_nothing():
    model = recoverable_model()
    pruned, group_set, mask = cut_units(model, [])
    assert refittable_layers(model, pruned) == []
    report = reconstruct(model, pruned, [images()], group_set=group_set, mask=mask)
    assert report.layers == {} and report.batches == 0

    pruned, group_set, mask = cut_units(model, [6])
    state = copy.deepcopy(pruned.state_dict())
    assert reconstruct(model, pruned, [images()], group_set=group_set, mask=mask, num_batches=0).layers == {}
    assert all(torch.equal(v, state[k]) for k, v in pruned.state_dict().items())


def test_kept_output_channels_follow_the_plan():
    model = recoverable_model()
    _, group_set, mask = cut_units(model, [1, 6])
    kept = kept_output_channels(group_set, mask)
    assert kept["first"].tolist() == [0, 2, 3, 4, 5, 7]
    assert kept["second"].tolist() == list(range(6))


def banded_loader(count: int = 256, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    data = torch.rand(count, 3, 32, 32, generator=generator)
    for index, label in enumerate(labels.tolist()):
        data[index, label % 3, 2 * label : 2 * label + 6, 4:28] += 1.0
    return DataLoader(TensorDataset(data, labels), batch_size=64)


def test_a_pruned_network_moves_closer_to_the_unpruned_one():

    torch.manual_seed(0)
    model = TinyNet(width=32).eval()
    loader = banded_loader()
    result = prune(model, torch.randn(1, 3, 32, 32), target_flops=0.5, round_to=1)
    pruned = result.model.eval()
    batch = next(iter(banded_loader(64, seed=1)))[0]  # held-out images
    with torch.no_grad():
        reference = model(batch)
        error_before = (pruned(batch) - reference).pow(2).mean() / reference.var()

    shuffled = DataLoader(loader.dataset, batch_size=64, shuffle=True)  # draws its order from the global RNG
    rng = torch.get_rng_state()
    report = reconstruct(model, pruned, shuffled, group_set=result.group_set, mask=result.plan.mask)
    assert torch.equal(
        torch.get_rng_state(), rng
    )  # switching reconstruction on changes nothing else in a run

    with torch.no_grad():
        error_after = (pruned(batch) - reference).pow(2).mean() / reference.var()
    assert set(report.layers) >= {"fc"}  # the classifier lost input channels
    assert all(after <= before for before, after in report.layers.values())
    assert report.mean_error_after < 0.5 * report.mean_error_before
    assert error_after < 0.5 * error_before


def test_compressor_reconstructs_after_pruning_and_reports_it(tiny_fmnist, tmp_path, capsys):
    def run(batches: int) -> dict:
        checkpoint = tmp_path / f"ckpt{batches}"
        train = {"lr": 0.1, "reconstruction_batches": batches, "bn_recalibration_batches": 2}
        config = compression_config(checkpoint, epochs=2, model=TINY_MODEL, data=tiny_fmnist, train=train)
        config = write_config(tmp_path / f"c{batches}.yaml", config)
        capsys.readouterr()
        assert main(["compress", "--config", str(config), "--json", "--no-progress"]) == 0
        return json.loads(capsys.readouterr().out)

    on, off = run(2), run(0)
    (event,) = on["events"]
    assert event["reconstruction"]["batches"] == 2 and event["reconstruction"]["layers"] >= 1
    assert event["reconstruction"]["error_after"] <= event["reconstruction"]["error_before"]
    assert {"top1_after_prune", "top1_after_bn_recalibration", "top1_after_reconstruction"} <= set(event)
    (plain,) = off["events"]
    assert "reconstruction" not in plain and "top1_after_reconstruction" not in plain
    assert plain["top1_after_bn_recalibration"] == event["top1_after_bn_recalibration"]
    assert sorted(on["top1_per_epoch"]) == [
        "0",
        "1",
    ]  # JSON keys: the epochs, each evaluated after fine-tuning

    stats = ModelStats(**on["before"])
    text = summary_table(
        CompressionSummary(stats, stats, events=on["events"], top1_per_epoch={0: 12.5, 1: 50.0})
    )
    assert f"after reconstruction: {event['top1_after_reconstruction']:.2f}%" in text
    assert "top-1 after each fine-tune epoch: epoch 0: 12.50%, epoch 1: 50.00%" in text


def _rank_batches(rank: int) -> list[torch.Tensor]:
    return [images(32, seed=10 + rank)]


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = recoverable_model()
        pruned, group_set, mask = cut_units(model, [3, 7])
        wrapped = nn.parallel.DistributedDataParallel(pruned)
        reconstruct(model, wrapped, _rank_batches(rank), group_set=group_set, mask=mask, distributed=True)
        torch.save(pruned.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ranks_fit_on_the_data_of_all_ranks_and_agree(tmp_path):
    import torch.multiprocessing as mp

    model = recoverable_model()
    fits = []
    for batches in (_rank_batches(0), _rank_batches(1), _rank_batches(0) + _rank_batches(1)):
        pruned, group_set, mask = cut_units(model, [3, 7])
        reconstruct(model, pruned, batches, group_set=group_set, mask=mask)
        fits.append(pruned.state_dict())
    assert not torch.allclose(fits[0]["second.weight"], fits[1]["second.weight"])  # the ranks' data differ
    mp.start_processes(
        _distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("second.weight", "norm.running_mean"):
        assert torch.equal(results[0][key], results[1][key]), key  # every rank writes the same weights
        torch.testing.assert_close(results[0][key], fits[2][key])  # fitted on both ranks' images together


@settings(max_examples=40, deadline=None)
@given(
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    size=st.tuples(st.integers(7, 12), st.integers(7, 12)),
)
def test_gathered_patches_are_the_rows_of_a_full_unfold(kernel, stride, dilation, padding, size):
    conv = nn.Conv2d(3, 2, kernel, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, *size)
    cols = torch.nn.functional.unfold(x, kernel, dilation, padding, stride)
    every_row = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    rows = torch.randperm(every_row.shape[0], generator=torch.Generator().manual_seed(0))[:7].sort().values
    torch.testing.assert_close(input_rows(conv, x, rows), every_row[rows], rtol=0, atol=0)


def test_rows_per_layer_shrink_for_wide_layers_but_never_below_one_per_feature():
    assert rows_for(64, 40960) == 40960  # narrow: the cap
    wide = rows_for(1000, 40960)
    assert 1000 < wide < 40960 and wide * 1000**2 <= reconstruction._MOMENT_BUDGET < (wide + 1) * 1000**2
    assert rows_for(5000, 40960) == 5000  # widest: one row per feature


def test_the_memory_and_work_budgets_bound_the_images_and_the_fit_still_helps():
    model = recoverable_model()
    pruned, group_set, mask = cut_units(model, [6, 7])
    full = reconstruct(model, copy.deepcopy(pruned), [images()], group_set=group_set, mask=mask)
    cost = Lockstep(model, pruned).image_cost(images(1))
    small = reconstruct(
        model,
        copy.deepcopy(pruned),
        [images()],
        group_set=group_set,
        mask=mask,
        memory_budget=10 * cost.live_bytes,
    )
    less = reconstruct(model, pruned, [images()], group_set=group_set, mask=mask, work_budget=20 * cost.macs)
    assert full.images == 64 and small.images == 10 and less.images == 20
    before, after = small.layers["second"]
    assert after < 0.1 * before


def test_a_pruned_vision_transformer_is_stepped_with_its_attention_as_one_call():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    ).eval()
    result = prune(model, torch.randn(1, 3, 32, 32), target_flops=0.4, round_to=1)
    report = reconstruct(
        model, result.model, [images(16, size=32)], group_set=result.group_set, mask=result.plan.mask
    )
    assert {"encoder.layers.encoder_layer_0.mlp.3", "encoder.layers.encoder_layer_1.mlp.3"} <= set(
        report.layers
    )
