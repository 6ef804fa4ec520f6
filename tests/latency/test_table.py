"""The latency table: measured once per machine, runtime and thread count, cached on disk."""

from __future__ import annotations

import json

import pytest

from tests.helpers.latency import SyntheticTable
from torchslim.errors import ConfigError
from torchslim.latency.layers import ConvConfig
from torchslim.latency.table import LatencyTable


def test_latency_table_caches_per_machine_and_runtime(tmp_path):
    table = SyntheticTable(tmp_path)
    config = ConvConfig(16, 16, 3, 1, 1, 8, 8)
    value = table.lookup(config)
    assert table.measured == 1 and config.key() in table.entries
    path = table.save()
    data = json.loads(path.read_text())
    assert data["entries"][config.key()] == value and data["threads"] == 2 and "machine" in data
    again = LatencyTable("onnxruntime", threads=2, cache_dir=tmp_path, measure=False)
    assert again.lookup(config) == value and again.measured == 0
    with pytest.raises(KeyError):
        again.lookup(ConvConfig(8, 8, 1, 1, 1, 4, 4))
    other_threads = LatencyTable("onnxruntime", threads=1, cache_dir=tmp_path, measure=False)
    assert len(other_threads) == 0


def test_latency_table_ignores_a_table_of_another_machine(tmp_path):
    table = SyntheticTable(tmp_path)
    table.lookup(ConvConfig(16, 16, 3, 1, 1, 8, 8))
    path = table.save()
    data = json.loads(path.read_text())
    data["machine"] = "some other cpu"
    path.write_text(json.dumps(data))
    assert len(LatencyTable("onnxruntime", threads=2, cache_dir=tmp_path)) == 0


@pytest.mark.parametrize("runtime", ["onnxruntime", "eager"])
def test_latency_table_really_measures_a_tiny_layer(tmp_path, runtime):
    table = LatencyTable(runtime, threads=1, cache_dir=tmp_path, repeats=2, warmup=1)
    assert table.lookup(ConvConfig(8, 8, 3, 1, 1, 8, 8)) > 0.0


def test_unknown_runtime_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="runtime"):
        LatencyTable("tensorrt", cache_dir=tmp_path)
