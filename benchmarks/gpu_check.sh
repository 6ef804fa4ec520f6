#!/usr/bin/env bash
# One short GPU check (< 5 minutes): the card, one AMP compress epoch on a generated
# Fashion-MNIST-format slice, and CUDA latency of pruned vs unpruned models.
# Usage: bash benchmarks/gpu_check.sh [OUTPUT_DIR]   (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${1:-${OUT:-/tmp/torchslim-gpu-check}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not available"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== compress: one AMP epoch on a generated slice"
"$PYTHON" - "$OUT" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import write_fashion_mnist
write_fashion_mnist(Path(sys.argv[1]) / "fmnist", 4096, 1024)
PY
cat > "$OUT/gpu.yaml" <<YAML
version: 1.0
pruners: {pruner_1: {class: StructurePruner, criterions: {'*': l1_norm}, round_to: 8}}
strategies:
  uniform: {class: UniformPruneStrategy, pruner: pruner_1, start_epoch: 0, target_ratio: 0.5, pruned_params: '.*'}
compressor: {epoch: 1, checkpoint_path: '$OUT/ckpt', strategies: [uniform]}
train: {model: mobilenet_v2, batch_size: 256, lr: 0.05, lr_strategy: cosine_decay, device: cuda, num_workers: 2}
YAML
rm -rf "$OUT/ckpt"
"$PYTHON" -m torchslim compress --config "$OUT/gpu.yaml" --data "fashion-mnist:$OUT/fmnist" --no-progress --json > "$OUT/compress.json"
cat "$OUT/compress.json"; echo

echo "== CUDA latency, pruned (-50% MACs) vs unpruned, batch 1 and 64, fp32 and fp16"
"$PYTHON" - <<'PY'
import json
import torch
from torchslim.export import time_interleaved, torch_callable
from torchslim.models import build_model
from torchslim.pruning import prune

results = []
for name in ("mobilenet_v1", "mobilenet_v2", "resnet34"):
    base = build_model(name).eval()
    pruned = prune(base, torch.randn(1, 3, 224, 224), target_flops=0.5, round_to=8).model.eval()
    for batch in (1, 64):
        for dtype in (torch.float32, torch.float16):
            example = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
            models = {k: m.to("cuda", dtype).to(memory_format=torch.channels_last) for k, m in (("base", base), ("pruned", pruned))}
            timings = time_interleaved({k: torch_callable(m, example, device="cuda") for k, m in models.items()}, warmup=10, rounds=50)
            row = {"model": name, "batch": batch, "dtype": str(dtype).split(".")[-1],
                   "base_ms": timings["base"].median_ms, "pruned_ms": timings["pruned"].median_ms,
                   "speedup": timings["base"].median_ms / timings["pruned"].median_ms}
            results.append(row)
            print(json.dumps(row))
PY
