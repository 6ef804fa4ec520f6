"""--dry-run of the seed's three configs: the layers the seed pruned are selected, nothing is written."""

from __future__ import annotations

import json

import pytest

from tests.helpers import SEED_CONFIGS
from tests.helpers.cli import run_main
from torchslim.config import load_config
from torchslim.models import build_model

# model -> (seed regex, parameters it must select)
SEED_SELECTIONS = {
    "mobilenet_v1": (".*_sep_weights", 13),  # the 13 pointwise convs
    "mobilenet_v2": (".*[r|d]_weights", 33),  # 16 expand + 17 linear (project) 1x1 convs
    "resnet34": (".*branch.*_weights", 35),  # 32 block convs + 3 projection shortcuts
}


@pytest.mark.parametrize("model_name", sorted(SEED_SELECTIONS))
def test_seed_config_dry_run_selects_equivalent_layers(
    model_name, brightness_fmnist, tmp_path, monkeypatch, capsys
):
    regex, expected = SEED_SELECTIONS[model_name]
    path = SEED_CONFIGS / f"{model_name}.yaml"
    config = load_config(path)  # unchanged seed file
    (strategy,) = config.active_strategies()
    assert strategy.pruned_params == regex and strategy.target_ratio == 0.5
    assert config.compressor.checkpoint_path.startswith("./checkpoints")

    monkeypatch.chdir(tmp_path)  # the seed's relative checkpoint_path would land here
    code, out, err = run_main(
        capsys,
        [
            "compress",
            "--config",
            str(path),
            "--model",
            model_name,
            "--dry-run",
            "--json",
            "--input-size",
            "64",
            "--num-classes",
            "10",
            "--data",
            brightness_fmnist,
        ],
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["dry_run"] is True
    (plan,) = payload["strategies"]
    assert plan["matched_params"] == expected
    assert abs(plan["flops_reduction"] - 0.5) <= 0.01, plan["flops_reduction"]
    assert plan["macs_after"] < plan["macs_before"]
    assert list(tmp_path.iterdir()) == [], "a dry run wrote files"

    # the selected parameters are the layers the seed pruned
    model = build_model(model_name, num_classes=10)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    matched = plan["matched"]
    assert len(set(matched)) == expected
    assert all(len(shapes[n]) == 4 for n in matched), "only conv weights are selected"
    if model_name in ("mobilenet_v1", "mobilenet_v2"):
        assert all(shapes[n][2:] == (1, 1) for n in matched), "only 1x1 convs (no depthwise, no stem)"
    if model_name == "mobilenet_v2":
        assert len([n for n in matched if n.endswith(".conv.0.0.weight")]) == 16  # expand convs
    if model_name == "resnet34":
        assert all(n.startswith("layer") for n in matched) and "conv1.weight" not in matched
        assert len([n for n in matched if ".downsample." in n]) == 3
