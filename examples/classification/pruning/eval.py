#!/usr/bin/env python
"""Top-1/top-5 accuracy of an eval model (the seed's eval.py, on torchslim).

--model_path is an eval model directory (checkpoint_path/<epoch>/eval_model), a
checkpoint epoch directory, a checkpoint root (its newest eval model) or an .onnx
inference model. The seed's --model_name/--params_name are not needed: a torchslim
model directory holds one manifest.json and one model.safetensors.
"""

from __future__ import annotations

import argparse
import sys

import torch

from torchslim.cli.main import main

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_path", required=True, help="The model to evaluate.")
parser.add_argument(
    "--model_name", help="Ignored (seed flag): the model structure is model_path/manifest.json."
)
parser.add_argument(
    "--params_name", help="Ignored (seed flag): the weights are model_path/model.safetensors."
)
parser.add_argument(
    "--model", help="Only for a model of your own factory (file.py:factory): name it to trust its code."
)
parser.add_argument(
    "--use_gpu", choices=["True", "False"], help="Evaluate on a GPU (default: when there is one)."
)
parser.add_argument("--data", default="imagenet:./data/ILSVRC2012", help="Data spec (default: %(default)s).")
parser.add_argument("--json", action="store_true", help="Print one JSON object.")

if __name__ == "__main__":
    args = parser.parse_args()
    if args.model_name or args.params_name:
        print(
            "note: --model_name/--params_name are ignored; torchslim reads manifest.json + model.safetensors",
            file=sys.stderr,
        )
    if args.use_gpu == "True" and not torch.cuda.is_available():
        print("eval.py: error: --use_gpu True but CUDA is not available", file=sys.stderr)
        sys.exit(2)
    use_gpu = torch.cuda.is_available() if args.use_gpu is None else args.use_gpu == "True"
    device = "cuda" if use_gpu else "cpu"
    argv = ["eval", "--model-path", args.model_path, "--data", args.data, "--device", device]
    argv += ["--model", args.model] if args.model else []
    sys.exit(main(argv + (["--json"] if args.json else [])))
